"""The ``medvault`` command line (see API.md). ``init``, ``daemon`` and ``gc``
work on a data dir directly; the other commands talk to the running daemon."""
from __future__ import annotations

import argparse
import asyncio
import json
import mimetypes
import os
import sys
from urllib.parse import quote

from . import logs
from .client import Client, ClientError, print_json, resolve
from .config import DEFAULT_LISTEN, Config
from .datalock import DataDirLock
from .errors import VaultError
from .masterkey import DEMO_KEY_FILE, KeySource, KeyStoreError, rewrap, storage
from .node import InitError, close_vault, init_data_dir, open_vault, unlock

# mimetypes looks at the last suffix only (".json"), so double suffixes are matched here first.
_COMPOUND_TYPES = {".fhir.json": "application/fhir+json", ".fhir.xml": "application/fhir+xml"}


def guess_media_type(path: str) -> str:
    """The media type ``put`` sends for a file: by its (double) extension, else octet-stream."""
    name = os.path.basename(path).lower()
    for suffix, media_type in _COMPOUND_TYPES.items():
        if name.endswith(suffix):
            return media_type
    return mimetypes.guess_type(name)[0] or "application/octet-stream"


def _parser() -> argparse.ArgumentParser:
    # --data-dir is accepted before or after the command (`medvault init --data-dir D`).
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--data-dir", default=argparse.SUPPRESS,
                        help="the node's data dir (default: $MEDVAULT_DATA_DIR or ./.medvault)")
    parser = argparse.ArgumentParser(prog="medvault", description="Encrypted medical records on IPFS.",
                                     parents=[common])
    sub = parser.add_subparsers(dest="command", required=True)
    real_add_parser = sub.add_parser
    sub.add_parser = lambda *a, **k: real_add_parser(*a, parents=[common], **k)

    def key_options(p, new: bool = False) -> None:
        group = p.add_mutually_exclusive_group()
        prefix = "--new-" if new else "--"
        group.add_argument(f"{prefix}passphrase-file", metavar="FILE",
                           help="derive the master key from this file's passphrase (Argon2id)"
                           + ("" if new else "; also $MEDVAULT_PASSPHRASE_FILE"))
        group.add_argument(f"{prefix}key-file", metavar="PATH",
                           help="a 32-byte 0600 master key file outside the data dir (created if missing)")

    p = sub.add_parser("init", help="create a data dir, keys and the owner token")
    key_options(p)
    p.add_argument("--backend", choices=("local", "kubo", "cluster"), default=None)
    p.add_argument("--ipfs-api", help="Kubo RPC URL, e.g. http://127.0.0.1:5001")
    p.add_argument("--cluster-api", help="IPFS Cluster REST URL, e.g. http://127.0.0.1:9094")

    p = sub.add_parser("daemon", help="run the node in the foreground")
    key_options(p)
    p.add_argument("--listen", default=None, help=f"HOST:PORT (default {DEFAULT_LISTEN})")
    p.add_argument("--log-level", default="INFO")

    p = sub.add_parser("put", help="store a file as a new record")
    p.add_argument("file", help="a path, or - for standard input")
    p.add_argument("--patient")
    p.add_argument("--type")
    p.add_argument("--title")
    p.add_argument("--tag", action="append", default=[])
    p.add_argument("--date")
    p.add_argument("--content-type", help="media type (default: guessed from the file name; "
                                          "x.fhir.json is application/fhir+json)")
    p.add_argument("--wait-pinned", action="store_true")

    p = sub.add_parser("get", help="write a record's content to a file or stdout")
    p.add_argument("id")
    p.add_argument("-o", "--output")

    p = sub.add_parser("search", help="find records (repeat a filter for AND; a comma inside one is OR)")
    for name in ("since", "until", "q", "cursor"):
        p.add_argument(f"--{name}")
    for name in ("patient", "subject", "type", "code", "identifier", "tag", "date"):
        p.add_argument(f"--{name}", action="append", default=[])
    p.add_argument("--sort", choices=("date", "-date"))
    p.add_argument("--limit", type=int)

    p = sub.add_parser("principal", help="manage principals")
    psub = p.add_subparsers(dest="action", required=True)
    psub.add_parser("add", parents=[common]).add_argument("name")
    psub.add_parser("list", parents=[common])

    p = sub.add_parser("token", help="manage API tokens")
    tsub = p.add_subparsers(dest="action", required=True)
    t = tsub.add_parser("create", parents=[common])
    t.add_argument("--principal", required=True)
    t.add_argument("--scope", action="append", required=True, help="repeatable, or comma-separated")
    t.add_argument("--expires")

    p = sub.add_parser("grant", help="let a principal read a record; prints the share token")
    p.add_argument("id")
    p.add_argument("did")
    p.add_argument("--expires", help="RFC 3339 time the grant stops working")

    p = sub.add_parser("revoke", help="withdraw a grant (re-encrypts the record unless --no-rotate)")
    p.add_argument("id")
    p.add_argument("did")
    p.add_argument("--no-rotate", action="store_true")

    p = sub.add_parser("import", help="bring in a record from a share token")
    p.add_argument("share")

    p = sub.add_parser("export", help="write a patient's records (and envelopes) to a CAR file")
    p.add_argument("--patient", required=True)
    p.add_argument("-o", "--output", required=True)

    p = sub.add_parser("import-car", help="import the records in a CAR file addressed to you")
    p.add_argument("file")

    p = sub.add_parser("emergency", help="break-glass access to a record (audited, needs a reason)")
    p.add_argument("id")
    p.add_argument("--reason", required=True)

    key_options(sub.add_parser("reindex", help="rebuild the index from pinned manifests and envelopes (daemon stopped)"))

    p = sub.add_parser("rekey", help="change the passphrase or key file (daemon stopped; nothing is re-encrypted)")
    key_options(p)
    key_options(p, new=True)

    p = sub.add_parser("pins", help="pin jobs: list, status CID, recover CID (operator)")
    p.add_argument("action", nargs="?", choices=("list", "status", "recover"), default="list")
    p.add_argument("cid", nargs="?")
    p.add_argument("--status", dest="filter", help="list only pins with this status")

    p = sub.add_parser("audit", help="verify the audit chain against its anchors (operator); exit 1 if it fails")
    p.add_argument("action", choices=("verify",))

    p = sub.add_parser("gc", help="delete blocks no pinned record refers to (local backend)")
    p.add_argument("--grace", type=float, default=None, help="seconds a new block is spared (default: config)")
    p.add_argument("--force", action="store_true", help="collect even when the index pins nothing")
    key_options(p)
    return parser


