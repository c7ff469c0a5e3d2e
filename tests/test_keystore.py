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
