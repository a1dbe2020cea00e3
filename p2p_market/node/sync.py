"""`/p2p-market/sync/1`: get a peer's live envelopes for a market without waiting
for them to be gossiped again (on join, after a reconnect, and now and then to
fill gaps: anti-entropy).

One stream carries a short conversation of request/response frames (wire.py):

1. `digest`: the peer's count and SHA-256 over its sorted ids. If it equals ours
   the books are the same and the sync cost one round trip, which is the common
   case for periodic anti-entropy.
2. `ids` in pages (`after`, `limit`), in id order, each with its message kind:
   32 bytes + 1 per envelope, so learning what a peer holds is cheap.
3. `bodies` of the ids we lack, in batches bounded by count and bytes, parents
   first: markets, bids and asks before the messages that name them (commits,
   cancels, proofs, receipts), so few bodies arrive before their parent and wait
   in the core's bounded orphan pool.

The client trusts nothing it is sent: a body whose SHA-256 is not an id it
asked for is dropped and counted; ids that are not in increasing order, or a
reply that makes no progress, end the conversation with that peer. Validation is
the node's: every body goes through its `apply`, the same path as gossip.

Ids listed with a kind this version does not know (a later protocol version's:
market-v1.md, Protocol evolution) are not fetched: the node would only IGNORE
them as `unknown_kind` and never store them, so it would fetch them again on
every sync. They are counted, not held against the peer. A body that turns out
to be of an unknown kind anyway (its kind was listed wrong) goes through `apply`
like any other and is IGNOREd there, never stored. The digests of peers of
different versions differ while the newer one holds messages of new kinds, so
their anti-entropy lists ids instead of stopping at the digest.

Several peers are asked at once, each under its own timeouts, so a slow or dead
peer never holds up the others. An id is fetched from one peer at a time: the
peer that lists it first claims it; if that peer fails, its claims are released
and another peer that listed the id fetches it.

A body the node refuses for good (REJECTed, or IGNOREd as stale, expired past its
horizon, of another market or of an unknown kind: verdicts that time cannot turn)
is remembered (`Refusals`, per market, bounded) and not fetched again, from any
peer: otherwise every round would download it again from each peer that still
holds it (issue 13: a node back from a long partition downloaded the same 175
refused messages every 30 s). The node's `apply` says which bodies those are
(`refused_for_good`; and a message whose missing parent was refused for good is
refused with it, not held as an orphan: `runtime.orphan_of_refused`); one it
refuses for now (from the future, a log that cannot be written) is fetched again
later, and one it holds as an orphan is not (`holds` counts it: the node's
`runtime.held_for_sync`).

The server answers from a snapshot of `source(market)` (the node passes
`lambda m: states[m].stored_envelopes()`), sorted once and shared by the requests
of one conversation and, for `cache_s`, by every conversation: several peers that
join at once cost one sort.
"""

from __future__ import annotations

import bisect
import contextlib
import hashlib
import inspect
import logging
import random
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import trio
from libp2p.abc import IHost, INetStream
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID

from p2p_market.core.envelope import Envelope, message_id
from p2p_market.core.limits import MAX_ENVELOPE_BYTES
from p2p_market.core.messages import MESSAGE_TYPES, Kind
from p2p_market.core.verdict import Reason, Status, Verdict
from p2p_market.net import host as host_net
from p2p_market.net.host import guarded
from p2p_market.node.wire import WireError, close_quietly, read_msg, write_msg

log = logging.getLogger(__name__)

PROTOCOL: Final = TProtocol("/p2p-market/sync/1")

ID_BYTES: Final = 32
MAX_REQUEST_BYTES: Final = 64 * 1024
"""A request is at most a batch of ids: 256 x 33 bytes and change."""
MAX_IDS_PER_PAGE: Final = 4_096
MAX_BODIES_PER_REPLY: Final = 256
MAX_BODY_BYTES_PER_REPLY: Final = 1024 * 1024
MAX_REPLY_BYTES: Final = MAX_BODY_BYTES_PER_REPLY + 64 * 1024 + MAX_IDS_PER_PAGE * 40
MAX_IDS_PER_PEER: Final = 1_000_000
"""A peer that lists more ids than this is not believed (memory bound)."""
MAX_REQUESTS_PER_SESSION: Final = 100_000
DEFAULT_TIMEOUT_S: Final = 10.0

_PARENT_KINDS: Final = frozenset({Kind.MARKET, Kind.BID, Kind.ASK})

