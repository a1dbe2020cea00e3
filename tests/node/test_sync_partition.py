"""A node cut off for longer than an ask's lifetime catches up when its link comes
back (issue 13, finding 1): while it is away the others place asks, commit, prove,
receipt, cancel and let asks expire; once it reconnects it must end with the same
`state_hash` as everyone else, within seconds, and its later sync rounds must
download nothing.

Whole nodes on 127.0.0.1 (real hosts, gossip, sync, SQLite, pow proofs); the cut is
a `LinkGate` below py-libp2p's swarm, so the library's own dial failures, retries
and negative cache are part of the test (before the fix, that cache refused the
node's redials for a minute after the link came back)."""

from __future__ import annotations

import json
from pathlib import Path

import trio

from p2p_market.core.crypto import devnet_key
from p2p_market.core.lifecycle import AskState
from p2p_market.node.config import NodeConfig
from p2p_market.node.runtime import SYNC_TIMEOUT_S, Node
from tests.node.linkgate import LinkGate
from tests.roles.harness import MARKET, MID, market, wait_state

ASK_TTL_MS = 4_000
CUT_S = 8.0
"""At least this long away: longer than an ask's whole life (ttl, commit window,
proof, receipt)."""
TERMINAL = (AskState.PROVEN, AskState.EXPIRED, AskState.CANCELLED)
SYNC_EVERY_S = 1.0
"""The cut-off node's anti-entropy period: several rounds after it caught up."""


def agree(nodes: list[Node]) -> bool:
    return len({n.states[MID].state_hash() for n in nodes}) == 1


def difference(x: Node, y: Node) -> str:
    """What one node holds that the other does not, for a failure's message."""
    a, b = x.states[MID], y.states[MID]
    lines = []
    for name, mine, theirs in (
        ("asks", set(a.asks), set(b.asks)),
        ("stored", {e.id for e in a.stored_envelopes()}, {e.id for e in b.stored_envelopes()}),
        ("orphans", {m for p in a.pending.values() for m in p}, set()),
    ):
        lines.append(f"{name}: {len(mine)} here, {len(theirs)} there, {len(theirs - mine)} missing")
    for ask in sorted(set(a.asks) & set(b.asks)):
        if a.view(ask).state is not b.view(ask).state:
            lines.append(f"ask {ask.hex()[:8]}: {a.view(ask).state} vs {b.view(ask).state}")
    return "; ".join(lines)


def metric(node: Node, name: str) -> float:
    value = node.metrics.registry.get_sample_value(name)
    return value or 0.0


def sync_rounds(node: Node) -> float:
    return sum(
        node.metrics.registry.get_sample_value("p2p_market_sync_runs_total", {"outcome": o}) or 0.0
        for o in ("ok", "failed")
    )


def bystander(tmp: Path, bootstrap: tuple[str, ...]) -> Node:
    cfg = NodeConfig(
        key_file=tmp / "unused.pem",
        data_dir=tmp / "x",
        bootstrap=bootstrap,
        frames_per_second=50.0,
        sync_every_s=SYNC_EVERY_S,
        markets=(MARKET,),
    )
    return Node(cfg, devnet_key("partition-x"))


async def test_a_node_cut_off_longer_than_an_ask_lifetime_catches_up(tmp_path: Path) -> None:
    offers = {"p1": (10, 5_000), "p2": (20, 5_000)}
    async with market(tmp_path, offers) as m:
        assert m.relay.gossip is not None
        x = bystander(tmp_path, (m.relay.gossip.addr,))
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
                await m.requester.request({**fields, "max_price": 100}, b"away %d.%d" % (batch, i))
                for i in range(2)
            ]
            for a in placed:
                await wait_state(m, a, AskState.PROVEN, timeout=20)
            proven += placed
        unserved = await m.requester.request({**fields, "max_price": 1}, b"nobody bids 1")
        cancelled = await m.requester.request({**fields, "max_price": 1}, b"withdrawn")
        await m.requester.cancel(cancelled)
        asks = [*proven, unserved, cancelled]
        with trio.fail_after(30):  # the others traded: proven, expired, cancelled
            while not all(
                n.states[MID].asks.get(a) is not None and n.states[MID].view(a).state in TERMINAL
                for n in others
                for a in asks
            ):
                await trio.sleep(0.05)
        assert m.relay.states[MID].view(unserved).state is AskState.EXPIRED
        await trio.sleep(max(0.0, CUT_S - (trio.current_time() - cut_at)))
        expiries = [m.relay.states[MID].view(a).ask.expires_at for a in asks]
        assert x.clock() > max(expiries)  # every ask it missed has expired
        assert not any(a in x.states[MID].asks for a in asks)  # it really was away
        assert gate.refused > 0  # and its peers' redials (or its own) failed meanwhile

        gate.restore()
        restored_at = trio.current_time()
        with trio.move_on_after(30):
            while not agree([x, *others]):
                await trio.sleep(0.1)
        assert agree([x, *others]), difference(x, m.relay)
        caught_up_s = trio.current_time() - restored_at
        for a in asks:
            assert x.states[MID].view(a).state is m.relay.states[MID].view(a).state
        # The sync run that caught up ends once every peer it asked has answered; each
        # peer that connected is synced in a task of its own, and one that had nothing
        # to give may end first: wait for all of them before reading the counters.
        with trio.fail_after(2 * SYNC_TIMEOUT_S):
            while x.catch_up.last_s is None or x.syncing_new_peers:
                await trio.sleep(0.05)

        # Caught up: the next rounds of anti-entropy download nothing.
        envelopes, size = (
            metric(x, "p2p_market_sync_envelopes_total"),
            metric(x, "p2p_market_sync_bytes_total"),
        )
        rounds = sync_rounds(x)
        with trio.fail_after(10 * SYNC_EVERY_S + 10):
            while sync_rounds(x) < rounds + 3:
                await trio.sleep(0.1)
        assert metric(x, "p2p_market_sync_envelopes_total") == envelopes
        assert metric(x, "p2p_market_sync_bytes_total") == size
        assert metric(x, "p2p_market_sync_refetched_total") == 0
        assert agree([x, *others]), difference(x, m.relay)
        print(
            json.dumps(
                {
                    "cut_s": round(restored_at - cut_at, 2),
                    "asks_missed": len(asks),
                    "reconnect_to_state_hash_s": round(caught_up_s, 2),
                    "reconnect_to_first_full_sync_s": round(x.catch_up.last_s, 2),
                    "envelopes_synced": metric(x, "p2p_market_sync_envelopes_total"),
                    "later_rounds": sync_rounds(x) - rounds,
                    "later_rounds_envelopes": metric(x, "p2p_market_sync_envelopes_total")
                    - envelopes,
                    "later_rounds_bytes": metric(x, "p2p_market_sync_bytes_total") - size,
                }
            )
        )