def _data_dir(args) -> str:
    return args.data_dir or os.environ.get("MEDVAULT_DATA_DIR") or ".medvault"


async def _local_command(args) -> int:
    source = KeySource.resolve(args.passphrase_file, args.key_file)
    if args.command == "init":
        backend = args.backend or ("cluster" if args.cluster_api else "kubo" if args.ipfs_api else "local")
        config = Config(data_dir=_data_dir(args), backend=backend, ipfs_api=args.ipfs_api,
                        cluster_api=args.cluster_api)
        print(json.dumps(await init_data_dir(config, source)))
        return 0
    config = Config.load(_data_dir(args))
    # First: a wrong key is refused before anything is written. A gc may go
    # through the running daemon with the owner token alone, so it unlocks
    # only when it opens the data dir itself (open_vault).
    data_key = None if args.command == "gc" else unlock(config, source)
    if args.command == "rekey":
        return _rekey(args, config, source)
    if args.command == "daemon":
        from .server import serve
        logs.setup(args.log_level)
        await serve(config, args.listen or config.listen, source=source, data_key=data_key)
        return 0
    lock = DataDirLock(config.data_dir)
    if not lock.try_acquire():
        if args.command == "reindex":
            raise ClientError("the daemon is running: stop it before `medvault reindex`")
        print_json(await _gc_through_daemon(args))  # only the daemon knows its uploads in flight
        return 0
    try:
        if args.command == "reindex":
            from .reindex import reindex
            print_json(await reindex(config, source))
            return 0
        vault = await open_vault(config, source, data_key)
        try:
            grace = config.gc_grace_seconds if args.grace is None else args.grace
            print_json(await vault.garbage.collect(grace, force=args.force))
        finally:
            await close_vault(vault)
    finally:
        lock.release()
    return 0


def _rekey(args, config: Config, old: KeySource) -> int:
    """Wraps the same data key under a new master key and rewrites config.json;
    a demo key file left in the data dir is then deleted."""
    new = KeySource.given(args.new_passphrase_file, args.new_key_file)
    lock = DataDirLock(config.data_dir)
    if not lock.try_acquire():
        raise ClientError("the daemon is running: stop it before `medvault rekey`")
    try:
        was_beside = storage(config.data_dir, config.master_key, old) == "beside-data"
        config.master_key = rewrap(config.data_dir, config.master_key, old, new)
        config.save()
        demo = os.path.join(config.data_dir, DEMO_KEY_FILE)
        if was_beside and os.path.exists(demo):
            os.unlink(demo)
        print_json({"key_storage": storage(config.data_dir, config.master_key, new)})
    finally:
        lock.release()
    return 0