Source = Callable[[bytes], list[Envelope] | None]
Holds = Callable[[bytes], bool]
Apply = Callable[[bytes], Awaitable[bool | None] | bool | None]
"""Hand a fetched body to the node; True means "refused for good: never fetch it
again" (see `Refusals`), anything else that it was kept or may be worth a retry."""

MAX_REFUSALS: Final = 100_000
"""Refused ids remembered per market (least recently refused forgotten first): 32
bytes and change each, so a peer that lists junk costs at most ~5 MB of memory, and
one forgotten id costs one more download."""


class SyncError(Exception):
    """A peer broke the protocol (bad request or reply) or refused us."""


@dataclass(frozen=True, slots=True)
class Digest:
    """What a node holds for a market, in 40 bytes: equal digests, equal books."""

    count: int
    hash: bytes

    @classmethod
    def of(cls, ids: Iterable[bytes]) -> Digest:
        ordered = sorted(ids)
        return cls.of_sorted(ordered)

    @classmethod
    def of_sorted(cls, ordered: Sequence[bytes]) -> Digest:
        h = hashlib.sha256()
        for mid in ordered:
            h.update(mid)
        return cls(len(ordered), h.digest())


# -- server --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Snapshot:
    taken_at: float
    ids: list[bytes]
    """Sorted."""
    kinds: bytes
    """kinds[i] is the message kind of ids[i]."""
    raw: dict[bytes, bytes]
    digest: Digest


BUSY: Final = host_net.BUSY
"""Refused: every session is taken."""
PEER_BUSY: Final = host_net.PEER_BUSY
"""Refused: this peer already holds its share of the sessions."""
OVER_BUDGET: Final = "over budget"
"""Refused: this peer was sent its answer budget for now; ask again later."""
SESSION_EXPIRED: Final = "session expired"
"""Ended: the session lasted its maximum time; open another."""
EVICTED: Final = "evicted"
"""Ended: every session was taken and another peer asked (`SyncServer._evict_for`)."""

DEFAULT_MAX_SESSIONS: Final = 16
DEFAULT_MAX_SESSIONS_PER_PEER: Final = 2
"""An honest client opens one session per market sync; two leave room for a second
market (or a retry) without letting one peer hold more than 1/8 of the sessions."""
DEFAULT_IDLE_TIMEOUT_S: Final = 10.0
"""An honest client asks its next question at once (it waits at most its own step
timeout, 5 s in the node, for another peer's fetch), so a session that stays quiet
for longer is a held slot, not a conversation."""
DEFAULT_EVICT_AFTER_S: Final = 10.0
"""When every session is taken, a new peer's request may end a session that has
lasted this long (or one of a peer holding two: `SyncServer._evict_for`). Many
identities can otherwise hold every session, asking just often enough not to idle
out, and refuse sync to everyone else (the bench row `sync-sessions`). An honest
sync is over in a few seconds; one that is cut resumes at the next round."""
DEFAULT_MAX_SESSION_S: Final = 120.0
"""Even a busy session ends: a peer that asks just fast enough not to idle out
cannot keep a slot for ever. A full sync of 10,000 envelopes takes a few seconds."""
DEFAULT_ANSWER_BYTES_PER_S: Final = 512 * 1024
DEFAULT_ANSWER_BURST_BYTES: Final = 16 * 1024 * 1024
"""Per peer: the bytes of `ids` and `bodies` answers a peer is sent, as a token bucket
(30 MiB a minute once the burst is spent). A joining node fetches a book once, within
the burst; a peer that asks for the same bodies again and again (a 100x amplifier:
an 8 KiB request, a 1 MiB answer) gets "over budget" instead of our upload."""
MAX_BUDGET_PEERS: Final = 10_000
"""Budgets remembered (least recently used forgotten; a forgotten peer starts full)."""


class AnswerBudget:
    """Per-peer token buckets of answer bytes. A request is answered only while its
    peer's bucket is not empty, with at most what is left in it, and what is sent is
    taken out. The first body of an answer goes whatever its size, so that a large
    envelope is never stuck: a bucket goes into debt by less than one envelope."""

    def __init__(
        self, bytes_per_s: float, burst_bytes: int, max_peers: int = MAX_BUDGET_PEERS
    ) -> None:
        if bytes_per_s <= 0 or burst_bytes < MAX_ENVELOPE_BYTES:
            raise ValueError("an answer budget needs a positive rate and a burst >= 64 KiB")
        self.rate = bytes_per_s
        self.burst = float(burst_bytes)
        self.max_peers = max_peers
        self._buckets: OrderedDict[ID, tuple[float, float]] = OrderedDict()

    def left(self, peer: ID, now: float) -> float:
        """The bytes `peer` may be sent now."""
        tokens, last = self._buckets.get(peer, (self.burst, now))
        return min(self.burst, tokens + max(0.0, now - last) * self.rate)

    def spend(self, peer: ID, size: int, now: float) -> None:
        self._buckets[peer] = (self.left(peer, now) - size, now)
        self._buckets.move_to_end(peer)
        while len(self._buckets) > self.max_peers:
            self._buckets.popitem(last=False)


