"""Read-only views for the node's web console (node/console/, served by node/api.py):
each ask's lifecycle as a timeline, each prover's terms, load, earnings and the
evidence against it, and the node's peers with its gossip health.

They read the core's state and never change it: everything here is derived from
the signed messages the node holds (what any node holding them would show), except
the peers and gossip counters, which are this node's own. Apart from api.py so the
views can be tested and reused without the HTTP stack.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Final

from p2p_market.core.lifecycle import AskState, SlotState
from p2p_market.core.messages import Ask, Cancel, Commit, InvalidInputs, Proof, Receipt
from p2p_market.core.penalties import penalised
from p2p_market.core.state import MarketState
from p2p_market.node.views import ask_json

STEPS: Final = (
    "placed",
    "committed",
    "assigned",
    "delivered",
    "verified",
    "receipted",
    "reassigned",
    "attested",
    "cancel",
    "state",
)
"""The kinds of timeline step: the messages about an ask and the settlement's moves
(`state` is a change of the ask's lifecycle state: open, assigned, proven, ...)."""

MAX_ASKS: Final = 500
"""The most asks one listing answers (newest first)."""


def _step(t: int, step: str, who: bytes | None = None, **detail: Any) -> dict[str, Any]:
    return {"t": t, "step": step, "who": who.hex() if who else "", "detail": detail}


def timeline(state: MarketState, ask_id: bytes) -> list[dict[str, Any]]:
    """The ask's life in signed-time order: placed, each commit, each slot assigned,
    each proof delivered, each receipt (with the requester's verdict on the proof:
    `verified`), each round reopened after a failed slot (`reassigned`), and every
    change of its state. Times are the messages' signed timestamps and the
    settlement's, in ms."""
    env = state.asks[ask_id]
    ask = env.message
    assert isinstance(ask, Ask)
    steps = [_step(ask.timestamp, "placed", env.signer, size=ask.size, replicas=ask.replicas)]
    receipts: dict[bytes, bytes] = {}
    for mid, event in state.events.get(ask_id, {}).items():
        m = event.message
        if isinstance(m, Commit):
            steps.append(
                _step(
                    m.timestamp,
                    "committed",
                    event.signer,
                    price=m.price,
                    proof_time=m.proof_time,
                    attempt=m.attempt,
                )
            )
        elif isinstance(m, Proof):
            proof_hash, inline = m.proof_hash.hex(), bool(m.proof)
            steps.append(
                _step(m.timestamp, "delivered", event.signer, proof_hash=proof_hash, inline=inline)
            )
        elif isinstance(m, Receipt):
            receipts[mid] = m.prover
            if m.outcome in ("accepted", "invalid"):
                valid = m.outcome == "accepted"
                steps.append(_step(m.timestamp, "verified", m.prover, valid=valid))
            steps.append(_step(m.timestamp, "receipted", m.prover, outcome=m.outcome))
        elif isinstance(m, InvalidInputs):
            steps.append(_step(m.timestamp, "attested", event.signer, reason=m.reason))
        elif isinstance(m, Cancel):
            steps.append(_step(m.timestamp, "cancel", event.signer))
    run = state.run(ask_id)
    if run is not None:
        for slot in run.slots.values():
            steps.append(
                _step(
                    slot.assigned_at,
                    "assigned",
                    slot.prover,
                    price=slot.price,
                    proof_time=slot.proof_time,
                    deadline=slot.deadline,
                    slot=slot.state.value,
                )
            )
        for rnd in run.rounds.values():
            if rnd.id != ask_id:  # a round opened by a receipt that failed a slot
                failed = receipts.get(rnd.id)
                steps.append(_step(rnd.opened_at, "reassigned", failed, slots=rnd.slots))
        before: AskState | None = None
        for t, _event, after in run.history:
            if after is not before:
                steps.append(_step(t, "state", None, state=after.value))
                before = after
    order = {name: n for n, name in enumerate(STEPS)}
    steps.sort(key=lambda s: (s["t"], order[s["step"]]))
    return steps


def ask_entry(state: MarketState, ask_id: bytes) -> dict[str, Any]:
    """An ask's view (GET /v1/asks/{id}) with its timeline."""
    return {**ask_json(state.view(ask_id)), "timeline": timeline(state, ask_id)}


def asks(state: MarketState, limit: int) -> list[dict[str, Any]]:
    """The market's stored asks, newest (signed timestamp) first, at most `limit`."""

    def newest(a: bytes) -> tuple[int, bytes]:
        ask = state.asks[a].message
        assert isinstance(ask, Ask)
        return (-ask.timestamp, a)

    chosen = sorted(state.asks, key=newest)[: max(0, min(limit, MAX_ASKS))]
    return [ask_entry(state, a) for a in chosen]


@dataclasses.dataclass(slots=True)
class _Tally:
    load: int = 0
    assigned: int = 0
    accepted: int = 0
    invalid: int = 0
    timed_out: int = 0
    earned: int = 0


def provers(state: MarketState, reputation: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Every prover with a current bid or a slot of a stored ask: its bid's terms
    (price per unit, proof time, capacity), its load now (slots in progress), what it
    earned (the price of each accepted slot, pay-as-bid), its failed slots (the
    requesters' word: invalid, timed out), and the objective evidence against it
    (equivocations and invalid proofs this node holds, and whether they bar it from
    winning now). `reputation` is the local requester role's view, when it has one."""
    tallies: dict[bytes, _Tally] = {}
    for ask_id in state.asks:
        run = state.run(ask_id)
        if run is None:
            continue
        for slot in run.slots.values():
            t = tallies.setdefault(slot.prover, _Tally())
            t.assigned += 1
            if slot.state.in_progress:
                t.load += 1
            elif slot.state is SlotState.ACCEPTED:
                t.accepted += 1
                t.earned += slot.price
            elif slot.state is SlotState.INVALID:
                t.invalid += 1
            elif slot.state is SlotState.TIMED_OUT:
                t.timed_out += 1
    evidence: dict[bytes, dict[str, int]] = {}
    for mid, env in state.evidence.items():
        kinds = evidence.setdefault(env.signer, {"equivocations": 0, "invalid_proofs": 0})
        kinds["invalid_proofs" if mid in state.invalid_proofs else "equivocations"] += 1
    current = state.book.current
    out = []
    for prover in sorted(set(current) | set(tallies)):
        stored = current.get(prover)
        bid = stored.bid if stored is not None else None
        t = tallies.get(prover, _Tally())
        held = evidence.get(prover, {"equivocations": 0, "invalid_proofs": 0})
        entry: dict[str, Any] = {
            "prover": prover.hex(),
            "bid": stored.id.hex() if stored is not None else None,
            "price": bid.price if bid else None,
            "proof_time": bid.proof_time if bid else None,
            "capacity": bid.capacity if bid else None,
            "expires_at": bid.expires_at if bid else None,
            "load": t.load,
            "assigned": t.assigned,
            "accepted": t.accepted,
            "invalid": t.invalid,
            "timed_out": t.timed_out,
            "earned": t.earned,
            "evidence": {**held, "penalised": penalised(state.penalties, prover, state.now)},
        }
        if reputation is not None and prover.hex() in reputation:
            entry["reputation"] = reputation[prover.hex()]
        out.append(entry)
    return out


def peers(node: Any) -> dict[str, Any]:
    """The node's connected peers (with the keepalive's round-trip time) and its gossip
    health: frame counters, peers whose frames were rejected, the liveness figures."""
    host = getattr(node, "host", None)
    gossip = getattr(node, "gossip", None)
    liveness: dict[str, Any] = node.liveness() if hasattr(node, "liveness") else {}
    rtt: dict[str, int] = liveness.get("rtt_ms", {})
    rejected: dict[str, int] = {}
    if gossip is not None:
        rejected = {p.to_base58(): n for p, n in gossip.bad_peers().items()}
    listed = []
    if host is not None:
        network = host.get_network()
        for peer_id in list(network.connections):
            name = peer_id.to_base58()
            try:
                addrs = [str(a) for a in host.get_peerstore().addrs(peer_id)]
            except Exception:  # py-libp2p raises for a peer with no stored address
                addrs = []
            listed.append(
                {
                    "peer": name,
                    "addrs": addrs[:4],
                    "rtt_ms": rtt.get(name),
                    "rejected_frames": rejected.get(name, 0),
                }
            )
    listed.sort(key=lambda p: str(p["peer"]))
    stats = gossip.stats if gossip is not None else None
    counters: dict[str, int] = {}
    if stats is not None:
        counters = {
            f.name: getattr(stats, f.name)
            for f in dataclasses.fields(stats)
            if isinstance(getattr(stats, f.name), int)
        }
    hub = getattr(node, "events", None)
    return {
        "peers": listed,
        "gossip": counters,
        "liveness": {k: v for k, v in liveness.items() if isinstance(v, int)},
        "event_clients": hub.subscribers if hub is not None else 0,
    }
