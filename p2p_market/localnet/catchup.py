"""When a node cut off from the others has caught up after the heal: the final
comparison (checks.py) runs only once the market settles, so its time says little
about how fast a healed node recovers. This watches from the heal on: the node has
caught up when every node holds every ask whose lifetime ended before the heal, each
with the same number of envelopes (its commits, proofs, receipts...), so nothing of
that history is missing anywhere (issue 13: a node cut off for longer than an ask's lifetime
never got back the asks that expired meanwhile)."""

from __future__ import annotations

from typing import Any


def caught_up(checks: list[dict[str, Any] | None], asks: set[str]) -> bool:
    """True when every node's /check holds each of `asks` with one envelope count."""
    if not asks or any(c is None for c in checks):
        return False
    counts = [c.get("ask_envelopes", {}) for c in checks if c is not None]
    for ask in asks:
        seen = {held.get(ask) for held in counts}
        if len(seen) != 1 or None in seen:
            return False
    return True


def lacking(
    checks: list[dict[str, Any] | None], names: list[str], asks: set[str]
) -> dict[str, int]:
    """How many of `asks` each node lacks or holds with fewer envelopes than the most."""
    counts = [(c or {}).get("ask_envelopes", {}) for c in checks]
    out: dict[str, int] = {}
    for name, held in zip(names, counts, strict=True):
        short = sum(1 for a in asks if held.get(a, 0) < max(int(h.get(a, 0)) for h in counts))
        if short:
            out[name] = short
    return out
