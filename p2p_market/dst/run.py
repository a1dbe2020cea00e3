"""`simulate(scenario, seed) -> Report`: build the world, run it, check it.

Everything inside the loop is virtual time and seeded randomness (separate
streams for the network, the workload, the setup and the faults). The only wall
clock reads are here, around the loop, for `wall_seconds` and `sim_per_wall`, and
around the `--check-fold` comparisons, for their cost (`fold_check_seconds`, not
counted in `wall_seconds`); nothing in the run depends on them.

Python's cyclic garbage collector is paused while the loop runs (`gc_paused`).
A run allocates millions of short-lived containers (frames, events, the core's
intermediate values) over a heap of long-lived ones (every node's state), so the
collector, triggered by allocation counts, kept traversing that heap: about 40% of
the wall time of a 100-node run, for no garbage (a measured run: the collections
during the loop freed nothing). Reference counting frees everything that is not a
cycle as usual; the collector is back on, as it was, once the loop is done.
"""

from __future__ import annotations

import gc
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from p2p_market.core.lifecycle import AskState, SlotState
from p2p_market.core.messages import Market
from p2p_market.core.state import MarketState
from p2p_market.dst.checks import (
    Checks,
    FoldChecks,
    held,
    honest_nodes,
    reference_node,
    retired_asks,
    run_checks,
    watch_retention,
)
from p2p_market.dst.finality import FinalityWatch, watch_of
from p2p_market.dst.node import HONEST, PROVER, RELAY, REQUESTER, Offer, SimNode, World
from p2p_market.dst.planted import ArrivalOrderState
from p2p_market.dst.relay import (
    ArrivalOrderQuietRelay,
    ArrivalOrderRelay,
    ObserveOnTick,
    QuietRelay,
)
from p2p_market.dst.scenarios import Scenario
from p2p_market.markets.devnet import GENESIS_MS

START_MS = GENESIS_MS + 60_000
WALL_FIELDS = ("wall_seconds", "sim_per_wall", "fold_check_seconds")
"""The only fields of a Report that differ between two runs of one seed."""


@dataclass(frozen=True, slots=True)
class Options:
    """How a run is checked, beyond the end-of-run checks every run makes (what
    happens in the run is the Scenario's business)."""

    check_fold: bool = False
    """Compare every node's kept settlement fold with the fold from scratch at
    `fold_checkpoints` evenly spaced moments of the active phase (the last at its
    end) and once more after the final tick; any difference fails the run."""
    fold_checkpoints: int = 4
    require_finality: bool = True
    """Fail the run if an outcome final on some node when a withheld commit came out
    later changed (dst/finality.py): the protocol promises it (market-v1.md §12).
    Off, the figures are still reported."""


DEFAULT = Options()


