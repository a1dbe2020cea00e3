"""Whole nodes (gossip, sync, storage, API) on 127.0.0.1 in one trio run."""

from __future__ import annotations

import logging
import stat
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import trio
from libp2p.abc import IHost

from p2p_market.core.crypto import devnet_key
from p2p_market.core.envelope import Envelope, market_id, message_id
from p2p_market.core.state import MarketState
from p2p_market.markets.devnet import Actor, default_market
from p2p_market.net.host import connect_all
from p2p_market.node.api_client import ApiClient, ApiError
from p2p_market.node.api_token import TokenError, read_token
from p2p_market.node.config import NodeConfig
from p2p_market.node.newcomers import NewcomerHoldings
from p2p_market.node.runtime import ORPHAN_GRACE_S, Node
from p2p_market.node.storage import EnvelopeLog
from p2p_market.node.sync import SyncServer
from tests.node.hosts import keys, started_hosts

if TYPE_CHECKING:
    from trio_typing import TaskStatus

MARKET = default_market()
MID = market_id(MARKET)


def make_node(
    tmp: Path, name: str, bootstrap: tuple[str, ...] = (), *, sync_every_s: float = 30.0
) -> Node:
    cfg = NodeConfig(
        sync_every_s=sync_every_s,
        key_file=tmp / f"{name}.pem",  # unused: the key is passed in
        data_dir=tmp / name,
        bootstrap=bootstrap,
        frames_per_second=50.0,
        markets=(MARKET,),
    )
    return Node(cfg, devnet_key(f"runtime-{name}"))


def api_client(node: Node) -> ApiClient:
    """A client of the running node's control API, with its token."""
    return ApiClient(f"http://127.0.0.1:{node.api_port}", token=read_token(node.api_token_file))


@asynccontextmanager
async def running(*nodes: Node) -> AsyncIterator[trio.Nursery]:
    async with trio.open_nursery() as nursery:
        for node in nodes:
            await nursery.start(node.run)
        yield nursery
        nursery.cancel_scope.cancel()


async def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.05)


async def test_orders_spread_and_a_late_joiner_syncs(tmp_path: Path) -> None:
    a = make_node(tmp_path, "a")
    async with running(a) as nursery:
        assert a.gossip is not None
        # b syncs every 5 s: 300 orders from 300 fresh keys at once are more than
        # gossip takes from newcomers (node/runtime.py NEWCOMER_*); the rest come by sync
        b = make_node(tmp_path, "b", (a.gossip.addr,), sync_every_s=5.0)
        await nursery.start(b.run)
        await wait_until(lambda: len(b.status()["addrs"]) > 0 and b.status()["peers"] >= 1)
        await a.gossip.wait_for_mesh(MID, b.gossip.peer_id)  # type: ignore[union-attr]
        result = await a.place_bid({"market": MID.hex(), "price": 10, "proof_time": 1_000})
        assert result.status == "accept", result
        await wait_until(lambda: len(b.states[MID].book.current) == 1)
        assert a.metrics.registry.get_sample_value("p2p_market_frames_out_total") == 1
        # a book of a few hundred orders, then a late joiner that only knows b
        now = a.clock()
        for i in range(150):
            await a.submit(Actor(f"p{i}", MARKET).bid(now=now, price=i, proof_time=900))
            await a.submit(Actor(f"r{i}", MARKET).ask(now=now, max_price=50, max_proof_time=999))
        await wait_until(lambda: len(b.states[MID].asks) == 150, timeout=30)
        c = make_node(tmp_path, "c", (b.gossip.addr,))  # type: ignore[union-attr]
        started = trio.current_time()
        await nursery.start(c.run)
        # From every peer it connects to at once (b, then a by peer exchange), in
        # batches: the asks may be complete before the bids are.
        await wait_until(
            lambda: len(c.states[MID].asks) == 150 and len(c.states[MID].book.current) == 151,
            timeout=15,
        )
        assert trio.current_time() - started < 15
        assert sorted(e.id for e in c.states[MID].stored_envelopes()) == sorted(
            e.id for e in a.states[MID].stored_envelopes()
        )


