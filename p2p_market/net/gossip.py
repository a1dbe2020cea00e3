"""Order gossip: GossipSub over one topic per market, configured for order traffic.

`Gossip` owns a node's pubsub stack and runs its host, and is a trio service:
`await nursery.start(gossip.run)` returns once the node listens and has joined its
markets; cancelling the nursery stops everything it started.

What py-libp2p 0.8.1 does by default, measured, and what is done about it here:

- Heartbeat every 120 s (mesh repair, gossip): set to `heartbeat_interval` (1 s).
  The "adaptive gossip" feature resets the interval to at least 60 s whenever its
  health score dips below 0.7, whatever was configured: it is switched off.
- Spam protection silently drops a peer's 11th message on a topic within a second:
  far below order traffic, and we rate-limit by validation instead. Switched off.
- Message id = sender + seqno, so one order re-sent is two messages: the id here is
  the SHA-256 of the frame (content address), so the same frame is one message
  whoever sends it and however often, and is delivered and forwarded once.
- Per-peer outbound queues hold 32 RPCs and drop silently when full, and
  `Pubsub.publish` never yields to trio, so a burst of publishes is mostly lost
  (measured: 61 of 200 frames arrived over 3 hosts). Publishing goes through one
  sender task that waits while any topic peer's queue is above `outbound_high_water`
  (up to `outbound_wait_s`, 0.25 s; a peer still full after that is skipped until its
  queue drains, so a dead peer costs one wait, not one per frame) and checkpoints
  between publishes: 200 of 200 arrived.
- A node's first frames wait (boundedly, `mesh_wait_s`) for the market's mesh to
  have a peer: published before any peer grafted it, a frame reaches nobody.
- Deliveries are not read from the library's subscription channel (32 items,
  dropping when full): the topic validator, which already decoded and checked every
  envelope, hands accepted envelopes to `deliveries`, a channel of `delivery_buffer`
  items whose overflow is counted, never silent. The library's channel is drained.
- A topic validator or stream handler that raises takes the whole host down (it
  runs inside the swarm's nursery): the validator catches everything (an internal
  error is an IGNORE, never blamed on a peer) and the pubsub stream handlers are
  wrapped by `host.guarded`.
- Pubsub must be running before the host accepts streams, or an early inbound
  pubsub stream hits an unstarted service: `run` starts pubsub, then the host.
- Only /meshsub/1.1.0 and /meshsub/1.0.0 are offered unless `idontwant` (node key
  `gossip_idontwant`): 1.2's IDONTWANT cost more than it saved and lost frames in
  the benchmark (docs/transport.md), and 1.3's extensions are not needed.
- A PRUNE binds only the pruned peer: the pruner may graft it again a heartbeat
  later, which the pruned peer takes for a backoff violation, and backoffs that
  end within the same second on both ends can renew each other for good. A node
  all others dialled first ended a `bench net` run with every peer backed off and
  no frame by gossip within 2 s. The router is net/mesh_backoff.py's subclass:
  the pruner backs off too, and grafts `BACKOFF_SLACK_S` after a backoff's end.
- The mesh degree D: a node receives each frame about once per mesh peer, so D is
  most of what a frame costs. GossipSub's 6 is sized for large networks; with
  `auto_degree` (the node's default) it is sized to the market's peers
  (`sized_degree`: 3 up to 16 peers, up to 6), raised as the market grows and
  never lowered while running. It needs the py-libp2p patches of
  net/libp2p_speedups.py (applied by `make_host`): without them small meshes lost
  frames in the benchmark, so an unpatched library keeps 6.

Known and left alone: the message cache keys messages by sender + seqno whatever
the id function (pubsub/mcache.py `put`), so the IHAVE ids sent to non-mesh peers
never match their seen cache and they IWANT every advertised frame again, then drop
it as seen: extra traffic outside the mesh, no wrong result.

libp2p's own message signing (strict_signing) stays on although every envelope is
signed: without it anyone can publish under another peer's id and seqno, and the
router's equivocation check then drops that peer's real message (censorship).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import math
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Final

import multiaddr
import trio
from libp2p.abc import IHost, ISubscriptionAPI
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID
from libp2p.pubsub.gossipsub import PROTOCOL_ID, PROTOCOL_ID_V11, PROTOCOL_ID_V12
from libp2p.pubsub.pb import rpc_pb2
from libp2p.pubsub.pubsub import Pubsub
from libp2p.tools.anyio_service import background_trio_service

from p2p_market.core.envelope import Envelope
from p2p_market.core.validation import check_form, check_signature
from p2p_market.core.verdict import ACCEPTED, Reason, Status, Verdict, reject
from p2p_market.net import libp2p_speedups, mesh_backoff
from p2p_market.net.batcher import DEFAULT_BURST, DEFAULT_FRAMES_PER_SECOND, Batcher
from p2p_market.net.frame import (
    MAX_FRAME_ITEMS,
    ExtraCheck,
    FrameScope,
    belongs_to,
    encode_frame,
    judge_frame,
)
from p2p_market.net.host import check_listening, dial_addr, guarded
from p2p_market.net.keepalive import abort_connections
from p2p_market.net.ratelimit import KeyedRateLimiter
from p2p_market.net.scores import PeerScores, ScoreConfig

if TYPE_CHECKING:
    # trio_typing's stubs (installed with libp2p) shadow trio's own annotations for
    # mypy, and they name TaskStatus here rather than in `trio`.
    from trio_typing import TaskStatus

log = logging.getLogger(__name__)

TOPIC_PREFIX: Final = "/p2p-market/1/"
PROTOCOLS: Final = (TProtocol(PROTOCOL_ID_V11), TProtocol(PROTOCOL_ID))
PROTOCOLS_WITH_IDONTWANT: Final = (TProtocol(PROTOCOL_ID_V12), *PROTOCOLS)
CLOSE_TIMEOUT_S: Final = 5.0
UNBAN_POLL_S: Final = 5.0
STALE_STREAM_POLL_S: Final = 1.0
"""How often expired bans are lifted and quiet peers forgotten."""


def topic_for(market: bytes) -> str:
    """The gossip topic of a market: `/p2p-market/1/<market-id-hex>`."""
    return TOPIC_PREFIX + market.hex()


def content_id(msg: rpc_pb2.Message) -> bytes:
    """Message id = SHA-256 of the frame: the same frame is one message, whoever
    sends it and however often."""
    return hashlib.sha256(msg.data).digest()


TopicJudge = Callable[[bytes, ID], Verdict]
"""Judges one message of a `join_topic` topic: (data, forwarding peer) -> verdict."""


@dataclass(frozen=True)
class GossipConfig:
    """Settings for order traffic; each differs from py-libp2p's default on purpose
    or exists because the library has no such knob (see the module docstring)."""

    heartbeat_interval: int = 1
    """Seconds between mesh maintenance rounds (library default: 120)."""
    degree: int = 6
    degree_low: int = 4
    degree_high: int = 12
    auto_degree: bool = False
    """Size the mesh degree to the market's peers as they come and go
    (`sized_degree`), between AUTO_DEGREE_MIN and `degree`."""
    idontwant: bool = False
    """Offer /meshsub/1.2.0 (IDONTWANT) first."""
    seen_ttl: int = 120
    """Seconds a frame id stays in the seen cache (a frame re-sent later is new)."""
    validation_cache_ttl: int = 30
    """Seconds the library remembers a frame's verdict by id. It cannot tell REJECT
    from IGNORE, so an ignored frame (e.g. not yet applicable) is refused for this
    long: kept short."""
    scores: ScoreConfig = field(default_factory=ScoreConfig)
    """Penalties of forwarding peers (scores.py): graylist, ban and when it ends."""
    delivery_buffer: int = 4096
    """Envelopes waiting in `deliveries`; beyond this they are dropped and counted."""
    frames_per_second: float = DEFAULT_FRAMES_PER_SECOND
    burst: int = DEFAULT_BURST
    max_envelopes_per_frame: int = MAX_FRAME_ITEMS
    """1 turns batching off (with an unlimited frame budget: see `unbatched`)."""
    outbound_high_water: int = 8
    """Publishing waits while a topic peer has more RPCs than this queued (of 32)."""
    outbound_wait_s: float = 0.25
    """...but at most this long per frame, and a peer whose queue is still above the
    mark after such a wait is *stuck*: skipped by later publishes (its RPCs drop,
    sync repairs it) until its queue drains, so that a frozen or cut-off peer costs
    the node one such wait, not one per frame. Well under the 2 s clock-skew
    tolerance of the devnet market: before, it was 2 s per frame, and a dead peer
    slowed gossip between healthy nodes from ~10 ms to 2-3 s (issue 13)."""
    skip_stuck_peers: bool = True
    """False waits on every peer every time (the behaviour before stuck peers were
    skipped): only for the benchmark's baseline."""
    mesh_wait_s: float = 5.0
    """A frame waits this long at most for the market's mesh to have a peer (once per
    stretch of empty mesh): a node's first orders, published right after start, would
    otherwise go to nobody and wait for the next periodic sync. A few heartbeats at
    300 ms round trips (connect, Noise, subscriptions, GRAFT at the 1 s heartbeat)."""
    peer_frames_per_second: float = 50.0
    peer_frame_burst: int = 200
    """Frames one forwarding peer may send us (token bucket); beyond it frames are
    IGNOREd (not forwarded, no blame). The library's own limit is switched off."""

    def with_degree(self, degree: int) -> GossipConfig:
        """This config with mesh degree D and GossipSub's usual bounds around it:
        D - D/3 (at least 1) and 2D (6 gives the library's 4 and 12). 0 is
        `auto_degree`, up to GossipSub's 6."""
        if degree == 0:
            return replace(self.with_degree(AUTO_DEGREE_MAX), auto_degree=True)
        low, high = degree_bounds(degree)
        return replace(self, degree=degree, degree_low=low, degree_high=high)

    @property
    def protocols(self) -> tuple[TProtocol, ...]:
        return PROTOCOLS_WITH_IDONTWANT if self.idontwant else PROTOCOLS


