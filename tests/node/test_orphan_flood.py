"""Orphans (messages whose parent never comes) are held within a count and a byte
limit, in memory and on disk.

The attack (issue: orphans): 4,560 proofs of 48 KiB for asks that do not exist, in
40 s: the prover's memory went 101 -> 762 MB and its data dir +220 MB (the count
limit held 10,000 of them; nothing bounded their bytes, and the log kept every one)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from p2p_market.core.limits import MAX_INLINE_PROOF_BYTES, MAX_PENDING_ORPHAN_BYTES
from p2p_market.core.validation import check_envelope
from p2p_market.core.verdict import Reason
from p2p_market.markets.devnet import Actor
from tests.core.world import T0, World
from tests.node.test_runtime import MARKET, MID, make_node, running

PROOF = b"p" * (MAX_INLINE_PROOF_BYTES - 64)
FLOOD = 1_000
"""Orphan proofs of ~48 KiB: three times what the byte limit holds."""


def orphan_proofs(market: object, now: int, n: int) -> list[bytes]:
    return [
        Actor(f"orphan-{i % 7}", market).proof(  # type: ignore[arg-type]
            now=now, ask=hashlib.sha256(b"no such ask %d" % i).digest(), proof=PROOF
        )
        for i in range(n)
    ]


def test_held_orphans_are_bounded_in_bytes_and_the_evicted_are_named() -> None:
    w = World()
    raws = orphan_proofs(w.market, T0, FLOOD)
    for raw in raws:
        assert w.send(raw, T0).reason is Reason.ORPHAN  # check_invariants after each
    held = sum(len(kids) for kids in w.state.pending.values())
    held_bytes = sum(len(e.raw) for kids in w.state.pending.values() for e in kids.values())
    assert held_bytes <= MAX_PENDING_ORPHAN_BYTES
    assert 0 < held < FLOOD
    evicted = w.state.take_evicted_orphans()
    assert len(evicted) == FLOOD - held and w.state.take_evicted_orphans() == []


async def test_an_orphan_flood_leaves_the_log_no_bigger_than_what_is_held(
    tmp_path: Path,
) -> None:
    node = make_node(tmp_path, "orphans")
    async with running(node):
        assert node.log is not None
        raws = orphan_proofs(MARKET, node.clock(), FLOOD)
        for raw in raws:
            _, env = check_envelope(raw)
            assert env is not None
            assert node.admit(env).reason is Reason.ORPHAN
        state = node.states[MID]
        held = sum(len(kids) for kids in state.pending.values())
        assert held < FLOOD
        assert node.log.count(MID) == held  # the evicted were deleted again
        size = sum(f.stat().st_size for f in (tmp_path / "orphans").rglob("*") if f.is_file())
        assert size < 3 * MAX_PENDING_ORPHAN_BYTES, size  # not FLOOD x 48 KiB (48 MB)