async def test_restart_replays_the_log(tmp_path: Path) -> None:
    a = make_node(tmp_path, "a")
    async with running(a):
        for i in range(20):
            await a.place_bid({"market": MID.hex(), "price": 10 + i, "proof_time": 500})
        await a.place_ask({"market": MID.hex(), "max_price": 99, "max_proof_time": 900})
        before = sorted(e.id for e in a.states[MID].stored_envelopes())
    again = make_node(tmp_path, "a")
    async with running(again):
        after = sorted(e.id for e in again.states[MID].stored_envelopes())
    assert after == before and len(before) == 21


async def test_the_api_token_is_made_at_the_first_start_and_kept(tmp_path: Path) -> None:
    a = make_node(tmp_path, "a")
    assert a.api_token_file == tmp_path / "a" / "api.token"
    assert not a.api_token_file.exists()
    async with running(a):
        token = read_token(a.api_token_file)
        assert stat.S_IMODE(a.api_token_file.stat().st_mode) == 0o600
        inode = a.api_token_file.stat().st_ino
    again = make_node(tmp_path, "a")
    async with running(again):
        assert read_token(again.api_token_file) == token
        assert again.api_token_file.stat().st_ino == inode  # read, not written again
    # A token file others may read is refused before the node starts anything.
    a.api_token_file.chmod(0o644)
    third = make_node(tmp_path, "a")
    with trio.fail_after(10), pytest.raises(TokenError, match="open to others"):
        await third.run()  # refused, not run (else it would run until the timeout)
    assert third.api_port is None and third.host is None


async def test_bad_api_input_is_a_value_error_not_a_crash(tmp_path: Path) -> None:
    a = make_node(tmp_path, "a")
    async with running(a):
        with pytest.raises(ValueError, match="missing field: price"):
            await a.place_bid({"market": MID.hex()})
        with pytest.raises(ValueError, match="market must be a hex market id"):
            await a.place_bid({"market": "zz", "price": 1, "proof_time": 1})
        assert a.status()["admitted"] == 0


async def test_peer_exchange_finds_peers_beyond_the_bootstrap_list(tmp_path: Path) -> None:
    a = make_node(tmp_path, "a")
    async with running(a) as nursery:
        assert a.gossip is not None
        b = make_node(tmp_path, "b", (a.gossip.addr,))
        await nursery.start(b.run)
        await wait_until(lambda: b.status()["peers"] >= 1)
        assert b.gossip is not None
        c = make_node(tmp_path, "c", (b.gossip.addr,))  # knows only b
        await nursery.start(c.run)
        assert a.host is not None
        a_id = a.host.get_id()
        await wait_until(lambda: a_id in c.host.get_network().connections)  # type: ignore[union-attr]


async def test_a_stopped_node_closes_its_connections(tmp_path: Path) -> None:
    """Cancelling a node in-process (the SDK's client leaving, a test's crash) must
    close its sockets, so that peers drop it from their pubsub: else a node that
    comes back with the same key is never meshed with them again."""
    a = make_node(tmp_path, "a")
    async with running(a) as nursery:
        assert a.gossip is not None
        b = make_node(tmp_path, "b", (a.gossip.addr,))
        scope = trio.CancelScope()

        async def run_b(task_status=trio.TASK_STATUS_IGNORED) -> None:
            with scope:
                await b.run(task_status=task_status)

        await nursery.start(run_b)
        assert b.gossip is not None
        peer = b.gossip.peer_id
        await wait_until(lambda: peer in a.gossip.pubsub.peers)  # type: ignore[union-attr]
        scope.cancel()
        # a's auto-connector may redial b while b unwinds, before b's listener is
        # closed: that connection dies with b's sockets, so wait for it too.
        network = a.host.get_network()  # type: ignore[union-attr]
        await wait_until(
            lambda: (
                peer not in a.gossip.pubsub.peers  # type: ignore[union-attr]
                and not network.get_connections(peer)
            ),
            timeout=15,
        )