@dataclass
class _Session:
    peer: ID
    started: float
    scope: trio.CancelScope | None = None
    evicted: bool = False


@dataclass
class SyncServerStats:
    sessions: int = 0
    refused: Counter[str] = field(default_factory=Counter)
    """Requests and sessions refused or ended, by reason (BUSY, PEER_BUSY, OVER_BUDGET,
    SESSION_EXPIRED, EVICTED)."""
    bad_requests: int = 0
    snapshots: int = 0
    requests: Counter[str] = field(default_factory=Counter)
    bodies_sent: int = 0
    answer_bytes: int = 0
    """Bytes of `ids` and `bodies` answers sent, over every peer."""

    @property
    def refused_busy(self) -> int:
        return self.refused[BUSY] + self.refused[PEER_BUSY]


class SyncServer:
    """Answers sync requests from the node's stored envelopes.

    What one peer can take is bounded: `max_sessions_per_peer` of the
    `max_sessions` concurrent sessions, each idle at most `idle_timeout_s` between
    requests and alive at most `max_session_s`; each request frame must arrive, and
    each answer be read, within `timeout_s` (so at least ~100 KiB/s for a full answer);
    and `answer_bytes_per_s` (burst `answer_burst_bytes`) of answers. When every
    session is taken, a new peer's request ends another's (`_evict_for`), so held
    sessions cannot lock newcomers out. Refusals are error
    replies naming the reason (BUSY, PEER_BUSY, OVER_BUDGET, SESSION_EXPIRED, EVICTED)."""

    def __init__(
        self,
        source: Source,
        *,
        cache_s: float = 1.0,
        max_sessions: int = DEFAULT_MAX_SESSIONS,
        max_sessions_per_peer: int = DEFAULT_MAX_SESSIONS_PER_PEER,
        idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S,
        max_session_s: float = DEFAULT_MAX_SESSION_S,
        evict_after_s: float = DEFAULT_EVICT_AFTER_S,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        answer_bytes_per_s: float = DEFAULT_ANSWER_BYTES_PER_S,
        answer_burst_bytes: int = DEFAULT_ANSWER_BURST_BYTES,
    ) -> None:
        self.source = source
        self.cache_s = cache_s
        self.slots = host_net.PeerSlots(total=max_sessions, per_peer=max_sessions_per_peer)
        self.idle_timeout_s = idle_timeout_s
        self.max_session_s = max_session_s
        self.evict_after_s = evict_after_s
        self._open: dict[int, _Session] = {}
        """The sessions in progress, by a serial number (oldest first)."""
        self._serial = 0
        self.timeout_s = timeout_s
        self.budget = AnswerBudget(answer_bytes_per_s, answer_burst_bytes)
        self.stats = SyncServerStats()
        self._cache: dict[bytes, _Snapshot] = {}

    def attach(self, host: IHost) -> None:
        """Serve `PROTOCOL` on `host` (the handler is guarded: it cannot take the
        host down)."""
        host.set_stream_handler(PROTOCOL, guarded(self.handle, PROTOCOL))

    # -- snapshots ------------------------------------------------------------------

    def snapshot(self, market: bytes) -> _Snapshot | None:
        """The market's envelopes, sorted by id; None if the node does not follow it.
        Rebuilt at most every `cache_s` seconds."""
        now = trio.current_time()
        cached = self._cache.get(market)
        if cached is not None and now - cached.taken_at < self.cache_s:
            return cached
        envelopes = self.source(market)
        if envelopes is None:
            self._cache.pop(market, None)
            return None
        by_id = {env.id: env for env in envelopes}
        ids = sorted(by_id)
        snap = _Snapshot(
            taken_at=now,
            ids=ids,
            kinds=bytes(by_id[i].kind for i in ids),
            raw={i: by_id[i].raw for i in ids},
            digest=Digest.of_sorted(ids),
        )
        self._cache[market] = snap
        self.stats.snapshots += 1
        return snap

    def digest(self, market: bytes) -> Digest | None:
        """This node's own digest (pass it to `sync_market` as `mine`)."""
        snap = self.snapshot(market)
        return None if snap is None else snap.digest

    # -- the conversation -----------------------------------------------------------

    async def handle(self, stream: INetStream) -> None:
        peer = stream.muxed_conn.peer_id
        refused = self.slots.take(peer)
        if refused == BUSY and self._evict_for(peer):
            refused = self.slots.take(peer)
        if refused is not None:
            await self._refuse(stream, refused)
            await close_quietly(stream)
            return
        self.stats.sessions += 1
        self._serial += 1
        serial = self._serial
        session = _Session(peer=peer, started=trio.current_time())
        self._open[serial] = session
        try:
            with trio.move_on_after(self.max_session_s) as session_scope:
                session.scope = session_scope
                await self._converse(stream, peer)
            if session.evicted:
                await self._refuse(stream, EVICTED)
            elif session_scope.cancelled_caught:
                await self._refuse(stream, SESSION_EXPIRED)
        finally:
            del self._open[serial]
            if not session.evicted:  # an evicted session's slot went to its evictor
                self.slots.give_back(peer)
            await close_quietly(stream)

    def _evict_for(self, newcomer: ID) -> bool:
        """Make room for `newcomer`: end a session and free its slot at once
        (synchronously: the caller takes it before anyone else can). A peer with no
        session may take one from a peer holding two or more, whatever its age (so
        identities holding two each cannot fill the server); anyone may end a
        session older than `evict_after_s` (so sessions held one per identity are
        not held for ever). Of those, the one whose peer holds most, then the
        oldest."""
        now = trio.current_time()
        share = self.slots.held_by(newcomer) == 0
        best: _Session | None = None
        for session in self._open.values():  # oldest first
            if session.evicted or session.scope is None:
                continue
            held = self.slots.held_by(session.peer)
            if not ((share and held >= 2) or now - session.started >= self.evict_after_s):
                continue
            if best is None or held > self.slots.held_by(best.peer):
                best = session
        if best is None or best.scope is None:
            return False
        best.evicted = True
        best.scope.cancel()
        self.slots.give_back(best.peer)
        return True

    async def _refuse(self, stream: INetStream, reason: str) -> None:
        """Count and send a named refusal; a peer that is gone is not waited for."""
        self.stats.refused[reason] += 1
        with contextlib.suppress(WireError):
            await write_msg(stream, _error(reason), timeout_s=min(self.timeout_s, 2.0))

    async def _converse(self, stream: INetStream, peer: ID) -> None:
        """Requests and answers until the peer says goodbye, breaks the protocol, goes
        quiet for `idle_timeout_s` or reads too slowly."""
        session: dict[bytes, _Snapshot] = {}
        try:
            for _ in range(MAX_REQUESTS_PER_SESSION):
                try:
                    request = await read_msg(
                        stream, max_bytes=MAX_REQUEST_BYTES, timeout_s=self.idle_timeout_s
                    )
                except WireError as exc:
                    if not exc.eof:
                        log.debug("sync session ended: %s", exc)
                    return
                try:
                    reply = await self.respond(request, session, peer)
                except SyncError as exc:
                    self.stats.bad_requests += 1
                    await write_msg(stream, _error(str(exc)), timeout_s=self.timeout_s)
                    return
                await write_msg(stream, reply, max_bytes=MAX_REPLY_BYTES, timeout_s=self.timeout_s)
        except WireError as exc:
            log.debug("sync session ended: %s", exc)

    async def respond(
        self, request: Any, session: dict[bytes, _Snapshot], peer: ID
    ) -> dict[str, Any]:
        """The reply to one request from `peer` (async, so that a subclass may delay
        or alter it: the tests' slow and lying peers)."""
        return self.answer(request, session, peer)

    def answer(self, request: Any, session: dict[bytes, _Snapshot], peer: ID) -> dict[str, Any]:
        """The reply to one request from `peer`. SyncError for a malformed one (which
        ends the conversation); an unknown market, and a peer over its answer budget,
        are ordinary error replies."""
        if type(request) is not dict:
            raise SyncError("a request is a map")
        op = request.get("op")
        market = _id(request.get("market"), "market")
        if op not in ("digest", "ids", "bodies"):
            raise SyncError(f"unknown op {op!r}")
        self.stats.requests[op] += 1
        snap = session.get(market)
        if snap is None:
            snap = self.snapshot(market)
            if snap is None:
                return _error("unknown market")
            session[market] = snap
        if op == "digest":
            return {"ok": True, "count": snap.digest.count, "digest": snap.digest.hash}
        now = trio.current_time()
        allowance = self.budget.left(peer, now)
        if allowance <= 0:
            self.stats.refused[OVER_BUDGET] += 1
            return _error(OVER_BUDGET)
        reply = self._page(request, snap) if op == "ids" else self._bodies(request, snap, allowance)
        size = _answer_size(reply)
        self.budget.spend(peer, size, now)
        self.stats.answer_bytes += size
        return reply

    def _page(self, request: dict[str, Any], snap: _Snapshot) -> dict[str, Any]:
        """One page of (id, kind), after `after`."""
        after = request.get("after")
        if after != b"":
            after = _id(after, "after")
        limit = request.get("limit")
        if type(limit) is not int or limit < 1:
            raise SyncError("limit must be a positive integer")
        limit = min(limit, MAX_IDS_PER_PAGE)
        start = bisect.bisect_right(snap.ids, after)
        page = snap.ids[start : start + limit]
        return {
            "ok": True,
            "ids": page,
            "kinds": snap.kinds[start : start + len(page)],
            "more": start + len(page) < len(snap.ids),
        }

    def _bodies(self, request: dict[str, Any], snap: _Snapshot, allowance: float) -> dict[str, Any]:
        """The bodies asked for, as many as fit one reply and `allowance` bytes (at
        least one: the bucket is not empty); the client asks again for the rest."""
        wanted = request.get("ids")
        if type(wanted) is not tuple or len(wanted) > MAX_BODIES_PER_REPLY:
            raise SyncError(f"ids must be a list of at most {MAX_BODIES_PER_REPLY}")
        bodies: list[bytes] = []
        missing: list[bytes] = []
        size = 0
        for item in wanted:
            mid = _id(item, "id")
            raw = snap.raw.get(mid)
            if raw is None:
                missing.append(mid)
                continue
            if bodies and size + len(raw) > min(MAX_BODY_BYTES_PER_REPLY, allowance):
                break  # the client asks again for what did not fit
            bodies.append(raw)
            size += len(raw)
        self.stats.bodies_sent += len(bodies)
        return {"ok": True, "bodies": bodies, "missing": missing}


