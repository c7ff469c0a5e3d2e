"""Test vectors for audit anchors (docs/FORMAT.md, "Audit anchors";
docs/vectors/audit-anchor-v1.json).

Two anchors of a five-entry chain (entries 1-3, then 4-5 linking to the
first), from fixed node and owner seeds; sealed boxes use a fixed ephemeral
key (format_vectors._seal, libsodium's construction) so every byte
reproduces. ``negative`` holds anchors a reader must refuse, each with the
error medvault raises and, for chain vectors, the anchor it must follow.
Run ``python scripts/anchor_vectors.py`` to rewrite the file.
"""
from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.dirname(__file__))

from format_vectors import _seal  # noqa: E402

from daemon.audit_anchor import build_anchor  # noqa: E402
from daemon.identity import Principal  # noqa: E402
from indexer.audit import GENESIS, entry_hash  # noqa: E402

NODE_SEED = bytes([3]) * 32
OWNER_SEED = bytes([4]) * 32
OTHER_SEED = bytes([5]) * 32
EPHEMERAL = bytes([6]) * 32
OUT = os.path.join(os.path.dirname(__file__), "..", "docs", "vectors", "audit-anchor-v1.json")


def _rows(count: int) -> list[dict]:
    rows, prev = [], GENESIS
    for seq in range(1, count + 1):
        row = {"seq": seq, "time": f"2024-01-01T00:00:0{seq}.000Z", "actor": None if seq == 1 else "did:key:zActor",
               "action": "write", "record": "aaaaaaaaaaaaaaaaaaaaaaaaaa", "outcome": "ok",
               "detail": json.dumps({"version": seq}, sort_keys=True)}
        row.update(prev=prev, hash=entry_hash(prev, row))
        rows.append(row)
        prev = row["hash"]
    return rows


def _seal_fixed(plaintext: bytes, recipient: str) -> bytes:
    return _seal(plaintext, recipient, EPHEMERAL)


def _block(block) -> dict:
    return {"cid": str(block.cid), "hex": block.data.hex()}


def main() -> None:
    node = Principal.from_seed("node", NODE_SEED)
    owner = Principal.from_seed("owner", OWNER_SEED)
    other = Principal.from_seed("other", OTHER_SEED)
    rows = _rows(5)
    first = build_anchor(None, rows[:3], GENESIS, node, owner.did, _seal_fixed)
    second = build_anchor(first.cid, rows[3:], rows[2]["hash"], node, owner.did, _seal_fixed)
    edited = [dict(r) for r in rows[3:]]
    edited[0]["outcome"] = "denied"  # signed, but the entry no longer hashes to its hash
    negative = [
        {"name": "signed-by-another-key", "error": "SignatureError", "follows": "first",
         **_block(build_anchor(first.cid, rows[3:], rows[2]["hash"], other, owner.did, _seal_fixed))},
        {"name": "sealed-to-another-owner", "error": "FormatError", "follows": "first",
         **_block(build_anchor(first.cid, rows[3:], rows[2]["hash"], node, other.did, _seal_fixed))},
        {"name": "entry-does-not-chain", "error": "FormatError", "follows": "first",
         **_block(build_anchor(first.cid, edited, rows[2]["hash"], node, owner.did, _seal_fixed))},
        {"name": "wrong-prev-link", "error": "chain", "follows": "first",
         **_block(build_anchor(None, rows[3:], rows[2]["hash"], node, owner.did, _seal_fixed))},
        {"name": "skips-entries", "error": "chain", "follows": "first",
         **_block(build_anchor(first.cid, rows[4:], rows[3]["hash"], node, owner.did, _seal_fixed))},
    ]
    vectors = {"inputs": {"node_seed": NODE_SEED.hex(), "owner_seed": OWNER_SEED.hex(),
                          "ephemeral_seed": EPHEMERAL.hex(), "rows": rows},
               "node_did": node.did, "owner_did": owner.did,
               "anchors": [_block(first), _block(second)], "negative": negative}
    with open(OUT, "w") as handle:
        json.dump(vectors, handle, indent=2)
        handle.write("\n")


if __name__ == "__main__":
    main()