async def test_anti_entropy_pulls_what_gossip_never_carried(tmp_path: Path) -> None:
    """A message a node holds but never published (as when it was cut off while it
    took it in) reaches a connected peer by the periodic full sync alone: no new
    connection, no gossip."""
    a = make_node(tmp_path, "a", sync_every_s=1.0)
    async with running(a) as nursery:
        assert a.gossip is not None
        b = make_node(tmp_path, "b", (a.gossip.addr,), sync_every_s=1.0)
        await nursery.start(b.run)
        await wait_until(lambda: b.status()["peers"] >= 1)
        await trio.sleep(0.5)  # past the join sync
        raw = Actor("quiet", MARKET).bid(now=a.clock(), price=5, proof_time=700)
        assert a.apply_raw(raw).accepted  # applied, not published
        await wait_until(lambda: len(b.states[MID].book.current) == 1, timeout=15)


async def test_proofs_route_names_the_missing_requester_role(tmp_path: Path) -> None:
    """`request --api` against a node without a requester role gets a 404 saying so,
    not an empty answer it could mistake for 'no proofs yet'."""
    a = make_node(tmp_path, "a")
    async with running(a):
        client = api_client(a)
        with pytest.raises(ApiError) as caught:
            await trio.to_thread.run_sync(client.proofs, "ab" * 32)
        assert caught.value.status == 404
        assert "no requester role" in caught.value.message
        a.proof_sources.append(
            lambda ask: {b"\x01" * 32: b"proof"} if ask == b"\xab" * 32 else None
        )
        found = await trio.to_thread.run_sync(client.proofs, "ab" * 32)
        assert found == {b"\x01" * 32: b"proof"}
        with pytest.raises(ApiError) as caught:
            await trio.to_thread.run_sync(client.proofs, "cd" * 32)
        assert caught.value.status == 404 and "looks after" in caught.value.message


def sync_runs(node: Node) -> float:
    return sum(
        node.metrics.registry.get_sample_value("p2p_market_sync_runs_total", {"outcome": o}) or 0.0
        for o in ("ok", "failed")
    )


async def test_each_peer_that_connects_is_synced_at_once(tmp_path: Path) -> None:
    """Peers that come back from a partition hold what nobody else has (asks placed
    while cut off, that expire if they wait for the next periodic sync). Four of
    them connect at once to a node that has four idle peers already: the node pulls
    from each of the four, not from three peers drawn among its eight."""
    x = make_node(tmp_path, "x", sync_every_s=3600.0)  # no periodic sync in this test
    async with running(x):
        assert x.gossip is not None
        where = [x.gossip.addr]
        async with started_hosts(*keys("idle", 4)) as idle:
            for host in idle:
                assert await connect_all(host, where) == {}
            await wait_until(lambda: x.status()["peers"] == 4)
            now = x.clock()
            asks = [
                Actor(f"cut-off-{i}", MARKET).ask(now=now, max_price=9, max_proof_time=900)
                for i in range(4)
            ]
            holders = []
            for raw in asks:
                state = MarketState(MARKET)
                assert state.apply(raw, now)[0].accepted
                holders.append(state)
            async with started_hosts(*keys("back", 4)) as back:
                for host, state in zip(back, holders, strict=True):

                    def source(market: bytes, s: MarketState = state) -> list[Envelope] | None:
                        return s.stored_envelopes() if market == MID else None

                    SyncServer(source).attach(host)
                async with trio.open_nursery() as nursery:
                    for host in back:
                        nursery.start_soon(connect_all, host, where)
                await wait_until(
                    lambda: all(message_id(a) in x.states[MID].asks for a in asks), timeout=5
                )


