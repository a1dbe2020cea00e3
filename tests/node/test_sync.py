"""The sync protocol between real hosts on 127.0.0.1: a late joiner gets the book,
equal books cost one round trip, a stalled peer does not hold up the others, and
nothing a peer was not asked for is ever applied."""

from __future__ import annotations

from typing import Any

import trio
from libp2p.abc import INetStream
from libp2p.peer.id import ID

from p2p_market.core.envelope import Envelope, market_id, message_id, parse
from p2p_market.core.messages import Ask
from p2p_market.core.state import MarketState
from p2p_market.markets.devnet import GENESIS_MS, Actor, default_market
from p2p_market.node.runtime import held_for_sync, orphan_of_refused
from p2p_market.node.sync import (
    PROTOCOL,
    Digest,
    Refusals,
    SyncReport,
    SyncServer,
    _Snapshot,
    refused_for_good,
    sync_market,
)
from tests.newer import LATER_KIND, later_kind
from tests.node.hosts import keys, running_hosts

MARKET = default_market()
MID = market_id(MARKET)
NOW = GENESIS_MS + 3_600_000


def make_book(provers: int = 150, requesters: int = 30, asks_each: int = 5) -> list[bytes]:
    """Bids, asks and a commit per 4th prover, parents before children."""
    ps = [Actor(f"sync-prover-{i}", MARKET) for i in range(provers)]
    rs = [Actor(f"sync-requester-{i}", MARKET) for i in range(requesters)]
    bids = [
        p.bid(now=NOW, price=100 + i % 40, proof_time=1_000 + i, capacity=4)
        for i, p in enumerate(ps)
    ]
    asks = [
        r.ask(now=NOW, max_price=10_000, max_proof_time=60_000, inputs=bytes([j]))
        for r in rs
        for j in range(asks_each)
    ]
    commits = [
        ps[i].commit(
            now=NOW,
            ask=message_id(asks[i]),
            bid=message_id(bids[i]),
            price=100 + i % 40,
            proof_time=1_000 + i,
        )
        for i in range(0, min(provers, len(asks)), 4)
    ]
    return bids + asks + commits


def filled(raws: list[bytes]) -> MarketState:
    state = MarketState(MARKET)
    for raw in raws:
        verdict, _ = state.apply(raw, NOW)
        assert verdict.accepted, verdict
    return state


def serving(state: MarketState) -> Any:
    def source(market: bytes) -> list[Envelope] | None:
        return state.stored_envelopes() if market == MID else None

    return source


class Joiner:
    """The syncing side: an empty state and the callbacks sync_market needs."""

    def __init__(self, state: MarketState | None = None) -> None:
        self.state = state or MarketState(MARKET)
        self.applied: list[bytes] = []
        self.complete_at: float | None = None
        self.target: int | None = None

    def apply(self, raw: bytes) -> None:
        self.applied.append(raw)
        self.state.apply(raw, NOW)
        if self.target is not None and len(self.state.stored_envelopes()) == self.target:
            self.complete_at = self.complete_at or trio.current_time()

    def digest(self) -> Digest:
        return Digest.of(e.id for e in self.state.stored_envelopes())


async def test_a_late_joiner_gets_the_whole_book_fast() -> None:
    book = make_book()
    origin = filled(book)
    server = SyncServer(serving(origin))
    joiner = Joiner()
    async with running_hosts(*keys("sync-a", 2)) as (client, peer):
        server.attach(peer)
        with trio.fail_after(10):
            report = await sync_market(
                client, [peer.get_id()], MID, joiner.state.holds, joiner.apply, timeout_s=5
            )
    assert len(book) == 338  # 150 bids, 150 asks, 38 commits
    assert report.ok_peers == 1 and report.peers[0].error == ""
    assert report.applied == len(book) and report.unsolicited == 0
    assert joiner.state.state_hash() == origin.state_hash()
    assert not joiner.state.pending  # parents came first: no body waited as an orphan
    # digest, 1 page of ids, 2 batches of bodies (256 + 82)
    assert report.round_trips == 4
    assert server.stats.requests == {"digest": 1, "ids": 1, "bodies": 2}
    assert report.elapsed_s < 3, report.elapsed_s
    print(f"synced {len(book)} envelopes in {report.elapsed_s * 1000:.0f} ms")


