"""The award starts the winners (issue 13, finding 6): a prover whose own node ranks
it first, while the requester never saw its commit and awarded another, is never
told it won, so it never waits for confidential inputs the requester will not send.

At 300 ms round trips a winner failed that way ("the requester never sent the
inputs"): its node settled the window at the skew with its own commit on top, the
requester's node without it. Now the requester awards `award_lag_ms` after the
window, well inside the skew, and a node that gets the award announces its winners
at once and as final, so the held-back prover's tentative win is never told.

With the award at the skew (`market(..., award_lag_ms=2_000)`, the old timing) this
test fails: the held-back prover is told it won, starts, and is reorganised away
when the award comes (checked by hand, 2 runs of 2). Its commit is held back by the
node's publish alone, once every node is connected to every other: a new
connection's first sync would carry it."""

from __future__ import annotations

from pathlib import Path

import trio

from p2p_market.core.envelope import parse
from p2p_market.core.lifecycle import AskState
from p2p_market.core.messages import Commit
from p2p_market.markets.devnet import default_market
from p2p_market.node.peers import connected_peers
from p2p_market.node.runtime import Node
from tests.roles.harness import market, wait_state

# The skew is long next to the award lag: the award decides well before it.
SLOW_SETTLE = default_market(commit_window_ms=1_000, stage_ms=200, skew_ms=2_000, difficulty=10)
HOLD_S = 4.0


def hold_commits(node: Node, nursery: trio.Nursery) -> list[bytes]:
    """The node's own commits reach its own core at once and the network only after
    `HOLD_S` (a slow link to everyone else). Returns the commits held so far."""
    held: list[bytes] = []
    publish = node.publish

    async def later(market: bytes, raw: bytes) -> None:
        await trio.sleep(HOLD_S)
        await publish(market, raw)

    async def held_publish(market: bytes, raw: bytes) -> None:
        if isinstance(parse(raw).message, Commit):
            held.append(raw)
            nursery.start_soon(later, market, raw)
        else:
            await publish(market, raw)

    node.publish = held_publish  # type: ignore[method-assign]
    return held


async def test_a_prover_the_requester_did_not_award_is_never_told_it_won(
    tmp_path: Path,
) -> None:
    offers = {"cheap": (3, 5_000), "dear": (6, 5_000)}
    async with market(tmp_path, offers, descriptor=SLOW_SETTLE) as m:
        cheap, dear = m.provers["cheap"], m.provers["dear"]
        # Every node connected to every other, and synced with it: no new connection
        # (whose first sync would carry the held commit) comes during the ask.
        with trio.fail_after(30):
            while any(
                n.host is None
                or len(connected_peers(n.host)) < len(m.nodes) - 1
                or n.syncing_new_peers
                for n in m.nodes
            ):
                await trio.sleep(0.1)
        held = hold_commits(cheap.node, m.nursery)
        fields = {
            "market": m.mid.hex(),
            "max_price": 10,
            "max_proof_time": 10_000,
            "confidential": True,
        }
        ask = await m.requester.request(fields, b"only for the winner")
        with trio.fail_after(30):
            tracked = await m.requester.wait(ask)
        await wait_state(m, ask, AskState.PROVEN)
        assert list(tracked.proofs) == [dear.me]
        # cheap did commit, first and cheaper, and its own node held that commit
        # at the window's end: without the award it would have won there
        assert len(held) == 1 and cheap.stats.commits == 1
        assert cheap.stats.won == 0 and cheap.stats.failed == 0
        assert dear.stats.won == 1 and dear.stats.proved == 1
        assert cheap.node.states[m.mid].reorgs == 0
