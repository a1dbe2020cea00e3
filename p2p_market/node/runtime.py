"""The node: one trio nursery holding every service, and the only place where the
wall clock meets the core.

Data flow. A frame from a peer is checked by the gossip validator (form, signature),
then each envelope goes through `admit`, which applies it to the market's core
state: an envelope is forwarded only if this node's own core accepted it, and it is
in the SQLite log before the core keeps it, so a crash loses nothing accepted. A
message the log cannot take (disk full, I/O error) is refused, the state untouched:
not forwarded, not served by sync, not acted upon; the node keeps running and takes
messages again once the log can be written. Local submissions (API, roles) take the
same path before being published. Effects from the core (apply and tick) are queued
to `effects` and dispatched to the hooks (roles, metrics, logs) by one task, so the
validator never waits on I/O beyond the log write.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import multiaddr
import trio
from libp2p.abc import IHost
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import info_from_p2p_addr

from p2p_market.core import codec
from p2p_market.core import effects as fx
from p2p_market.core.crypto import SigningKey
from p2p_market.core.effects import Effect
from p2p_market.core.envelope import Envelope, market_id, seal
from p2p_market.core.messages import Ask, Bid, Cancel, Kind, Market, sha256
from p2p_market.core.state import MarketState
from p2p_market.core.validation import check_envelope
from p2p_market.core.verdict import Reason, Verdict, ignore
from p2p_market.core.work import inputs_size
from p2p_market.net.addrs import local_only
from p2p_market.net.gossip import Gossip, GossipConfig, unbatched
from p2p_market.net.host import DIAL_TIMEOUT_S, connect_all, make_host
from p2p_market.net.keepalive import Keepalive
from p2p_market.net.ratelimit import KeyedRateLimiter
from p2p_market.net.relay import Relaying
from p2p_market.node import peers
from p2p_market.node.api_token import ensure_token, token_path
from p2p_market.node.artifacts import ArtifactServer, MarketArtifacts
from p2p_market.node.config import ANTI_ENTROPY_S as ANTI_ENTROPY_S  # re-exported
from p2p_market.node.config import NodeConfig
from p2p_market.node.direct import DirectMessage, DirectServer, Header
from p2p_market.node.discovery import Discovery, KnownMarkets
from p2p_market.node.events import EventHub
from p2p_market.node.facade import ProverControl, Submitted
from p2p_market.node.group_sync import GroupSync
from p2p_market.node.known_peers import KnownPeers
from p2p_market.node.metrics import NodeMetrics, serve_metrics
from p2p_market.node.newcomers import NewcomerHoldings
from p2p_market.node.redial import Redialer
from p2p_market.node.storage import Entry, EnvelopeLog, StorageError, WriteFailed
from p2p_market.node.sync import CatchUp, Refusals, SyncServer, refused_for_good, sync_market
from p2p_market.node.views import ask_json, bid_json
from p2p_market.proving.snark import artifact_dirs

if TYPE_CHECKING:
    from trio_typing import TaskStatus

log = logging.getLogger("p2p_market.node")

EffectHook = Callable[[bytes, Effect], Awaitable[None] | None]
TICK_S: Final = 0.1
TARGET_PEERS: Final = 8
PEER_POLL_S: Final = 2.0
SYNC_TIMEOUT_S: Final = 5.0
NEW_PEER_SYNC_TRIES: Final = 5
NEW_PEER_SYNC_RETRY_S: Final = 0.25
KNOWN_DIAL_TIMEOUT_S: Final = 3.0
"""Dial timeout for the remembered peers (node/known_peers.py)."""
ORPHAN_GRACE_S: Final = 1.0
"""How long a message from gossip may wait for its parent (an ask, a bid) before the
node fetches the parent by sync. Gossip reorders, so a child often comes a moment
before its parent; but a parent that only reached the network by sync (its signer
was cut off when it published it) is never gossiped, and an ask that reaches a node
after its expiry is refused for good, so waiting for the next periodic sync can lose
it. The peers that forwarded the child hold the parent (they accepted the child).
At least the sync server's snapshot age (SyncServer.cache_s), so that the peers'
snapshots include what they held when they forwarded the child."""
PRUNE_EVERY_MS: Final = 600_000
SIGNER_PER_SECOND: Final = 20.0
SIGNER_BURST: Final = 400
NEWCOMER_PER_SECOND: Final = 20.0
NEWCOMER_BURST: Final = 200
NEWCOMER_BYTES_PER_SECOND: Final = 128 * 1024
NEWCOMER_BYTES_BURST: Final = 2 * 1024 * 1024
"""Messages and bytes per second, shared by every signer without history in a market
(no live bid, no commit, no ask anyone committed to): a swarm of fresh keys gets this
much of the node between them, and signers with history are never charged it."""


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


SKEW_WARN_EVERY_S: Final = 60.0
OFFSET_WINDOW_MS: Final = 600_000
"""Gossiped messages signed further than this from the node's clock are left out of
the peers' clock offsets (replays, long delays)."""
MAX_OFFSETS: Final = 1024
"""At most one warning per signer this often about its messages from the future."""


