"""Market announcements: which markets a node's peers follow (protocols/market-v1.md
§24), on one pubsub topic, `/p2p-market/markets/1`.

Each node publishes, for every market it follows, a kind-1 envelope (a Market
descriptor, §5.1) signed by its own key: "I follow this market", in a message
`[envelope, at_ms]` (`encode_announcement`). The market id is
the hash of the body alone, so every announcer's envelope names the same market,
and the signer is who announced it. It publishes them when it starts, a few seconds
after a peer connects (so that a newcomer hears them without waiting a period), and
every `every_s` (slowly: a descriptor never changes, only who follows it does).

What a node hears goes into `KnownMarkets`, a bounded store, after the checks of
any envelope (size, form, canonical, the signature) and one more: it is a Market.
Whatever fails is REJECTed with its named reason and blames the forwarding peer
(net/gossip.py); an envelope of a kind this version does not know is IGNOREd
(§21). What the store refuses for room is IGNOREd (`rate_limited`, no blame):
at most `max_markets` markets and `max_bytes` of descriptors in all, at most
`max_per_announcer` markets announced by one key and `max_announcers` keys per
market; an entry nobody announced again for `ttl_s` is forgotten. Only a new market,
a new announcer, or an announcer heard again after a third of `ttl_s` is ACCEPTed
and so forwarded: replaying announcements costs the replayer its peers' rate limit,
and spreads nothing.

The store is what `GET /v1/markets/known` lists and where `p2p-market market list
--network` reads; joining a market by id (node/artifacts.py) asks peers directly
for the descriptor, by its hash, and does not depend on having heard it here.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

import trio
from libp2p.peer.id import ID

from p2p_market.core import codec
from p2p_market.core.crypto import SigningKey
from p2p_market.core.envelope import market_id, seal
from p2p_market.core.limits import MAX_ENVELOPE_BYTES, MAX_UINT
from p2p_market.core.messages import Kind, Market
from p2p_market.core.validation import check_form, check_signature
from p2p_market.core.verdict import ACCEPTED, Reason, Verdict, ignore, reject
from p2p_market.net.gossip import Gossip

if TYPE_CHECKING:
    from trio_typing import TaskStatus

log = logging.getLogger(__name__)

TOPIC: Final = "/p2p-market/markets/1"
DEFAULT_EVERY_S: Final = 300.0
"""How often a node announces the markets it follows."""
DEFAULT_TTL_S: Final = 3 * DEFAULT_EVERY_S
"""An announcement not heard again for this long is forgotten (three periods: one
lost message does not drop a market)."""
AFTER_CONNECT_S: Final = 2.0
"""A new peer is announced to after this long: GossipSub sends only to mesh peers,
and a newcomer joins the mesh at the next heartbeat (1 s)."""
MIN_GAP_S: Final = 5.0
"""Announcements are not published more often than this, however many peers connect."""
MAX_ANNOUNCEMENT_BYTES: Final = MAX_ENVELOPE_BYTES + 16
"""An announcement: one envelope and a timestamp, in a msgpack array."""
DEFAULT_MAX_MARKETS: Final = 256
DEFAULT_MAX_BYTES: Final = 256 * 1024
DEFAULT_MAX_PER_ANNOUNCER: Final = 16
DEFAULT_MAX_ANNOUNCERS: Final = 64


@dataclass
class KnownMarket:
    """One market heard of, and who announced it (public key -> when last heard)."""

    market: Market
    size: int
    announcers: dict[bytes, float] = field(default_factory=dict)
    peers: dict[bytes, ID] = field(default_factory=dict)
    """The peer each announcement came from, by announcer."""
    ids: dict[bytes, bytes] = field(default_factory=dict)
    """The id of each announcer's envelope, verified: the same bytes again are a
    duplicate before their signature is checked (as in a market's seen cache)."""


@dataclass
class KnownStats:
    accepted: int = 0
    refused: dict[str, int] = field(default_factory=dict)

    def refuse(self, verdict: Verdict) -> Verdict:
        key = verdict.reason.value
        self.refused[key] = self.refused.get(key, 0) + 1
        return verdict


class KnownMarkets:
    """The markets peers announced: bounded (see the module doc), forgetting what is
    not announced again. `offer` is the topic's judge."""

    def __init__(
        self,
        *,
        max_markets: int = DEFAULT_MAX_MARKETS,
        max_bytes: int = DEFAULT_MAX_BYTES,
        max_per_announcer: int = DEFAULT_MAX_PER_ANNOUNCER,
        max_announcers: int = DEFAULT_MAX_ANNOUNCERS,
        ttl_s: float = DEFAULT_TTL_S,
    ) -> None:
        self.max_markets = max_markets
        self.max_bytes = max_bytes
        self.max_per_announcer = max_per_announcer
        self.max_announcers = max_announcers
        self.ttl_s = ttl_s
        self.entries: dict[bytes, KnownMarket] = {}
        self.bytes = 0
        self._by_announcer: dict[bytes, int] = {}
        self._expired_at = float("-inf")
        self.stats = KnownStats()

    def offer_message(self, data: bytes, forwarder: ID, now: float) -> Verdict:
        """Judge one pubsub message of the topic: an announcement (`encode_announcement`)."""
        if len(data) > MAX_ANNOUNCEMENT_BYTES:
            return self.stats.refuse(reject(Reason.OVERSIZED, "over the announcement limit"))
        try:
            value = codec.unpack(data)
        except codec.CodecError as exc:
            return self.stats.refuse(reject(Reason.UNDECODABLE, str(exc)[:120]))
        if (
            type(value) is not tuple
            or len(value) != 2
            or type(value[0]) is not bytes
            or type(value[1]) is not int
            or not 0 <= value[1] <= MAX_UINT
        ):
            return self.stats.refuse(reject(Reason.UNDECODABLE, "not [envelope, uint]"))
        if codec.pack(list(value)) != data:
            return self.stats.refuse(reject(Reason.NOT_CANONICAL, "announcement not canonical"))
        return self.offer(value[0], forwarder, now)

    def offer(self, raw: bytes, forwarder: ID, now: float) -> Verdict:
        """Judge and keep one announced envelope (kind 1)."""
        verdict, env = check_form(raw)
        if env is None:
            return self.stats.refuse(verdict)
        if env.kind != Kind.MARKET or not isinstance(env.message, Market):
            detail = "the markets topic carries Market envelopes only"
            return self.stats.refuse(reject(Reason.WRONG_MARKET, detail))
        if now - self._expired_at >= 1.0:
            self.expire(now)
        market = env.message
        mid = market_id(market)
        entry = self.entries.get(mid)
        signer = env.signer
        lately = (
            entry is not None
            and signer in entry.announcers
            and now - entry.announcers[signer] < self.ttl_s / 3
        )
        if lately and entry is not None and entry.ids.get(signer) == env.id:
            # the very bytes verified before: a duplicate before its signature is checked
            return self.stats.refuse(ignore(Reason.DUPLICATE, "heard lately"))
        verdict = check_signature(env)
        if not verdict.accepted:
            return self.stats.refuse(verdict)
        if entry is not None and signer in entry.announcers:
            if lately:
                return self.stats.refuse(ignore(Reason.DUPLICATE, "heard lately"))
            entry.announcers[signer] = now
            entry.ids[signer] = env.id
            entry.peers[signer] = forwarder
            self.stats.accepted += 1
            return ACCEPTED
        if self._by_announcer.get(signer, 0) >= self.max_per_announcer:
            return self.stats.refuse(
                ignore(Reason.RATE_LIMITED, "this key announces more markets than kept")
            )
        if entry is None:
            size = len(env.body)
            if len(self.entries) >= self.max_markets or self.bytes + size > self.max_bytes:
                return self.stats.refuse(ignore(Reason.RATE_LIMITED, "the market store is full"))
            entry = self.entries[mid] = KnownMarket(market, size)
            self.bytes += size
        elif len(entry.announcers) >= self.max_announcers:
            return self.stats.refuse(ignore(Reason.RATE_LIMITED, "enough announcers kept"))
        entry.announcers[signer] = now
        entry.ids[signer] = env.id
        entry.peers[signer] = forwarder
        self._by_announcer[signer] = self._by_announcer.get(signer, 0) + 1
        self.stats.accepted += 1
        return ACCEPTED

    def expire(self, now: float) -> None:
        """Forget announcers not heard for `ttl_s`, and markets left without any (at
        most once a second from `offer`: it walks the whole store)."""
        self._expired_at = now
        for mid in list(self.entries):
            entry = self.entries[mid]
            for signer, heard in list(entry.announcers.items()):
                if now - heard > self.ttl_s:
                    del entry.announcers[signer]
                    entry.peers.pop(signer, None)
                    entry.ids.pop(signer, None)
                    left = self._by_announcer.get(signer, 0) - 1
                    if left > 0:
                        self._by_announcer[signer] = left
                    else:
                        self._by_announcer.pop(signer, None)
            if not entry.announcers:
                del self.entries[mid]
                self.bytes -= entry.size

    def get(self, mid: bytes) -> Market | None:
        entry = self.entries.get(mid)
        return None if entry is None else entry.market

    def announced_by(self, mid: bytes) -> list[ID]:
        """The peers announcements of `mid` came from (where to fetch it first)."""
        entry = self.entries.get(mid)
        return [] if entry is None else list(dict.fromkeys(entry.peers.values()))

    def listing(self, now: float) -> list[dict[str, Any]]:
        """JSON-ready entries, the most announced first."""
        self.expire(now)
        out: list[dict[str, Any]] = []
        for mid, entry in sorted(
            self.entries.items(), key=lambda kv: (-len(kv[1].announcers), kv[1].market.name, kv[0])
        ):
            m = entry.market
            out.append(
                {
                    "id": mid.hex(),
                    "name": m.name,
                    "proof_system": m.proof_system,
                    "verifier": m.verifier,
                    "announcers": sorted(k.hex() for k in entry.announcers),
                    "peers": len(entry.announcers),
                    "last_heard_s": round(now - max(entry.announcers.values()), 1),
                }
            )
        return out


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


def encode_announcement(envelope: bytes, at_ms: int) -> bytes:
    """One pubsub message of the topic: the canonical msgpack array [envelope,
    at_ms]. `at_ms` (the announcer's clock; not signed, not trusted, not used) makes
    each round's message new bytes: pubsub drops a message whose id (the SHA-256 of
    its data, net/gossip.py) it has seen within its seen-cache time, its own
    included, so the same envelope published again would go nowhere."""
    return codec.pack([envelope, at_ms])


class Discovery:
    """A node's part in market announcements: the topic's judge (`known.offer`) and
    the announcer. A trio service: `await nursery.start(discovery.run)` returns once
    the topic is joined and the first announcement is out."""

    def __init__(
        self,
        gossip: Gossip,
        key: SigningKey,
        markets: tuple[Market, ...],
        *,
        known: KnownMarkets | None = None,
        every_s: float = DEFAULT_EVERY_S,
        after_connect_s: float = AFTER_CONNECT_S,
        min_gap_s: float = MIN_GAP_S,
    ) -> None:
        self.gossip = gossip
        self.known = known or KnownMarkets()
        self.announcements = [seal(m, key) for m in markets]
        """One envelope per followed market, signed once (Ed25519 is deterministic,
        so each period's announcement is the same bytes)."""
        self.every_s = every_s
        self.after_connect_s = after_connect_s
        self.min_gap_s = min_gap_s
        self.published = 0
        self._soon = trio.Event()

    def peer_connected(self) -> None:
        """A peer connected: announce to it soon (debounced)."""
        self._soon.set()

    def _judge(self, data: bytes, forwarder: ID) -> Verdict:
        return self.known.offer_message(data, forwarder, trio.current_time())

    async def run(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await self.gossip.join_topic(TOPIC, self._judge)
        await self.announce()
        task_status.started()
        last = trio.current_time()
        while True:
            soon = False
            with trio.move_on_at(last + self.every_s):
                await self._soon.wait()
                soon = True
            self._soon = trio.Event()  # a peer that connects from here on is seen next round
            if soon:
                now = trio.current_time()
                await trio.sleep_until(max(now + self.after_connect_s, last + self.min_gap_s))
            await self.announce()
            last = trio.current_time()

    async def announce(self) -> None:
        at = wall_clock_ms()
        for raw in self.announcements:
            try:
                await self.gossip.publish_topic(TOPIC, encode_announcement(raw, at))
                self.published += 1
            except Exception as exc:  # the library's publish raises several types
                log.warning("could not announce a market: %r", exc)