AUTO_DEGREE_MIN: Final = 3
AUTO_DEGREE_MAX: Final = 6
DEGREE_POLL_S: Final = 2.0


def degree_bounds(degree: int) -> tuple[int, int]:
    """GossipSub's D_low and D_high for a mesh degree D."""
    return max(1, degree - degree // 3), 2 * degree


def sized_degree(peers: int, most: int = AUTO_DEGREE_MAX) -> int:
    """The mesh degree for a market with `peers` other nodes: 3 up to 16 peers, one
    more each time the peers double, at most `most`. Every node receives each
    frame about D times (once per mesh peer that forwards it), so D is most of a
    frame's cost; a frame crosses about log_D(N) hops, so a large network needs a
    larger D to stay fast (measured: docs/transport.md)."""
    extra = max(0, (max(peers, 1) - 1).bit_length() - 4)
    return max(1, min(most, AUTO_DEGREE_MIN + extra))


UNBATCHED_FRAMES_PER_SECOND: Final = 1000.0
"""The frame budget of `unbatched`: so high that no envelope ever waits for a token."""


def unbatched(config: GossipConfig) -> GossipConfig:
    """`config` with batching off: every envelope leaves at once, alone in its frame,
    whatever the rate (the transport before batching). Only for measuring what
    batching gains (`p2p-market bench net`): a busy market then sends a frame per
    envelope, and frames are what a network of nodes runs out of first."""
    return replace(
        config,
        frames_per_second=UNBATCHED_FRAMES_PER_SECOND,
        burst=int(UNBATCHED_FRAMES_PER_SECOND),
        max_envelopes_per_frame=1,
    )


@dataclass(frozen=True, slots=True)
class Delivery:
    """One accepted envelope from the network, and the peer that forwarded it."""

    market: bytes
    raw: bytes
    peer: ID


@dataclass
class GossipStats:
    frames_published: int = 0
    envelopes_published: int = 0
    frames_accepted: int = 0
    frames_ignored: int = 0
    frames_rejected: int = 0
    envelopes_delivered: int = 0
    deliveries_dropped: int = 0
    envelopes_relayed: int = 0
    """Accepted envelopes re-framed by this node because the frame they came in also
    held unknown kinds, and so was not forwarded."""
    relays_dropped: int = 0
    validator_errors: int = 0
    frames_stale: int = 0
    """Frames every envelope of which this node held already (scores.py)."""
    peers_banned: int = 0
    outbound_waits: int = 0
    """Polls of a full outbound queue while publishing."""
    publish_wait_ms_max: int = 0
    """The longest a frame waited on outbound queues (bounded by outbound_wait_s)."""
    publish_wait_ms_total: int = 0
    stuck_skips: int = 0
    """Publishes that skipped a stuck peer instead of waiting on it."""
    stuck_marked: int = 0
    """Times a peer was found stuck (still full after a whole wait)."""
    mesh_waits: int = 0
    """Frames that waited for the market's mesh to have a peer."""
    mesh_degree: int = 0
    """The mesh degree in force (sized to the market when auto; not a counter)."""
    stale_streams: int = 0
    """Pubsub streams found on a closed connection and reopened (`_stale_stream_loop`)."""
    reasons: Counter[Reason] = field(default_factory=Counter)


class Gossip:
    """A node's gossip: publish envelopes to markets, receive checked envelopes."""

    def __init__(
        self,
        host: IHost,
        listen: Iterable[multiaddr.Multiaddr],
        *,
        markets: Iterable[bytes] = (),
        extra_check: ExtraCheck | None = None,
        frame_scope: FrameScope | None = None,
        known: Callable[[bytes, bytes], bool] | None = None,
        config: GossipConfig | None = None,
        on_frame_published: Callable[[int], None] | None = None,
    ) -> None:
        self.host = host
        self._on_frame_published = on_frame_published
        """Told the envelope count of every frame published (the node's metrics)."""
        self.config = cfg = config or GossipConfig()
        self._listen = list(listen)
        self._initial_markets = list(markets)
        self._extra_check = extra_check
        self._frame_scope = frame_scope
        """Around the extra checks of one frame's envelopes (frame.py `FrameScope`)."""
        self._known = known
        """(market, envelope id) -> whether the node holds it (frame.py `known`)."""
        self.router = mesh_backoff.router_class()(
            protocols=list(cfg.protocols),
            degree=cfg.degree,
            degree_low=cfg.degree_low,
            degree_high=cfg.degree_high,
            heartbeat_interval=cfg.heartbeat_interval,
            spam_protection_enabled=False,
            adaptive_gossip_enabled=False,
        )
        self.pubsub = Pubsub(
            host,
            self.router,
            seen_ttl=cfg.seen_ttl,
            strict_signing=True,  # see the module docstring
            msg_id_constructor=content_id,
            validation_cache_ttl=cfg.validation_cache_ttl,
        )
        # Pubsub registered its own handlers; replace them with guarded ones.
        for protocol in cfg.protocols:
            host.set_stream_handler(protocol, guarded(self.pubsub.stream_handler, protocol))
        if cfg.auto_degree and not libp2p_speedups.SPEEDUPS["sender-record"].is_installed():
            # Measured with py-libp2p 0.8.1 unpatched: meshes of 3 in a 10-node market
            # flapped (prune, re-graft, "GRAFT flood") and lost most frames, while
            # the patched library kept every one (docs/transport.md). The re-graft
            # is the bug net/mesh_backoff.py fixes; why the patches made the loss
            # rarer is not known, so a library they do not fit keeps GossipSub's D.
            log.warning("mesh degree not sized: py-libp2p is unpatched; keeping %d", cfg.degree)
            self.config = cfg = replace(cfg, auto_degree=False)
        if cfg.auto_degree:  # start small; resize_mesh raises it as the market grows
            self.router.degree = AUTO_DEGREE_MIN
            self.router.degree_low, self.router.degree_high = degree_bounds(AUTO_DEGREE_MIN)
        self.stats = GossipStats(mesh_degree=self.router.degree)
        self._rejects: Counter[ID] = Counter()
        """Rejected frames by forwarding peer, ever (a statistic; bans follow `scores`)."""
        self.scores = PeerScores(cfg.scores)
        self._peer_limit = KeyedRateLimiter(cfg.peer_frames_per_second, cfg.peer_frame_burst)
        self._batcher = Batcher(
            frames_per_second=cfg.frames_per_second,
            burst=cfg.burst,
            max_items=cfg.max_envelopes_per_frame,
        )
        self._queued = trio.Event()
        self._sooner = trio.Event()
        """Set when a push lets a frame go before the send loop's planned wake-up (a
        frame filled, or a queue became well filled: batcher.py)."""
        self._send_at = math.inf
        """When the send loop, asleep, means to wake up (inf: until something is queued)."""
        self._room = trio.Event()
        self._deliver, self.deliveries = trio.open_memory_channel[Delivery](cfg.delivery_buffer)
        self._banish, self._banished = trio.open_memory_channel[ID](64)
        self._markets: set[bytes] = set()
        self._topics: set[str] = set()
        """Topics joined with `join_topic`."""
        self._nursery: trio.Nursery | None = None
        self._stuck: set[ID] = set()
        """Peers whose outbound queue stayed full through a whole wait: not waited on
        again until it drains below the mark."""
        self._mesh_waited: set[str] = set()
        """Topics whose mesh was empty and already waited for (reset once it fills)."""

    # -- lifecycle ---------------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Start pubsub, then the host, join the markets, and serve until cancelled."""
        async with (
            background_trio_service(self.pubsub),
            background_trio_service(self.router),
        ):
            await self.pubsub.wait_until_ready()
            async with self.host.run(self._listen):
                try:
                    check_listening(self.host, self._listen)  # ListenError
                    async with trio.open_nursery() as nursery:
                        self._nursery = nursery
                        for market in self._initial_markets:
                            await self.join(market)
                        nursery.start_soon(self._send_loop)
                        nursery.start_soon(self._banish_loop)
                        nursery.start_soon(self._unban_loop)
                        nursery.start_soon(self._stale_stream_loop)
                        if self.config.auto_degree:
                            nursery.start_soon(self._degree_loop)
                        task_status.started()
                        await trio.sleep_forever()
                finally:
                    self._nursery = None
                    await self._close_host()

    async def _close_host(self) -> None:
        """Close listeners, then connections, shielded from the cancellation that
        brought us here. Leaving `host.run` alone does not: the swarm's own cleanup
        awaits inside the cancelled scope and gives up at its first checkpoint, and
        the TCP listener lives in a trio *system* task (transport/tcp/tcp.py,
        `spawn_system_task`), so the port stays open and its tasks outlive the node."""
        network = self.host.get_network()
        muxed = [c.muxed_conn for cs in network.connections.values() for c in cs]
        with trio.move_on_after(CLOSE_TIMEOUT_S) as scope:
            scope.shield = True
            # Listeners first. The swarm's service stopped with the cancellation
            # that brought us here, but its TCP listener (a system task) still
            # accepts, and the host's close drops the connections before the
            # listeners: the peers redial at once (libp2p's auto-connector), and
            # each such connection reaches Swarm.add_conn, which raises
            # LifecycleError('Cannot schedule task after service has stopped')
            # (network/swarm.py, manager.run_task) after the peer's side is up: it
            # opens streams on a connection that dies. Closing a listener also
            # cancels the upgrades it has in flight.
            for listener in list(getattr(network, "listeners", {}).values()):
                await listener.close()
            await self.host.close()
            # A connection's own task, cancelled with the node, starts its close
            # unshielded: it marks the connection closed and gives up at the first
            # checkpoint, before the muxer's go-away or the socket's close, so the
            # host's close then skips it. The peer keeps a live-looking connection
            # to a node that is gone, and a node restarted with the same key that
            # dials it again is never taken into its pubsub (the library sees the
            # peer as still there). Finish those closes here.
            for conn in muxed:
                if not conn.is_closed:
                    await conn.close()
        if scope.cancelled_caught:
            # A frozen peer's connection: its close waits on a full TCP window.
            aborted = sum(abort_connections(c) for c in muxed)
            log.warning(
                "closing the host took more than %s s; gave up (%d sockets aborted)",
                CLOSE_TIMEOUT_S,
                aborted,
            )

    @property
    def peer_id(self) -> ID:
        return self.host.get_id()

    @property
    def addr(self) -> str:
        """This node's full dialable address (see host.dial_addr)."""
        return dial_addr(self.host)

    # -- markets -----------------------------------------------------------------

    async def join(self, market: bytes) -> None:
        """Validate, subscribe to and mesh on `market`'s topic."""
        if market in self._markets:
            return
        if self._nursery is None:
            raise RuntimeError("Gossip.join needs the service running")
        topic = topic_for(market)
        validator = functools.partial(self._validate, market)
        self.pubsub.set_topic_validator(topic, validator, is_async_validator=False)
        subscription = await self.pubsub.subscribe(topic)
        self._markets.add(market)
        self._nursery.start_soon(self._drain, subscription)

    async def leave(self, market: bytes) -> None:
        if market not in self._markets:
            return
        self._markets.discard(market)
        topic = topic_for(market)
        await self.pubsub.unsubscribe(topic)
        self.pubsub.remove_topic_validator(topic)

    async def join_topic(self, topic: str, judge: TopicJudge) -> None:
        """Subscribe to a topic that carries something other than a market's frames
        (the market announcements, node/discovery.py), each pubsub message judged by
        `judge(data, forwarder)`: forwarded only if it ACCEPTs. The forwarding peer's
        standing and frame rate are checked first, as for frames, and a REJECT blames
        it the same way (so a flood of junk announcements gets its peer banned)."""
        if topic in self._topics:
            return
        if self._nursery is None:
            raise RuntimeError("Gossip.join_topic needs the service running")
        validator = functools.partial(self._validate_topic, judge)
        self.pubsub.set_topic_validator(topic, validator, is_async_validator=False)
        subscription = await self.pubsub.subscribe(topic)
        self._topics.add(topic)
        self._nursery.start_soon(self._drain, subscription)

    async def publish_topic(self, topic: str, data: bytes) -> None:
        """Publish one message on a topic joined with `join_topic`, directly (not
        batched: such topics carry a few messages a minute, not order traffic)."""
        if topic not in self._topics:
            raise RuntimeError("publish to a topic this node has not joined")
        await self._outbound_room(topic)
        await self.pubsub.publish(topic, data)

    def _validate_topic(self, judge: TopicJudge, forwarder: ID, msg: rpc_pb2.Message) -> bool:
        """The validator of a `join_topic` topic. Never raises."""
        if forwarder == self.peer_id:
            return True
        try:
            now = trio.current_time()
            if self.scores.graylisted(forwarder, now):
                self.stats.reasons[Reason.GRAYLISTED] += 1
                if self.scores.unread(forwarder, now):
                    self._ban(forwarder, "it kept sending while graylisted")
                return False
            if not self._peer_limit.allow(forwarder, now):
                self.stats.reasons[Reason.RATE_LIMITED] += 1
                return False
            verdict = judge(msg.data, forwarder)
            self.stats.reasons[verdict.reason] += 1
            if verdict.status is Status.REJECT:
                self._blame(forwarder, verdict)
                return False
            return verdict.accepted
        except Exception:
            self.stats.validator_errors += 1
            log.exception("topic validator failed on a message from %s; ignoring it", forwarder)
            return False

    @staticmethod
    async def _drain(subscription: ISubscriptionAPI) -> None:
        """Empty the library's per-topic channel: deliveries come from the validator."""
        try:
            while True:
                await subscription.get()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            return

    async def wait_for_mesh(self, market: bytes, peer: ID, timeout: float = 5.0) -> None:
        """Until `peer` is in this node's mesh for `market` (tests, startup)."""
        await self.pubsub.wait_for_mesh(peer, topic_for(market), timeout=timeout)

    # -- publishing --------------------------------------------------------------

    async def publish(self, market: bytes, raw: bytes) -> Verdict:
        """Queue an envelope for `market`'s topic; it leaves at once while the frame
        budget allows, or batched with others when not (batcher.py).

        The cheap checks and the signature are made here, because the validator
        trusts this node's own frames (it would otherwise ignore them: the node has
        already applied them, so its seen-cache calls them duplicates), and because
        one bad envelope would poison the frame it shares with good ones."""
        verdict, env = check_form(raw)
        if env is None:
            return verdict
        if not belongs_to(env, market):
            return reject(Reason.WRONG_MARKET, "envelope is not for this market")
        verdict = check_signature(env)
        if not verdict.accepted:
            return verdict
        if market not in self._markets:
            raise RuntimeError("publish to a market this node has not joined")
        while not self._batcher.push(market, raw, trio.current_time()):
            await self._room.wait()
        self._wake_sender()
        await trio.lowlevel.checkpoint()
        return ACCEPTED

    async def _send_loop(self) -> None:
        """The only publisher: spends the frame budget, respects back-pressure."""
        while True:
            now = trio.current_time()
            due = self._batcher.next_due(now)
            if due is None:
                await self._queued.wait()
                self._queued = trio.Event()
                continue
            if due > now:
                self._send_at = due
                with trio.move_on_at(due):
                    await self._sooner.wait()
                self._send_at = math.inf
                if self._sooner.is_set():
                    self._sooner = trio.Event()
                continue
            batch = self._batcher.take(now)
            if batch is None:
                continue
            self._room.set()
            self._room = trio.Event()
            if batch.market not in self._markets:
                continue  # left the market while its envelopes waited
            topic = topic_for(batch.market)
            await self._mesh_ready(topic)
            await self._outbound_room(topic)
            await self.pubsub.publish(topic, encode_frame(batch.items))
            self.stats.frames_published += 1
            self.stats.envelopes_published += len(batch.items)
            if self._on_frame_published is not None:
                self._on_frame_published(len(batch.items))
            await trio.sleep(0)

    async def _mesh_ready(self, topic: str) -> None:
        """Wait (at most `mesh_wait_s`, once per stretch of empty mesh) until the
        topic's mesh has a peer. GossipSub sends a publish to mesh peers (or fanout
        peers it knows to be subscribed); right after start it knows none, and the
        frame reaches nobody."""
        mesh = self.router.mesh
        if mesh.get(topic):
            self._mesh_waited.discard(topic)
            return
        if topic in self._mesh_waited:
            return
        self._mesh_waited.add(topic)
        self.stats.mesh_waits += 1
        with trio.move_on_after(self.config.mesh_wait_s):
            while not mesh.get(topic):
                await trio.sleep(0.05)

    def outbound_full(self, topic: str) -> set[ID]:
        """The topic's peers whose outbound queue is at or above the high-water mark."""
        limit = self.config.outbound_high_water
        queues = self.pubsub.peer_queues
        peers = self.pubsub.peer_topics.get(topic, set())
        return {p for p in peers if p in queues and len(queues[p]) >= limit}

    async def _outbound_room(self, topic: str) -> None:
        """Wait while a peer of the topic has a long outbound queue (the library drops
        RPCs silently once a queue holds 32), at most `outbound_wait_s`. A peer still
        full after that is marked stuck and not waited on again until its queue
        drains: a dead peer's queue never does, and waiting on it per frame delayed
        every frame to the healthy peers by the whole bound."""
        started = trio.current_time()
        skip = self.config.skip_stuck_peers
        limit = self.config.outbound_high_water
        queues = self.pubsub.peer_queues
        with trio.move_on_after(self.config.outbound_wait_s) as scope:
            while True:
                # a stuck peer whose queue drained (or that left) is waited on again
                self._stuck = {p for p in self._stuck if p in queues and len(queues[p]) >= limit}
                full = self.outbound_full(topic)
                waiting = full - self._stuck if skip else full
                if not waiting:
                    break
                self.stats.outbound_waits += 1
                await trio.sleep(0.002)
        if skip:
            self.stats.stuck_skips += len(self.outbound_full(topic) & self._stuck)
            if scope.cancelled_caught:
                fresh = self.outbound_full(topic) - self._stuck
                self.stats.stuck_marked += len(fresh)
                log.info(
                    "outbound queue to %s stayed full; not waiting on it", sorted(map(str, fresh))
                )
                self._stuck |= fresh
        waited = int((trio.current_time() - started) * 1000)
        self.stats.publish_wait_ms_total += waited
        self.stats.publish_wait_ms_max = max(self.stats.publish_wait_ms_max, waited)

    # -- receiving ---------------------------------------------------------------

    def _validate(self, market: bytes, forwarder: ID, msg: rpc_pb2.Message) -> bool:
        """The topic validator: only ACCEPT is forwarded and delivered. Never raises
        (an exception here would take the host down)."""
        if forwarder == self.peer_id:
            return True  # our own frame: checked in `publish`
        try:
            now = trio.current_time()
            if self.scores.graylisted(forwarder, now):
                self.stats.frames_ignored += 1
                self.stats.reasons[Reason.GRAYLISTED] += 1
                if self.scores.unread(forwarder, now):
                    self._ban(forwarder, "it kept sending while graylisted")
                return False  # penalised lately, or being disconnected
            if not self._peer_limit.allow(forwarder, now):
                self.stats.frames_ignored += 1
                self.stats.reasons[Reason.RATE_LIMITED] += 1
                return False
            known = None if self._known is None else functools.partial(self._known, market)
            verdict, envelopes = judge_frame(
                msg.data, market, self._extra_check, known, self._frame_scope
            )
            self.stats.reasons[verdict.reason] += 1
            if verdict.status is Status.REJECT:
                self._blame(forwarder, verdict)
                return False
            if verdict.reason is Reason.DUPLICATE and not envelopes:
                self.stats.frames_stale += 1
                if self.scores.stale(forwarder, now):
                    self._ban(forwarder, "a flood of frames of envelopes it knew we held")
            for env in envelopes:
                try:
                    self._deliver.send_nowait(Delivery(market, env.raw, forwarder))
                    self.stats.envelopes_delivered += 1
                except trio.WouldBlock:
                    self.stats.deliveries_dropped += 1
            if verdict.accepted:
                self.stats.frames_accepted += 1
                return True
            self.stats.frames_ignored += 1
            if envelopes:  # accepted, in a frame that is not forwarded (unknown kinds)
                self._relay(market, envelopes)
            return False
        except Exception:
            self.stats.validator_errors += 1
            log.exception("topic validator failed on a frame from %s; ignoring it", forwarder)
            return False

    def _relay(self, market: bytes, envelopes: Iterable[Envelope]) -> None:
        """Pass accepted envelopes on in this node's own frames, when the frame they
        came in is not forwarded because it also holds envelopes of kinds this
        version does not know (frame.py). Never waits (this runs in the validator):
        what does not fit the batcher's queue is dropped, counted, and left to sync."""
        for env in envelopes:
            if self._batcher.push(market, env.raw, trio.current_time()):
                self.stats.envelopes_relayed += 1
            else:
                self.stats.relays_dropped += 1
        self._wake_sender()

    def _wake_sender(self) -> None:
        """Tell the send loop envelopes were queued, and whether a frame may now go
        sooner than it planned (a full or well-filled one need not wait for a
        token: batcher.py)."""
        self._queued.set()
        due = self._batcher.next_due(trio.current_time())
        if due is not None and due < self._send_at:
            self._sooner.set()

    def _blame(self, peer: ID, verdict: Verdict) -> None:
        self.stats.frames_rejected += 1
        self._rejects[peer] += 1
        log.info("rejected a frame from %s: %s", peer, verdict)
        if self.scores.invalid(peer, trio.current_time()):
            self._ban(peer, f"{self._rejects[peer]} rejected frames")

    def _ban(self, peer: ID, why: str) -> None:
        log.warning("banning %s for %.0f s: %s", peer, self.config.scores.ban_s, why)
        self.stats.peers_banned += 1
        try:
            self._banish.send_nowait(peer)
        except trio.WouldBlock:
            log.warning("too many peers to disconnect at once; %s stays for now", peer)

    def bad_peers(self) -> dict[ID, int]:
        """Rejected frames by forwarding peer, ever (bans follow `scores`)."""
        return dict(self._rejects)

    async def _unban_loop(self) -> None:
        """Lift bans that ran their time (the peer may connect again, with a clean
        record), and forget the records of peers whose penalties decayed away."""
        while True:
            await trio.sleep(min(UNBAN_POLL_S, self.config.scores.ban_s / 4))
            now = trio.current_time()
            for peer in self.scores.expired_bans(now):
                assert isinstance(peer, ID)
                self.pubsub.blacklisted_peers.discard(peer)
                log.info("ban on %s lifted", peer)
            self.scores.forget_quiet(now)

    def stale_streams(self) -> list[ID]:
        """Pubsub peers whose outbound stream is on a connection that has closed."""
        stale = []
        for peer, stream in list(self.pubsub.peers.items()):
            muxed = getattr(stream, "muxed_conn", None)
            if muxed is not None and getattr(muxed, "is_closed", False):
                stale.append(peer)
        return stale

    async def _stale_stream_loop(self) -> None:
        """Forget pubsub streams left on a closed connection, so that pubsub opens a
        new one on the live connection (and sends its subscriptions on it).

        py-libp2p 0.8.1 keeps a peer's pubsub state when one of its connections closes
        while another is open (pubsub.py `handle_dead_peer_queue`: "still has active
        connections, not removing"), even when the closed one carried the peer's
        pubsub stream. That is what a peer sees when it resumes from a freeze: the
        old connection (reset by the peer that dropped it) and the redial arrive
        together, the redial first; the peer never tells its subscriptions on the new
        connection and is never meshed again (measured: connected, and out of the
        mesh for good). `_handle_dead_peer` is the library's own cleanup, which also
        reopens the stream when the peer is still connected."""
        while True:
            await trio.sleep(STALE_STREAM_POLL_S)
            for peer in self.stale_streams():
                log.debug("pubsub stream to %s is on a closed connection; reopening", peer)
                self.stats.stale_streams += 1
                try:
                    self.pubsub._handle_dead_peer(peer)
                except Exception:
                    log.debug("dropping the stale pubsub stream of %s failed", peer, exc_info=True)

    def resize_mesh(self) -> int:
        """Raise the mesh degree to what the largest market followed needs
        (`sized_degree`); GossipSub reads it at each heartbeat and grafts toward it.
        Never lowered while running: a lower D makes every node prune peers at once,
        and the pruned peers' prompt re-grafts count as a GRAFT flood against them
        (measured with py-libp2p 0.8.1); a network that shrank keeps a larger mesh,
        which costs CPU, not delivery. Returns the degree in force."""
        topics = [topic_for(m) for m in self._markets]
        peers = max((len(self.pubsub.peer_topics.get(t, ())) for t in topics), default=0)
        router = self.router
        degree = max(router.degree, sized_degree(peers, self.config.degree))
        if router.degree != degree:
            router.degree = degree
            router.degree_low, router.degree_high = degree_bounds(degree)
        self.stats.mesh_degree = degree
        return degree

    async def _degree_loop(self) -> None:
        while True:
            self.resize_mesh()
            await trio.sleep(DEGREE_POLL_S)

    async def _banish_loop(self) -> None:
        """Blacklist, disconnect, forget the peer's addresses.

        The blacklist set is filled directly: `Pubsub.add_to_blacklist` also tears
        the pubsub stream down itself, and if that lands before the disconnect is
        processed the library skips its dead-peer cleanup (the peer's outbound
        queue, sender task and router state stay behind). Forgetting the addresses
        keeps libp2p's auto-connector from dialling the peer again."""
        async for peer in self._banished:
            self.pubsub.blacklisted_peers.add(peer)
            try:
                await self.host.disconnect(peer)
            except Exception:
                log.debug("disconnect of %s failed", peer, exc_info=True)
            self.host.get_peerstore().clear_addrs(peer)
