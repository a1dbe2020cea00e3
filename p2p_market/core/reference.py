"""The reference fold: the settlement folded from scratch, and the kept fold
compared with it.

A node keeps its settlement fold between messages and takes each new message in
where it stands (fold.Fold, protocols/market-v1.md §10.1); the result must be
exactly what `settle` computes from scratch over the same stored messages. This
module defines that reference, builds it for a `MarketState` and compares the
two, so that the property tests (tests/core/test_incremental_fold.py) and the
deterministic simulator (`p2p-market dst --check-fold`) check the same thing the
same way.

The reference folds the node's live asks (stored asks with activity that are not
archived) and their messages, with the archive's fixed slot intervals, up to the
node's `now`: the archive (archive.py) is trusted here, as the kept fold trusts it.

Pure and deterministic like the rest of the core; it reads the state's private
fields because the reference needs exactly the inputs the kept fold was given.
"""

from __future__ import annotations

from typing import Any

from p2p_market.core.book import BidBook
from p2p_market.core.envelope import Envelope
from p2p_market.core.fold import new_fold
from p2p_market.core.messages import Market
from p2p_market.core.penalties import Windows
from p2p_market.core.settlement import Occupancy, Settlement
from p2p_market.core.state import MarketState

PARTS = ("runs", "attempts", "occupancy", "notes", "wakeup")


def settle(
    market: Market,
    book: BidBook,
    asks: list[Envelope],
    events: list[Envelope],
    horizon: int,
    fixed_occupancy: dict[bytes, list[Occupancy]] | None = None,
    penalties: Windows | None = None,
) -> Settlement:
    """The reference: fold the asks with activity and their ask-scoped messages up
    to `horizon`, from scratch, in key order (no message is ever in the past)."""
    fold = new_fold(market, book, asks, events, fixed_occupancy, penalties)
    fold.advance(horizon)
    return fold.settlement()


def reference(state: MarketState) -> Settlement:
    """The settlement folded from scratch over what the kept fold folds."""
    live = sorted(state._live)
    asks = [state.asks[a] for a in live]
    events = [e for a in live for e in state.events[a].values()]
    fixed = state._archive.fixed_occupancy()
    return settle(state.market, state.book, asks, events, state.now, fixed, state.penalties)


def archive_differences(state: MarketState, limit: int = 3) -> list[str]:
    """How the node's archived asks differ from a fold from scratch of every stored
    ask and message, the archive not trusted (no fixed intervals): the check that
    an archived ask is thawed whenever a message could still change it (archive.py).
    One line per differing run or attempt (at most `limit`); empty when equal. Only
    meaningful while nothing has been pruned (a pruned bid changes the full fold)."""
    archived = state._archive.asks
    if not archived:
        return []
    ids = sorted(a for a in state.events if a in state.asks)
    asks = [state.asks[a] for a in ids]
    events = [e for a in ids for e in state.events[a].values()]
    full = canonical(
        settle(state.market, state.book, asks, events, state.now, None, state.penalties)
    )
    kept = canonical(
        Settlement(
            {a: e.run for a, e in archived.items()},
            {k: att for e in archived.values() for k, att in e.attempts.items()},
            {},
            {},
            None,
        )
    )
    # An archived ask is terminal; whether its deadline has passed since (`expired`)
    # is the clock's, not an outcome.
    for c in (kept, full):
        c["runs"] = {a: (r[0], *r[2:]) for a, r in c["runs"].items()}
    out: list[str] = []
    for part in ("runs", "attempts"):
        mine = kept[part]
        ref = {k: v for k, v in full[part].items() if (k if part == "runs" else k[0]) in archived}
        out.extend(_entry_differences(f"archived {part}", mine, ref, "full fold", limit))
    return out


def canonical(s: Settlement) -> dict[str, Any]:
    """Everything the fold decides, in a form two folds can be compared by: each
    part is a dict keyed by ask, attempt, prover or message id (wakeup: one value)."""
    runs = {
        a: (
            r.state,
            r.expired,
            sorted(r.excluded),
            list(r.history),
            sorted((k, x.opened_at, x.slots, list(x.winners)) for k, x in r.rounds.items()),
            sorted(
                (p, x.round, x.attempt, x.commit_id, x.state, x.deadline, x.ended_at, x.proof_hash)
                for p, x in r.slots.items()
            ),
        )
        for a, r in s.runs.items()
    }
    attempts = {
        k: (a.window_start, a.window_end, a.settled, a.winners, sorted(a.candidates))
        for k, a in s.attempts.items()
    }
    occupancy = {
        p: sorted((o.start, o.commit_id, o.end, o.settled, o.end_key) for o in occs)
        for p, occs in s.occupancy.items()
        if occs
    }
    return {
        "runs": runs,
        "attempts": attempts,
        "occupancy": occupancy,
        "notes": dict(s.notes),
        "wakeup": s.next_wakeup,
    }


def fold_differences(state: MarketState, limit: int = 3) -> list[str]:
    """How the node's kept fold differs from the reference, one line per differing
    entry (at most `limit` per part, then a count of the rest); empty when equal.
    Brings the kept fold up to the node's `now` first, as any reader of it does."""
    mine = canonical(state.settlement())
    ref = canonical(reference(state))
    out: list[str] = []
    for part in PARTS:
        a, b = mine[part], ref[part]
        if a == b:
            continue
        if part == "wakeup":
            out.append(f"wakeup: kept {a}, reference {b}")
            continue
        out.extend(_entry_differences(part, a, b, "reference", limit))
    return out


def _entry_differences(
    label: str, kept: dict[Any, Any], other: dict[Any, Any], other_name: str, limit: int
) -> list[str]:
    """One line per key whose entry differs (at most `limit`, then a count)."""
    keys = sorted(set(kept) | set(other), key=repr)
    differing = [k for k in keys if kept.get(k, _MISSING) != other.get(k, _MISSING)]
    out = [
        f"{label} {_name(k)}: kept {_show(kept.get(k, _MISSING))}, "
        f"{other_name} {_show(other.get(k, _MISSING))}"
        for k in differing[:limit]
    ]
    if len(differing) > limit:
        out.append(f"{label}: {len(differing) - limit} more entries differ")
    return out


class _Missing:
    def __repr__(self) -> str:
        return "(absent)"


_MISSING = _Missing()


def _name(key: object) -> str:
    """An ask, prover or message id as its first 12 hex digits; an attempt key as
    ask/round/number."""
    if isinstance(key, bytes):
        return key.hex()[:12]
    if isinstance(key, tuple):
        return "/".join(_name(k) if isinstance(k, bytes) else str(k) for k in key)
    return str(key)


def _show(value: object, width: int = 400) -> str:
    """A compact rendering (ids shortened), cut at `width` characters."""
    text = _short(value)
    return text if len(text) <= width else text[: width - 1] + "…"


def _short(value: object) -> str:
    if isinstance(value, bytes):
        return value.hex()[:8]
    if isinstance(value, list | tuple):
        inner = ", ".join(_short(v) for v in value)
        return f"[{inner}]" if isinstance(value, list) else f"({inner})"
    if hasattr(value, "value") and not isinstance(value, int):
        return str(value.value)
    return repr(value)