class ClockSkew:
    """Messages dropped as `from_future` (signed later than this node's clock plus the
    market's skew_ms): counted, and told in the log, at most once per signer per
    SKEW_WARN_EVERY_S, with how far ahead. Before, only a counter moved, and an
    operator whose clock (or whose peers' clocks) drifted saw messages vanish with no
    word why: the log line names the signer and the offset, `status` the count."""

    def __init__(self) -> None:
        self.dropped = 0
        self.last: dict[str, Any] | None = None
        self._warned: dict[bytes, float] = {}
        self._offsets: dict[bytes, int] = {}
        """signer -> (its last gossiped timestamp - this node's clock at arrival)."""

    def observe(self, signer: bytes, offset_ms: int) -> None:
        """A message from `signer` came by gossip signed `offset_ms` after this node's
        clock (transit included: a few ms to a few hundred). Far-off values (a
        replayed or long-delayed message) say nothing about clocks and are left out."""
        if abs(offset_ms) > OFFSET_WINDOW_MS:
            return
        if signer not in self._offsets and len(self._offsets) >= MAX_OFFSETS:
            self._offsets.pop(next(iter(self._offsets)))
        self._offsets.pop(signer, None)
        self._offsets[signer] = offset_ms

    def peer_offsets(self) -> dict[str, int] | None:
        """Where the signers' clocks stand against this node's, from what gossip
        brought lately: if most are ahead (or behind) by more than the tolerance, it
        is this node's clock that is off."""
        if not self._offsets:
            return None
        values = sorted(self._offsets.values())
        return {
            "signers": len(values),
            "median_ms": values[len(values) // 2],
            "min_ms": values[0],
            "max_ms": values[-1],
        }

    def note(self, signer: bytes, ahead_ms: int, tolerance_ms: int, now_s: float) -> None:
        self.dropped += 1
        self.last = {"signer": signer.hex(), "ahead_ms": ahead_ms}
        if now_s - self._warned.get(signer, float("-inf")) < SKEW_WARN_EVERY_S:
            return
        if len(self._warned) > 10_000:  # a swarm of keys must not grow this forever
            self._warned.clear()
        self._warned[signer] = now_s
        offsets = self.peer_offsets()
        peers = (
            "no peer clocks known yet"
            if offsets is None
            else "peers' clocks against this node's: median {median_ms:+d} ms, min {min_ms:+d},"
            " max {max_ms:+d}, over {signers} signers".format(**offsets)
        )
        log.warning(
            "dropped a message from signer %s signed %d ms in the future (tolerance %d ms):"
            " its clock or this node's is off (%s); run NTP (chrony, systemd-timesyncd) on"
            " both (%d dropped so far)",
            signer.hex()[:16],
            ahead_ms,
            tolerance_ms,
            peers,
            self.dropped,
        )

    def status(self) -> dict[str, Any]:
        return {"dropped": self.dropped, "last": self.last, "peer_offsets": self.peer_offsets()}


class LogHealth:
    """Write failures of the log, told once per episode: at the first failure, and
    at the first write that succeeds after it (with how many messages were refused)."""

    def __init__(self, tell: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.failing: StorageError | None = None
        self.refused = 0
        self.tell = tell
        """Told each change, as the event stream's `storage` event (node/events.py)."""

    def failed(self, exc: StorageError, refused: int = 0) -> None:
        if self.failing is None:
            log.error("cannot write the log: %s; refusing new messages until it can", exc)
            if self.tell is not None:
                self.tell({"storage": str(exc), "refused": 0})
        self.failing = exc
        self.refused += refused

    def ok(self) -> None:
        if self.failing is not None:
            log.warning(
                "the log can be written again; %d messages were refused meanwhile",
                self.refused,
            )
            if self.tell is not None:
                self.tell({"storage": "ok", "refused": self.refused})
            self.failing = None
            self.refused = 0


@dataclass(slots=True)
class LoggedAhead:
    """The envelopes of the frame being judged that are already in the log
    (`Node.logged_ahead`), and the frame's one time."""

    now: int
    ids: frozenset[bytes]
    kept: set[bytes] = dataclasses.field(default_factory=set)
    """Those the core went on to keep; the others are taken out of the log again."""


@dataclass(frozen=True, slots=True)
class Admitted:
    market: bytes
    env: Envelope
    verdict: Verdict
    local: bool


class MarketBook:
    """The node's core states, one per followed market, and the rules for feeding
    them: the same code path for gossip, sync, replay and local submissions."""

    def __init__(self, markets: tuple[Market, ...], local_prover: bytes | None) -> None:
        self.states: dict[bytes, MarketState] = {
            market_id(m): MarketState(m, local_prover=local_prover) for m in markets
        }

    def state_for(self, env: Envelope) -> MarketState | None:
        m = env.message
        if isinstance(m, Market):
            return self.states.get(market_id(m))
        return self.states.get(m.market)


class Node:
    """A running node; implements `NodeFacade` for the control API and the roles."""

    def __init__(
        self,
        config: NodeConfig,
        key: SigningKey,
        *,
        clock: Callable[[], int] = wall_clock_ms,
        prover: bool = False,
    ) -> None:
        if config.market_ids:  # the CLI fetches them first (cli/joining.py)
            raise ValueError(
                f"market {config.market_ids[0].hex()[:16]}… is named by id and not resolved:"
                " fetch its descriptor from peers before the node starts"
            )
        self.config = config
        self.key = key
        self.clock = clock
        self.cores = MarketBook(config.markets, key.public_key if prover else None)
        self.hooks: list[EffectHook] = []
        self.direct_hooks: list[Callable[[DirectMessage], Awaitable[bool]]] = []
        self.ask_filters: list[Callable[[dict[str, Any], int], dict[str, Any]]] = []
        """Applied to the fields of every ask this node signs (fields, now): the
        requester role adds the provers its reputation denies (roles/reputation.py)."""
        self.status_sources: dict[str, Callable[[], Any]] = {}
        """Extra entries of `status()`, by name (the requester role's reputation)."""
        self.direct_wants: list[Callable[[Header], bool]] = []
        """Asked on a direct message's signed header, before its body is read: a
        message no role wants is refused then (`node/direct.py`)."""
        self.proof_sources: list[Callable[[bytes], dict[bytes, bytes] | None]] = []
        """Where verified proofs of this key's asks are kept (the requester role):
        what `GET /v1/asks/<id>/proofs` and `p2p-market request --api` read."""
        self.prover_control: ProverControl | None = None
        """The prover role's operator commands (`/v1/prover/...`), if it runs one."""
        self._effects_in, self._effects_out = trio.open_memory_channel[tuple[bytes, Effect]](
            100_000
        )
        self.metrics = NodeMetrics(self.states)
        self.events = EventHub()
        """What `GET /v1/events` streams: the core's effects about asks, local
        submissions' verdicts, peers connected and dropped (node/events.py)."""
        self.started_ms = clock()
        self.admitted = 0
        self.log: EnvelopeLog | None = None
        self.log_health = LogHealth(functools.partial(self.events.publish, "storage"))
        self.clock_skew = ClockSkew()
        self.known_peers: KnownPeers | None = None
        """Addresses of peers this node was connected to, kept in its data dir
        (node/known_peers.py): dialled like the bootstrap peers."""
        self._bootstrap_told = False
        self.bootstrap_failures: dict[str, BaseException] = {}
        """Why each configured bootstrap peer failed, if all of them failed at the
        first dial round: what the SDK's `unreachable` names."""
        self.log_unreachable = True
        """Log that no bootstrap peer answered (one error line); off where the
        caller reports it itself (the SDK's RequestFailed, `request`'s one line)."""
        self.host: IHost | None = None
        self.gossip: Gossip | None = None
        self.sync_server = SyncServer(self._sync_source)
        self.sync_refusals: dict[bytes, Refusals] = {m: Refusals() for m in self.states}
        """What sync fetched and the core refused for good, per market: not fetched
        again (node/sync.py)."""
        self.catch_up = CatchUp()
        self.known = KnownMarkets()
        """Markets peers announce (node/discovery.py): GET /v1/markets/known."""
        self.discovery: Discovery | None = None
        self.artifact_dirs = artifact_dirs([artifacts_path(config)])
        """Where this node finds circuit artifacts: its data dir's artifacts/ (what it
        fetched from peers, node/artifacts.py) first, then snark.py's usual places."""
        self.artifact_server = ArtifactServer(
            MarketArtifacts(lambda: config.markets, self.artifact_dirs).lookup
        )
        self.api_port: int | None = None
        self.api_token_file: Path = token_path(config.data_dir)
        """The file of the control API's token (api_token.py), made at the first start."""
        self.metrics_port: int | None = None
        self.ready = trio.Event()
        self._sync_requested = trio.Event()
        self._wake = trio.Event()
        """Set when the connection keeper has something to do before its next poll:
        a peer connected, an orphan came."""
        self._nursery: trio.Nursery | None = None
        self._syncing: set[ID] = set()
        """Peers a sync on connect is running with, or waiting for the node's nursery
        (`_sync_new_peer`)."""
        self.keepalive: Keepalive | None = None
        self.redialer: Redialer | None = None
        self._missing_parents: dict[tuple[bytes, bytes], float] = {}
        """(market, parent id) of orphans from gossip -> when to fetch the parent."""
        self.bootstrap: list[str] = list(dict.fromkeys([*config.bootstrap, *config.relays]))
        """Redialled whenever the node has fewer than TARGET_PEERS connections: the
        config's (its relays too), and those `connect_peers` was given."""
        self.relaying: Relaying | None = None
        """Circuit relay v2 (net/relay.py): serving it, or keeping slots on relays."""
        self._rng = random.Random()
        self._signer_limit = KeyedRateLimiter(SIGNER_PER_SECOND, SIGNER_BURST)
        self._newcomer_limit = KeyedRateLimiter(NEWCOMER_PER_SECOND, NEWCOMER_BURST)
        self._newcomer_bytes = KeyedRateLimiter(NEWCOMER_BYTES_PER_SECOND, NEWCOMER_BYTES_BURST)
        """One bucket per market (keyed by market id), for signers without history."""
        self._newcomer_holdings = NewcomerHoldings()
        """What those signers hold in the log, until each message's horizon."""
        self._ahead: LoggedAhead | None = None
        """Set while a gossip frame is judged (`logged_ahead`)."""
        self.group_sync: GroupSync | None = None
        """The owner's envelopes' fsyncs, shared (node/group_sync.py); with the log."""

    @property
    def states(self) -> dict[bytes, MarketState]:
        return self.cores.states

    @property
    def syncing_new_peers(self) -> int:
        """Syncs with newly connected peers still running (`_sync_new_peer`)."""
        return len(self._syncing)

    # -- the one path into the core -------------------------------------------------
    def admit(self, env: Envelope, *, local: bool = False) -> Verdict:
        """Apply a checked envelope (form and signature already verified), after
        writing it to the log if the core will keep it; queue its effects. A `local`
        one (the owner's, `submit`) is on disk before this returns; one from a peer
        is logged without an fsync (node/storage.py says why)."""
        state = self.cores.state_for(env)
        if state is None:
            return ignore(Reason.WRONG_MARKET, "a market this node does not follow")
        now = self._now()
        refused = self._log_first(state, env, now, durable=local)
        if refused is not None:
            self.metrics.message_in(state.market_id, env.kind, refused)
            return refused
        verdict, effects = state.apply_checked(env, now)
        evicted = state.take_evicted_orphans()
        if evicted and self.log is not None:
            self._unlog(evicted)
        self.metrics.message_in(state.market_id, env.kind, verdict)
        if verdict.reason is Reason.FROM_FUTURE:
            ahead = getattr(env.message, "timestamp", now) - now
            self.clock_skew.note(env.signer, ahead, state.market.skew_ms, time.monotonic())
        if verdict.accepted:
            self.admitted += 1
            self.metrics.delivered(now, getattr(env.message, "timestamp", now))
        for effect in effects:
            self._effects_in.send_nowait((state.market_id, effect))
        return verdict

    def _log_first(
        self, state: MarketState, env: Envelope, now: int, *, durable: bool
    ) -> Verdict | None:
        """Write to the log what the core will keep (`MarketState.keeps`): accepted
        messages, held orphans (applied when their parent comes) and whatever it
        stores though it IGNOREs it (an equivocation's twin, a cancel after
        assignment, a commit after its award, an ask or bid that arrived expired): a
        restart must hold the same set.

        Before the core keeps it, so a killed process loses nothing forwarded,
        served by sync or acted upon (a power cut may lose the last received ones,
        logged without `durable`: storage.py), and a message the log cannot take is
        refused with the state untouched, as if it never came (the core's judgement
        changes nothing, and the log is as it was after a failed write): the verdict
        refusing it, which the API answers with 507 or 503. A peer's copy comes back
        by sync later."""
        if self.log is None or not state.keeps(env, now):
            return None
        ahead = self._ahead
        if ahead is not None and env.id in ahead.ids:
            ahead.kept.add(env.id)
            return None
        try:
            self.log.append(state.market_id, env.raw, now, state.forget_after(env), durable)
        except WriteFailed as exc:
            return self._not_stored(exc)
        self.log_health.ok()
        return None

    def _not_stored(self, exc: WriteFailed) -> Verdict:
        """The verdict refusing a message the log could not take (counted once)."""
        self.log_health.failed(exc, refused=1)
        reason = Reason.STORAGE_FULL if exc.full else Reason.STORAGE_FAILED
        return ignore(reason, f"not stored: {exc}")

    def _now(self) -> int:
        """The clock, or the time of the frame being judged: what is logged ahead
        carries the time its envelopes are then applied at, as a replay feeds them."""
        return self.clock() if self._ahead is None else self._ahead.now

    @contextmanager
    def logged_ahead(self, envelopes: Sequence[Envelope]) -> Iterator[None]:
        """Write to the log, in one transaction, the envelopes of a gossip frame that
        the core would keep as it stands, before any of them is checked and admitted
        (frame.py `FrameScope`); `_log_first` then finds them written. Why: one
        transaction per envelope was most of a relay's time at a few hundred
        envelopes a second (one commit each, and the WAL's pages written and folded
        for each). Nothing changes about what is kept or when: each envelope still
        goes through the gossip checks and `admit` in turn. One that the core keeps
        though the frame's first state said it would not (it depends on an earlier
        one of the frame) is logged on its own, as before; those written ahead that
        the core does not keep (refused over a signer's rate, say) are deleted
        again when the frame is done (unless the core holds them). If the batch
        cannot be written, nothing was written: each envelope then meets the log's
        failure on its own and is refused with the state untouched."""
        log_ = self.log
        if log_ is None or len(envelopes) < 2 or self.log_health.failing is not None:
            yield  # while the log fails, each envelope meets it on its own
            return
        now = self.clock()
        entries: list[Entry] = []
        ids: set[bytes] = set()
        for env in envelopes:
            state = self.cores.state_for(env)
            if state is not None and state.keeps(env, now):
                entries.append(Entry(state.market_id, env.raw, now, state.forget_after(env)))
                ids.add(env.id)
        if len(entries) > 1:
            try:
                log_.append_many(entries, durable=False)
            except WriteFailed:
                ids.clear()  # nothing written: `_log_first` meets the failure per envelope
        else:
            ids.clear()  # one alone is written as before
        self._ahead = ahead = LoggedAhead(now, frozenset(ids))
        try:
            yield
        finally:
            self._ahead = None
            unkept = [
                env.id
                for env in envelopes
                if env.id in ahead.ids and env.id not in ahead.kept and not self._held(env)
            ]
            if unkept:
                self._unlog(unkept)

    async def _admit_local(self, env: Envelope) -> Verdict:
        """`admit` for the owner's envelope: on disk before the core keeps it (and
        so before it is published), the fsync made by a worker thread
        (`EnvelopeLog.flush`) while the node goes on with its peers' frames. It is
        committed first, then synced, then admitted as if logged ahead: if the core
        no longer keeps it by then (the same envelope submitted twice at once, say),
        its row goes again unless the core holds it. A failed sync refuses it with
        the state untouched, as a failed write does. Submissions made together
        share one fsync (node/group_sync.py)."""
        state = self.cores.state_for(env)
        log_ = self.log
        now = self.clock()
        group = self.group_sync
        if state is None or log_ is None or group is None or not state.keeps(env, now):
            return self.admit(env, local=True)  # nothing to write (or to refuse)
        market = state.market_id
        try:
            log_.append(market, env.raw, now, state.forget_after(env), durable=False)
            try:
                await group.sync()
            except WriteFailed:
                self._unlog([env.id])  # best effort: not durable, so not kept
                raise
        except WriteFailed as exc:
            refused = self._not_stored(exc)
            self.metrics.message_in(market, env.kind, refused)
            return refused
        self.log_health.ok()
        self._ahead = ahead = LoggedAhead(now, frozenset({env.id}))
        try:
            return self.admit(env, local=True)
        finally:
            self._ahead = None
            if env.id not in ahead.kept and not self._held(env):
                self._unlog([env.id])

    def _held(self, env: Envelope) -> bool:
        """Whether the core holds `env` (stored or evidence): its row stays."""
        state = self.cores.state_for(env)
        return state is not None and state.holds(env.id)

    def _holds(self, market: bytes, mid: bytes) -> bool:
        state = self.states.get(market)
        return state is not None and state.holds(mid)

    def _newcomer_allows(self, market: bytes, size: int, now_s: float) -> bool:
        """Spend one message and `size` bytes of the market's newcomer budget. The
        bytes are spent only if the count allows; a message the bytes refuse has
        still spent its count."""
        if not self._newcomer_limit.allow(market, now_s):
            return False
        return self._newcomer_bytes.allow(market, now_s, float(size))

    def _unlog(self, ids: list[bytes]) -> None:
        """Delete held orphans the core evicted over its limits: kept on disk, a
        flood of orphans would grow the log past what the core holds (the review:
        4,560 orphan proofs of 48 KiB, +220 MB). Best effort: a failed delete only
        leaves them to their retention horizon."""
        assert self.log is not None
        try:
            self.log.delete(ids)
        except WriteFailed as exc:
            log.warning("could not delete %d evicted orphans from the log: %s", len(ids), exc)

    def _gossip_check(self, env: Envelope) -> Verdict:
        """Gossip from peers is limited per signer (a flood from one key cannot crowd
        out the rest); local submissions and sync are not. The budget is spent after
        the duplicate check, so nobody can drain an honest signer's budget by
        replaying its envelopes. An orphan from gossip has its parent fetched if it
        is still missing after ORPHAN_GRACE_S."""
        state = self.cores.state_for(env)
        if state is not None and state.holds(env.id):
            return ignore(Reason.DUPLICATE, "already held")
        now = self._now()
        # the market whose newcomers' share this message spends, if its signer is new
        unknown = state is not None and not state.known_signer(env.signer, now)
        newcomer_in = state if unknown else None
        if newcomer_in is not None:
            market, size = newcomer_in.market_id, len(env.raw)
            full = self._newcomer_holdings.fits(market, env.signer, size, now)
            if full is not None:
                return ignore(Reason.RATE_LIMITED, full)
            if not self._newcomer_allows(market, size, now / 1000):
                return ignore(Reason.RATE_LIMITED, "the newcomers' budget is spent")
        if not self._signer_limit.allow(env.signer, now / 1000):
            return ignore(Reason.RATE_LIMITED, "signer over its message rate")
        stamp = getattr(env.message, "timestamp", None)
        if isinstance(stamp, int) and env.signer != self.key.public_key:
            self.clock_skew.observe(env.signer, stamp - now)  # before a warning uses it
        verdict = self.admit(env)
        if newcomer_in is not None and newcomer_in.holds(env.id):
            horizon = newcomer_in.forget_after(env)
            self._newcomer_holdings.add(newcomer_in.market_id, env.signer, len(env.raw), horizon)
        if verdict.reason is Reason.ORPHAN:
            self._note_orphan(env)
        return verdict

    def _note_orphan(self, env: Envelope) -> None:
        state = self.cores.state_for(env)
        parent = None if state is None else missing_parent(state, env)
        if state is None or parent is None:
            return
        key = (state.market_id, parent)
        if key not in self._missing_parents:
            self._missing_parents[key] = trio.current_time() + ORPHAN_GRACE_S
            self._wake.set()

    def _parents_due(self, now: float) -> bool:
        """Forget the orphans' parents whose grace has ended; True if one of them is
        still missing (then the keeper syncs, once: the periodic sync does the rest)."""
        due = [k for k, at in self._missing_parents.items() if at <= now]
        missing = False
        for market, parent in due:
            del self._missing_parents[(market, parent)]
            state = self.states.get(market)
            missing = missing or (state is not None and not state.holds(parent))
        return missing

    def _on_connected(self, peer: ID) -> None:
        """A connection (in or out) came up: sync with that peer at once, in a task of
        its own (the keeper may be dialling or syncing for seconds: at 300 ms round
        trips the wait behind it, then the 30 s period, kept a new bid from reaching
        peers for 30-40 s; a peer that just came back holds what this node missed
        while its link was down), and stop redialling it if it was dropped."""
        self.catch_up.connected(trio.current_time())
        self.events.publish("peer_connected", {"peer": peer.to_base58()})
        self._wake.set()
        if self.redialer is not None:
            self.redialer.heard(peer)
        if peer not in self._syncing:
            self._syncing.add(peer)
            if self._nursery is not None:
                self._nursery.start_soon(self._sync_new_peer, peer)
        if self.discovery is not None:
            self.discovery.peer_connected()

    async def _sync_new_peer(self, peer: ID) -> None:
        """Sync every market with `peer` alone, retried a few times while it stays
        connected (a connection reported up may not take streams
        yet: a failed try is retried after 0.25, 0.5, 1, 2 s)."""
        try:
            delay = NEW_PEER_SYNC_RETRY_S
            for _attempt in range(NEW_PEER_SYNC_TRIES):
                if self.host is None or peer not in peers.connected_peers(self.host):
                    return
                if await self.sync_with(peer):
                    return
                await trio.sleep(delay)
                delay *= 2
        finally:
            self._syncing.discard(peer)

    async def sync_with(self, peer: ID) -> bool:
        """Pull from `peer` alone what it holds and this node lacks; True if every
        market's sync with it worked."""
        if self.host is None:
            return False
        ok = True
        for mid, state in self.states.items():
            report = await sync_market(
                self.host,
                [peer],
                mid,
                holds=held_for_sync(state),
                apply=self._apply_synced,
                mine=self.sync_server.digest(mid),
                timeout_s=SYNC_TIMEOUT_S,
                max_peers=1,
                prefer=[peer],
                refusals=self.sync_refusals.setdefault(mid, Refusals()),
            )
            self.metrics.sync_run("ok" if report.ok_peers else "failed", report.applied)
            self.metrics.sync_report(report)
            ok = ok and bool(report.ok_peers)
        caught_up = self.catch_up.synced(ok, trio.current_time())
        if caught_up is not None:
            self.metrics.caught_up(caught_up)
        return ok

    def _on_dead(self, peer: ID) -> None:
        """The keepalive dropped `peer` (it stopped answering pings): redial it."""
        self.events.publish("peer_dropped", {"peer": peer.to_base58()})
        if self.redialer is not None:
            self.redialer.dropped(peer)
        self._wake.set()

    def apply_raw(self, raw: bytes) -> Verdict:
        verdict, env = check_envelope(raw)
        if env is None:
            return verdict
        return self.admit(env)

    def _replay(self) -> int:
        """Rebuild every market's state from the log, each envelope at the time it
        was first received, so verdicts that depend on time come out the same."""
        assert self.log is not None
        count = 0
        for mid, state in self.states.items():
            for raw, received_at in self.log.replay_timed(mid):
                state.apply(raw, received_at)
                count += 1
            state.tick(self.clock())
        return count

    def tick(self) -> None:
        now = self.clock()
        for mid, state in self.states.items():
            for effect in state.tick(now):
                self._effects_in.send_nowait((mid, effect))

    async def dispatch_effects(self) -> None:
        async for mid, effect in self._effects_out:
            try:
                self.events.effect(mid, effect)
            except Exception:  # the stream is a view: it must not stop the dispatch
                log.exception("event stream failed on %s", type(effect).__name__)
            if isinstance(effect, fx.Reorg):
                self.metrics.reorg(mid)
            elif isinstance(effect, fx.AttemptSettled):
                ask = self.states[mid].asks.get(effect.ask)
                if ask is not None and effect.winners:
                    self.metrics.assigned(self.clock(), ask.message.timestamp)  # type: ignore[union-attr]
            for hook in self.hooks:
                try:
                    result = hook(mid, effect)
                    if result is not None:
                        await result
                except Exception:
                    log.exception("effect hook failed on %s", type(effect).__name__)

    # -- the services -------------------------------------------------------------
    async def run(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Every service in one nursery; returns when cancelled, with nothing left
        running (the gossip service closes the host, the log is closed last)."""
        from p2p_market.node.api import serve_api  # the HTTP stack: for a running node only

        cfg = self.config
        with EnvelopeLog(data_path(cfg)) as envelope_log:  # StorageError: cannot be used
            api_token = ensure_token(cfg.data_dir)  # TokenError before anything runs
            self.log = envelope_log
            self.group_sync = GroupSync(envelope_log.flush)
            for market in cfg.markets:
                envelope_log.put_market(market_id(market), encode_market(market))
            replayed = self._replay()
            self.known_peers = KnownPeers(cfg.data_dir)
            host, listen = make_host(self.key, cfg.listen, announce=cfg.announce, muxer=cfg.muxer)
            self.host = host
            self.gossip = Gossip(
                host,
                listen,
                markets=list(self.states),
                extra_check=self._gossip_check,
                frame_scope=self.logged_ahead,
                known=self._holds,
                config=gossip_config(cfg),
                on_frame_published=lambda _envelopes: self.metrics.frame_out(),
            )
            self.sync_server.attach(host)
            self.artifact_server.attach(host)
            self.discovery = Discovery(
                self.gossip,
                self.key,
                cfg.markets,
                known=self.known,
                every_s=cfg.announce_every_s,
            )
            DirectServer(self.key, self._on_direct, wants=self._wants_direct).attach(host)
            peers.attach(host)
            peers.watch_connections(host, self._on_connected)
            self.redialer = Redialer(host, max_delay_s=cfg.redial_max_s)
            self.relaying = Relaying(host, serve=cfg.relay_service, relays=cfg.relays)
            self.keepalive = Keepalive(
                host,
                every_s=cfg.keepalive_every_s,
                misses=cfg.keepalive_misses,
                on_dead=self._on_dead,
            )
            try:
                async with trio.open_nursery() as nursery:
                    await nursery.start(self.gossip.run)
                    await nursery.start(self.relaying.run)
                    self._nursery = nursery
                    for early in self._syncing:  # connected before the nursery was set
                        nursery.start_soon(self._sync_new_peer, early)
                    await nursery.start(self.keepalive.run)
                    await nursery.start(self.redialer.run)
                    await nursery.start(self.discovery.run)
                    self.api_port = await nursery.start(
                        functools.partial(
                            serve_api,
                            self,
                            token=api_token,
                            host=cfg.api_listen,
                            port=cfg.api_port,
                            token_everywhere=cfg.api_token_everywhere,
                            events=self.events,
                        )
                    )
                    if cfg.metrics_port >= 0:
                        self.metrics_port = await nursery.start(
                            functools.partial(
                                serve_metrics,
                                self.metrics,
                                host=cfg.metrics_listen,
                                port=cfg.metrics_port,
                                token=api_token if cfg.api_token_everywhere else None,
                            )
                        )
                    nursery.start_soon(self.ticker)
                    nursery.start_soon(self.dispatch_effects)
                    nursery.start_soon(self._drain_deliveries)
                    nursery.start_soon(self._keep_connected)
                    log.info(
                        "node %s up: %s, api %s:%s (token in %s), %d envelopes replayed",
                        self.key.public_key.hex()[:16],
                        self.gossip.addr,
                        cfg.api_listen,
                        self.api_port,
                        self.api_token_file,
                        replayed,
                    )
                    self.ready.set()
                    task_status.started()
            finally:
                self._nursery = None
                # What the last seconds taught (a peer that came just before a restart).
                self.known_peers.save_if_due(0.0, force=True)

    async def ticker(self) -> None:
        last_prune = self.clock()
        while True:
            self.tick()
            now = self.clock()
            if self.log is not None and now - last_prune > PRUNE_EVERY_MS:
                try:
                    self.log.prune(now)
                except WriteFailed as exc:  # a delete needs room too (SQLite's WAL)
                    self.log_health.failed(exc)
                else:
                    self.log_health.ok()
                last_prune = now
            for state in self.states.values():
                self.metrics.observe_market(state)
            await trio.sleep(TICK_S)

    async def _drain_deliveries(self) -> None:
        """Envelopes were applied in the validator already; the channel is drained so
        it never fills (and could be tapped for tracing)."""
        assert self.gossip is not None
        async for _ in self.gossip.deliveries:
            pass

    async def _keep_connected(self) -> None:
        """Dial the bootstrap peers, exchange peers, and sync (a peer that connects
        is synced with at once by `_sync_new_peer`, not here: a rejoining node is the
        one that holds what the others lack, and the asks among that expire), soon
        after an orphan came by gossip whose parent is still missing, and with
        random peers every `sync_every_s` (anti-entropy: gossip is best effort, and
        a node cut off for a while has missed what was published meanwhile, with no
        new connection to notice)."""
        assert self.host is not None
        host = self.host
        next_full = trio.current_time()
        while True:
            now = trio.current_time()
            due = now >= next_full or self._sync_requested.is_set()
            self._wake = trio.Event()
            linked = set(peers.connected_peers(host))
            scopes = peers.DialScopes.for_node(self.config.listen, self.bootstrap)
            if due or not linked:
                if len(linked) < TARGET_PEERS:
                    await self._dial_known(host, linked, scopes)
                await peers.exchange(host, target=TARGET_PEERS, rng=self._rng, scopes=scopes)
                linked = set(peers.connected_peers(host))
            self._remember(host, linked, scopes)
            self.metrics.set_peers(len(linked))
            self.catch_up.peers(len(linked))
            orphaned = self._parents_due(now)
            if linked and (due or orphaned):
                await self.sync_now()
            if due:
                next_full = trio.current_time() + self.config.sync_every_s
                self._sync_requested = trio.Event()
            wait = PEER_POLL_S
            if self._missing_parents:
                wait = min(wait, min(self._missing_parents.values()) - trio.current_time())
            with trio.move_on_after(max(0.0, wait)):
                await self._wake.wait()

    async def _dial_known(self, host: IHost, linked: set[ID], scopes: peers.DialScopes) -> None:
        """Dial the bootstrap peers and the known ones this node is not connected to.
        The first time none of the bootstrap peers answers (and nothing else
        connected), say so in one line, with why (a name that does not resolve)."""
        known = [] if self.known_peers is None else self.known_peers.addrs
        connected = {p.to_base58() for p in linked}
        remembered = [
            a
            for a in known
            if a.rsplit("/p2p/", 1)[-1] not in connected and a not in self.bootstrap
        ]
        failures: dict[str, BaseException] = {}

        async def dial(addrs: list[str], timeout: float) -> None:
            failures.update(await connect_all(host, addrs, timeout=timeout))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(dial, self.bootstrap, DIAL_TIMEOUT_S)
            # Remembered peers are hints that may have gone for good: a short
            # timeout, so that the keeper (and the sync after it) waits no longer
            # than it did for the bootstrap peers alone.
            nursery.start_soon(dial, remembered, KNOWN_DIAL_TIMEOUT_S)
        if self._bootstrap_told or not self.config.bootstrap:
            return
        self._bootstrap_told = True
        failed = [a for a in self.config.bootstrap if a in failures]
        if len(failed) == len(self.config.bootstrap) and not peers.connected_peers(host):
            self.bootstrap_failures = {a: failures[a] for a in failed}
            if not self.log_unreachable:
                return
            first = failures[failed[0]]
            log.error(
                "no bootstrap peer reachable (%d given): %s: %s; retrying every %g s",
                len(failed),
                failed[0],
                f"{type(first).__name__}: {first}"[:200],
                self.config.sync_every_s,
            )

    def _remember(self, host: IHost, linked: set[ID], scopes: peers.DialScopes) -> None:
        """Note the addresses the connected peers told (identify), inside the dial
        scopes, in the known-peers file (node/known_peers.py)."""
        if self.known_peers is None:
            return
        store = host.get_peerstore()
        seen: list[str] = []
        for peer in sorted(linked, key=lambda p: p.to_bytes()):
            try:
                addrs = store.addrs(peer)
            except Exception:  # the peerstore raises when it has no address
                continue
            suffix = f"/p2p/{peer.to_base58()}"
            for addr in addrs[: peers.MAX_ADDRS_PER_PEER]:
                full = str(addr) if str(addr).endswith(suffix) else f"{addr}{suffix}"
                if scopes.allows(full):
                    seen.append(full)
        self.known_peers.note(seen)
        self.known_peers.save_if_due(trio.current_time())

    async def sync_now(self, prefer: set[ID] | frozenset[ID] = frozenset()) -> None:
        """Pull what connected peers have and this node lacks, for every market,
        from the peers in `prefer` first (see sync_market)."""
        if self.host is None:
            return
        linked = peers.connected_peers(self.host)
        if not linked:
            return
        reached = True
        for mid, state in self.states.items():
            report = await sync_market(
                self.host,
                linked,
                mid,
                holds=held_for_sync(state),
                apply=self._apply_synced,
                mine=self.sync_server.digest(mid),
                timeout_s=SYNC_TIMEOUT_S,
                prefer=sorted(prefer, key=lambda p: p.to_bytes())[:TARGET_PEERS],
                refusals=self.sync_refusals.setdefault(mid, Refusals()),
            )
            self.metrics.sync_run("ok" if report.ok_peers else "failed", report.applied)
            self.metrics.sync_report(report)
            reached = reached and report.ok_peers > 0
        caught_up = self.catch_up.synced(reached, trio.current_time())
        if caught_up is not None:
            self.metrics.caught_up(caught_up)

    async def connect_peers(self, addrs: list[str]) -> dict[str, Any]:
        """Dial `addrs` (full multiaddrs, with /p2p/) now, and redial them later like
        the bootstrap peers: how an operator joins a running node to peers it was not
        configured with, and how `p2p-market simulate` heals a partition without a
        restart (a restart costs seconds, which a fault's timing cannot spare).
        ValueError for an address that is not a full multiaddr."""
        if self.host is None:
            raise RuntimeError("the node is not running")
        for addr in addrs:
            try:
                info_from_p2p_addr(multiaddr.Multiaddr(addr))
            except Exception:  # the library raises several unrelated types
                raise ValueError(f"not a multiaddr with /p2p/<peer id>: {addr!r}") from None
        self.bootstrap.extend(a for a in dict.fromkeys(addrs) if a not in self.bootstrap)
        failures = await connect_all(self.host, addrs)
        return {
            "dialled": len(addrs),
            "failed": {a: f"{type(e).__name__}: {e}"[:200] for a, e in failures.items()},
            "peers": len(peers.connected_peers(self.host)),
        }

    def _apply_synced(self, raw: bytes) -> bool:
        """Apply a body sync fetched; True if it is refused for good (not kept, and
        no later round would keep it), so that sync never fetches it again."""
        verdict, env = check_envelope(raw)
        if env is None:
            return refused_for_good(verdict, kept=False)
        state = self.cores.state_for(env)
        if state is not None and orphan_of_refused(
            state, env, self.sync_refusals.get(state.market_id)
        ):
            return True
        verdict = self.admit(env)
        return refused_for_good(verdict, kept=state is not None and state.holds(env.id))

    def request_sync(self) -> None:
        """Ask the connection keeper to sync now (e.g. after a role saw a gap)."""
        self._sync_requested.set()
        self._wake.set()

    def _sync_source(self, market: bytes) -> list[Envelope] | None:
        state = self.states.get(market)
        return None if state is None else state.stored_envelopes()

    def _wants_direct(self, header: Header) -> bool:
        return any(wants(header) for wants in self.direct_wants)

    async def _on_direct(self, message: DirectMessage) -> bool:
        for hook in self.direct_hooks:
            if await hook(message):
                return True
        return False

    async def publish(self, market: bytes, raw: bytes) -> None:
        if self.gossip is not None:
            await self.gossip.publish(market, raw)
            self.metrics.message_out(market, raw[1] if len(raw) > 1 else 0)

    # -- NodeFacade ---------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        host = self.host
        return {
            "public_key": self.key.public_key.hex(),
            "peer_id": host.get_id().to_base58() if host else None,
            "addrs": [str(a) for a in host.get_addrs()] if host else [],
            "advertised_remote": [str(a) for a in host.get_addrs() if not local_only(a)]
            if host
            else [],
            "from_future": self.clock_skew.status(),
            "liveness": self.liveness(),
            "reachability": {"mode": self.config.reachability}
            | (self.relaying.status() if self.relaying is not None else {}),
            "peers": len(peers.connected_peers(host)) if host else 0,
            "markets": [m.hex() for m in self.states],
            "uptime_s": (self.clock() - self.started_ms) / 1000,
            "api_port": self.api_port,
            "metrics_port": self.metrics_port,
            "admitted": self.admitted,
            "sync": {
                "catch_up_s": self.catch_up.last_s,
                "refused": sum(len(r) for r in self.sync_refusals.values()),
                "refetched": sum(r.refetched for r in self.sync_refusals.values()),
            },
            "storage": "ok" if self.log_health.failing is None else str(self.log_health.failing),
            **{name: source() for name, source in self.status_sources.items()},
        }

    def liveness(self) -> dict[str, Any]:
        """Dead-peer detection and publishing waits, for `status`: pings answered and
        missed, peers dropped and being redialled, the longest a frame waited on a
        peer's outbound queue (bounded by 0.25 s), the peers skipped as stuck."""
        out: dict[str, Any] = {}
        if self.keepalive is not None:
            ka = self.keepalive.stats
            out |= {"pings": ka.pings, "missed": ka.missed, "dropped": ka.dropped}
            out["rtt_ms"] = {p.to_base58(): ms for p, ms in ka.rtt_ms.items()}
        if self.redialer is not None:
            out["redialling"] = len(self.redialer.lost)
            out["reconnected"] = self.redialer.reconnected
        if self.gossip is not None:
            gs = self.gossip.stats
            out |= {
                "publish_wait_ms_max": gs.publish_wait_ms_max,
                "stuck_skips": gs.stuck_skips,
                "mesh_waits": gs.mesh_waits,
            }
        return out

    def markets(self) -> list[dict[str, Any]]:
        out = []
        for mid, state in self.states.items():
            entry: dict[str, Any] = {"id": mid.hex()}
            entry.update(state.market.to_map())
            out.append(entry)
        return out

    def known_markets(self) -> list[dict[str, Any]]:
        """The markets this node's peers announce, and those it follows itself
        (`"followed": true`): GET /v1/markets/known."""
        now = trio.current_time()
        listing = self.known.listing(now)
        heard = {entry["id"] for entry in listing}
        for entry in listing:
            entry["followed"] = bytes.fromhex(entry["id"]) in self.states
        for mid, state in self.states.items():
            if mid.hex() not in heard:
                m = state.market
                listing.append(
                    {
                        "id": mid.hex(),
                        "name": m.name,
                        "proof_system": m.proof_system,
                        "verifier": m.verifier,
                        "announcers": [self.key.public_key.hex()],
                        "peers": 0,
                        "last_heard_s": 0.0,
                        "followed": True,
                    }
                )
        return listing

    def _state(self, market: str) -> MarketState:
        try:
            return self.states[bytes.fromhex(market)]
        except (KeyError, ValueError):
            raise KeyError(f"unknown market {market}") from None

    def book(self, market: str) -> dict[str, Any]:
        state = self._state(market)
        reputation = self.status_sources.get("reputation")
        known = reputation() if reputation is not None else {}
        bids = [bid_json(s) for s in state.book.current.values()]
        for bid in bids:
            if bid.get("prover") in known:
                bid["reputation"] = known[bid["prover"]]
        return {
            "bids": bids,
            "asks": [ask_json(state.view(a)) for a in state.asks],
        }

    def verified_proofs(self, ask: bytes) -> dict[bytes, bytes]:
        """The proofs of one of this key's asks that its requester role verified,
        by prover. KeyError (404 on the API) when no role looks after the ask."""
        if not self.proof_sources:
            raise KeyError("this node runs no requester role (a [requester] section)")
        for source in self.proof_sources:
            found = source(ask)
            if found is not None:
                return found
        raise KeyError(f"ask {ask.hex()} is not one this node's requester role looks after")

    def ask(self, ask_id: str) -> dict[str, Any]:
        try:
            key = bytes.fromhex(ask_id)
        except ValueError:
            raise KeyError(f"unknown ask {ask_id}") from None
        for state in self.states.values():
            if key in state.asks:
                return ask_json(state.view(key))
        raise KeyError(f"unknown ask {ask_id}")

    async def submit(self, raw: bytes) -> Submitted:
        verdict, env = check_envelope(raw)
        if env is None:
            return Submitted(
                id="",
                status=verdict.status.value,
                reason=verdict.reason.value,
                detail=verdict.detail,
            )
        verdict = await self._admit_local(env)
        result = submitted(env.id, verdict)
        kind = Kind(env.kind).name.lower() if env.kind in Kind.__members__.values() else env.kind
        self.events.publish("submitted", {"kind": kind, **dataclasses.asdict(result)})
        if verdict.accepted:
            state = self.cores.state_for(env)
            assert state is not None
            await self.publish(state.market_id, raw)
        return result

    async def place_bid(self, fields: dict[str, Any]) -> Submitted:
        return await self.submit(self.sign_bid(fields))

    async def place_ask(self, fields: dict[str, Any]) -> Submitted:
        return await self.submit(self.sign_ask(fields))

    async def cancel(self, ask_id: str) -> Submitted:
        try:
            key = bytes.fromhex(ask_id)
        except ValueError:
            raise ValueError("ask id must be hex") from None
        return await self.submit(self.sign_cancel(key))

    # -- signing for the local identity ----------------------------------------------
    def sign_bid(self, fields: dict[str, Any]) -> bytes:
        now = self.clock()
        market = self._market_field(fields)
        prev = self.states[market].book.history.get(self.key.public_key, {})
        return seal(
            Bid(
                market=market,
                timestamp=now,
                price=_int(fields, "price"),
                proof_time=_int(fields, "proof_time"),
                capacity=_int(fields, "capacity", 1),
                expires_at=now + _int(fields, "ttl_ms", 3_600_000),
                seq=max(prev, default=0) + 1,
                max_size=_int(fields, "max_size", 1),
            ),
            self.key,
        )

    def sign_ask(self, fields: dict[str, Any]) -> bytes:
        now = self.clock()
        for keep_out in self.ask_filters:
            fields = keep_out(fields, now)
        market = self._market_field(fields)
        inputs = bytes.fromhex(fields.get("inputs", "")) if fields.get("inputs") else b""
        confidential = bool(fields.get("confidential", False))
        inputs_hash = (
            bytes.fromhex(fields["inputs_hash"]) if fields.get("inputs_hash") else sha256(inputs)
        )
        return seal(
            Ask(
                market=market,
                timestamp=now,
                max_price=_int(fields, "max_price"),
                max_proof_time=_int(fields, "max_proof_time"),
                prefer=str(fields.get("prefer", "cost")),
                replicas=_int(fields, "replicas", 1),
                size=self._ask_size(market, fields, inputs, inputs_hash),
                expires_at=now + _int(fields, "ttl_ms", 600_000),
                inputs=b"" if confidential else inputs,
                inputs_hash=inputs_hash,
                confidential=confidential,
                allow=tuple(sorted(bytes.fromhex(k) for k in fields.get("allow", []))),
                deny=tuple(sorted(bytes.fromhex(k) for k in fields.get("deny", []))),
                nonce=time.time_ns(),
            ),
            self.key,
        )

    def _ask_size(
        self, market: bytes, fields: dict[str, Any], inputs: bytes, inputs_hash: bytes
    ) -> int:
        """The `size` field if given, else the work the inputs need where the market
        says (core/work.py), else 1. A given size the inputs contradict is refused
        here, in one line, rather than by every node (misdeclared_size)."""
        need = None
        if sha256(inputs) == inputs_hash:  # the inputs are here, even if confidential
            need = inputs_size(self.states[market].market, inputs)
        if "size" not in fields:
            return need or 1
        size = _int(fields, "size")
        if need is not None and size != need:
            raise ValueError(f"size {size} does not match the inputs, which need {need}")
        return size

    def sign_cancel(self, ask_id: bytes) -> bytes:
        for mid, state in self.states.items():
            if ask_id in state.asks:
                return seal(Cancel(market=mid, timestamp=self.clock(), ask=ask_id), self.key)
        raise KeyError(f"unknown ask {ask_id.hex()}")

    def _market_field(self, fields: dict[str, Any]) -> bytes:
        try:
            market = bytes.fromhex(str(fields["market"]))
        except KeyError:
            raise ValueError("missing field: market") from None
        except ValueError:
            raise ValueError("market must be a hex market id") from None
        if market not in self.states:
            raise KeyError(f"unknown market {market.hex()}")
        return market


def _int(fields: dict[str, Any], name: str, default: int | None = None) -> int:
    if name not in fields:
        if default is None:
            raise ValueError(f"missing field: {name}")
        return default
    value = fields[name]
    if type(value) is not int:
        raise ValueError(f"{name} must be an integer")
    if value < 0:
        raise ValueError(f"{name} must not be negative")
    return value


def missing_parent(state: MarketState, env: Envelope) -> bytes | None:
    """The id of the stored message an orphan waits for: its ask, or for a commit
    whose ask is stored, its bid (the order of the core's checks, §6 steps 20, 22)."""
    m = env.message
    ask = getattr(m, "ask", None)
    if not isinstance(ask, bytes):
        return None
    if not state.holds(ask):
        return ask
    bid = getattr(m, "bid", None)
    if isinstance(bid, bytes) and not state.holds(bid):
        return bid
    return None


def held_for_sync(state: MarketState) -> Callable[[bytes], bool]:
    """What sync need not fetch: what the core holds, and the orphans it holds for
    their parents (fetching one again brings nothing: it waits for its parent, which
    the listing fetches first if the peer has it). Before, each round downloaded
    every held orphan again (issue 13: the commits, proofs and receipts of asks a
    node had refused, 175 messages every 30 s). An orphan evicted from the pool is
    not held any more, and is fetched again."""
    orphans = {mid for children in state.pending.values() for mid in children}
    return lambda mid: state.holds(mid) or mid in orphans


def orphan_of_refused(state: MarketState, env: Envelope, refusals: Refusals | None) -> bool:
    """Whether a synced message would wait, as an orphan, for a parent this node
    refused for good (an ask past its retention horizon): it would wait until its own
    horizon, up to a market lifetime later, for a parent that can never come, and
    held orphans are part of `state_hash`. A peer whose clock lags ours by less than
    the skew still serves an ask and its commits for a moment after we forgot them;
    the peers that forgot them hold neither. Refused for good too, unapplied."""
    if refusals is None or state.holds(env.id):
        return False
    parent = missing_parent(state, env)
    return parent is not None and parent in refusals


def submitted(env_id: bytes, verdict: Verdict) -> Submitted:
    return Submitted(
        id=env_id.hex(),
        status=verdict.status.value,
        reason=verdict.reason.value,
        detail=verdict.detail,
    )


def encode_market(market: Market) -> bytes:
    """A market descriptor's canonical body (its id is the SHA-256 of these bytes)."""
    return codec.pack(market.to_map())


def gossip_config(config: NodeConfig) -> GossipConfig:
    """The node's gossip settings: its frame budget, and batching unless switched off."""
    gossip = GossipConfig(
        frames_per_second=config.frames_per_second,
        idontwant=config.gossip_idontwant,
    ).with_degree(config.mesh_degree)
    return gossip if config.batching else unbatched(gossip)


def data_path(config: NodeConfig) -> Path:
    return config.data_dir / "envelopes.sqlite"


def artifacts_path(config: NodeConfig) -> Path:
    """Where a node keeps the circuit artifacts it fetched (named by their hash)."""
    return config.data_dir / "artifacts"
