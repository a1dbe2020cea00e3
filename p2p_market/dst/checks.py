"""End-of-run checks, on every honest node once the network has healed and settled.

Honest node: behaviour "honest" and a clock within the market's tolerance (offset
at most skew_ms / 2, so any two are at most skew_ms apart). Byzantine nodes run the
same core, but what they hold is their own business. A node whose clock is beyond
the tolerance is outside the protocol's assumptions: it ignores as "from the
future" what others sign, misses what gossip does not re-offer later, and so may
never converge; its disagreements are counted apart (out_of_spec_divergent) and
do not fail a run.

1. Agreement. For every ask, every honest node that holds it reports the same
   (state, winners, accepted provers). A node may lack an ask altogether: one that
   has not reached it before its expiry is refused as expired ever after (such
   asks are counted in asks_not_everywhere).
2. Invariants. `MarketState.check_invariants()` is empty on every honest node:
   among others, no prover holds more assignments at once than its capacity.
3. Service. Every *expected* ask is PROVEN in its requester's view (the requester
   holds its own ask; the agreement check makes every other holder agree),
   withheld commits or not: an awarded attempt's winners are final (market-v1.md
   §12), so a late commit cannot unprove an ask.
   An ask is expected when
     - its requester is honest (not "silent") and never tried to cancel it, and
     - at least `replicas` honest provers offer within its caps (price <=
       max_price, proof_time <= max_proof_time);
   it is excused (counted apart, with a note) when an honest winner crashed and
   timed out, which excludes it from the ask, and too few honest provers are left
   that hold no slot of it (`_starved_by_a_crash`).
   The ask ttl (20 s in the presets) leaves room for a few failed rounds; every
   fault of a preset is short and healed long before the end, and anti-entropy
   (every sync_ms, 5 s in the presets) brings what a fault held back within a
   fraction of the ttl. A scenario whose faults, or whose sync period, could starve
   an ask for its whole ttl must not claim service.
4. Safety. No cancelled ask has a winner and no winner was assigned after its
   ask's expiry (on every honest node; for asks the core archived, the latter is
   part of check_invariants).
5. Garbage. No honest node accepted or forwarded anything the spammer crafted,
   and no no-effect actor won a slot on an honest node.
6. Reorgs. Summed over honest nodes (replays after a restart excluded); a
   scenario may cap them (calm: zero).

The reference node (for the report's figures) is the first honest node with an
exact clock that never crashed, else the first honest node that never crashed.

Retention. A node forgets an ask, with everything about it, once its horizon
`expires_at + 2·max_lifetime` has passed (protocols/market-v1.md §15): in a run
longer than that (about 140 virtual seconds with the presets' 20 s asks and 60 s
lifetime), the asks of its beginning are gone from every node by the end, rightly.
So the checks do not wait for the end to read such an ask: `watch_retention`
schedules, for every ask placed, a reading of every honest node's view of it at the
last moment no node can have forgotten it yet (`retire`), and every check above
uses that reading for it (`held`). An ask that long past its expiry is settled: no
honest message about it is still on its way (anti-entropy runs every few seconds).
Before this, such asks counted as "ended missing": the checker failed
`--seconds 120` runs of the calm preset for asks that every node had held PROVEN up
to their horizon (tests/dst/test_dst.py, the retention test).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from p2p_market.core.lifecycle import AskState, SlotState
from p2p_market.core.messages import Receipt
from p2p_market.core.reference import fold_differences
from p2p_market.dst.finality import watch_of
from p2p_market.dst.node import PROVER, AskRecord, HeldView, SimNode, World

EXAMPLES = 5


@dataclass(slots=True)
class Checks:
    reference: int
    asks_compared: int = 0
    divergent_asks: int = 0
    out_of_spec_divergent: int = 0
    asks_not_everywhere: int = 0
    invariant_violations: int = 0
    expected: int = 0
    expected_unproven: int = 0
    expected_starved_by_crash: int = 0
    false_timeouts: int = 0
    cancelled_or_expired_assigned: int = 0
    reorgs: int = 0
    replay_reorgs: int = 0
    no_effect_won: int = 0
    examples: list[str] = field(default_factory=list)

    def note(self, text: str) -> None:
        if len(self.examples) < 4 * EXAMPLES:
            self.examples.append(text)


@dataclass(slots=True)
class FoldChecks:
    """`--check-fold`: every node's kept settlement fold against the fold from scratch
    of what it holds (core/reference.py), at a few checkpoints and at the end. Every
    node that is up is checked, byzantine or not: the fold is a property of the core
    for any set of stored messages. Reading a relay's fold between its ticks folds
    its pending messages then rather than at its next tick (dst/relay.py): the same
    result if the fold is right, though its counters of in-place folds may differ."""

    checks: int = 0
    differing: int = 0
    examples: list[str] = field(default_factory=list)

    def check(self, world: World, label: str) -> None:
        for n in world.nodes:
            if not n.up:
                continue
            self.checks += 1
            diff = fold_differences(n.state)
            if not diff:
                continue
            self.differing += 1
            if len(self.examples) < 4 * EXAMPLES:
                who = n.role if n.honest else f"{n.role}, {n.behaviour}"
                self.examples.append(f"node {n.idx} ({who}) {label}: " + "; ".join(diff))


def in_spec(world: World, node: SimNode) -> bool:
    """A clock within the tolerance: any two such nodes are at most skew_ms apart."""
    return abs(node.offset_ms) * 2 <= world.market.skew_ms


def honest_nodes(world: World) -> list[SimNode]:
    return [n for n in world.nodes if n.honest and in_spec(world, n)]


def out_of_spec_nodes(world: World) -> list[SimNode]:
    return [n for n in world.nodes if n.honest and not in_spec(world, n)]


def reference_node(world: World) -> SimNode:
    honest = honest_nodes(world)
    calm = [n for n in honest if not n.downtime and n.offset_ms == 0]
    never_crashed = [n for n in honest if not n.downtime]
    return (calm or never_crashed or honest)[0]


def watch_retention(world: World) -> None:
    """Read every ask placed from now on (`retire`) just before any node may forget
    it: a node prunes an ask at its first tick with local time past
    `expires_at + 2·L`, so at virtual time `expires_at + 2·L - (the largest clock
    offset)` every node still holds it (or never got it)."""
    horizon = 2 * world.market.max_lifetime_ms
    lead = max(n.offset_ms for n in world.nodes)

    def schedule(rec: AskRecord) -> None:
        world.loop.at(rec.expires_at + horizon - lead, retire, world, rec)

    world.on_ask_placed = schedule


def retire(world: World, rec: AskRecord) -> None:
    """Every honest node's view of the ask, from now on what the checks read for it.
    A node that is down is read too: its state is the one it crashed with, which is
    what its log replays to on restart (and the ask ended long before)."""
    rec.retired = {
        n.idx: _read(n, rec.id) for n in world.nodes if n.honest and rec.id in n.state.asks
    }
    watch = watch_of(world)
    if watch is not None:
        watch.retire(rec.id)


def retired_asks(world: World) -> int:
    """Asks read at their retention horizon rather than at the end of the run."""
    return sum(rec.retired is not None for rec in world.asks.values())


def held(world: World, node: SimNode, ask_id: bytes) -> HeldView | None:
    """What `node` holds about the ask for the checks: its reading at the retention
    horizon if the ask got there, else its current state (None: it does not hold it)."""
    rec = world.asks.get(ask_id)
    if rec is not None and rec.retired is not None:
        return rec.retired.get(node.idx)
    if ask_id not in node.state.asks:
        return None
    return _read(node, ask_id)


def _read(node: SimNode, ask_id: bytes) -> HeldView:
    return HeldView(node.state.view(ask_id), _false_timeouts(node, ask_id))


def run_checks(world: World) -> Checks:
    honest = honest_nodes(world)
    ref = reference_node(world)
    out = Checks(reference=ref.idx)

    # 1. agreement
    lagging = out_of_spec_nodes(world)
    for ask_id in world.asks:
        views = [_summary(held(world, n, ask_id)) for n in honest]
        holding = [v for v in views if v is not None]
        if not holding:
            continue
        if len(holding) < len(honest):
            out.asks_not_everywhere += 1
        out.asks_compared += 1
        if any(v != holding[0] for v in holding[1:]):
            out.divergent_asks += 1
            if out.divergent_asks <= EXAMPLES:
                kinds = sorted({(v[0].value, len(v[1])) for v in holding})
                out.note(f"divergent ask {ask_id.hex()[:12]}: {len(set(holding))} views {kinds}")
        elif any(_summary(held(world, n, ask_id)) not in (holding[0], None) for n in lagging):
            out.out_of_spec_divergent += 1

    # 2. invariants, 4. safety, 6. reorgs
    for n in honest:
        problems = n.state.check_invariants()
        out.invariant_violations += len(problems)
        for p in problems[:EXAMPLES]:
            out.note(f"node {n.idx}: {p}")
        for ask_id in _asks_of(world, n):
            h = held(world, n, ask_id)
            if h is None:
                continue
            if h.view.state is AskState.CANCELLED and h.view.winners:
                out.cancelled_or_expired_assigned += 1
                out.note(f"node {n.idx}: cancelled ask {ask_id.hex()[:12]} has winners")
            won = [p for p in h.view.winners if p in world.no_effect_keys]
            if won:
                out.no_effect_won += len(won)
                out.note(f"node {n.idx}: a no-effect actor won ask {ask_id.hex()[:12]}")
        # (finished asks the core has archived are covered by check_invariants; asks
        # read at their horizon are forgotten by now, so only the checks on their
        # views, above, reach them at the end)
        for ask_id, run in n.state.settlement().runs.items():
            for slot in run.slots.values():
                if slot.assigned_at > run.ask.expires_at:
                    out.cancelled_or_expired_assigned += 1
                    out.note(f"node {n.idx}: ask {ask_id.hex()[:12]} assigned after expiry")
        out.reorgs += n.reorgs
        out.replay_reorgs += n.replay_reorgs

    # 3. service
    for ask_id, rec in world.asks.items():
        if not rec.expected or rec.cancel_tried:
            continue
        out.expected += 1
        own = held(world, world.nodes[rec.requester], ask_id)
        state = own.view.state if own is not None else None
        if (
            state is not AskState.PROVEN
            and own is not None
            and _starved_by_a_crash(world, rec, own)
        ):
            out.expected_starved_by_crash += 1
            out.note(
                f"expected ask {ask_id.hex()[:12]} excused: an honest winner crashed and timed"
                " out, and too few honest provers are left that hold no slot of it"
            )
        elif state is not AskState.PROVEN:
            out.expected_unproven += 1
            if out.expected_unproven <= EXAMPLES:
                out.note(
                    f"expected ask {ask_id.hex()[:12]} (placed at +{rec.placed_at - world.start_ms}"
                    f" ms, k={rec.replicas}) ended {state.value if state else 'missing'}"
                )
    out.false_timeouts = sum(
        h.false_timeouts
        for ask_id in _asks_of(world, ref)
        if (h := held(world, ref, ask_id)) is not None
    )
    return out


def _starved_by_a_crash(world: World, rec: AskRecord, own: HeldView) -> bool:
    """An expected ask that no honest prover is left to serve because of a crash: an
    honest prover that won one of its slots crashed, timed out, and is excluded from
    the ask by the protocol (market-v1.md §10), and fewer honest provers within its
    caps hold no slot of it than the slots still sought. Being expected counts honest
    provers at placement; a crash of one of them mid-slot is the fault injected, not
    the market failing. A timeout of an honest prover that never crashed is not
    excused (a false timeout is a failure of its own)."""
    view = own.view
    crashed = {n.pk for n in world.nodes if n.role == PROVER and n.honest and n.epoch > 0}
    slots = list(zip(view.winners, view.slot_states, strict=True))
    if not any(s is SlotState.TIMED_OUT and p in crashed for p, s in slots):
        return False
    honest = {
        n.pk
        for n in world.nodes
        if n.role == PROVER
        and n.honest
        and n.offer is not None
        and n.offer.price <= rec.max_price
        and n.offer.proof_time <= rec.max_proof_time
    }
    accepted = sum(1 for _, s in slots if s is SlotState.ACCEPTED)
    free = honest - {p for p, _ in slots}
    return len(free) < rec.replicas - accepted


def _asks_of(world: World, node: SimNode) -> list[bytes]:
    """The asks the node holds now, and those read at their horizon it held then."""
    now = [a for a in node.state.asks if a not in world.asks or world.asks[a].retired is None]
    then = [
        a for a, rec in world.asks.items() if rec.retired is not None and node.idx in rec.retired
    ]
    return now + then


Summary = tuple[AskState, tuple[bytes, ...], tuple[bytes, ...]]


def _summary(h: HeldView | None) -> Summary | None:
    if h is None:
        return None
    v = h.view
    return (v.state, v.winners, v.accepted)


def _false_timeouts(node: SimNode, ask_id: bytes) -> int:
    """`timed_out` receipts the fold refused because the proof was in fact on time
    (its requester could not see it: partition, loss, crash). Informational: the
    requester then accepts the proof when it sees it."""
    notes = node.state.settlement().notes
    return sum(
        1
        for e in node.state.events.get(ask_id, {}).values()
        if isinstance(e.message, Receipt)
        and e.message.outcome == "timed_out"
        and notes.get(e.id, "").startswith("cannot time out a slot that is")
    )