def _answer_size(reply: dict[str, Any]) -> int:
    """What an answer costs the budget: its ids and bodies, in bytes (the framing
    around them is small and bounded)."""
    ids = reply.get("ids") or ()
    bodies = reply.get("bodies") or ()
    return len(ids) * (ID_BYTES + 1) + sum(len(b) for b in bodies)


def _error(reason: str) -> dict[str, Any]:
    return {"ok": False, "error": reason}


def _id(value: object, name: str) -> bytes:
    if type(value) is not bytes or len(value) != ID_BYTES:
        raise SyncError(f"{name} must be {ID_BYTES} bytes")
    return value


# -- client --------------------------------------------------------------------------


FINAL_IGNORES: Final = frozenset(
    {Reason.EXPIRED, Reason.STALE, Reason.WRONG_MARKET, Reason.UNKNOWN_KIND}
)
"""IGNOREs that time cannot turn into a keep (time only moves on: what is expired
or stale now stays so). Not among them: `from_future` (it comes due), `orphan`
(held until its parent comes), refusals by a log that cannot be written, and
everything the core stores though it IGNOREs it (checked by `kept`)."""


def refused_for_good(verdict: Verdict, kept: bool) -> bool:
    """Whether a synced body the node did not keep would be refused again by any
    later round: a REJECT (its form, signature or a rule over the parents its ids
    name: the same bytes are judged the same), or one of `FINAL_IGNORES`."""
    if kept:
        return False
    return verdict.status is Status.REJECT or (
        verdict.status is Status.IGNORE and verdict.reason in FINAL_IGNORES
    )


