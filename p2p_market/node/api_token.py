"""The control API's token: the secret that tells the node's owner from anyone else
who can reach its API port.

On its first start a node writes 32 random bytes, as 64 hex characters and a line
break, to `<data_dir>/api.token` (mode 0600), in the manner of bitcoind's cookie file
or Jupyter's token; later starts read the same file, so a token handed to a script
stays good across restarts. The file is written to a temporary name and linked into
place: a reader never sees half a token, and of two nodes started at once on one data
dir neither replaces the other's. It is never overwritten: to change the token, stop
the node, delete the file and start it again.

Clients send the token as `Authorization: Bearer <token>` (node/api.py checks it).
They read it from the file (`read_token`; the node's ready line names the file as
`api_token_file`) or from the environment variable `P2P_MARKET_API_TOKEN`
(`token_from_env`).
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Final

TOKEN_FILE: Final = "api.token"
TOKEN_ENV: Final = "P2P_MARKET_API_TOKEN"
TOKEN_BYTES: Final = 32
_TOKEN: Final = re.compile(r"[0-9a-fA-F]{64}")


class TokenError(ValueError):
    """A token file or value cannot be used; the message is one line naming why."""


def token_path(data_dir: Path) -> Path:
    """Where the node with this data dir keeps its API token."""
    return data_dir / TOKEN_FILE


def ensure_token(data_dir: Path) -> str:
    """The API token of the node with this data dir: the one in its token file, or a
    new one written there (mode 0600) if there is none yet. TokenError if the file is
    there but is not a token, or others may read or write it (like ssh with a key
    file: a token others can read proves nothing)."""
    path = token_path(data_dir)
    if not path.exists():
        _create(path)
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise TokenError(f"cannot read the API token file {path}: {_why(exc)}") from None
    if not stat.S_ISREG(mode):
        raise TokenError(f"the API token file {path} is not a regular file")
    if mode & 0o077:
        raise TokenError(
            f"the API token file {path} is open to others (mode {stat.S_IMODE(mode):04o}):"
            f" chmod 600 {path}, or delete it for a new token"
        )
    return read_token(path)


def _create(path: Path) -> None:
    token = secrets.token_bytes(TOKEN_BYTES).hex()
    temp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="ascii") as f:
                os.fchmod(f.fileno(), 0o600)  # whatever the umask
                f.write(token + "\n")
                f.flush()
                os.fsync(f.fileno())
            with contextlib.suppress(FileExistsError):  # another start won: keep its token
                os.link(temp, path)
        finally:
            with contextlib.suppress(OSError):
                temp.unlink()
    except OSError as exc:
        raise TokenError(f"cannot write the API token file {path}: {_why(exc)}") from None


def read_token(path: Path) -> str:
    """The token in a token file (surrounding blanks dropped)."""
    try:
        text = path.read_text(encoding="ascii", errors="replace")
    except FileNotFoundError:
        raise TokenError(f"API token file not found: {path}") from None
    except OSError as exc:
        raise TokenError(f"cannot read the API token file {path}: {_why(exc)}") from None
    return check_token(text.strip(), f"the API token file {path}")


def token_from_env(environ: Mapping[str, str] | None = None) -> str | None:
    """The token in P2P_MARKET_API_TOKEN, or None if it is unset or empty."""
    value = (os.environ if environ is None else environ).get(TOKEN_ENV, "").strip()
    return check_token(value, TOKEN_ENV) if value else None


def check_token(value: str, where: str) -> str:
    if _TOKEN.fullmatch(value) is None:
        raise TokenError(f"{where} does not hold an API token (64 hex characters)")
    return value


def _why(exc: OSError) -> str:
    return exc.strerror or str(exc)