@dataclass(slots=True)
class Report:
    scenario: str
    seed: int
    nodes: int
    seconds: int
    planted_bug: str | None
    asks: int
    expected: int
    proven: int
    expected_unproven: int
    false_timeouts: int
    """`timed_out` receipts refused because the proof was on time after all (the
    requester could not see it in time); informational."""
    cancelled: int
    expired: int
    timed_out: int
    invalid_proofs: int
    reassigned: int
    """Failed winners (timed out or invalid): each opened a new round of its ask."""
    reorgs: int
    """Winners that changed after a node had announced them, summed over honest
    nodes (relays count theirs at their tick, dst/relay.py; none with
    Scenario.relay_observe off)."""
    replay_reorgs: int
    divergent_asks: int
    out_of_spec_divergent: int
    """Asks on which an honest node with a clock beyond the tolerance disagrees with
    the others (informational: such a node is outside the protocol's assumptions)."""
    asks_compared: int
    asks_not_everywhere: int
    asks_retired: int
    """Asks past their retention horizon before the end (every node forgets them,
    §15): checked as every honest node held them just before (checks.py)."""
    invariant_violations: int
    cancelled_or_expired_assigned: int
    equivocations_seen: int
    garbage_sent: int
    garbage_accepted: int
    garbage_forwarded: int
    crashes: int
    syncs: int
    orphans_released: int
    stale_suggestions: int
    """CommitToAsk effects for asks not OPEN in the node's own view by the time the
    shell acts on them: wasted commits (the fold ignores them), not a failure. See
    tests/dst/test_core_bugs.py (an ask arriving after its children)."""
    frames_sent: int
    frames_lost: int
    frames_cut: int
    frames_suppressed: int
    """Not sent: the peer already held the message (the IDONTWANT model, node.py)."""
    events: int
    signature_checks: int
    """Signature checks the nodes would have made each for itself (node.py,
    Validator): the cost of verification in a real network of this size."""
    signatures_verified: int
    """Checks the simulator made: once per distinct envelope, shared by every node."""
    assign_p50_ms: int | None
    assign_p99_ms: int | None
    complete_p50_ms: int | None
    complete_p99_ms: int | None
    sim_seconds: float
    wall_seconds: float
    sim_per_wall: float
    held_back: int
    """Commits the withholders signed and held back (all released by the end of the
    active phase: `held_back_released`, of which `released_at_active_end` then)."""
    held_back_released: int
    released_at_active_end: int
    held_for_p50_ms: int | None
    held_for_max_ms: int | None
    """How long released commits were held, from signing to release."""
    final_outcomes: int
    """(node, ask) outcomes final on an honest node when a withheld commit came out
    (dst/finality.py)."""
    final_outcomes_changed: int
    """Of those, how many changed afterwards (fails the run with --require-finality)."""
    final_asks_changed: int
    """The distinct asks among them."""
    no_effect_sent: int
    """Messages the no-effect actors published."""
    no_effect_won: int
    """Slots won by a no-effect actor on an honest node (must be 0)."""
    holdback_max_ms: int | None
    """The scenario's holdback_max_ms (None: its default, the active phase)."""
    require_finality: bool
    check_fold: bool
    fold_checks: int
    """Kept folds compared with the fold from scratch (nodes x checkpoints)."""
    fold_differences: int
    """Comparisons that found a difference (each fails the run)."""
    fold_check_seconds: float
    """Wall time spent on those comparisons (a cost figure, like wall_seconds)."""
    ok: bool
    failures: list[str] = field(default_factory=list)
    examples: list[str] = field(default_factory=list)
    fold_examples: list[str] = field(default_factory=list)
    """The first differences found: node, checkpoint, and each differing entry of
    the kept fold and of the reference."""