class CatchUp:
    """How long a node took to catch up after it came back: from the first
    connection after a time with no peer to the end of the first sync run after it
    that reached a peer for every market (`last_s`). What the node can see alone;
    whether it then agrees with the others is theirs to compare (state_hash)."""

    def __init__(self) -> None:
        self.isolated = True
        """No peer (a node that starts is isolated until its first connection)."""
        self.reconnected_at: float | None = None
        self.last_s: float | None = None
        self.times = 0

    def peers(self, count: int) -> None:
        if count == 0:
            self.isolated = True
            self.reconnected_at = None

    def connected(self, now: float) -> None:
        if self.isolated and self.reconnected_at is None:
            self.reconnected_at = now

    def synced(self, ok: bool, now: float) -> float | None:
        """A sync run ended; the catch-up time if this run ended one."""
        if not ok or self.reconnected_at is None:
            return None
        self.last_s = now - self.reconnected_at
        self.isolated = False
        self.reconnected_at = None
        self.times += 1
        return self.last_s


class Refusals:
    """Ids this node fetched by sync and refused for good, so that no later round
    fetches them again from any peer. Bounded (`max_ids`, least recently refused
    forgotten first): forgetting one costs a download, never a message.

    `skip=False` remembers without skipping, so that `refetched` counts what the
    node would download again without this memory (the before/after figure)."""

    def __init__(self, max_ids: int = MAX_REFUSALS, *, skip: bool = True) -> None:
        self.max_ids = max_ids
        self.skip = skip
        self._ids: OrderedDict[bytes, None] = OrderedDict()
        self.refetched = 0
        """Bodies downloaded again after they had been refused for good."""

    def __contains__(self, mid: object) -> bool:
        return mid in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def skips(self, mid: bytes) -> bool:
        return self.skip and mid in self._ids

    def note(self, mid: bytes) -> None:
        self._ids[mid] = None
        self._ids.move_to_end(mid)
        while len(self._ids) > self.max_ids:
            self._ids.popitem(last=False)


