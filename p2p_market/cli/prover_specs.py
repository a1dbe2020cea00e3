"""`request --allow/--deny PROVER`: which provers an ask lets win (market-v1.md §5:
the Ask's signed `allow` and `deny` key lists; every node refuses a commit of a
prover they exclude, so an excluded prover cannot win, whatever its price).

A PROVER is a public key (64 hex), a devnet name (prover-1), or the start of a key
(at least 8 hex characters) as `book` and `asks` show them. A start is matched
against the provers whose bids the node has seen, once the provers are found and
before anything is signed: it must name exactly one, so that what is signed is
exactly what was meant. Bad specs are one line and exit 2, before anything is
published (`resolve` raises BadSpec, for the caller to report: it may run inside
the request's trio run, where exiting is the caller's business).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from p2p_market.cli.common import fail
from p2p_market.core.crypto import devnet_key
from p2p_market.core.limits import MAX_LIST_ITEMS
from p2p_market.markets.devnet import DEVNET_NAMES

MIN_PREFIX: Final = 8
_HEX: Final = re.compile(r"[0-9a-f]+")


class BadSpec(ValueError):
    """A start of a key that names no prover seen, or several."""


@dataclass(frozen=True, slots=True)
class ProverSpecs:
    """The --allow and --deny values, as hex keys or key prefixes (lower case)."""

    allow: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.allow or self.deny)

    def admits(self, prover: str) -> bool:
        """Whether a prover (key hex) may win, as far as the specs can tell now."""
        if self.allow and not any(prover.startswith(a) for a in self.allow):
            return False
        return not any(prover.startswith(d) for d in self.deny)

    def unmatched(self, seen: Iterable[str]) -> list[str]:
        """The starts of keys that match no prover `seen` yet: a prover found within
        the caps says nothing of whether the bid of one named to deny or allow has
        arrived, so the caller waits for these before resolving."""
        known = set(seen)
        return [
            spec
            for spec in (*self.allow, *self.deny)
            if len(spec) < 64 and not any(k.startswith(spec) for k in known)
        ]

    def resolve(self, seen: Iterable[str]) -> tuple[list[str], list[str]]:
        """(allow, deny) as full keys hex, sorted: prefixes matched against the
        provers `seen` (key hex); BadSpec unless each names one."""
        known = sorted(set(seen))
        out: list[list[str]] = []
        for flag, specs in (("--allow", self.allow), ("--deny", self.deny)):
            keys: set[str] = set()
            for spec in specs:
                if len(spec) == 64:
                    keys.add(spec)
                    continue
                hits = [k for k in known if k.startswith(spec)]
                if not hits:
                    raise BadSpec(
                        f"{flag} {spec}: no prover whose key starts so has a bid here;"
                        " give its full key (64 hex)"
                    )
                if len(hits) > 1:
                    raise BadSpec(
                        f"{flag} {spec} is the start of {len(hits)} provers' keys: give more"
                    )
                keys.add(hits[0])
            out.append(sorted(keys))
        return out[0], out[1]


def parse_specs(allow: list[str] | None, deny: list[str] | None) -> ProverSpecs:
    """Check the flags' values (exit 2, one line, if bad)."""
    parsed = []
    for flag, values in (("--allow", allow or []), ("--deny", deny or [])):
        specs = list(dict.fromkeys(_one(flag, v) for v in values))
        if len(specs) > MAX_LIST_ITEMS:
            fail(f"{flag}: at most {MAX_LIST_ITEMS} provers, not {len(specs)}")
        parsed.append(tuple(specs))
    both = [a for a in parsed[0] if any(a.startswith(d) or d.startswith(a) for d in parsed[1])]
    if both:
        fail(f"{both[0]} is in both --allow and --deny")
    return ProverSpecs(allow=parsed[0], deny=parsed[1])


def _one(flag: str, value: str) -> str:
    text = value.strip()
    if text in DEVNET_NAMES:
        return devnet_key(text).public_key.hex()
    lower = text.lower()
    if _HEX.fullmatch(lower) and MIN_PREFIX <= len(lower) <= 64:
        return lower
    fail(
        f"{flag} {value!r}: not a prover's public key (64 hex), the start of one"
        f" ({MIN_PREFIX}+ hex) or a devnet name"
    )