async def _gc_through_daemon(args) -> dict:
    """The daemon holding this data dir collects, sparing what it has in flight."""
    try:
        with open(os.path.join(_data_dir(args), "api")) as handle:
            api = handle.read().strip()
    except FileNotFoundError:
        raise ClientError("the daemon holding this data dir is starting or stopping; retry") from None
    params = {"force": "true" if args.force else "false"}
    if args.grace is not None:
        params["grace"] = str(args.grace)
    async with Client(api, resolve(_data_dir(args))[1]) as client:
        return await client.request("POST", "/v1/admin/gc", params=params)


async def _client_command(args) -> int:
    api, token = resolve(args.data_dir)
    async with Client(api, token) as client:
        if args.command == "put":
            params = [(k, v) for k, v in (("patient", args.patient), ("type", args.type), ("title", args.title),
                                          ("date", args.date)) if v] + [("tag", t) for t in args.tag]
            if args.wait_pinned:
                params.append(("wait", "pinned"))
            if args.file == "-":
                source, size = sys.stdin.buffer, None
                content_type = args.content_type or "application/octet-stream"
            else:
                source, size = open(args.file, "rb"), os.path.getsize(args.file)
                content_type = args.content_type or guess_media_type(args.file)
            with source:
                print_json(await client.upload("/v1/records", source, size, content_type, params))
        elif args.command == "get":
            path = f"/v1/records/{args.id}/content"
            if args.output:
                partial = args.output + ".partial"
                try:
                    with open(partial, "wb") as sink:
                        await client.download(path, sink)
                    os.replace(partial, args.output)
                finally:
                    if os.path.exists(partial):
                        os.unlink(partial)
            else:
                await client.download(path, sys.stdout.buffer)
        elif args.command == "search":
            params = [(k, str(v)) for k in ("since", "until", "q", "cursor", "limit")
                      if (v := getattr(args, k)) is not None]
            params += [(k, v) for k in ("patient", "subject", "type", "code", "identifier", "tag", "date")
                       for v in getattr(args, k)]
            params += [("_sort", args.sort)] if args.sort else []
            print_json(await client.request("GET", "/v1/records", params=params))
        elif args.command == "principal":
            if args.action == "add":
                print_json(await client.request("POST", "/v1/principals", json={"name": args.name}))
            else:
                print_json(await client.request("GET", "/v1/principals"))
        elif args.command == "grant":
            print_json(await client.request("POST", f"/v1/records/{args.id}/grants",
                                            json={"recipient": args.did, "expires": args.expires}))
        elif args.command == "revoke":
            print_json(await client.request("DELETE", f"/v1/records/{args.id}/grants/{args.did}",
                                            params={"rotate": "false" if args.no_rotate else "true"}))
        elif args.command == "import":
            print_json(await client.request("POST", "/v1/imports", json={"share": args.share}))
        elif args.command == "export":
            partial = args.output + ".partial"
            try:
                with open(partial, "wb") as sink:
                    await client.download(f"/v1/exports?patient={quote(args.patient)}", sink)
                os.replace(partial, args.output)
            finally:
                if os.path.exists(partial):
                    os.unlink(partial)
        elif args.command == "import-car":
            with open(args.file, "rb") as source:
                print_json(await client.upload("/v1/imports/car", source, os.path.getsize(args.file),
                                               "application/vnd.ipld.car", None))
        elif args.command == "emergency":
            print_json(await client.request("POST", f"/v1/records/{args.id}/emergency",
                                            json={"reason": args.reason}))
        elif args.command == "pins":
            if args.action == "list":
                print_json(await client.request("GET", "/v1/pins",
                                                params={"status": args.filter} if args.filter else None))
            elif not args.cid:
                raise ClientError(f"pins {args.action} needs a CID")
            elif args.action == "status":
                print_json(await client.request("GET", f"/v1/pins/{args.cid}"))
            else:
                print_json(await client.request("POST", f"/v1/pins/{args.cid}/recover"))
        elif args.command == "audit":
            result = await client.request("GET", "/v1/audit/verify")
            print_json(result)
            return 0 if result["ok"] else 1
        elif args.command == "token":
            scopes = [s for item in args.scope for s in item.split(",") if s]
            print_json(await client.request("POST", "/v1/tokens", json={
                "principal": args.principal, "scopes": scopes, "expires": args.expires}))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    args.data_dir = getattr(args, "data_dir", None)
    local = args.command in ("init", "daemon", "gc", "reindex", "rekey")
    if args.command == "daemon":
        from .memory import tune_malloc
        tune_malloc()  # before any thread starts (docs/DECISIONS.md, "Memory")
    try:
        return asyncio.run(_local_command(args) if local else _client_command(args))
    except KeyStoreError as exc:  # exit 2: the node cannot be unlocked (nothing was changed)
        print(f"medvault: {exc}", file=sys.stderr)
        return 2
    except (ClientError, VaultError, InitError, FileNotFoundError, ValueError) as exc:
        message = exc.message if isinstance(exc, VaultError) else str(exc)
        print(f"medvault: {message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