@dataclass
class PeerSync:
    """How the conversation with one peer went."""

    peer: ID
    ok: bool = False
    error: str = ""
    equal: bool = False
    """Its digest equalled ours: nothing to do."""
    round_trips: int = 0
    listed: int = 0
    requested: int = 0
    received: int = 0
    unsolicited: int = 0
    """Bodies that were not for an id we asked this peer for: dropped."""
    unknown_kinds: int = 0
    """Ids listed with a kind this version does not know: not fetched."""
    skipped: int = 0
    """Ids listed that this node refused for good before (`Refusals`): not fetched."""
    body_bytes: int = 0
    """Bytes of the bodies received from this peer."""


@dataclass
class SyncReport:
    market: bytes
    peers: list[PeerSync] = field(default_factory=list)
    applied: int = 0
    """Bodies handed to `apply` (which decides whether to keep them)."""
    refused: int = 0
    """Of those, bodies `apply` refused for good (remembered in `Refusals`)."""
    refetched: int = 0
    """Of those, bodies refused for good before: downloaded again (0 unless the
    refusals were forgotten or are not skipped)."""
    apply_errors: int = 0
    elapsed_s: float = 0.0

    @property
    def round_trips(self) -> int:
        return sum(p.round_trips for p in self.peers)

    @property
    def unsolicited(self) -> int:
        return sum(p.unsolicited for p in self.peers)

    @property
    def unknown_kinds(self) -> int:
        return sum(p.unknown_kinds for p in self.peers)

    @property
    def ok_peers(self) -> int:
        return sum(1 for p in self.peers if p.ok)

    @property
    def skipped(self) -> int:
        return sum(p.skipped for p in self.peers)

    @property
    def body_bytes(self) -> int:
        return sum(p.body_bytes for p in self.peers)


class _Fetch:
    """What the peer tasks of one `sync_market` call share: who is fetching what."""

    def __init__(
        self, holds: Holds, apply: Apply, report: SyncReport, refusals: Refusals | None
    ) -> None:
        self.holds = holds
        self.apply = apply
        self.report = report
        self.refusals = refusals
        self.owner: dict[bytes, PeerSync] = {}
        self.done: set[bytes] = set()
        self.changed = trio.Event()

    def needed(self, mid: bytes) -> bool:
        return (
            mid not in self.done
            and not self.holds(mid)
            and not (self.refusals is not None and self.refusals.skips(mid))
        )

    def refused_before(self, mid: bytes) -> bool:
        """Held, fetched in this run, or refused for good: what a listing need not
        fetch (counted as skipped when only the last holds)."""
        return (
            self.refusals is not None
            and self.refusals.skips(mid)
            and mid not in self.done
            and not self.holds(mid)
        )

    def release(self, me: PeerSync, ids: Iterable[bytes]) -> None:
        for mid in ids:
            if self.owner.get(mid) is me:
                del self.owner[mid]
        self.changed.set()
        self.changed = trio.Event()

    async def give(self, raw: bytes) -> None:
        mid = message_id(raw)
        self.done.add(mid)
        self.report.applied += 1
        if self.refusals is not None and mid in self.refusals:
            self.report.refetched += 1
            self.refusals.refetched += 1
        try:
            result = self.apply(raw)
            if inspect.isawaitable(result):
                result = await result
        except Exception:
            self.report.apply_errors += 1
            log.exception("apply failed on a synced envelope")
            return
        if result is True:
            self.report.refused += 1
            if self.refusals is not None:
                self.refusals.note(mid)


