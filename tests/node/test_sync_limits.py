"""What one peer can take from a sync server, between real hosts on 127.0.0.1: a
share of the sessions, for a bounded time, and a bounded number of answer bytes.
Each limit is shown against an attacking peer while an honest peer still syncs."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio
from libp2p.abc import IHost, INetStream

from p2p_market.core.envelope import message_id
from p2p_market.markets.devnet import Actor
from p2p_market.node.sync import (
    BUSY,
    EVICTED,
    OVER_BUDGET,
    PEER_BUSY,
    PROTOCOL,
    SESSION_EXPIRED,
    SyncServer,
    sync_market,
)
from p2p_market.node.wire import WireError, frame, read_msg, write_msg
from tests.node.hosts import keys, running_hosts
from tests.node.test_sync import MARKET, MID, NOW, Joiner, filled, make_book, serving


@asynccontextmanager
async def held_sessions(
    attacker: IHost, server: IHost, n: int, every_s: float
) -> AsyncIterator[list[dict[str, object]]]:
    """`n` sync sessions from `attacker`, each asking for the digest every `every_s`
    (the cheapest way to keep a session). Yields the first reply of each."""
    first: list[dict[str, object]] = []
    async with trio.open_nursery() as nursery:

        async def hold(task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
            stream = await attacker.new_stream(server.get_id(), [PROTOCOL])
            try:
                await write_msg(stream, {"op": "digest", "market": MID})
                first.append(await read_msg(stream))
                task_status.started()
                while True:
                    await trio.sleep(every_s)
                    await write_msg(stream, {"op": "digest", "market": MID})
                    await read_msg(stream)
            except WireError:
                return

        for _ in range(n):
            await nursery.start(hold)
        yield first
        nursery.cancel_scope.cancel()


async def test_one_peer_holding_sixteen_sessions_does_not_lock_out_an_honest_peer() -> None:
    book = make_book(provers=40, requesters=10, asks_each=2)
    server = SyncServer(serving(filled(book)))  # the defaults: 16 in all, 2 per peer
    async with running_hosts(*keys("limits-a", 3)) as (host, attacker, honest):
        server.attach(host)
        with trio.fail_after(20):
            async with held_sessions(attacker, host, 16, every_s=2.0) as first:
                refused = [r for r in first if r.get("ok") is False]
                assert [r["error"] for r in refused] == [PEER_BUSY] * 14
                assert server.slots.held_by(attacker.get_id()) == 2
                joiner = Joiner()
                report = await sync_market(
                    host=honest,
                    peers=[host.get_id()],
                    market=MID,
                    holds=joiner.state.holds,
                    apply=joiner.apply,
                    timeout_s=5,
                )
    print(f"honest sync beside a 16-session attacker: {report.elapsed_s * 1000:.0f} ms")
    assert report.ok_peers == 1, report.peers[0].error
    assert report.applied == len(book)
    assert server.stats.refused[PEER_BUSY] == 14
    assert server.slots.active == 0  # every slot given back


async def _honest_sync(honest: IHost, server: IHost) -> Any:
    joiner = Joiner()
    return await sync_market(
        host=honest, peers=[server.get_id()], market=MID,
        holds=joiner.state.holds, apply=joiner.apply, timeout_s=5,
    )  # fmt: skip


async def test_identities_holding_two_sessions_each_make_room_for_a_new_peer() -> None:
    """Eight identities hold all 16 sessions, 2 each, asking often enough never to
    idle out: a peer with no session takes one of theirs at once."""
    book = make_book(provers=10, requesters=5, asks_each=2)
    server = SyncServer(serving(filled(book)))
    async with running_hosts(*keys("evict-two", 10)) as (host, honest, *attackers):
        server.attach(host)
        with trio.fail_after(30):
            async with contextlib.AsyncExitStack() as stack:
                for attacker in attackers:
                    first = await stack.enter_async_context(
                        held_sessions(attacker, host, 2, every_s=0.3)
                    )
                    assert all(r.get("ok") for r in first)
                assert server.slots.active == 16
                report = await _honest_sync(honest, host)
                assert report.ok_peers == 1, report.peers[0].error
                assert report.applied == len(book)
    assert server.stats.refused[EVICTED] == 1
    assert server.slots.active == 0  # every slot given back, the evicted one once


async def test_identities_holding_one_session_each_give_way_when_old() -> None:
    """Sixteen identities hold one session each: while the sessions are young a new
    peer is refused `busy`; once the oldest has lasted `evict_after_s`, the new
    peer's request ends it and takes its slot."""
    book = make_book(provers=10, requesters=5, asks_each=2)
    server = SyncServer(serving(filled(book)), evict_after_s=1.5)
    async with running_hosts(*keys("evict-one", 18)) as (host, honest, *attackers):
        server.attach(host)
        with trio.fail_after(40):
            async with contextlib.AsyncExitStack() as stack:
                for attacker in attackers:
                    await stack.enter_async_context(held_sessions(attacker, host, 1, every_s=0.3))
                assert server.slots.active == 16
                early = await _honest_sync(honest, host)
                assert early.ok_peers == 0 and BUSY in (early.peers[0].error or "")
                await trio.sleep(1.6)
                late = await _honest_sync(honest, host)
                assert late.ok_peers == 1, late.peers[0].error
                assert late.applied == len(book)
    assert server.stats.refused[EVICTED] == 1
    assert server.slots.active == 0


