"""The simulated network's hot path: the event calendar, duplicate suppression (the
IDONTWANT model) and the shortcuts the shell takes instead of asking the core."""

from __future__ import annotations

from dataclasses import replace

from p2p_market.core.messages import sha256
from p2p_market.core.verdict import Reason
from p2p_market.dst import SCENARIOS, simulate
from p2p_market.dst.network import EventLoop, latency_factors
from p2p_market.dst.node import SimNode
from p2p_market.dst.run import build, simulate_world


def test_events_run_in_time_then_schedule_order() -> None:
    loop = EventLoop(100)
    seen: list[str] = []

    def note(name: str) -> None:
        seen.append(name)
        if name == "b":  # scheduled while its own millisecond runs: after the rest of it
            loop.after(0, note, "b+0")
            loop.at(50, note, "past")  # the past is now
            loop.after(1, note, "b+1")

    loop.at(105, note, "c")
    loop.at(103, note, "a")
    loop.at(105, note, "d")
    loop.at(103, note, "b")
    loop.at(103, note, "b2")
    loop.run_until(104)
    assert seen == ["a", "b", "b2", "b+0", "past", "b+1"]
    assert loop.now == 104 and loop.processed == 6
    loop.run_until(200)
    assert seen[6:] == ["c", "d"] and loop.processed == 8 and loop.now == 200


def test_latency_factors_are_the_lognormal_quantiles() -> None:
    f = latency_factors(0.25)
    assert len(f) == 4096 and f == sorted(f)
    assert abs(f[2047] * f[2048] - 1.0) < 1e-9  # symmetric around the median, 1
    assert 2.4 < f[-1] < 2.6  # about 3.7 sigma
    assert set(latency_factors(0.0)) == {1.0}


def test_idontwant_sends_fewer_frames_and_the_run_still_converges() -> None:
    sc = replace(SCENARIOS["calm"], nodes=30, seconds=8)
    on = simulate(sc, 3)
    off = simulate(replace(sc, idontwant=False), 3)
    assert on.ok, on.failures
    assert off.ok, off.failures
    assert off.frames_suppressed == 0 < on.frames_suppressed
    assert on.frames_sent < off.frames_sent
    assert on.events < off.events
    assert on.divergent_asks == off.divergent_asks == 0
    assert on.asks > 0 and on.proven > 0


def test_idontwant_with_every_fault_converges() -> None:
    r = simulate(replace(SCENARIOS["mixed-faults"], nodes=20, seconds=12), 8)
    assert r.ok, (r.failures, r.examples)
    assert r.frames_suppressed > 0 and r.crashes > 0 and r.frames_cut > 0


def _forward_counts(node: SimNode, mid: bytes) -> tuple[int, int]:
    """(sent, suppressed) by one forward of the envelope `mid` from `node`."""
    stats = node.world.net.stats
    sent, suppressed = stats.sent, stats.suppressed
    env = next(e for e, _ in node.log if e.id == mid)
    node._forward(env, -1)
    return stats.sent - sent, stats.suppressed - suppressed


def test_suppression_only_for_an_up_peer_over_an_up_link() -> None:
    """A crashed peer told nobody anything (and may restart before the frame
    arrives), and a cut link carries no IDONTWANT: those frames are sent."""
    world = build(replace(SCENARIOS["calm"], nodes=10, seconds=4), 1)
    world.loop.run_until(world.start_ms + 3_000)
    node = world.nodes[0]
    peers = world.net.mesh[0]
    mid = next(e.id for e, _ in node.log if all(world.nodes[p].has(e.id) for p in peers))
    assert _forward_counts(node, mid) == (0, len(peers))
    world.nodes[peers[0]].crash()
    assert _forward_counts(node, mid) == (1, len(peers) - 1)
    world.net.isolated.add(peers[-1])
    assert _forward_counts(node, mid) == (2, len(peers) - 2)


def test_the_shells_shortcuts_agree_with_the_core() -> None:
    """`receive` answers DUPLICATE itself for what the core `holds`, and the
    heartbeat asks `lacking` (set differences over the core's id maps) instead of
    `has` per id: both must say what the core says."""
    sc = replace(SCENARIOS["mixed-faults"], nodes=12, seconds=8)
    world, _ = simulate_world(sc, 2)
    ids = {e.id for node in world.nodes for e, _ in node.log} | {sha256(b"nobody has this")}
    for node in world.nodes:
        assert node.lacking(ids) == {i for i in ids if not node.has(i)}
        assert len(node.lacking(ids)) < len(ids)
        held = [env for env, _ in node.log[:100] if node.state.holds(env.id)]
        assert held  # so the DUPLICATE answer below is checked on every node
        for env in held:
            verdict, effects = node.state.apply_checked(env, node.now())
            assert verdict.reason is Reason.DUPLICATE and effects == []
