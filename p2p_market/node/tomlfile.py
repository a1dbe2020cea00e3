"""Reading a TOML file a command was given (node config, scenario): every way it can
fail is one line naming the file and the problem, in the caller's error type."""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

MAX_BYTES: Final = 1 << 20
"""Far above any config or scenario; a bound for a path such as /dev/zero."""


def read_toml(path: Path, what: str, error: Callable[[str], Exception]) -> dict[str, Any]:
    """The parsed table; `error(message)` is raised for a missing, unreadable, too
    large, non-UTF-8 or invalid file, one nested too deeply for the parser or with an
    integer of more than 4300 digits included, and for a NUL character in a key or
    string (no path, address or command can hold one). `what` names the file's
    role, e.g. "config file"."""
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_BYTES + 1)
    except FileNotFoundError:
        raise error(f"{what} not found: {path}") from None
    except IsADirectoryError:
        raise error(f"{what} is a directory: {path}") from None
    except OSError as exc:
        raise error(f"cannot read {what} {path}: {exc.strerror}") from None
    if len(raw) > MAX_BYTES:
        raise error(f"{what} {path} is larger than {MAX_BYTES >> 20} MiB: is it the right file?")
    try:
        text = raw.decode()
    except UnicodeDecodeError:
        raise error(f"{path}: not UTF-8 text") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{path}: not valid TOML: {exc}") from None
    except RecursionError:  # tomllib recurses once per level of nested arrays or tables
        raise error(f"{path}: not valid TOML: arrays or tables nested too deeply") from None
    except ValueError as exc:  # int() of an integer of more than 4300 digits (CPython's cap)
        raise error(f"{path}: not valid TOML: {str(exc)[:80]}") from None
    try:
        where = _nul_at(data, "")
    except RecursionError:  # dotted keys nest tables without recursing in the parser
        raise error(f"{path}: not valid TOML: tables nested too deeply") from None
    if where is not None:
        raise error(f"{path}: {where} holds a NUL character (\\u0000)")
    return data


def _nul_at(value: Any, where: str) -> str | None:
    """The dotted name of the first key or string holding a NUL character. The
    parser's recursion bounds the depth of arrays and [table] headers, not that of
    dotted keys (`a.a.a...a = 1` a thousand deep), so this may recurse too deep."""
    if isinstance(value, str):
        return where if "\0" in value else None
    if isinstance(value, dict):
        for key, inner in value.items():
            name = f"{where}.{key}" if where else key
            if "\0" in key:
                return name.replace("\0", "\\u0000")
            found = _nul_at(inner, name)
            if found is not None:
                return found
    if isinstance(value, list):
        for i, inner in enumerate(value):
            found = _nul_at(inner, f"{where}[{i}]")
            if found is not None:
                return found
    return None