async def test_equal_books_cost_one_round_trip() -> None:
    book = make_book(provers=40, requesters=10, asks_each=2)
    origin = filled(book)
    server = SyncServer(serving(origin))
    joiner = Joiner(filled(book))
    async with running_hosts(*keys("sync-b", 2)) as (client, peer):
        server.attach(peer)
        with trio.fail_after(10):
            report = await sync_market(
                client,
                [peer.get_id()],
                MID,
                joiner.state.holds,
                joiner.apply,
                timeout_s=5,
                mine=joiner.digest(),
            )
    assert report.peers[0].ok and report.peers[0].equal
    assert report.round_trips == 1 and report.applied == 0
    assert server.stats.requests == {"digest": 1}


async def test_a_partial_book_fetches_only_what_is_missing_in_small_pages() -> None:
    book = make_book(provers=60, requesters=10, asks_each=3)
    origin = filled(book)
    server = SyncServer(serving(origin))
    joiner = Joiner(filled(book[:50]))  # it has the first 50 bids already
    async with running_hosts(*keys("sync-c", 2)) as (client, peer):
        server.attach(peer)
        with trio.fail_after(10):
            report = await sync_market(
                client,
                [peer.get_id()],
                MID,
                joiner.state.holds,
                joiner.apply,
                timeout_s=5,
                mine=joiner.digest(),
                page_limit=16,
                batch=7,
            )
    assert report.ok_peers == 1
    assert sorted(joiner.applied) == sorted(book[50:])
    assert joiner.state.state_hash() == origin.state_hash()
    assert server.stats.requests["ids"] == -(-len(book) // 16)
    assert server.stats.requests["bodies"] == -(-(len(book) - 50) // 7)


class StallingServer(SyncServer):
    """Answers some ops honestly, and for `stall_on` waits until released."""

    def __init__(self, *args: Any, stall_on: str, delay: dict[str, float] | None = None) -> None:
        super().__init__(*args)
        self.stall_on = stall_on
        self.delay = delay or {}
        self.release = trio.Event()
        self.stalled = 0

    async def respond(
        self, request: Any, session: dict[bytes, _Snapshot], peer: ID
    ) -> dict[str, Any]:
        op = request.get("op") if type(request) is dict else None
        if op == self.stall_on:
            self.stalled += 1
            await self.release.wait()
        await trio.sleep(self.delay.get(str(op), 0))
        return await super().respond(request, session, peer)


async def _sync_with_a_staller(
    stall_on: str, delay: dict[str, float]
) -> tuple[SyncReport, Joiner, float, StallingServer]:
    book = make_book(provers=80, requesters=20, asks_each=4)
    origin = filled(book)
    staller = StallingServer(serving(origin), stall_on=stall_on)
    honest = StallingServer(serving(origin), stall_on="never", delay=delay)
    joiner = Joiner()
    joiner.target = len(book)
    nobody = ID.from_base58("QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N")  # unreachable
    async with running_hosts(*keys("sync-d", 3)) as (client, slow, good):
        staller.attach(slow)
        honest.attach(good)
        started = trio.current_time()
        try:
            with trio.fail_after(10):
                report = await sync_market(
                    client,
                    [slow.get_id(), good.get_id(), nobody],
                    MID,
                    joiner.state.holds,
                    joiner.apply,
                    timeout_s=1.0,
                )
        finally:
            staller.release.set()
    assert joiner.state.state_hash() == origin.state_hash()
    return report, joiner, started, staller


async def test_a_peer_that_stalls_at_once_does_not_hold_up_the_others() -> None:
    report, joiner, started, staller = await _sync_with_a_staller("digest", {})
    by_peer = {p.ok: p for p in report.peers}
    assert sum(p.ok for p in report.peers) == 1  # the honest one
    assert staller.stalled == 1
    errors = sorted(p.error.split(":")[0] for p in report.peers if not p.ok)
    assert "WireError" in errors  # the staller: a read timeout
    assert len(errors) == 2  # and the peer we cannot dial
    # The book was complete long before the staller's timeout (1 s) ran out.
    assert joiner.complete_at is not None and joiner.complete_at - started < 0.5
    assert report.elapsed_s >= 1.0  # sync_market itself returns once every peer is done
    assert by_peer[True].received == len(joiner.applied)


async def test_ids_claimed_by_a_peer_that_then_stalls_are_fetched_from_another() -> None:
    # The staller lists its ids at once and claims them all, then never sends a body;
    # the honest peer (slower to list) takes over once the staller's timeout expires.
    report, joiner, started, staller = await _sync_with_a_staller("bodies", {"ids": 0.3})
    stuck = next(p for p in report.peers if p.requested and not p.ok)
    good = next(p for p in report.peers if p.ok)
    assert "timed out" in stuck.error and stuck.received == 0
    assert good.received == len(joiner.applied) == report.applied
    assert staller.stalled == 1
    assert joiner.complete_at is not None and 1.0 < joiner.complete_at - started < 2.0


class LyingServer(SyncServer):
    """An honest book, plus a body nobody asked for in every bodies reply."""

    def __init__(self, *args: Any, extra: list[bytes]) -> None:
        super().__init__(*args)
        self.extra = extra

    async def respond(
        self, request: Any, session: dict[bytes, _Snapshot], peer: ID
    ) -> dict[str, Any]:
        reply = await super().respond(request, session, peer)
        if "bodies" in reply:
            reply["bodies"] = [*self.extra, *reply["bodies"], reply["bodies"][0]]
        return reply


async def test_a_body_that_was_not_asked_for_is_dropped() -> None:
    book = make_book(provers=30, requesters=5, asks_each=2)
    origin = filled(book)
    planted = Actor("planted", MARKET).bid(now=NOW, price=1, proof_time=1)  # valid, signed
    server = LyingServer(serving(origin), extra=[planted, b"\x00" * 40])
    joiner = Joiner()
    async with running_hosts(*keys("sync-e", 2)) as (client, peer):
        server.attach(peer)
        with trio.fail_after(10):
            report = await sync_market(
                client, [peer.get_id()], MID, joiner.state.holds, joiner.apply, timeout_s=5
            )
    assert planted not in joiner.applied and not joiner.state.holds(message_id(planted))
    assert report.unsolicited == 3 * server.stats.requests["bodies"]  # planted, junk, repeat
    assert joiner.state.state_hash() == origin.state_hash()


async def test_an_unknown_market_is_a_refusal_not_a_failure_of_the_others() -> None:
    server = SyncServer(lambda market: None)
    joiner = Joiner()
    async with running_hosts(*keys("sync-f", 2)) as (client, peer):
        server.attach(peer)
        with trio.fail_after(10):
            report = await sync_market(
                client, [peer.get_id()], MID, joiner.state.holds, joiner.apply, timeout_s=5
            )
    assert not report.peers[0].ok and "unknown market" in report.peers[0].error


async def test_garbage_requests_end_the_session_not_the_host() -> None:
    from p2p_market.node.wire import read_msg, write_msg

    book = make_book(provers=5, requesters=1, asks_each=1)
    server = SyncServer(serving(filled(book)))
    async with running_hosts(*keys("sync-g", 2)) as (client, peer):
        server.attach(peer)
        with trio.fail_after(10):
            stream: INetStream = await client.new_stream(peer.get_id(), [PROTOCOL])
            await write_msg(stream, {"op": "ids", "market": MID, "after": b"short", "limit": 5})
            reply = await read_msg(stream)
            assert reply == {"ok": False, "error": "after must be 32 bytes"}
            await stream.write(b"\xff\xff\xff\xff")  # a 4 GiB frame, announced
            await stream.close()
            # The host still serves.
            joiner = Joiner()
            report = await sync_market(
                client, [peer.get_id()], MID, joiner.state.holds, joiner.apply, timeout_s=5
            )
    assert report.ok_peers == 1 and report.applied == len(book)
    assert server.stats.bad_requests == 1


class NewerServer(SyncServer):
    """A later protocol version's node: besides v1 envelopes it holds envelopes of a
    kind v1 does not define, and lists each with the kind given (honestly the new
    code, or falsely a v1 one). Records the ids it is asked bodies for."""

    def __init__(self, source: Any, newer: list[tuple[bytes, int]]) -> None:
        super().__init__(source)
        self.newer = newer
        self.asked: list[bytes] = []

    def snapshot(self, market: bytes) -> _Snapshot | None:
        snap = super().snapshot(market)
        if snap is None:
            return None
        kinds = dict(zip(snap.ids, snap.kinds, strict=True))
        raw = dict(snap.raw)
        for body, listed_kind in self.newer:
            kinds[message_id(body)] = listed_kind
            raw[message_id(body)] = body
        ids = sorted(kinds)
        return _Snapshot(
            snap.taken_at, ids, bytes(kinds[i] for i in ids), raw, Digest.of_sorted(ids)
        )

    def answer(self, request: Any, session: dict[bytes, _Snapshot], peer: ID) -> dict[str, Any]:
        if type(request) is dict and request.get("op") == "bodies":
            self.asked.extend(request.get("ids") or ())
        return super().answer(request, session, peer)


async def test_unknown_kinds_are_not_fetched_and_never_stored() -> None:
    book = make_book(provers=20, requesters=5, asks_each=2)
    origin = filled(book)
    author = Actor("sync-newer", MARKET)
    listed_new, listed_v1 = later_kind(author, now=NOW, n=1), later_kind(author, now=NOW, n=2)
    server = NewerServer(serving(origin), [(listed_new, LATER_KIND), (listed_v1, 2)])
    joiner = Joiner()
    async with running_hosts(*keys("sync-h", 2)) as (client, peer):
        server.attach(peer)
        for _ in range(2):  # the digests differ for good, so a second round lists again
            with trio.fail_after(10):
                report = await sync_market(
                    client,
                    [peer.get_id()],
                    MID,
                    joiner.state.holds,
                    joiner.apply,
                    timeout_s=5,
                    mine=joiner.digest(),
                )
            assert report.ok_peers == 1 and report.peers[0].error == ""
            assert report.unknown_kinds == 1 and report.unsolicited == 0
    assert message_id(listed_new) not in server.asked  # listed as kind 9: not fetched
    # Listed as a bid, it was fetched (twice: never stored, it is missing every time)
    # and IGNOREd by the core like any unknown kind.
    assert server.asked.count(message_id(listed_v1)) == 2
    assert joiner.applied.count(listed_v1) == 2 and listed_new not in joiner.applied
    assert not joiner.state.holds(message_id(listed_v1))
    assert joiner.state.state_hash() == origin.state_hash()
    assert sorted(e.id for e in joiner.state.stored_envelopes()) == sorted(map(message_id, book))


async def test_every_preferred_peer_is_asked_whatever_max_peers_says() -> None:
    """Peers that just connected each hold what the others may lack (two sides of a
    partition rejoining at once): each is asked, none left to a random draw; the
    rest of `max_peers` are random others."""
    book = make_book(provers=9, requesters=0)[:9]  # nine bids, independent of each other
    parts = [book[:3], book[3:6], book[6:]]
    servers = [SyncServer(serving(filled(part))) for part in parts]
    idle = [SyncServer(serving(MarketState(MARKET))) for _ in range(4)]
    joiner = Joiner()
    async with running_hosts(*keys("sync-h", 1 + len(servers) + len(idle))) as hosts:
        client, peers = hosts[0], hosts[1:]
        for server, host in zip([*servers, *idle], peers, strict=True):
            server.attach(host)
        preferred = [h.get_id() for h in peers[: len(servers)]]
        with trio.fail_after(10):
            report = await sync_market(
                client,
                [h.get_id() for h in peers],
                MID,
                joiner.state.holds,
                joiner.apply,
                timeout_s=5,
                max_peers=1,
                prefer=preferred,
            )
    assert [p.peer for p in report.peers] == preferred  # no room left for a random one
    assert all(s.stats.sessions == 1 for s in servers)
    assert all(s.stats.sessions == 0 for s in idle)
    assert sorted(e.id for e in joiner.state.stored_envelopes()) == sorted(
        message_id(raw) for raw in book
    )


class LateJoiner:
    """A syncing side whose clock is past every horizon of the book (or the peer's
    clock lags: it still serves what this node has forgotten), applying as the node
    does (`Node._apply_synced`): whatever it refuses for good is said so."""

    def __init__(self, now: int) -> None:
        self.state = MarketState(MARKET)
        self.now = now
        self.refusals: Refusals | None = None

    def apply(self, raw: bytes) -> bool:
        env = parse(raw)
        if orphan_of_refused(self.state, env, self.refusals):
            return True
        verdict, _ = self.state.apply(raw, self.now)
        return refused_for_good(verdict, kept=self.state.holds(message_id(raw)))


async def _rounds(
    refusals: Refusals, joiner: LateJoiner, server: SyncServer, n: int
) -> list[SyncReport]:
    reports = []
    joiner.refusals = refusals
    async with running_hosts(*keys("sync-refused", 2)) as (client, peer):
        server.attach(peer)
        for _ in range(n):
            with trio.fail_after(10):
                reports.append(
                    await sync_market(
                        client,
                        [peer.get_id()],
                        MID,
                        held_for_sync(joiner.state),
                        joiner.apply,
                        timeout_s=5,
                        refusals=refusals,
                    )
                )
    return reports


async def test_what_was_refused_for_good_is_not_downloaded_again() -> None:
    """Issue 13: every round of anti-entropy downloaded again, from each peer that
    still held them, the bodies the node had refused for good (past their horizon
    here; expired asks in the issue). Remembered, they are listed and skipped: the
    second round costs a digest and a listing. Without the memory (skip=False, the
    old behaviour) every round downloads them all again."""
    book = make_book(provers=40, requesters=10, asks_each=2)
    origin = filled(book)
    later = NOW + 10 * MARKET.max_lifetime_ms  # past every horizon of the book
    remembered = Refusals()
    first, second = await _rounds(remembered, LateJoiner(later), SyncServer(serving(origin)), 2)
    assert first.applied == first.refused == len(book) == len(remembered)
    assert (second.applied, second.skipped, second.refetched) == (0, len(book), 0)
    assert second.round_trips == 2  # digest, one page of ids
    forgetful = Refusals(skip=False)
    reports = await _rounds(forgetful, LateJoiner(later), SyncServer(serving(origin)), 3)
    assert [r.applied for r in reports] == [len(book)] * 3
    assert [r.refetched for r in reports] == [0, len(book), len(book)]
    print(
        f"{len(book)} bodies refused for good: later rounds download {second.body_bytes} bytes"
        f" (without the memory {reports[1].body_bytes} bytes a round)"
    )


async def test_held_orphans_and_transient_refusals() -> None:
    """A commit whose ask the peer does not serve is held as an orphan: fetching it
    again brings nothing (it waits for its parent), so the next round skips it,
    without remembering it as refused (an orphan evicted from the pool is fetched
    again). A body from the future is refused for now, not for good: fetched again."""
    book = make_book(provers=8, requesters=2, asks_each=2)
    origin = filled(book)
    commits = [env for env in origin.stored_envelopes() if env.kind == 5]
    assert commits

    def only_commits(market: bytes) -> list[Envelope] | None:
        return commits if market == MID else None

    joiner = LateJoiner(NOW)
    bids = [raw for raw in book if raw[1] == 2]
    for raw in bids:  # it has the bids, not the asks
        assert joiner.state.apply(raw, NOW)[0].accepted
    refusals = Refusals()
    first, second = await _rounds(refusals, joiner, SyncServer(only_commits), 2)
    assert first.applied == len(commits) and first.refused == 0 and len(refusals) == 0
    assert sum(len(kids) for kids in joiner.state.pending.values()) == len(commits)
    assert second.applied == 0 and second.ok_peers == 1

    early = LateJoiner(NOW - 60_000)  # a clock a minute behind the book's
    again = await _rounds(Refusals(), early, SyncServer(serving(origin)), 2)
    assert again[0].applied == len(book) and again[0].refused == 0  # from the future
    assert again[1].applied == len(book)


async def test_the_children_of_an_ask_refused_for_good_are_not_held_as_orphans() -> None:
    """A peer whose clock lags ours still serves, for a moment, an ask we forgot (past
    its retention horizon: refused for good) and its commits, which are not stale yet
    by the rules (their horizon is a lifetime later). Held as orphans, they waited for
    a parent that can never come, and held orphans are part of `state_hash`: the node
    disagreed with every peer that had forgotten both, for up to a market lifetime.
    They are refused for good with their parent."""
    book = make_book(provers=8, requesters=2, asks_each=2)
    origin = filled(book)  # the lagging peer
    asks = [env.message for env in origin.stored_envelopes() if isinstance(env.message, Ask)]
    later = max(a.expires_at for a in asks) + 2 * MARKET.max_lifetime_ms + 1
    joiner = LateJoiner(later)
    (report,) = await _rounds(Refusals(), joiner, SyncServer(serving(origin)), 1)
    children = [raw for raw in book if raw[1] == 5]
    assert children  # commits: refused with their asks, not held
    assert report.applied == len(book) and report.refused == len(asks) + len(children)
    assert not joiner.state.pending and not joiner.state.asks
    caught_up = filled(book)  # a peer that was there, and forgot at the same rules
    caught_up.tick(later)
    joiner.state.tick(later)
    assert joiner.state.state_hash() == caught_up.state_hash()
