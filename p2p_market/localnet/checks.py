"""The agreement invariants of the deterministic simulator (p2p_market/dst/checks.py),
checked across the real nodes' final states, as each node's control API reports
them after the run has settled:

1. Same state: every honest node reports the same `state_hash()` for the market.
   The hash covers derived state that depends on time, and each node computes it at
   its own `now` (a few ms apart: `now_spread_ms`), so the launcher asks every node
   within a short spell and asks again until they agree or it gives up. A difference
   that outlasts those attempts is not a matter of time; `lacking` says, per node,
   how many asks it lacks that others hold, and their states there (the usual cause:
   an ask that reached the node only after its expiry is refused for good).
   One difference is explained, not a failure: an ask that reached some nodes only
   after it expired is refused by them (a node does not store an expired ask), so
   the hashes differ by asks that expired with no winner anywhere. When that is the
   only difference (same asks otherwise, same number of messages about each, same
   bid count), the disagreement is reported as explained, unless the scenario asks
   for strict agreement (run.strict_agreement).
2. Same winners: for every ask that every honest node holds, the same (state,
   winners, accepted provers). An ask some node lacks is counted, not compared.
3. Invariants: `MarketState.check_invariants()` is empty on every honest node (among
   others: no prover over its capacity, no winner outside the caps, nobody
   assigned after the ask's expiry).
4. Safety: no cancelled ask has a winner; no expired ask holds a live assignment
   it got after its expiry (3 covers the archived asks).

Byzantine nodes run the honest core too; what they report is shown, not judged.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

EXAMPLES = 5


@dataclass
class NodeFinal:
    """One node's final view, from its control API (None: it did not answer)."""

    name: str
    honest: bool
    check: dict[str, Any] | None
    book: dict[str, Any] | None


@dataclass
class Agreement:
    nodes: int = 0
    answered: int = 0
    state_hashes: dict[str, int] = field(default_factory=dict)
    nodes_disagreeing: int = 0
    """Honest nodes whose state_hash differs from the most common one, or that did
    not answer."""
    disagreement_explained: bool = False
    """Every state_hash difference comes from expired, never assigned asks that not
    every node holds (see 1. above)."""
    asks_compared: int = 0
    divergent_asks: int = 0
    divergent_unequally_held: int = 0
    """Divergent asks about which the nodes hold different numbers of messages: some
    node still lacked some of them (a lagging node, not yet a disagreement). The
    others, held with as many messages everywhere, are the ones to look into."""
    asks_not_everywhere: int = 0
    invariant_violations: int = 0
    cancelled_with_winners: int = 0
    now_spread_ms: int | None = None
    """Latest minus earliest `now` at which the honest nodes' checks were computed."""
    lacking: dict[str, dict[str, int]] = field(default_factory=dict)
    """Per honest node that lacks asks other nodes hold: their states elsewhere."""
    failures: list[str] = field(default_factory=list)
    examples: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "honest_nodes": self.nodes,
            "answered": self.answered,
            "state_hashes": self.state_hashes,
            "nodes_disagreeing": self.nodes_disagreeing,
            "disagreement_explained": self.disagreement_explained,
            "asks_compared": self.asks_compared,
            "divergent_asks": self.divergent_asks,
            "divergent_unequally_held": self.divergent_unequally_held,
            "asks_not_everywhere": self.asks_not_everywhere,
            "invariant_violations": self.invariant_violations,
            "cancelled_with_winners": self.cancelled_with_winners,
            "now_spread_ms": self.now_spread_ms,
            "lacking": self.lacking,
            "failures": self.failures,
            "examples": self.examples,
        }


def _same(finals: list[NodeFinal], key: Any) -> bool:
    values = [key(f.check) for f in finals if f.check is not None]
    return all(v == values[0] for v in values)


def hashes_agree(finals: list[NodeFinal]) -> bool:
    honest = [f for f in finals if f.honest]
    hashes = {f.check["state_hash"] if f.check else None for f in honest}
    return len(hashes) == 1 and None not in hashes


def _summary(ask: dict[str, Any]) -> tuple[str, tuple[str, ...], tuple[str, ...]]:
    return (str(ask["state"]), tuple(ask["winners"]), tuple(ask["accepted"]))


