"""Key files on disk: PKCS#8 PEM round trips, passphrases, and every refusal."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
    load_pem_private_key,
)

from p2p_market.core.crypto import SigningKey, devnet_key
from p2p_market.node.keyfile import (
    KeyFileError,
    new_key,
    public_id,
    read_key,
    read_passphrase,
    write_key,
)

SEED = bytes(range(32))


def test_plain_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "node.pem"
    key = SigningKey(SEED)
    write_key(path, key, None)
    data = path.read_bytes()
    assert data.startswith(b"-----BEGIN PRIVATE KEY-----\n")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    loaded = read_key(path, None)
    assert loaded.seed == SEED
    assert loaded.public_key == key.public_key


def test_encrypted_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "node.pem"
    key = SigningKey(SEED)
    write_key(path, key, b"correct horse")
    data = path.read_bytes()
    assert data.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----\n")
    assert SEED not in data
    assert read_key(path, b"correct horse").public_key == key.public_key


def test_the_file_is_standard_pkcs8_for_the_same_key(tmp_path: Path) -> None:
    """Another tool reading the file finds the very public key the node signs with."""
    path = tmp_path / "node.pem"
    key = devnet_key("prover-1")
    write_key(path, key, b"pw")
    other = load_pem_private_key(path.read_bytes(), b"pw")
    assert isinstance(other, Ed25519PrivateKey)
    raw_public = other.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    assert raw_public == key.public_key
    assert public_id(key) == raw_public.hex()


def test_wrong_passphrase(tmp_path: Path) -> None:
    path = tmp_path / "node.pem"
    write_key(path, new_key(), b"right")
    with pytest.raises(KeyFileError, match="wrong passphrase"):
        read_key(path, b"wrong")


def test_missing_passphrase(tmp_path: Path) -> None:
    path = tmp_path / "node.pem"
    write_key(path, new_key(), b"right")
    with pytest.raises(KeyFileError, match="encrypted, a passphrase is needed"):
        read_key(path, None)


def test_passphrase_for_a_plain_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "node.pem"
    write_key(path, new_key(), None)
    with pytest.raises(KeyFileError, match="not encrypted"):
        read_key(path, b"pw")


def test_empty_passphrase_is_refused(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="empty"):
        write_key(tmp_path / "node.pem", new_key(), b"")
    assert not (tmp_path / "node.pem").exists()


def test_refuses_to_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "node.pem"
    write_key(path, SigningKey(SEED), None)
    before = path.read_bytes()
    with pytest.raises(KeyFileError, match="already exists"):
        write_key(path, new_key(), None)
    assert path.read_bytes() == before


def test_overwrite_when_asked(tmp_path: Path) -> None:
    path = tmp_path / "node.pem"
    write_key(path, new_key(), None)
    write_key(path, SigningKey(SEED), None, overwrite=True)
    assert read_key(path, None).seed == SEED
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_creates_the_directory(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "node.pem"
    assert write_key(path, SigningKey(SEED), None) == path
    assert read_key(path, None).seed == SEED


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="key file not found"):
        read_key(tmp_path / "absent.pem", None)


def test_a_directory_is_not_a_key_file(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="cannot read key file"):
        read_key(tmp_path, None)


def test_not_pem(tmp_path: Path) -> None:
    path = tmp_path / "junk.pem"
    path.write_bytes(b"not a key at all\n")
    with pytest.raises(KeyFileError, match="not a PEM key file"):
        read_key(path, None)


def test_damaged_pem(tmp_path: Path) -> None:
    path = tmp_path / "bad.pem"
    path.write_bytes(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    with pytest.raises(KeyFileError, match="damaged"):
        read_key(path, None)


def test_not_an_ed25519_key(tmp_path: Path) -> None:
    path = tmp_path / "ec.pem"
    other = ec.generate_private_key(ec.SECP256R1())
    path.write_bytes(other.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    with pytest.raises(KeyFileError, match="not an Ed25519 key"):
        read_key(path, None)


def test_a_public_key_is_not_a_key_file(tmp_path: Path) -> None:
    path = tmp_path / "pub.pem"
    public = Ed25519PrivateKey.generate().public_key()
    path.write_bytes(public.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo))
    with pytest.raises(KeyFileError, match="not a private key"):
        read_key(path, None)


def test_errors_are_value_errors_on_one_line(tmp_path: Path) -> None:
    with pytest.raises(ValueError) as info:
        read_key(tmp_path / "absent.pem", None)
    assert "\n" not in str(info.value)


def test_new_keys_differ() -> None:
    assert new_key().public_key != new_key().public_key


def test_read_passphrase(tmp_path: Path) -> None:
    path = tmp_path / "pass.txt"
    path.write_bytes(b"s3cret phrase\n")
    assert read_passphrase(path) == b"s3cret phrase"
    path.write_bytes(b"windows\r\n")
    assert read_passphrase(path) == b"windows"
    path.write_bytes(b" keeps inner and leading space \n\n")
    assert read_passphrase(path) == b" keeps inner and leading space \n"


def test_read_passphrase_refusals(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="passphrase file not found"):
        read_passphrase(tmp_path / "absent.txt")
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"\n")
    with pytest.raises(KeyFileError, match="passphrase file is empty"):
        read_passphrase(empty)