async def test_an_orphan_from_gossip_has_its_parent_fetched(tmp_path: Path) -> None:
    """A cancel (a child) comes by gossip for an ask (its parent) that reached the
    network only by sync, so gossip will never bring it: the node fetches the ask
    from its peers after ORPHAN_GRACE_S instead of waiting for the periodic sync,
    by which time the ask may have expired and be refused for good."""
    x = make_node(tmp_path, "x", sync_every_s=3600.0)
    async with running(x) as nursery:
        assert x.gossip is not None
        y = make_node(tmp_path, "y", (x.gossip.addr,), sync_every_s=3600.0)
        await nursery.start(y.run)
        assert y.gossip is not None
        await x.gossip.wait_for_mesh(MID, y.gossip.peer_id)
        await y.gossip.wait_for_mesh(MID, x.gossip.peer_id)
        await wait_until(lambda: sync_runs(x) >= 1 and sync_runs(y) >= 1)  # the join syncs
        requester = Actor("was-cut-off", MARKET)
        ask = requester.ask(now=y.clock(), max_price=9, max_proof_time=900)
        assert y.apply_raw(ask).accepted  # as a sync from a rejoining node brings it
        cancel = requester.cancel(now=y.clock(), ask=message_id(ask))
        assert (await y.submit(cancel)).status == "accept"  # gossiped
        await wait_until(
            lambda: x.states[MID].holds(message_id(cancel)) or bool(x.states[MID].pending),
            timeout=5,
        )
        assert message_id(ask) not in x.states[MID].asks  # the cancel came first, alone
        started = trio.current_time()
        await wait_until(lambda: message_id(ask) in x.states[MID].asks, timeout=5)
        assert trio.current_time() - started >= ORPHAN_GRACE_S / 2  # not the join sync
        assert x.states[MID].holds(message_id(cancel))  # the orphan was applied with it
        assert x.states[MID].ask_state(message_id(ask)).value == "cancelled"


