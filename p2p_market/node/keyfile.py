"""Ed25519 key files: PKCS#8 PEM, optionally encrypted with a passphrase.

A node's identity is its Ed25519 public key; the file holds the private key in the
format OpenSSL and most tools read (`openssl pkey -in node.pem -noout -text`). With
a passphrase the PEM is `ENCRYPTED PRIVATE KEY` (PKCS#8 with the best encryption
`cryptography` offers); without one it is a plain `PRIVATE KEY`. Files are created
with mode 0600 and never silently overwritten.
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path
from typing import Final

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    BestAvailableEncryption,
    Encoding,
    KeySerializationEncryption,
    NoEncryption,
    PrivateFormat,
    load_pem_private_key,
)

from p2p_market.core.crypto import SigningKey

StrPath = str | os.PathLike[str]

_PEM_LABEL = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----")
MAX_FILE_BYTES: Final = 64 * 1024
"""A key or passphrase file is far smaller; a bound for a path such as /dev/zero."""
MAX_PASSPHRASE_BYTES: Final = 1023
"""The longest passphrase OpenSSL (and so `cryptography`) encrypts a key with."""


class KeyFileError(ValueError):
    """A key or passphrase file cannot be used; the message is one line naming why."""


def new_key() -> SigningKey:
    """A fresh key from the operating system's random source."""
    return SigningKey(os.urandom(32))


def public_id(key: SigningKey) -> str:
    """The node's identity as text: hex of the 32-byte public key."""
    return key.public_key.hex()


def encode_key(key: SigningKey, passphrase: bytes | None) -> bytes:
    if passphrase is not None and not passphrase:
        raise KeyFileError("the passphrase is empty")
    if passphrase is not None and len(passphrase) > MAX_PASSPHRASE_BYTES:
        raise KeyFileError(
            f"the passphrase is {len(passphrase)} bytes long: at most"
            f" {MAX_PASSPHRASE_BYTES} can encrypt a key file"
        )
    encryption: KeySerializationEncryption = (
        NoEncryption() if passphrase is None else BestAvailableEncryption(passphrase)
    )
    private = Ed25519PrivateKey.from_private_bytes(key.seed)
    return private.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, encryption)


def write_key(
    path: StrPath, key: SigningKey, passphrase: bytes | None, *, overwrite: bool = False
) -> Path:
    """Write `key` to a new file (mode 0600), creating its directory if needed.

    Refuses to replace an existing file unless `overwrite` is set (the devnet keys
    only). Returns the path written."""
    target = Path(path)
    pem = encode_key(key, passphrase)
    try:
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if overwrite:
            target.unlink(missing_ok=True)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise KeyFileError(f"key file already exists, not overwriting: {target}") from None
    except OSError as exc:
        raise KeyFileError(f"cannot write key file {target}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o600)
            f.write(pem)
    except OSError as exc:
        with contextlib.suppress(OSError):
            target.unlink()
        raise KeyFileError(f"cannot write key file {target}: {exc.strerror}") from None
    return target


def read_key(path: StrPath, passphrase: bytes | None) -> SigningKey:
    """Load an Ed25519 private key from a PKCS#8 PEM file."""
    source = Path(path)
    return decode_key(_read_small(source, "key file"), passphrase, source=str(source))


def _read_small(source: Path, what: str) -> bytes:
    """A key or passphrase file's bytes; KeyFileError if it is missing, unreadable
    or larger than MAX_FILE_BYTES (read no further: /dev/zero has no end)."""
    try:
        with source.open("rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        raise KeyFileError(f"{what} not found: {source}") from None
    except OSError as exc:
        raise KeyFileError(f"cannot read {what} {source}: {exc.strerror}") from None
    if len(data) > MAX_FILE_BYTES:
        raise KeyFileError(
            f"{what} {source} is larger than {MAX_FILE_BYTES >> 10} KiB: is it the right file?"
        )
    return data


def decode_key(data: bytes, passphrase: bytes | None, *, source: str = "<key>") -> SigningKey:
    label = _PEM_LABEL.search(data)
    if label is None:
        raise KeyFileError(f"not a PEM key file: {source}")
    kind = label.group(1).decode()
    if "PRIVATE KEY" not in kind:
        raise KeyFileError(f"not a private key (PEM block {kind!r}): {source}")
    encrypted = kind == "ENCRYPTED PRIVATE KEY"
    if encrypted and passphrase is None:
        raise KeyFileError(f"key file is encrypted, a passphrase is needed: {source}")
    if not encrypted and passphrase is not None:
        raise KeyFileError(f"key file is not encrypted, yet a passphrase was given: {source}")
    try:
        private = load_pem_private_key(data, passphrase)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        if encrypted:
            raise KeyFileError(f"wrong passphrase (or damaged key file): {source}") from None
        raise KeyFileError(f"damaged or unsupported PEM private key: {source}") from None
    if not isinstance(private, Ed25519PrivateKey):
        name = type(private).__name__.removeprefix("_")
        raise KeyFileError(f"not an Ed25519 key ({name}): {source}")
    return SigningKey(private.private_bytes_raw())


def read_passphrase(path: StrPath) -> bytes:
    """A passphrase file's content without its final line break; never empty."""
    source = Path(path)
    data = _read_small(source, "passphrase file")
    if data.endswith(b"\r\n"):
        data = data[:-2]
    elif data.endswith(b"\n"):
        data = data[:-1]
    if not data:
        raise KeyFileError(f"passphrase file is empty: {source}")
    return data
