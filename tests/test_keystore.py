"""The keystore keeps keys only sealed under the master key."""
from __future__ import annotations

import os

import pytest

from daemon.identity import Principal
from daemon.keystore import FileKeyStore, KeyStoreError, create_master_key, load_master_key


def test_keys_round_trip_and_are_sealed_on_disk(tmp_path):
    params = create_master_key(str(tmp_path))
    key = load_master_key(str(tmp_path), params)
    store = FileKeyStore(str(tmp_path / "keys"), key)
    alice = Principal.generate("Alice Example")
    store.add(alice)
    again = FileKeyStore(str(tmp_path / "keys"), key)
    assert again.get(alice.did).seed == alice.seed
    assert again.get(alice.did).name == "Alice Example"
    for name in os.listdir(tmp_path / "keys"):
        raw = (tmp_path / "keys" / name).read_bytes()
        assert alice.seed not in raw and alice.seed.hex().encode() not in raw
        assert b"Alice" not in raw
        assert oct(os.stat(tmp_path / "keys" / name).st_mode & 0o777) == "0o600"


def test_wrong_master_key_is_refused(tmp_path):
    params = create_master_key(str(tmp_path))
    store = FileKeyStore(str(tmp_path / "keys"), load_master_key(str(tmp_path), params))
    store.add(Principal.generate("x"))
    with pytest.raises(KeyStoreError):
        FileKeyStore(str(tmp_path / "keys"), b"\x00" * 32)


def test_master_key_file_must_be_private(tmp_path):
    params = create_master_key(str(tmp_path))
    os.chmod(tmp_path / "master.key", 0o644)
    with pytest.raises(KeyStoreError):
        load_master_key(str(tmp_path), params)


def test_passphrase_mode_needs_the_passphrase(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDVAULT_PASSPHRASE", "correct horse battery staple")
    params = create_master_key(str(tmp_path))
    assert params["kind"] == "argon2id" and not (tmp_path / "master.key").exists()
    key = load_master_key(str(tmp_path), params)
    monkeypatch.setenv("MEDVAULT_PASSPHRASE", "wrong")
    with pytest.raises(KeyStoreError):
        load_master_key(str(tmp_path), params)
    monkeypatch.delenv("MEDVAULT_PASSPHRASE")
    with pytest.raises(KeyStoreError):
        load_master_key(str(tmp_path), params)
    assert len(key) == 32


def _legacy_v2(store_dir, key: bytes, principal: Principal, role: str = "principal") -> str:
    """A key file as written before issue 10: did and role in clear, named by the did."""
    import base64
    import json

    from daemon.keystore import _aad, _seal
    inner = json.dumps({"name": principal.name, "did": principal.did, "role": role,
                        "seed": base64.b64encode(principal.seed).decode()}).encode()
    path = os.path.join(store_dir, principal.did.rsplit(":", 1)[-1] + ".key")
    os.makedirs(store_dir, exist_ok=True)
    with open(path, "w") as handle:
        json.dump({"v": 2, "did": principal.did, "role": role, "sealed": _seal(key, _aad(principal.did, role), inner)},
                  handle)
    return path


def test_an_old_data_dir_opens_and_its_key_files_lose_the_clear_did(tmp_path):
    """Before issue 10 the master key sealed key files itself (config had a
    ``check``, no ``wrapped``); such a dir still opens, with nothing to migrate
    but the key files' format."""
    from daemon.masterkey import _CHECK, DOMAIN, seal
    master = os.urandom(32)
    (tmp_path / "master.key").write_bytes(master)
    os.chmod(tmp_path / "master.key", 0o600)
    params = {"kind": "file", "path": "master.key", "check": seal(master, DOMAIN, _CHECK)}
    assert load_master_key(str(tmp_path), params) == master
    alice = Principal.generate("Alice")
    old = _legacy_v2(str(tmp_path / "keys"), master, alice)
    store = FileKeyStore(str(tmp_path / "keys"), master)
    assert store.get(alice.did).seed == alice.seed
    assert not os.path.exists(old)
    (name,) = os.listdir(tmp_path / "keys")
    raw = (tmp_path / "keys" / name).read_bytes()
    assert alice.did.encode() not in raw and alice.did.rsplit(":", 1)[-1] not in name
    assert FileKeyStore(str(tmp_path / "keys"), master).get(alice.did).seed == alice.seed


def test_rewrap_keeps_the_data_key_and_drops_the_old_passphrase(tmp_path):
    from daemon.masterkey import KeySource, WrongKey, rewrap, storage
    old, new = KeySource(passphrase=b"old one"), KeySource(passphrase=b"new one")
    data = str(tmp_path / "data")
    os.makedirs(data)
    params = create_master_key(data, old)
    data_key = load_master_key(data, params, old)
    fresh = rewrap(data, params, old, new)
    assert load_master_key(data, fresh, new) == data_key
    with pytest.raises(WrongKey):
        load_master_key(data, fresh, old)
    assert storage(data, fresh) == "passphrase"
    outside = tmp_path / "outside.key"
    moved = rewrap(data, fresh, new, KeySource(key_file=str(outside)))
    assert load_master_key(data, moved, KeySource(key_file=str(outside))) == data_key
    assert storage(data, moved) == "key-file"
    with pytest.raises(KeyStoreError):  # a key file inside the data dir is no better than the demo
        rewrap(data, moved, KeySource(key_file=str(outside)), KeySource(key_file=os.path.join(data, "k")))


def test_passphrase_files_drop_one_newline_and_repr_hides_them(tmp_path, monkeypatch):
    from daemon.masterkey import PASSPHRASE_FILE_ENV, KeySource
    (tmp_path / "pp").write_bytes(b"two words\n")
    monkeypatch.setenv(PASSPHRASE_FILE_ENV, str(tmp_path / "pp"))
    source = KeySource.resolve()
    assert source.passphrase == b"two words" and "two words" not in repr(source)
    (tmp_path / "empty").write_bytes(b"\n")
    with pytest.raises(KeyStoreError):
        KeySource.resolve(str(tmp_path / "empty"))