class _Conversation:
    """One peer, one stream, one request at a time."""

    def __init__(self, stream: INetStream, me: PeerSync, market: bytes, timeout_s: float) -> None:
        self.stream = stream
        self.me = me
        self.market = market
        self.timeout_s = timeout_s

    async def ask(self, op: str, **fields: Any) -> dict[str, Any]:
        await write_msg(
            self.stream,
            {"op": op, "market": self.market, **fields},
            max_bytes=MAX_REQUEST_BYTES,
            timeout_s=self.timeout_s,
        )
        reply = await read_msg(self.stream, max_bytes=MAX_REPLY_BYTES, timeout_s=self.timeout_s)
        self.me.round_trips += 1
        if type(reply) is not dict or type(reply.get("ok")) is not bool:
            raise SyncError("malformed reply")
        if not reply["ok"]:
            raise SyncError(f"peer refused: {reply.get('error')!r}")
        return reply

    async def digest(self) -> Digest:
        reply = await self.ask("digest")
        count, h = reply.get("count"), reply.get("digest")
        if type(count) is not int or count < 0 or type(h) is not bytes or len(h) != 32:
            raise SyncError("malformed digest")
        return Digest(count, h)

    async def list_ids(self, page_limit: int) -> list[tuple[bytes, int]]:
        """Every (id, kind) the peer lists, checked to be strictly increasing."""
        out: list[tuple[bytes, int]] = []
        after = b""
        while True:
            reply = await self.ask("ids", after=after, limit=page_limit)
            ids, kinds, more = reply.get("ids"), reply.get("kinds"), reply.get("more")
            if type(ids) is not tuple or type(kinds) is not bytes or type(more) is not bool:
                raise SyncError("malformed ids page")
            if len(ids) != len(kinds) or len(ids) > page_limit or (more and not ids):
                raise SyncError("ids page does not add up")
            for mid, kind in zip(ids, kinds, strict=True):
                if type(mid) is not bytes or len(mid) != ID_BYTES or mid <= after:
                    raise SyncError("ids are not 32-byte, strictly increasing")
                out.append((mid, kind))
                after = mid
            self.me.listed = len(out)
            if len(out) > MAX_IDS_PER_PEER:
                raise SyncError(f"peer lists more than {MAX_IDS_PER_PEER} ids")
            if not more:
                return out

    async def bodies(self, ids: list[bytes]) -> tuple[dict[bytes, bytes], set[bytes]]:
        """The asked-for bodies by id, and the ids the peer says it no longer has.
        Anything else in the reply is dropped and counted."""
        self.me.requested += len(ids)
        reply = await self.ask("bodies", ids=ids)
        bodies, missing = reply.get("bodies"), reply.get("missing")
        if type(bodies) is not tuple or type(missing) is not tuple:
            raise SyncError("malformed bodies reply")
        asked = set(ids)
        got: dict[bytes, bytes] = {}
        for raw in bodies:
            mid = message_id(raw) if type(raw) is bytes else None
            if mid is None or mid not in asked or mid in got:
                self.me.unsolicited += 1
                continue
            got[mid] = raw
            self.me.body_bytes += len(raw)
        self.me.received += len(got)
        gone = {m for m in missing if type(m) is bytes and m in asked and m not in got}
        return got, gone


def _fetch_order(item: tuple[bytes, int]) -> tuple[int, bytes]:
    """Parents first (see the module docstring), then by id."""
    mid, kind = item
    return (0 if kind in _PARENT_KINDS else 1, mid)


