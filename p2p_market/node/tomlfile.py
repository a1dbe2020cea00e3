"""Reading a TOML file a command was given (node config, scenario): every way it can
fail is one line naming the file and the problem, in the caller's error type."""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any


def read_toml(path: Path, what: str, error: Callable[[str], Exception]) -> dict[str, Any]:
    """The parsed table; `error(message)` is raised for a missing, unreadable,
    non-UTF-8 or invalid file, one nested too deeply for the parser included (`what`
    names the file's role, e.g. "config file")."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise error(f"{what} not found: {path}") from None
    except IsADirectoryError:
        raise error(f"{what} is a directory: {path}") from None
    except OSError as exc:
        raise error(f"cannot read {what} {path}: {exc.strerror}") from None
    try:
        text = raw.decode()
    except UnicodeDecodeError:
        raise error(f"{path}: not UTF-8 text") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{path}: not valid TOML: {exc}") from None
    except RecursionError:  # tomllib recurses once per level of nested arrays or tables
        raise error(f"{path}: not valid TOML: arrays or tables nested too deeply") from None
