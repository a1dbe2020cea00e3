"""A market descriptor file's schema (markets/descriptor.py reads it through this
first, then core/messages.py Market checks what one field cannot tell)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, ClassVar, Literal

from pydantic import AfterValidator

from p2p_market.core import limits as L
from p2p_market.markets.schema import Section, key, problem


def _text(low: int, high: int) -> Callable[[str], str]:
    def check(value: str) -> str:
        if not low <= len(value) <= high:
            raise problem(f" must be text of {low}..{high} characters")
        return value

    return check


class MarketDescriptor(Section):
    """A market descriptor file (markets/descriptor.py): no sections, these keys at
    the top level. What one field's value cannot tell (stage_ms and max_lifetime_ms
    against commit_window_ms) is core/messages.py Market's to check, as for a
    descriptor that comes by gossip."""

    UNKNOWN: ClassVar[str] = "unknown field {name!r} in a market descriptor"
    MISSING: ClassVar[str] = "missing field {name!r}"

    name: Annotated[str, AfterValidator(_text(1, L.MAX_NAME_CHARS))] = key(
        "a name for people; not unique (the id is)",
        kind=f"string of 1..{L.MAX_NAME_CHARS} characters",
    )
    proof_system: Literal["pow", "external", "groth16", "plonk"] = key(
        (
            '`"pow"` (the built-in demo proof of work, not zero-knowledge), `"external"` '
            '(commands, e.g. a zkVM\'s), `"groth16"` or `"plonk"` (a circom circuit proved by '
            "snarkjs; protocols/market-v1.md §23)"
        ),
        kind="string",
    )
    verifier: Annotated[str, AfterValidator(_text(0, L.MAX_TEXT_CHARS))] = key(
        (
            "`external`: the verify command template requesters run (unless their `verify_cmd` "
            'says otherwise); `pow`: a label, by convention `"sha256-leading-zero-bits"`; '
            "`groth16`, `plonk`: `<system>;wasm=<sha256>;zkey=<sha256>;vkey=<sha256>`, the "
            "circuit's artifacts (`market create --circuit` writes it)"
        ),
        kind=f"string of 0..{L.MAX_TEXT_CHARS} characters",
    )
    difficulty: int = key(
        (
            "`pow`: leading zero bits a proof's hash must have (2^d hashes of work), unless an "
            "ask's inputs name their own; `external`, `groth16`, `plonk`: unused, `0` by "
            "convention"
        ),
        ge=0,
        le=64,
    )
    commit_window_ms: int = key(
        "how long provers may commit to an ask before the winners are computed (`W`)",
        L.DEFAULT_COMMIT_WINDOW_MS,
        ge=L.MIN_COMMIT_WINDOW_MS,
        le=L.MAX_COMMIT_WINDOW_MS,
    )
    stage_ms: int = key(
        "delay per rank before a fallback prover commits (`δ`)",
        L.DEFAULT_STAGE_MS,
        ge=1,
        le=L.MAX_COMMIT_WINDOW_MS,
        kind="integer 1..`commit_window_ms`",
    )
    skew_ms: int = key(
        (
            "clock skew tolerated; winners are settled `skew_ms` after their window ends, or "
            "when the requester's award arrives, if sooner (its award lag, 250 ms by default)"
        ),
        L.DEFAULT_SKEW_MS,
        ge=0,
        le=L.MAX_SKEW_MS,
    )
    max_lifetime_ms: int = key(
        (
            "the longest a bid or an ask may live; messages are kept 2 to 3 times this long "
            "past their expiry (`L`)"
        ),
        L.DEFAULT_MAX_LIFETIME_MS,
        ge=L.MIN_COMMIT_WINDOW_MS,
        le=L.MAX_LIFETIME_MS,
        kind=f"integer `commit_window_ms`..{L.MAX_LIFETIME_MS}",
    )
    created_at: int = key(
        "creation time, ms since the Unix epoch (`market create` uses the current time)",
        ge=0,
        le=L.MAX_UINT,
        kind="integer",
    )
    nonce: int = key(
        "tells apart markets that are otherwise equal", 0, ge=0, le=L.MAX_UINT, kind="integer"
    )