async def _sync_peer(
    host: IHost,
    me: PeerSync,
    market: bytes,
    fetch: _Fetch,
    mine: Digest | None,
    timeout_s: float,
    page_limit: int,
    batch: int,
) -> None:
    mine_claimed: set[bytes] = set()
    stream: INetStream | None = None
    try:
        with trio.fail_after(timeout_s):
            stream = await host.new_stream(me.peer, [PROTOCOL])
        talk = _Conversation(stream, me, market, timeout_s)
        theirs = await talk.digest()
        if theirs == mine or theirs.count == 0:
            me.equal = theirs == mine
            me.ok = True
            return
        listed = await talk.list_ids(page_limit)
        known = [item for item in listed if item[1] in MESSAGE_TYPES]
        me.unknown_kinds = len(listed) - len(known)
        me.skipped = sum(1 for mid, _ in known if fetch.refused_before(mid))
        # what we lack first, then its order: a peer lists everything it holds, and
        # we hold nearly all of it, so sorting the whole listing was most of a
        # periodic sync's cost on the node's loop
        lacking = [item for item in known if fetch.needed(item[0])]
        pending = [mid for mid, _ in sorted(lacking, key=_fetch_order)]
        while pending:
            pick: list[bytes] = []
            rest: list[bytes] = []
            others = False
            for mid in pending:
                if not fetch.needed(mid):
                    continue
                owner = fetch.owner.get(mid)
                if owner is not None and owner is not me:
                    others = True
                    rest.append(mid)
                elif len(pick) < batch:
                    fetch.owner[mid] = me
                    mine_claimed.add(mid)
                    pick.append(mid)
                else:
                    rest.append(mid)
            if not pick:
                if others:  # another peer is fetching them: wait until it finishes or fails
                    with trio.move_on_after(timeout_s):
                        await fetch.changed.wait()
                pending = rest
                continue
            got, gone = await talk.bodies(pick)
            if not got and not gone:
                raise SyncError("a bodies reply with nothing asked for")
            for mid in pick:  # in fetch order, parents first
                raw = got.get(mid)
                if raw is not None:
                    await fetch.give(raw)
            unanswered = [m for m in pick if m not in got and m not in gone]
            done = [m for m in pick if m in got or m in gone]
            mine_claimed.difference_update(done)
            fetch.release(me, done)
            pending = unanswered + rest  # what did not fit the reply comes first
        me.ok = True
    except (WireError, SyncError, trio.TooSlowError) as exc:
        me.error = f"{type(exc).__name__}: {exc}"
    except Exception as exc:  # dial / protocol negotiation failures from libp2p
        me.error = f"{type(exc).__name__}: {exc}"
    finally:
        fetch.release(me, mine_claimed)
        if stream is not None:
            await close_quietly(stream)


async def sync_market(
    host: IHost,
    peers: Sequence[ID],
    market: bytes,
    holds: Holds,
    apply: Apply,
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    max_peers: int = 3,
    mine: Digest | None = None,
    page_limit: int = MAX_IDS_PER_PAGE,
    batch: int = MAX_BODIES_PER_REPLY,
    rng: random.Random | None = None,
    prefer: Iterable[ID] = (),
    refusals: Refusals | None = None,
) -> SyncReport:
    """Fetch from up to `max_peers` of `peers` every envelope of `market` they hold
    and `holds` says we lack, handing each body to `apply`.

    Every peer in `prefer` (that is in `peers`; the caller bounds them) is asked, and
    random others up to `max_peers` in all: a peer that just connected is the one
    most likely to hold what nobody else has (it was cut off, or is new); left to a
    random draw it is missed more often than not, and what it holds may expire
    before the next periodic sync. Several peers that connect at once are each
    asked: each may hold what the others lack (two sides of a partition).

    `timeout_s` bounds each step with a peer (dial, each round trip), so a dead or
    stalled peer is given up after that long while the others carry on. `mine` is
    our own digest (`SyncServer.digest`): a peer with the same one costs one round
    trip. `refusals` (the node keeps one per market across runs) is where the
    bodies `apply` refuses for good are remembered, and not fetched again. Never
    raises for a peer's failure: the report says what happened."""
    started = trio.current_time()
    report = SyncReport(market)
    own = host.get_id()
    candidates = [p for p in dict.fromkeys(peers) if p != own]
    first = [p for p in dict.fromkeys(prefer) if p in candidates]
    rest = [p for p in candidates if p not in first]
    room = max(0, min(max_peers - len(first), len(rest)))
    chosen = first + (rng or random.Random()).sample(rest, room)
    fetch = _Fetch(holds, apply, report, refusals)
    batch = max(1, min(batch, MAX_BODIES_PER_REPLY))
    page_limit = max(1, min(page_limit, MAX_IDS_PER_PAGE))
    async with trio.open_nursery() as nursery:
        for peer in chosen:
            me = PeerSync(peer)
            report.peers.append(me)
            nursery.start_soon(
                _sync_peer, host, me, market, fetch, mine, timeout_s, page_limit, batch
            )
    report.elapsed_s = trio.current_time() - started
    return report
