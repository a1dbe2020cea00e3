"""The key-file loaders (node/keyfile.py): `read_key`, with and without a
passphrase, and `read_passphrase`, on a file holding the bytes.

Contract: a SigningKey (or passphrase bytes), or KeyFileError, the one-line error
the CLI prints before exiting with status 2.

A file that says it is encrypted is opened with the passphrase its seed was
encrypted with, so mutations of the encrypted form get past the passphrase
checks; and each file is also opened with the other choice, so the refusals of a
missing or needless passphrase are reached too."""

from __future__ import annotations

import atexit
import contextlib
import shutil
import tempfile
from pathlib import Path

from p2p_market.core.crypto import devnet_key
from p2p_market.fuzz.target import Target
from p2p_market.node.keyfile import KeyFileError, encode_key, read_key, read_passphrase

PASSPHRASE = b"fuzz passphrase"
_DIR = Path(tempfile.mkdtemp(prefix="p2p-market-fuzz-keyfile-"))
atexit.register(shutil.rmtree, _DIR, True)
_FILE = _DIR / "node.pem"


def check(data: bytes) -> None:
    _FILE.write_bytes(data)
    fitting = PASSPHRASE if b"ENCRYPTED" in data else None
    for passphrase in (fitting, None if fitting else PASSPHRASE):
        with contextlib.suppress(KeyFileError):
            read_key(_FILE, passphrase)
    with contextlib.suppress(KeyFileError):
        read_passphrase(_FILE)


def seeds() -> list[bytes]:
    key = devnet_key("fuzz-keyfile")
    return [encode_key(key, None), encode_key(key, PASSPHRASE), b"open sesame\n"]


TARGET = Target(
    name="keyfile",
    about="node: Ed25519 PKCS#8 PEM key files, plain and encrypted, and passphrase files",
    check=check,
    seeds=seeds,
    mutation="text",
)