def percentile(values: list[int], q: float) -> int | None:
    """Nearest-rank percentile; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[int(rank) - 1]


def _state_classes(scenario: Scenario) -> tuple[type[MarketState], type[MarketState]]:
    """(for nodes with a role, for relays): see relay.py."""
    if scenario.planted_bug == "no-tiebreak":
        return ArrivalOrderState, (
            ArrivalOrderRelay if scenario.relay_observe else ArrivalOrderQuietRelay
        )
    return MarketState, (ObserveOnTick if scenario.relay_observe else QuietRelay)


def build(scenario: Scenario, seed: int) -> World:
    full, relay = _state_classes(scenario)

    def new_state(market: Market, local_prover: bytes | None, role: str) -> MarketState:
        cls = relay if role == RELAY else full
        return cls(market, local_prover=local_prover)

    world = World(scenario, seed, START_MS, new_state)
    rng = random.Random(f"{seed}/setup")
    n = scenario.nodes
    order = list(range(n))
    rng.shuffle(order)
    bad = (
        scenario.never_prove
        + scenario.invalid_prover
        + scenario.equivocator
        + scenario.withholder
        + scenario.phantom
    )
    n_prov = max(bad + 2, round(n * scenario.prover_share))
    n_req = max(scenario.silent_requester + 1, round(n * scenario.requester_share))
    if n_prov + n_req + scenario.spammer + scenario.no_effect > n:
        raise ValueError(f"{n} nodes are too few for the roles of scenario {scenario.name}")
    provers, requesters, relays = (
        order[:n_prov],
        order[n_prov : n_prov + n_req],
        order[n_prov + n_req :],
    )
    roles = {i: PROVER for i in provers} | {i: REQUESTER for i in requesters}
    behaviour = dict.fromkeys(range(n), HONEST)
    bad_provers = (
        ["never-proves"] * scenario.never_prove
        + ["invalid-proof"] * scenario.invalid_prover
        + ["equivocator"] * scenario.equivocator
        + ["withholder"] * scenario.withholder
        + ["phantom"] * scenario.phantom
    )
    if len(bad_provers) >= len(provers):
        raise ValueError("no honest prover left")
    for i, b in zip(provers, bad_provers, strict=False):
        behaviour[i] = b
    if scenario.silent_requester >= len(requesters):
        raise ValueError("no honest requester left")
    for i in requesters[: scenario.silent_requester]:
        behaviour[i] = "silent"
    if scenario.spammer + scenario.no_effect > len(relays):
        raise ValueError("not enough relays for the spammers and no-effect actors")
    for i in relays[: scenario.spammer]:
        behaviour[i] = "spammer"
    for i in relays[scenario.spammer : scenario.spammer + scenario.no_effect]:
        behaviour[i] = "no-effect"

    half = scenario.skew_within * scenario.skew_ms / 2
    offsets = {i: round(rng.uniform(-half, half)) if half else 0 for i in range(n)}
    honest_provers = [i for i in provers if behaviour[i] == HONEST]
    for i in rng.sample(honest_provers, min(scenario.skew_beyond, len(honest_provers))):
        offsets[i] = -3 * scenario.skew_ms

    for i in range(n):
        role = roles.get(i, RELAY)
        offer = None
        if role == PROVER:
            offer = Offer(
                price=rng.choice(scenario.prices),
                proof_time=rng.choice(scenario.proof_times),
                capacity=rng.choice(scenario.capacities),
            )
            if behaviour[i] != HONEST and scenario.byzantine_offer is not None:
                price, proof_time = scenario.byzantine_offer
                offer = Offer(price, proof_time, offer.capacity)
            if behaviour[i] == HONEST:
                world.honest_offers.append(offer)
        world.add_node(SimNode(world, i, role, behaviour[i], offer, offsets[i]))
    world.requesters = len(requesters)
    world.no_effect_keys = {node.pk for node in world.nodes if node.behaviour == "no-effect"}
    if scenario.withholder:
        world.finality = FinalityWatch(world, honest_nodes(world))
    watch_retention(world)
    _schedule_faults(world, random.Random(f"{seed}/faults"))
    sync_rng = random.Random(f"{seed}/sync-phase")
    for node in world.nodes:
        node.start_role(first=True)
        world.loop.after(sync_rng.randrange(scenario.sync_ms), node.anti_entropy)
    _every(world, scenario.tick_ms, _tick_all)
    _every(world, scenario.heartbeat_ms, _heartbeat_all)
    return world


def _every(world: World, period: int, fn: object) -> None:
    def step() -> None:
        fn(world)  # type: ignore[operator]
        world.loop.after(period, step)

    world.loop.after(period, step)


def _tick_all(world: World) -> None:
    relay_now = world.loop.now % world.scenario.relay_tick_ms < world.scenario.tick_ms
    for node in world.nodes:
        if node.up and (relay_now or node.role != RELAY):
            node.tick()


def _heartbeat_all(world: World) -> None:
    for node in world.nodes:
        node.heartbeat()


# -- faults ---------------------------------------------------------------------------
def _schedule_faults(world: World, rng: random.Random) -> None:
    sc = world.scenario
    loop, net = world.loop, world.net
    t0, span = world.start_ms, sc.seconds * 1_000
    honest = [n.idx for n in world.nodes if n.behaviour == HONEST]
    rng.shuffle(honest)
    crashing, isolated = honest[: sc.crashes], honest[sc.crashes : sc.crashes + sc.isolate]

    if sc.partition:

        def split() -> None:
            net.split(rng)

        def heal() -> None:
            net.heal()
            for node in world.nodes:
                node.sync_now()

        start = t0 + span * 3 // 10
        loop.at(start, split)
        loop.at(start + _fault_length(sc, span * 2 // 10), heal)

    for i in isolated:
        node = world.nodes[i]

        def cut(i: int = i) -> None:
            net.isolated.add(i)

        def rejoin(node: SimNode = node) -> None:
            net.isolated.discard(node.idx)
            if node.up:
                node.reconnected()

        start = t0 + span * 2 // 10
        loop.at(start, cut)
        loop.at(start + _fault_length(sc, span * 2 // 10), rejoin)

    for i in crashing:
        node = world.nodes[i]
        at = t0 + rng.randint(span // 10, span * 6 // 10)
        back = min(at + rng.randint(2_000, 6_000), t0 + span)
        loop.at(at, node.crash)
        loop.at(back, node.restart)

    bursts = [0]

    def burst_on() -> None:
        bursts[0] += 1
        net.burst_loss = sc.burst_loss

    def burst_off() -> None:
        # A burst of loss is what a stalled or reset connection looks like from the
        # gossip layer; when it ends, the connections come back: sync on reconnect.
        bursts[0] -= 1
        if not bursts[0]:
            net.burst_loss = 0.0
            for node in world.nodes:
                node.sync_now()

    for _ in range(sc.loss_bursts):
        at = t0 + rng.randint(span // 10, span * 8 // 10)
        loop.at(at, burst_on)
        loop.at(min(at + sc.burst_ms, t0 + span), burst_off)


def _fault_length(sc: Scenario, share_ms: int) -> int:
    """A partition or an isolation lasts its share of the active phase, but at most
    half an ask's ttl: a longer cut could starve an ask for its whole life (its
    requester on a side with no prover that meets its caps), and the service check
    counts every ask whose requester and provers are honest as one that must be
    proven (dst/checks.py, 3). Runs of the presets' default length are unchanged."""
    return min(share_ms, sc.ask_ttl_ms // 2)


def _heal_everything(world: World) -> None:
    """At the end of the active phase nothing may stay broken (the presets heal
    earlier; this is the safety net for custom scenarios)."""
    net = world.net
    net.burst_loss = 0.0
    if any(net.side) or net.isolated:
        net.heal()
        net.isolated.clear()
        for node in world.nodes:
            node.sync_now()
    for node in world.nodes:
        if not node.up:
            node.restart()
    for raw, withholder in list(world.withheld.items()):
        world.stats.released_at_active_end += 1
        withholder.release(raw)


# -- the run --------------------------------------------------------------------------
@contextmanager
def gc_paused() -> Iterator[None]:
    """No automatic cyclic collection inside (see the module's docstring); the
    collector's previous state is restored on the way out."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def simulate(scenario: Scenario, seed: int, options: Options = DEFAULT) -> Report:
    return simulate_world(scenario, seed, options)[1]


def simulate_world(
    scenario: Scenario, seed: int, options: Options = DEFAULT
) -> tuple[World, Report]:
    """The run and the world it leaves (every node's state), for tests and digging."""
    world = build(scenario, seed)
    end = world.active_end + scenario.settle_seconds * 1_000
    folds = FoldChecks()
    fold_wall = [0.0]

    def check_folds(label: str) -> None:
        w = time.perf_counter()
        folds.check(world, label)
        fold_wall[0] += time.perf_counter() - w

    if options.check_fold:
        k = max(1, options.fold_checkpoints)
        span = world.active_end - world.start_ms
        for i in range(1, k + 1):
            at = world.start_ms + span * i // k
            world.loop.at(at, check_folds, f"at +{at - world.start_ms} ms")
    wall0 = time.perf_counter()
    with gc_paused():
        world.loop.run_until(world.active_end)
        _heal_everything(world)
        world.loop.run_until(end)
    wall = time.perf_counter() - wall0 - fold_wall[0]  # the simulator's own time
    # Derived state depends on `now` (expiry, deadlines): bring every node to the same
    # latest `now` before comparing. The run is over, so the effects are dropped.
    final = end + max(0, *(n.offset_ms for n in world.nodes))
    for node in world.nodes:
        node.state.tick(final)
    if options.check_fold:
        check_folds(f"at the end (+{final - world.start_ms} ms)")
    watch = watch_of(world)
    if watch is not None:
        watch.finish()
    checks = run_checks(world)
    sim_s = (end - world.start_ms) / 1_000
    report = _report(world, checks, seed, sim_s, wall, options, folds)
    report.fold_check_seconds = round(fold_wall[0], 3)
    return world, report


def _report(
    world: World,
    checks: Checks,
    seed: int,
    sim_s: float,
    wall: float,
    options: Options,
    folds: FoldChecks,
) -> Report:
    sc = world.scenario
    st = world.stats
    ref = reference_node(world)
    states: dict[AskState, int] = {}
    timed_out = invalid = 0
    for ask_id in world.asks:
        h = held(world, ref, ask_id)
        if h is None:
            continue
        view = h.view
        states[view.state] = states.get(view.state, 0) + 1
        timed_out += sum(x is SlotState.TIMED_OUT for x in view.slot_states)
        invalid += sum(x is SlotState.INVALID for x in view.slot_states)
    assign = [r.assigned_at - r.placed_at for r in world.asks.values() if r.assigned_at is not None]
    done = [r.proven_at - r.placed_at for r in world.asks.values() if r.proven_at is not None]

    failures: list[str] = []
    if checks.divergent_asks:
        failures.append(f"{checks.divergent_asks} divergent asks between honest nodes")
    if checks.invariant_violations:
        failures.append(f"{checks.invariant_violations} invariant violations")
    if checks.expected_unproven:
        failures.append(f"{checks.expected_unproven} of {checks.expected} expected asks unproven")
    if checks.cancelled_or_expired_assigned:
        failures.append(
            f"{checks.cancelled_or_expired_assigned} cancelled or expired asks assigned"
        )
    if st.garbage_accepted or st.garbage_forwarded:
        failures.append(
            f"spam accepted {st.garbage_accepted} times, forwarded {st.garbage_forwarded} times"
        )
    if sc.max_reorgs is not None and checks.reorgs > sc.max_reorgs:
        failures.append(f"{checks.reorgs} reorgs (at most {sc.max_reorgs} expected)")
    if not honest_nodes(world):
        failures.append("no honest node")
    fin = watch_of(world)
    changed = len(fin.changed) if fin is not None else 0
    if options.require_finality and changed:
        failures.append(
            f"{changed} outcomes final on a node when a withheld commit came out changed"
            f" ({fin.asks_changed if fin is not None else 0} asks)"
        )
    if checks.no_effect_won:
        failures.append(f"no-effect actors won {checks.no_effect_won} slots")
    if folds.differing:
        failures.append(
            f"{folds.differing} of {folds.checks} kept settlement folds differ from the fold"
            " from scratch"
        )

    net = world.net.stats
    return Report(
        scenario=sc.name,
        seed=seed,
        nodes=sc.nodes,
        seconds=sc.seconds,
        planted_bug=sc.planted_bug,
        asks=len(world.asks),
        expected=checks.expected,
        proven=states.get(AskState.PROVEN, 0),
        expected_unproven=checks.expected_unproven,
        false_timeouts=checks.false_timeouts,
        cancelled=states.get(AskState.CANCELLED, 0),
        expired=states.get(AskState.EXPIRED, 0),
        timed_out=timed_out,
        invalid_proofs=invalid,
        reassigned=timed_out + invalid,
        reorgs=checks.reorgs,
        replay_reorgs=checks.replay_reorgs,
        divergent_asks=checks.divergent_asks,
        out_of_spec_divergent=checks.out_of_spec_divergent,
        asks_compared=checks.asks_compared,
        asks_not_everywhere=checks.asks_not_everywhere,
        asks_retired=retired_asks(world),
        invariant_violations=checks.invariant_violations,
        cancelled_or_expired_assigned=checks.cancelled_or_expired_assigned,
        equivocations_seen=st.equivocations_seen,
        garbage_sent=st.garbage_sent,
        garbage_accepted=st.garbage_accepted,
        garbage_forwarded=st.garbage_forwarded,
        crashes=st.crashes,
        syncs=st.syncs,
        orphans_released=st.orphans_released,
        stale_suggestions=st.stale_suggestions,
        frames_sent=net.sent,
        frames_lost=net.lost,
        frames_cut=net.cut,
        frames_suppressed=net.suppressed,
        events=world.loop.processed,
        signature_checks=world.validator.signature_checks,
        signatures_verified=world.validator.signatures_verified,
        assign_p50_ms=percentile(assign, 50),
        assign_p99_ms=percentile(assign, 99),
        complete_p50_ms=percentile(done, 50),
        complete_p99_ms=percentile(done, 99),
        sim_seconds=sim_s,
        wall_seconds=round(wall, 3),
        sim_per_wall=round(sim_s / wall, 2) if wall > 0 else 0.0,
        held_back=st.held_back,
        held_back_released=st.held_back_released,
        released_at_active_end=st.released_at_active_end,
        held_for_p50_ms=percentile(st.held_for, 50),
        held_for_max_ms=max(st.held_for, default=None),
        final_outcomes=len(fin.recorded) if fin is not None else 0,
        final_outcomes_changed=changed,
        final_asks_changed=fin.asks_changed if fin is not None else 0,
        no_effect_sent=st.no_effect_sent,
        no_effect_won=checks.no_effect_won,
        holdback_max_ms=sc.holdback_max_ms,
        require_finality=options.require_finality,
        check_fold=options.check_fold,
        fold_checks=folds.checks,
        fold_differences=folds.differing,
        fold_check_seconds=0.0,
        ok=not failures,
        failures=failures,
        examples=checks.examples,
        fold_examples=folds.examples,
    )