def check_agreement(finals: list[NodeFinal], *, strict: bool = False) -> Agreement:
    """`strict` (a scenario's run.strict_agreement): no difference is explained, every
    honest node must report the same state_hash. A WAN scenario asks for it: an ask
    that reached a node only after it expired, and so is missing there for good, is
    the very failure to catch up it is there to find (issue 13, finding 1)."""
    honest = [f for f in finals if f.honest]
    out = Agreement(nodes=len(honest))
    answered = [f for f in honest if f.check is not None and f.book is not None]
    out.answered = len(answered)
    nows = [f.check["now"] for f in answered if f.check and type(f.check.get("now")) is int]
    out.now_spread_ms = max(nows) - min(nows) if nows else None
    if len(answered) < len(honest):
        missing = [f.name for f in honest if f not in answered]
        out.failures.append(f"no final state from {', '.join(missing)}")

    # 2. same winners per ask (first: 1. needs to know which asks are not everywhere)
    views: list[dict[str, dict[str, Any]]] = [
        {a["id"]: a for a in f.book["asks"]} for f in answered if f.book is not None
    ]
    every = set().union(*(v.keys() for v in views)) if views else set()
    for f, v in zip(answered, views, strict=True):
        elsewhere = Counter(
            next(str(w[a]["state"]) for w in views if a in w) for a in every - v.keys()
        )
        if elsewhere:
            out.lacking[f.name] = dict(sorted(elsewhere.items()))
    harmless = True
    for ask_id in sorted(every):
        held = [v[ask_id] for v in views if ask_id in v]
        if len(held) < len(views):
            out.asks_not_everywhere += 1
            harmless = harmless and all(a["state"] == "expired" and not a["winners"] for a in held)
            continue
        out.asks_compared += 1
        if len({_summary(a) for a in held}) > 1:
            out.divergent_asks += 1
            held_counts = {(f.check or {}).get("ask_envelopes", {}).get(ask_id) for f in answered}
            unequal = len(held_counts) > 1
            out.divergent_unequally_held += unequal
            if out.divergent_asks <= EXAMPLES:
                shown = sorted({(a["state"], len(a["winners"])) for a in held})
                also = f", messages held {sorted(held_counts, key=str)}" if unequal else ""
                out.examples.append(f"ask {ask_id[:12]}: views {shown}{also}")
    if out.divergent_asks:
        lagging = out.divergent_unequally_held
        out.failures.append(
            f"{out.divergent_asks} ask(s) with different winners across nodes"
            + (f" ({lagging} of them held with different numbers of messages)" if lagging else "")
        )

    # 1. same state_hash
    counts = Counter(str(f.check["state_hash"]) for f in answered if f.check)
    out.state_hashes = {h[:16]: n for h, n in counts.most_common()}
    majority = counts.most_common(1)[0][0] if counts else None
    out.nodes_disagreeing = len(honest) - (counts[majority] if majority else 0)
    if out.nodes_disagreeing:
        odd = [f.name for f in honest if f.check is None or f.check["state_hash"] != majority]
        shared = set.intersection(*(set(v) for v in views)) if views else set()
        out.disagreement_explained = (
            len(answered) == len(honest)
            and out.asks_not_everywhere > 0
            and harmless
            and _same(answered, lambda c: c.get("bids"))
            and _same(answered, lambda c: {a: n for a, n in c.get("ask_envelopes", {}).items()
                                           if a in shared})
        )  # fmt: skip
        if out.disagreement_explained and strict:
            out.disagreement_explained = False
            out.failures.append(
                f"{out.nodes_disagreeing} node(s) disagree on state_hash: {', '.join(odd)},"
                f" by {out.asks_not_everywhere} expired ask(s) that reached some nodes"
                " after they expired (run.strict_agreement: not explained away)"
            )
        elif out.disagreement_explained:
            out.examples.append(
                f"state_hash differs on {', '.join(odd)} only by {out.asks_not_everywhere}"
                " expired, never assigned ask(s) that reached some nodes after they expired"
            )
        else:
            out.failures.append(
                f"{out.nodes_disagreeing} node(s) disagree on state_hash: {', '.join(odd)}"
            )
            for name, states in out.lacking.items():
                listed = ", ".join(f"{s} {n}" for s, n in states.items())
                out.examples.append(
                    f"{name} lacks {sum(states.values())} ask(s) other nodes hold ({listed})"
                )

    # 3. invariants, 4. safety
    for f in answered:
        assert f.check is not None and f.book is not None
        problems = list(f.check.get("violations", []))
        out.invariant_violations += len(problems)
        for p in problems[:EXAMPLES]:
            out.examples.append(f"{f.name}: {p}")
        for a in f.book["asks"]:
            if a["state"] == "cancelled" and a["winners"]:
                out.cancelled_with_winners += 1
                out.examples.append(f"{f.name}: cancelled ask {a['id'][:12]} has winners")
    if out.invariant_violations:
        out.failures.append(f"{out.invariant_violations} invariant violation(s)")
    if out.cancelled_with_winners:
        out.failures.append(f"{out.cancelled_with_winners} cancelled ask(s) with winners")
    return out
