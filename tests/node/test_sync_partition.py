"""A node cut off for longer than an ask's lifetime catches up when its link comes
back (issue 13, finding 1): while it is away the others place asks, commit, prove,
receipt and let them expire; once it reconnects it must end with the same
`state_hash` as everyone else, soon, and then stop downloading anything.

Whole nodes on 127.0.0.1 (real hosts, gossip, sync, SQLite, pow proofs); the cut is
a `LinkGate` below py-libp2p's swarm."""

from __future__ import annotations

from pathlib import Path

import trio

from p2p_market.core.lifecycle import AskState
from p2p_market.node.runtime import Node
from tests.node.linkgate import LinkGate
from tests.roles.harness import MID, market, node, wait_state

ASK_TTL_MS = 4_000
CUT_S = 8.0
"""Longer than an ask's whole life (ttl, commit window, proof, receipt)."""
TERMINAL = (AskState.PROVEN, AskState.EXPIRED, AskState.CANCELLED)


def agree(nodes: list[Node]) -> bool:
    return len({n.states[MID].state_hash() for n in nodes}) == 1


def difference(x: Node, y: Node) -> str:
    """What one node holds that the other does not, for a failure's message."""
    a, b = x.states[MID], y.states[MID]
    lines = []
    for name, mine, theirs in (
        ("asks", set(a.asks), set(b.asks)),
        ("stored", {e.id for e in a.stored_envelopes()}, {e.id for e in b.stored_envelopes()}),
        ("pending", {m for p in a.pending.values() for m in p}, {m for p in b.pending.values() for m in p}),
    ):
        lines.append(f"{name}: {len(mine)} vs {len(theirs)}, only here {len(mine - theirs)}, only there {len(theirs - mine)}")
    for ask in sorted(set(a.asks) & set(b.asks)):
        if a.view(ask).state is not b.view(ask).state:
            lines.append(f"ask {ask.hex()[:8]}: {a.view(ask).state} vs {b.view(ask).state}")
    return "; ".join(lines)


async def test_a_node_cut_off_longer_than_an_ask_lifetime_catches_up(tmp_path: Path) -> None:
    offers = {"p1": (10, 5_000), "p2": (20, 5_000)}
    async with market(tmp_path, offers) as m:
        assert m.relay.gossip is not None
        x = node(tmp_path, "x", (m.relay.gossip.addr,))
        await m.nursery.start(x.run)
        assert x.host is not None
        gate = LinkGate(x.host)
        with trio.fail_after(20):
            while len(x.states[MID].book.current) < len(offers):
                await trio.sleep(0.05)
        others = m.nodes

        await gate.cut()
        cut_at = trio.current_time()
        fields = {"market": MID.hex(), "max_proof_time": 20_000, "ttl_ms": ASK_TTL_MS}
        proven: list[bytes] = []
        for batch in range(3):  # two provers of capacity 1: two asks at a time
            placed = [
                await m.requester.request({**fields, "max_price": 100}, f"away {batch}.{i}".encode())
                for i in range(2)
            ]
            for a in placed:
                await wait_state(m, a, AskState.PROVEN, timeout=20)
            proven += placed
        unserved = await m.requester.request({**fields, "max_price": 1}, b"nobody bids 1")
        cancelled = await m.requester.request({**fields, "max_price": 1}, b"withdrawn")
        await m.requester.cancel(cancelled)
        asks = [*proven, unserved, cancelled]
        with trio.fail_after(30):  # the others trade: proven, expired, cancelled
            while not all(
                n.states[MID].asks.get(a) is not None
                and n.states[MID].view(a).state in TERMINAL
                for n in others
                for a in asks
            ):
                await trio.sleep(0.05)
        for a in proven:
            assert m.relay.states[MID].view(a).state is AskState.PROVEN
        assert m.relay.states[MID].view(unserved).state is AskState.EXPIRED
        await trio.sleep(max(0.0, CUT_S - (trio.current_time() - cut_at)))
        assert x.clock() > max(m.relay.states[MID].asks[a].message.expires_at for a in asks)  # type: ignore[union-attr]
        assert not any(a in x.states[MID].asks for a in asks)  # it really was away

        gate.restore()
        restored_at = trio.current_time()
        with trio.move_on_after(40):
            while not agree([x, *others]):
                await trio.sleep(0.1)
        assert agree([x, *others]), difference(x, m.relay)
        caught_up_s = trio.current_time() - restored_at
        for a in asks:
            assert x.states[MID].view(a).state is m.relay.states[MID].view(a).state
        print(f"state_hash matched {caught_up_s:.2f} s after the link came back")
