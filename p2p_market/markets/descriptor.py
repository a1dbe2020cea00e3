"""Market descriptors as files: how a market is created, announced and named.

A market is its descriptor (`core.messages.Market`) and its id is the SHA-256 of
the descriptor's canonical body, so there is nothing to register anywhere: whoever
creates a market writes the descriptor to a TOML file (`p2p-market market create`)
and hands the file out; every node that configures the same file follows the same
market (same id, same gossip topic). Changing any field makes a different market.

    # p2p-market market descriptor (protocol v1)
    name = "quick-pow"
    proof_system = "pow"                  # pow (the built-in demo) or external
    verifier = "sha256-leading-zero-bits" # external: the verify command template
    difficulty = 10
    commit_window_ms = 1000
    stage_ms = 200
    skew_ms = 300
    max_lifetime_ms = 86400000
    created_at = 1767225600000
    nonce = 0

Fields left out take the protocol defaults (except `name`, `proof_system`,
`verifier`, `difficulty` and `created_at`, which are required).

A market is named on the command line by a *spec* (`resolve_market`): `devnet`
(the built-in devnet market), the path of a descriptor file, or the 64-hex id of a
known market: devnet, or a descriptor file in the `markets/` directory.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from p2p_market.core.envelope import market_id
from p2p_market.core.messages import Market, MessageError
from p2p_market.markets.descriptor_schema import MarketDescriptor
from p2p_market.markets.devnet import default_market
from p2p_market.markets.schema import validate

MARKETS_DIR: Final = Path("markets")
"""Where descriptor files are looked up by id (relative to the working directory)."""
DEVNET: Final = "devnet"
_HEX_ID: Final = re.compile(r"[0-9a-fA-F]{64}")
_MAX_DESCRIPTOR_BYTES: Final = 64 * 1024


class MarketSpecError(ValueError):
    """A market spec or descriptor file cannot be used; the message is one line."""


@dataclass(frozen=True, slots=True)
class KnownMarket:
    """A market found by `known_markets`: where it came from, and the descriptor or
    the one-line reason it could not be read."""

    source: str
    market: Market | None
    error: str = ""

    @property
    def id(self) -> bytes | None:
        return None if self.market is None else market_id(self.market)


def is_market_id(spec: str) -> bool:
    return _HEX_ID.fullmatch(spec) is not None


def parse_descriptor(text: str, source: str = "<descriptor>") -> Market:
    """A Market from descriptor TOML, checked by the schema
    (markets/descriptor_schema.py), then by Market itself; MarketSpecError naming
    the bad field."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise MarketSpecError(f"{source}: not valid TOML: {exc}") from None
    except RecursionError:  # tomllib recurses once per level of nesting
        raise MarketSpecError(f"{source}: not valid TOML: nested too deeply") from None
    except ValueError as exc:  # int() of an integer of more than 4300 digits (CPython's cap)
        raise MarketSpecError(f"{source}: not valid TOML: {str(exc)[:80]}") from None
    validate(MarketDescriptor, data, "", lambda line: MarketSpecError(f"{source}: {line}"))
    try:
        return Market(**data)
    except MessageError as exc:
        raise MarketSpecError(f"{source}: {exc}") from None


def read_descriptor(path: Path) -> Market:
    try:
        with path.open("rb") as f:
            raw = f.read(_MAX_DESCRIPTOR_BYTES + 1)
    except FileNotFoundError:
        raise MarketSpecError(f"market descriptor not found: {path}") from None
    except IsADirectoryError:
        raise MarketSpecError(f"not a market descriptor file: {path} is a directory") from None
    except OSError as exc:
        raise MarketSpecError(f"cannot read market descriptor {path}: {exc.strerror}") from None
    if len(raw) > _MAX_DESCRIPTOR_BYTES:
        raise MarketSpecError(f"{path}: too large for a market descriptor")
    try:
        text = raw.decode()
    except UnicodeDecodeError:
        raise MarketSpecError(f"{path}: not UTF-8 text") from None
    return parse_descriptor(text, str(path))


def _toml_str(value: str) -> str:
    """A TOML basic string (JSON's escapes are TOML's, except that TOML also
    forbids a raw DEL)."""
    return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")


MARKET_FIELDS: Final = tuple(f.name for f in dataclasses.fields(Market))
"""A descriptor's fields, in the order the file lists them."""


def descriptor_text(market: Market) -> str:
    lines = [
        "# p2p-market market descriptor (protocol v1).",
        f"# market id: {market_id(market).hex()}",
        "# The id is the SHA-256 of these fields: editing any of them makes another market.",
        "# Nodes follow this market by configuring this file: `--market FILE` on the",
        '# command line, or `[[markets]] descriptor = "FILE"` in a node config.',
    ]
    for name in MARKET_FIELDS:
        value = getattr(market, name)
        lines.append(f"{name} = {_toml_str(value) if isinstance(value, str) else value}")
    return "\n".join(lines) + "\n"


def write_descriptor(path: Path, market: Market, *, overwrite: bool = False) -> Path:
    """Write `market` as a descriptor file; never replaces a file unless told to."""
    text = descriptor_text(market)
    assert parse_descriptor(text) == market  # the file reads back as the same market
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if overwrite else os.O_EXCL)
        fd = os.open(path, flags, 0o644)
    except FileExistsError:
        raise MarketSpecError(f"file already exists, not overwriting: {path}") from None
    except OSError as exc:
        raise MarketSpecError(f"cannot write {path}: {exc.strerror}") from None
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    return path


def known_markets(directories: Iterable[Path] = (MARKETS_DIR,)) -> list[KnownMarket]:
    """Devnet, then every `*.toml` descriptor in `directories` (sorted by path); a
    file that cannot be read is listed with its error rather than skipped."""
    found = [KnownMarket(DEVNET, default_market())]
    for directory in directories:
        if not directory.is_dir():
            continue
        for path in sorted(directory.glob("*.toml")):
            try:
                found.append(KnownMarket(str(path), read_descriptor(path)))
            except MarketSpecError as exc:
                found.append(KnownMarket(str(path), None, str(exc)))
    return found


def resolve_market(
    spec: str,
    *,
    base: Path | None = None,
    search: Sequence[Path] | None = None,
    also: Iterable[Market] = (),
) -> Market:
    """The market named by `spec`: `devnet`, a descriptor file (relative paths are
    relative to `base`, default the working directory), or the 64-hex id of a known
    market (devnet, `also`, or a descriptor in `search`, default `<base>/markets`)."""
    spec = spec.strip()
    if not spec:
        raise MarketSpecError("no market given: use devnet, a descriptor file or a market id")
    if spec == DEVNET:
        return default_market()
    root = base if base is not None else Path()
    if is_market_id(spec):
        wanted = bytes.fromhex(spec)
        for market in also:
            if market_id(market) == wanted:
                return market
        dirs = search if search is not None else (root / MARKETS_DIR,)
        for known in known_markets(dirs):
            if known.market is not None and known.id == wanted:
                return known.market
        where = ", ".join(str(d) for d in dirs)
        raise MarketSpecError(
            f"unknown market id {spec[:16]}…: not devnet and no descriptor in {where} has it"
            " (pass the descriptor file instead)"
        )
    path = root / spec
    if not path.exists():
        raise MarketSpecError(
            f"unknown market {spec!r}: expected devnet, a descriptor file"
            " or the 64-hex id of a known market"
        )
    return read_descriptor(path)


def label(market: Market) -> str:
    """`name (id…)` for messages."""
    return f"{market.name} ({market_id(market).hex()[:12]}…)"