async def test_a_session_ends_when_its_time_is_up_however_busy() -> None:
    book = make_book(provers=5, requesters=1, asks_each=1)
    server = SyncServer(serving(filled(book)), idle_timeout_s=1.0, max_session_s=1.5)
    async with running_hosts(*keys("limits-b", 2)) as (host, attacker):
        server.attach(host)
        stream: INetStream = await attacker.new_stream(host.get_id(), [PROTOCOL])
        started = trio.current_time()
        last: object = None
        with trio.fail_after(5):
            try:
                while True:  # never idle for long: only the session's age can end it
                    await write_msg(stream, {"op": "digest", "market": MID})
                    last = await read_msg(stream)
                    await trio.sleep(0.2)
            except WireError:
                pass
        ended = trio.current_time() - started
    assert last == {"ok": False, "error": SESSION_EXPIRED}
    assert 1.4 < ended < 2.5, ended
    assert server.stats.refused[SESSION_EXPIRED] == 1 and server.slots.active == 0


async def test_a_quiet_session_gives_its_slot_back() -> None:
    server = SyncServer(serving(filled([])), idle_timeout_s=0.5)
    async with running_hosts(*keys("limits-c", 2)) as (host, attacker):
        server.attach(host)
        await attacker.new_stream(host.get_id(), [PROTOCOL])
        with trio.fail_after(5):
            while server.stats.sessions == 0:
                await trio.sleep(0.01)
            assert server.slots.active == 1
            while server.slots.active:
                await trio.sleep(0.05)


def big_book(n: int = 64, size: int = 16_000) -> list[bytes]:
    """`n` asks of ~`size` bytes of inline input each: one bodies answer is ~1 MiB."""
    return [
        Actor(f"limits-big-{i}", MARKET).ask(
            now=NOW, max_price=10_000, max_proof_time=60_000, inputs=bytes([i]) * size
        )
        for i in range(n)
    ]


async def test_repeated_bodies_requests_are_bounded_by_the_answer_budget() -> None:
    """The amplifier: an 8 KiB request for the same 64 bodies, again and again, each
    answered with ~1 MiB. The attacker gets its burst and then the rate, whatever it
    asks; another peer's sync is not charged for it."""
    rate, burst, seconds = 128 * 1024, 2 * 1024 * 1024, 3.0  # the book is ~1 MiB
    book = big_book()
    ids = sorted(message_id(raw) for raw in book)
    server = SyncServer(serving(filled(book)), answer_bytes_per_s=rate, answer_burst_bytes=burst)
    request = {"op": "bodies", "market": MID, "ids": ids}
    sent = received = refused = 0
    async with running_hosts(*keys("limits-d", 3)) as (host, attacker, honest):
        server.attach(host)

        async def ask_again_and_again() -> None:
            nonlocal sent, received, refused
            stream = await attacker.new_stream(host.get_id(), [PROTOCOL])
            while True:
                await write_msg(stream, request)
                sent += len(frame(request))
                reply = await read_msg(stream)
                received += len(frame(reply))
                if reply.get("error") == OVER_BUDGET:
                    refused += 1
                    await trio.sleep(0.05)

        with trio.move_on_after(seconds):
            async with trio.open_nursery() as nursery:
                for _ in range(2):
                    nursery.start_soon(ask_again_and_again)
        served = server.stats.answer_bytes
        joiner = Joiner()
        with trio.fail_after(20):
            report = await sync_market(
                honest, [host.get_id()], MID, joiner.state.holds, joiner.apply, timeout_s=5
            )
    print(f"repeated bodies for {seconds} s: {sent} bytes in, {received} bytes out")
    bound = burst + rate * (seconds + 0.5) + 64 * 1024  # + one envelope of debt
    assert served <= bound, (served, bound)
    assert received <= bound + refused * 64 + 64 * 1024  # answers and error replies
    assert 0 < refused <= server.stats.refused[OVER_BUDGET] <= refused + 2  # 2 in flight
    assert report.ok_peers == 1 and report.applied == len(book)  # its own budget