async def test_a_stopping_node_takes_no_connection_in(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Peers redial a node the moment it closes their connections (libp2p's
    auto-connector). Were its listener still open then, a redial would be upgraded
    after the swarm's service had stopped: py-libp2p's add_conn raises
    LifecycleError('Cannot schedule task after service has stopped') and the peer
    gets a connection that dies in its first handshake. The listener closes first."""
    caplog.set_level(logging.WARNING, logger="libp2p")
    a = make_node(tmp_path, "a")
    scope = trio.CancelScope()

    async def run_a(task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        with scope:
            await a.run(task_status=task_status)

    async with trio.open_nursery() as nursery:
        await nursery.start(run_a)
        assert a.gossip is not None
        where = [a.gossip.addr]
        async with started_hosts(*keys("redial", 6)) as hosts:
            for host in hosts:
                assert await connect_all(host, where) == {}
            await wait_until(lambda: a.status()["peers"] == len(hosts))
            stop = trio.Event()

            async def redial(host: IHost) -> None:
                while not stop.is_set():
                    await connect_all(host, where, timeout=1.0)
                    await trio.sleep(0.001)

            async with trio.open_nursery() as dialers:
                for host in hosts:
                    dialers.start_soon(redial, host)
                await trio.sleep(0.2)
                scope.cancel()
                await trio.sleep(1.0)
                stop.set()
    failed = [r.getMessage()[:120] for r in caplog.records if "LifecycleError" in r.getMessage()]
    assert failed == []


async def test_the_api_joins_a_running_node_to_peers(tmp_path: Path) -> None:
    """POST /v1/peers: a running node dials the given peers, keeps them for its later
    redials, and syncs with them at once (how a partition heals in `simulate`)."""
    a = make_node(tmp_path, "a")
    b = make_node(tmp_path, "b")  # knows nobody
    async with running(a, b):
        assert a.gossip is not None
        ask = Actor("cut-off", MARKET).ask(now=a.clock(), max_price=9, max_proof_time=900)
        assert a.apply_raw(ask).accepted  # only a holds it
        client = api_client(b)
        for bad in (["/ip4/127.0.0.1/tcp/1"], ["not an address"], []):
            with pytest.raises(ApiError) as caught:
                await trio.to_thread.run_sync(client.connect_peers, bad)
            assert caught.value.status == 400, bad
        assert b.status()["peers"] == 0 and b.bootstrap == []
        answer = await trio.to_thread.run_sync(client.connect_peers, [a.gossip.addr])
        assert answer == {"dialled": 1, "failed": {}, "peers": 1}
        assert b.bootstrap == [a.gossip.addr]
        await wait_until(lambda: message_id(ask) in b.states[MID].asks, timeout=5)


async def test_newcomers_hold_no_more_of_the_log_than_their_share(tmp_path: Path) -> None:
    """Fresh keys flood asks with 8 KiB of inputs each: b takes from gossip only what
    fits one newcomer's share and the market's newcomers' share (node/newcomers.py),
    while a, where they were submitted, holds them all."""
    a = make_node(tmp_path, "a")
    async with running(a) as nursery:
        assert a.gossip is not None
        b = make_node(tmp_path, "b", (a.gossip.addr,), sync_every_s=3600.0)
        b._newcomer_holdings = NewcomerHoldings(market_bytes=60_000, signer_bytes=20_000)
        await nursery.start(b.run)
        await wait_until(lambda: b.status()["peers"] >= 1)
        await a.gossip.wait_for_mesh(MID, b.gossip.peer_id)  # type: ignore[union-attr]
        now = a.clock()
        inputs = bytes(8 * 1024)
        one = Actor("hoarder", MARKET)
        for n in range(5):  # one key: 2 of these fit its 20 kB share
            await a.submit(
                one.ask(now=now, max_price=5, max_proof_time=900, inputs=inputs, nonce=n)
            )
        for i in range(10):  # ten keys: the 60 kB market share takes 7 asks in all
            fresh = Actor(f"sybil-{i}", MARKET)
            await a.submit(fresh.ask(now=now, max_price=5, max_proof_time=900, inputs=inputs))
        await wait_until(lambda: len(a.states[MID].asks) == 15)
        await trio.sleep(2.0)  # gossip delivers within ms; give it ample time
        held = b.states[MID].asks.values()
        assert sum(1 for env in held if env.signer == one.public_key) == 2
        assert len(held) == 7
        assert b._newcomer_holdings.held(MID) <= 60_000


async def test_what_the_owner_submits_is_fsynced_and_what_peers_send_is_not(
    tmp_path: Path,
) -> None:
    """The owner's own messages are on disk before they leave; a peer's are logged
    without an fsync (node/storage.py: it held the event loop 3-5 ms each)."""
    x = make_node(tmp_path, "x")
    async with running(x) as nursery:
        assert x.gossip is not None and x.log is not None
        y = make_node(tmp_path, "y", (x.gossip.addr,))
        await nursery.start(y.run)
        assert y.gossip is not None and y.log is not None
        await x.gossip.wait_for_mesh(MID, y.gossip.peer_id)
        await y.gossip.wait_for_mesh(MID, x.gossip.peer_id)
        x_before, y_before = dict(x.log.commits), dict(y.log.commits)
        bid = Actor("owner", MARKET).bid(now=x.clock(), price=3, proof_time=900)
        assert x.group_sync is not None
        flushes = x.group_sync.syncs
        assert (await x.submit(bid)).status == "accept"
        # committed like a peer's, then the WAL fsynced before the core kept it
        assert x.log.commits["unsynced"] == x_before["unsynced"] + 1
        assert x.group_sync.syncs == flushes + 1
        assert x.log.commits["fsynced"] == x_before["fsynced"]
        await wait_until(lambda: y.states[MID].holds(message_id(bid)))
        assert y.log.commits["unsynced"] == y_before["unsynced"] + 1
        assert y.log.commits["fsynced"] == y_before["fsynced"]
        with EnvelopeLog(y.log.path) as reopened:  # a second connection sees it committed
            assert bid in list(reopened.replay(MID))
