"""A simulated node: one `MarketState` and a role policy, driven by the event loop.

Roles: a *prover* bids, commits when its core says so, proves when it wins; a
*requester* places asks and signs receipts; a *relay* only validates and forwards.
A behaviour other than "honest" makes a node byzantine in one precise way (see
BEHAVIOURS). Every node, byzantine or not, runs the unmodified core for its own view.

The shell rules that matter for convergence, as a real node would implement them:
- forward an envelope to the mesh only when the local core ACCEPTed it on arrival
  by gossip: an orphan (IGNORE, parent missing) that the core admits later, and
  whatever a sync brought, are applied but not forwarded (a gossip router judges a
  message once); anti-entropy (every `sync_ms`, see scenarios.py) fills the gaps;
- do not send a mesh peer what it already holds: the model of gossipsub v1.2's
  IDONTWANT (a node that got a message tells its mesh peers not to send it), with
  the sender knowing it instantly, which slightly overstates its effect (see
  network.py and `_forward`);
- keep a log of every envelope the core stored (or kept as evidence), with the
  local time it came in: a restart replays it at those times into a fresh state,
  then syncs with peers for what it missed;
- an honest signer never signs two commits for one (ask, round, attempt), even
  across a restart (its own commits are in its log), nor two receipts for one
  thing the core told (a slot's deadline, a slot's delivery), and never signs a
  verdict earlier than the proof it judges.
A relay (no role) runs the core with observation on its tick (relay.py).
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import msgpack

from p2p_market.core import codec
from p2p_market.core import effects as fx
from p2p_market.core import limits as L
from p2p_market.core.envelope import Envelope
from p2p_market.core.lifecycle import AskState
from p2p_market.core.messages import Ask, Award, Commit, Market, Proof, sha256
from p2p_market.core.state import AskView, MarketState
from p2p_market.core.validation import check_form, check_signature
from p2p_market.core.verdict import ACCEPTED, Reason, Status, Verdict
from p2p_market.dst.network import EventLoop, Network
from p2p_market.dst.scenarios import Scenario
from p2p_market.markets.devnet import Actor, default_market


class OutcomeWatch(Protocol):
    """What a node tells the finality watch (finality.py implements it; declared here
    so that the node does not import its observer)."""

    watched: set[int]

    def saw(self, node: SimNode, e: fx.Effect) -> None: ...

    def replayed(self, node: SimNode, effects: list[fx.Effect]) -> None: ...

    def released(self, ask_id: bytes) -> None: ...


PROVER, REQUESTER, RELAY = "prover", "requester", "relay"
HONEST = "honest"
BEHAVIOURS: dict[str, str] = {
    HONEST: "follows the protocol",
    "never-proves": "prover: commits, wins, never delivers",
    "invalid-proof": "prover: delivers proofs that fail verification",
    "equivocator": "prover: two bids per seq and two commits per attempt, to different peers",
    "silent": "requester: places asks, never signs a receipt",
    "spammer": "relay: floods malformed, badly signed and invalid envelopes",
    "withholder": "prover: holds back some of its commits, releases them seconds to hours later",
    "no-effect": "relay: publishes valid, signed messages the fold records as without effect",
    "phantom": "prover: bids (cheap and fast with byzantine_offer) and never commits",
}

StateFactory = Callable[[Market, bytes | None, str], MarketState]
"""(market, local prover, role) -> a fresh core state."""


def good_proof(ask_id: bytes) -> bytes:
    """The one proof the sim's verifier accepts for an ask: 8 bytes, so a valid pow
    nonce in the sim's difficulty-0 market (the fold itself takes a proof of any
    other length as evidence against its prover: core/statements.py)."""
    return sha256(b"sim-proof:" + ask_id)[:8]


class Validator:
    """The stateless half of validation (form, signature), run once per distinct
    envelope for the whole simulated network: its result is a pure function of the
    bytes, so every node would compute the same. Nodes then call `apply_checked`.

    The cache is keyed by the exact bytes (the signed envelope itself, not its id nor
    its body): a copy that differs in any byte, a flipped signature bit included, is
    another key and is checked on its own. What the cache saves is still counted:
    `signature_checks` is the number of signature checks the nodes would have made
    each for itself (one per envelope a node takes in, by gossip, sync or its own
    publishing, that is well formed and that it does not hold yet: the real node
    tests for a duplicate before it verifies), `signatures_verified` the number made."""

    def __init__(self) -> None:
        self.cache: dict[bytes, tuple[Verdict, Envelope | None]] = {}
        """raw -> check(raw), for every distinct envelope seen (read it directly for
        speed on the per-frame path; `check` fills it)."""
        self.signature_checks = 0
        """Checks the nodes would have made without the cache (counted by SimNode)."""
        self.signatures_verified = 0
        """Checks made: one per distinct well-formed envelope."""

    def check(self, raw: bytes) -> tuple[Verdict, Envelope | None]:
        hit = self.cache.get(raw)
        if hit is not None:
            return hit
        verdict, env = check_form(raw)
        if env is not None:
            self.signatures_verified += 1
            verdict = check_signature(env)
            if not verdict.accepted:
                env = None
        self.cache[raw] = (verdict, env)
        return verdict, env


@dataclass(frozen=True, slots=True)
class Offer:
    price: int
    proof_time: int
    capacity: int


@dataclass(frozen=True, slots=True)
class HeldView:
    """What one node held about one ask when the checks read it."""

    view: AskView
    false_timeouts: int


@dataclass(slots=True)
class AskRecord:
    """What the simulator (the omniscient observer) knows about one placed ask."""

    id: bytes
    requester: int
    placed_at: int
    """Virtual time (ms) at which it was placed."""
    expires_at: int
    max_price: int
    max_proof_time: int
    replicas: int
    expected: bool
    """Enough honest provers meet its caps and its requester is honest (see checks)."""
    cancel_tried: bool = False
    assigned_at: int | None = None
    proven_at: int | None = None
    retired: dict[int, HeldView] | None = None
    """Each honest node's view of the ask taken just before any node could forget it
    (its retention horizon, §15; see checks.retire), by node index. None while it
    has not reached that point: the end-of-run checks then read the nodes' state."""


@dataclass(slots=True)
class SimStats:
    forwards: int = 0
    garbage_sent: int = 0
    garbage_accepted: int = 0
    garbage_forwarded: int = 0
    bids: int = 0
    commits: int = 0
    proofs: int = 0
    receipts_accepted: int = 0
    receipts_invalid: int = 0
    receipts_timed_out: int = 0
    cancels: int = 0
    equivocations_signed: int = 0
    equivocations_seen: int = 0
    orphans_released: int = 0
    stale_suggestions: int = 0
    crashes: int = 0
    syncs: int = 0
    held_back: int = 0
    """Commits a withholder signed and held back."""
    held_back_released: int = 0
    """Of those, released (at their drawn delay, or at the end of the active phase)."""
    released_at_active_end: int = 0
    held_for: list[int] = field(default_factory=list)
    """How long each released commit was held (ms from its signing to its release)."""
    no_effect_sent: int = 0
    verdicts: dict[tuple[Status, Reason], int] = field(default_factory=dict)
    """Verdicts on envelopes taken in, by (status, reason), but for the two common
    ones, counted apart as plain numbers: `accepted` and `duplicates` (a frame the
    node already holds: most frames). See `verdict_counts`."""
    accepted: int = 0
    duplicates: int = 0

    def verdict_counts(self) -> dict[str, int]:
        """Every verdict, as "status:reason" -> count, sorted by key."""
        counts = dict(self.verdicts)
        for key, n in (
            ((Status.ACCEPT, Reason.OK), self.accepted),
            ((Status.IGNORE, Reason.DUPLICATE), self.duplicates),
        ):
            if n:
                counts[key] = counts.get(key, 0) + n
        return dict(sorted((f"{st.value}:{r.value}", n) for (st, r), n in counts.items()))


class World:
    """Everything the nodes share: the loop, the network, the validator cache, the
    workload's random stream and the observer's records."""

    def __init__(
        self, scenario: Scenario, seed: int, start_ms: int, new_state: StateFactory
    ) -> None:
        self.scenario = scenario
        self.market = default_market(
            commit_window_ms=scenario.commit_window_ms,
            stage_ms=scenario.stage_ms,
            skew_ms=scenario.skew_ms,
            max_lifetime_ms=scenario.max_lifetime_ms,
            difficulty=0,
        )
        self.start_ms = start_ms
        self.active_end = start_ms + scenario.seconds * 1_000
        self.loop = EventLoop(start_ms)
        self.net = Network(scenario.nodes, scenario, random.Random(f"{seed}/net"), self.loop)
        self.rng = random.Random(f"{seed}/work")
        self.adversary_rng = random.Random(f"{seed}/adversary")
        """The withholders' and the no-effect actors' draws: a stream of its own, so
        they leave every other draw of a run as it was."""
        self.sync_rng = random.Random(f"{seed}/sync")
        self.validator = Validator()
        self.new_state = new_state
        self.nodes: list[SimNode] = []
        self.stats = SimStats()
        self.asks: dict[bytes, AskRecord] = {}
        self.spam_ids: set[bytes] = set()
        self.honest_offers: list[Offer] = []
        self.requesters = 0
        self.withheld: dict[bytes, SimNode] = {}
        """Commits held back and not yet released (raw -> its withholder)."""
        self.finality: OutcomeWatch | None = None
        """Set when the scenario has withholders (dst/finality.py)."""
        self.no_effect_keys: set[bytes] = set()
        """Public keys of the no-effect actors: none may ever win a slot."""
        self.on_ask_placed: Callable[[AskRecord], None] | None = None
        """Called with the record of every ask placed (the checks schedule their
        reading of it before its retention horizon, checks.watch_retention)."""
        self.net.on_batch = self._deliver_batch

    def add_node(self, node: SimNode) -> None:
        """Nodes are added in index order; the network hands each its frames."""
        assert node.idx == len(self.nodes)
        self.nodes.append(node)
        self.net.receivers.append(node.receive)

    def _deliver_batch(self, dst: int, src: int, batch: list[bytes]) -> None:
        node = self.nodes[dst]
        for raw in batch:
            node.receive(raw, src, gossip=False)

    def count(self, verdict: Verdict) -> None:
        if verdict is ACCEPTED:
            self.stats.accepted += 1
            return
        key = (verdict.status, verdict.reason)
        verdicts = self.stats.verdicts
        verdicts[key] = verdicts.get(key, 0) + 1


class SimNode:
    def __init__(
        self,
        world: World,
        idx: int,
        role: str,
        behaviour: str,
        offer: Offer | None,
        offset_ms: int,
    ) -> None:
        self.world = world
        self.idx = idx
        self.role = role
        self.behaviour = behaviour
        self.offer = offer
        self.offset_ms = offset_ms
        self.actor = Actor(f"sim-{role}-{idx}", world.market)
        self.pk = self.actor.public_key
        self.state = world.new_state(world.market, self.pk if role == PROVER else None, role)
        self._as_requester()
        self.up = True
        self.epoch = 0
        self.log: list[tuple[Envelope, int]] = []
        """Every envelope the core stored or kept as evidence, with the local time it
        was taken in: the node's durable log."""
        self._logged: set[bytes] = set()
        self.held: dict[bytes, Envelope] = {}
        """Orphans this node holds (the core holds them too), by id."""
        self._held_by_parent: dict[bytes, list[bytes]] = {}
        self.mcache: dict[bytes, tuple[int, Envelope]] = {}
        """What this node forwarded within `mcache_ms`, by id, in the order (and so
        the time) it was forwarded: what its heartbeat offers its peers."""
        self.reorgs_before = 0
        self.reorg_baseline = 0
        self.replay_reorgs = 0
        self.signed_commits: set[tuple[bytes, bytes, int]] = set()
        self.receipted: set[tuple[bytes, bytes, str, object]] = set()
        self.proving: set[tuple[bytes, int]] = set()
        self.my_asks: set[bytes] = set()
        self.bid_seq = 0
        self.crashed_at: int | None = None
        self.downtime: list[tuple[int, int]] = []

    # -- identity and time ---------------------------------------------------------
    @property
    def honest(self) -> bool:
        return self.behaviour == HONEST

    def now(self) -> int:
        return self.world.loop.now + self.offset_ms

    @property
    def reorgs(self) -> int:
        return self.reorgs_before + self.state.reorgs - self.reorg_baseline

    def has(self, mid: bytes) -> bool:
        return self.state.holds(mid) or mid in self.held

    def lacking(self, ids: set[bytes]) -> set[bytes]:
        """The ids in `ids` this node does not have (`has` is False): the same test,
        as set differences in C over the core's id maps, as `pull_from` does (the
        heartbeat asks it of every peer for every id in its mcache)."""
        st = self.state
        missing = ids.difference(st.seen)
        if missing:
            missing = missing.difference(st.evidence)
            if missing and self.held:
                missing = missing.difference(self.held)
        return missing

    # -- taking in envelopes -------------------------------------------------------
    def receive(self, raw: bytes, src: int, gossip: bool = True) -> None:
        """`gossip=False` for what a sync brought: applied, never forwarded (the
        real node hands synced bodies to its core, not to the gossip router)."""
        if not self.up:
            return
        world = self.world
        verdict, env = world.validator.cache.get(raw) or world.validator.check(raw)
        if env is None:
            if verdict.reason is Reason.BAD_SIGNATURE:
                world.validator.signature_checks += 1
            world.count(verdict)
            return
        mid = env.id
        st = self.state
        if mid in st.seen or mid in st.evidence:  # `st.holds(mid)`, inlined
            # A copy of what the core holds: `apply_checked` would answer DUPLICATE
            # with no effects (it tests `holds` first). Most frames are such copies,
            # so the shell answers for it, with `_apply`'s bookkeeping for the case.
            world.stats.duplicates += 1
            if mid not in self._logged:
                self._log(env)
            if mid in self._held_by_parent and mid in st.seen:
                self._release(mid)
            return
        self._apply(env, src, gossip)

    def _apply(self, env: Envelope, src: int, gossip: bool = True) -> Verdict:
        world = self.world
        st = self.state
        if not st.holds(env.id):  # else a duplicate, refused before any verification
            world.validator.signature_checks += 1
        verdict, effects = st.apply_checked(env, self.now())
        world.count(verdict)
        stored = env.id in st.seen
        if verdict.accepted:
            if env.id in world.spam_ids and self.honest:
                world.stats.garbage_accepted += 1
            self._log(env)
            if gossip:
                self._forward(env, src)
        elif verdict.reason is Reason.ORPHAN:
            self._hold(env)
        elif stored or env.id in st.evidence:
            self._log(env)  # kept after an equivocation (not forwarded: not ACCEPT)
        if stored and self._held_by_parent:
            self._release(env.id)
        self.handle(effects)
        return verdict

    def _log(self, env: Envelope) -> None:
        if env.id not in self._logged:
            self._logged.add(env.id)
            self.log.append((env, self.now()))

    def _forward(self, env: Envelope, src: int) -> None:
        """To every mesh peer but the one it came from (`src`), except the peers that
        already hold it: the model of gossipsub v1.2's IDONTWANT, where a node that
        got a message tells its mesh peers not to send it. The sender knows it
        instantly here (a real IDONTWANT takes the link's latency, so copies that
        cross it in flight are still sent): this slightly overstates its effect.
        Only a peer that is up, over a link that is up, can have told: a frame to a
        crashed peer (which holds nothing new, and drops what arrives while it is
        down) or over a cut link is sent as before. Suppressed frames are counted
        in NetStats.suppressed; `forwards` counts the router's choices, sent or not.
        Scenario.idontwant=False turns the suppression off."""
        world = self.world
        net = world.net
        nodes = world.nodes
        me, mid = self.idx, env.id
        idontwant = world.scenario.idontwant
        # `peer.has(mid)` and `net.link_up(me, p)`, inlined: this runs for every
        # accepted envelope at every node, for each of its mesh peers.
        side, iso = net.side, net.isolated
        here, me_cut = side[me], me in iso
        chosen = 0
        to: list[int] = []
        for p in net.mesh[me]:
            if p == src:
                continue
            chosen += 1
            if idontwant:
                peer = nodes[p]
                if not peer.up:
                    to.append(p)
                    continue
                pst = peer.state
                if (
                    (mid in pst.seen or mid in pst.evidence or mid in peer.held)
                    and side[p] == here
                    and not (iso and (me_cut or p in iso))
                ):
                    continue
            to.append(p)
        net.stats.suppressed += chosen - len(to)
        net.send_many(me, to, env.raw)
        stats = world.stats
        stats.forwards += chosen
        if mid in world.spam_ids:
            stats.garbage_forwarded += chosen
        mc = self.mcache
        mc.pop(mid, None)  # (a second accept of one id, if ever: it goes to the end)
        mc[mid] = (world.loop.now, env)

    @staticmethod
    def _parents(env: Envelope) -> list[bytes]:
        m = env.message
        out = [m.ask] if hasattr(m, "ask") else []
        if isinstance(m, Commit):
            out.append(m.bid)
        elif isinstance(m, Award):
            out.extend(m.commits)  # an award waits for every commit it names
        return out

    def _hold(self, env: Envelope) -> None:
        self.held[env.id] = env
        for parent in self._parents(env):
            self._held_by_parent.setdefault(parent, []).append(env.id)

    def _release(self, parent: bytes) -> None:
        """The core admits held orphans itself when their parent arrives; the shell
        logs the ones it stored but does not forward them: the gossip router judged
        them when they came (IGNORE) and never passes on a message later, so peers
        get them from other paths or from anti-entropy, as in the real node."""
        st = self.state
        for mid in self._held_by_parent.pop(parent, ()):
            env = self.held.get(mid)
            if env is None:
                continue
            if mid in st.seen:
                del self.held[mid]
                self.world.stats.orphans_released += 1
                self._log(env)
                if mid in self._held_by_parent:  # its own children came in with it
                    self._release(mid)
            elif mid in st.evidence:
                del self.held[mid]
                self._log(env)
            elif not any(mid in st.pending.get(p, ()) for p in self._parents(env)):
                del self.held[mid]  # re-checked by the core and refused

    # -- publishing our own envelopes ----------------------------------------------
    def publish(self, raw: bytes, peers: list[int] | None = None) -> Verdict:
        """Apply locally first, then send to the mesh (or to `peers`) if accepted.
        A byzantine node passes `peers` to send regardless of its own verdict."""
        verdict, env = self.world.validator.check(raw)
        assert env is not None, f"the sim signed an invalid envelope: {verdict}"
        if peers is None:
            return self._apply(env, -1)
        # byzantine: apply locally (to keep its own view coherent) but send anyway
        if not self.state.holds(env.id):
            self.world.validator.signature_checks += 1
        v, effects = self.state.apply_checked(env, self.now())
        if env.id in self.state.seen or env.id in self.state.evidence:
            self._log(env)
        for peer in peers:
            self.world.net.send(self.idx, peer, raw)
        self.handle(effects)
        return v

    # -- effects -------------------------------------------------------------------
    def handle(self, effects: list[fx.Effect], *, replay: bool = False) -> None:
        finality = self.world.finality
        if finality is not None and effects and self.idx in finality.watched:
            if replay:
                finality.replayed(self, effects)
            else:
                for e in effects:
                    finality.saw(self, e)
        for e in effects:
            if isinstance(e, fx.CommitToAsk):
                self._commit(e)
            elif isinstance(e, fx.Assigned):
                if e.prover == self.pk:
                    self._start_proving(e)
                if e.ask in self.my_asks:
                    rec = self.world.asks[e.ask]
                    if rec.assigned_at is None:
                        rec.assigned_at = self.world.loop.now
            elif isinstance(e, fx.ProofDelivered):
                if e.ask in self.my_asks:
                    self._verify(e)
            elif isinstance(e, fx.DeadlinePassed):
                if e.ask in self.my_asks:
                    self._receipt(e.ask, e.prover, "timed_out", e.deadline)
            elif isinstance(e, fx.AttemptSettled):
                if e.ask in self.my_asks and e.commits and not e.final:
                    self._award(e)
            elif isinstance(e, fx.AskStateChanged):
                if e.ask in self.my_asks and e.after is AskState.PROVEN:
                    rec = self.world.asks[e.ask]
                    if rec.proven_at is None:
                        rec.proven_at = self.world.loop.now
            elif isinstance(e, fx.EquivocationSeen):
                self.world.stats.equivocations_seen += 1

    def tick(self) -> None:
        if self.up:
            self.handle(self.state.tick(self.now()))

    # -- prover policy -------------------------------------------------------------
    def publish_bid(self, epoch: int) -> None:
        if epoch != self.epoch or not self.up or self.offer is None:
            return
        world = self.world
        o = self.offer
        ttl = world.market.max_lifetime_ms
        now = self.now()
        self.bid_seq += 1
        raw = self.actor.bid(
            now=now, price=o.price, proof_time=o.proof_time, capacity=o.capacity, ttl=ttl,
            seq=self.bid_seq,
        )  # fmt: skip
        world.stats.bids += 1
        if self.behaviour == "equivocator":
            twin = self.actor.bid(
                now=now, price=o.price + 5, proof_time=o.proof_time, capacity=o.capacity,
                ttl=ttl, seq=self.bid_seq,
            )  # fmt: skip
            self._equivocate(raw, twin)
        else:
            self.publish(raw)
        self.world.loop.after(ttl * 3 // 4, self.publish_bid, self.epoch)

    def _equivocate(self, first: bytes, second: bytes) -> None:
        peers = self.world.net.mesh[self.idx]
        half = len(peers) // 2
        self.world.stats.equivocations_signed += 1
        self.publish(first, peers[:half] or peers)
        self.publish(second, peers[half:])

    def _commit(self, e: fx.CommitToAsk) -> None:
        key = (e.ask, e.round, e.attempt)
        if key in self.signed_commits or not self.up or self.behaviour == "phantom":
            return
        if e.ask in self.state.asks and self.state.view(e.ask).state is not AskState.OPEN:
            # A suggestion for an ask that is not open (any more) in the core's own
            # view: counted (see Report.stale_suggestions). Signed all the same:
            # refusing would leak the slot the core reserved for it.
            self.world.stats.stale_suggestions += 1
        self.signed_commits.add(key)
        now = self.now()
        raw = self.actor.commit(
            now=now, ask=e.ask, bid=e.bid, price=e.price, proof_time=e.proof_time,
            round=e.round, attempt=e.attempt,
        )  # fmt: skip
        self.world.stats.commits += 1
        if self.behaviour == "equivocator":
            twin = self.actor.commit(
                now=now + 1, ask=e.ask, bid=e.bid, price=e.price, proof_time=e.proof_time,
                round=e.round, attempt=e.attempt,
            )  # fmt: skip
            self._equivocate(raw, twin)
        elif self.behaviour == "withholder" and (
            self.world.adversary_rng.random() < self.world.scenario.holdback_share
        ):
            self._hold_back(raw)
        else:
            self.publish(raw)

    # -- withholder ------------------------------------------------------------------
    def _hold_back(self, raw: bytes) -> None:
        """Keep a commit signed now, inside its window, to release it after a delay
        drawn log-uniformly between the scenario's bounds. Nobody sees it meanwhile,
        not even this node's own core."""
        world = self.world
        sc = world.scenario
        lo = sc.holdback_min_ms
        hi = max(lo, sc.holdback_max)
        delay = round(math.exp(world.adversary_rng.uniform(math.log(lo), math.log(hi))))
        world.stats.held_back += 1
        world.withheld[raw] = self
        world.loop.after(delay, self.release, raw)

    def release(self, raw: bytes) -> None:
        """Send a held commit to every mesh peer, whatever this node's own core now
        thinks of it (stale, orphan): what happens next is the honest nodes' business."""
        world = self.world
        if world.withheld.pop(raw, None) is None:
            return  # released already (at the end of the active phase)
        world.stats.held_back_released += 1
        env = world.validator.check(raw)[1]
        assert env is not None and isinstance(env.message, Commit)
        world.stats.held_for.append(self.now() - env.message.timestamp)
        if world.finality is not None:
            world.finality.released(env.message.ask)
        self.publish(raw, list(world.net.mesh[self.idx]))

    # -- no-effect actor -------------------------------------------------------------
    def no_effect_bid(self, epoch: int) -> None:
        """A bid at the highest honest price and the highest proof-time cap, above
        every honest proof time (Scenario.__post_init__): it ranks below every honest
        prover whichever the ask prefers, so it moves nobody's place in the commit
        policy, yet fits the caps of some asks; it lets this actor sign commits."""
        if epoch != self.epoch or not self.up:
            return
        world = self.world
        sc = world.scenario
        ttl = world.market.max_lifetime_ms
        self.bid_seq += 1
        raw = self.actor.bid(
            now=self.now(), price=max(sc.prices), proof_time=max(sc.max_proof_times),
            capacity=1, ttl=ttl, seq=self.bid_seq,
        )  # fmt: skip
        self.publish(raw)
        world.loop.after(ttl * 3 // 4, self.no_effect_bid, self.epoch)

    def no_effect(self, epoch: int) -> None:
        world = self.world
        if epoch != self.epoch or not self.up or world.loop.now >= world.active_end:
            return
        raw = self._without_effect(world.adversary_rng)
        if raw is not None:
            world.stats.no_effect_sent += 1
            self.publish(raw)
        delay = round(world.adversary_rng.expovariate(world.scenario.no_effect_per_s) * 1_000)
        world.loop.after(max(1, delay), self.no_effect, self.epoch)

    def _without_effect(self, rng: random.Random) -> bytes | None:
        """One valid, correctly signed message that the fold records as without effect
        on every node, whatever else it holds: this actor never holds a slot (its
        commits are never valid), so its proofs and attestations count for nothing;
        a commit to a round no message opened, or signed before its window opens,
        is invalid; a receipt about a prover without a slot of the ask changes
        nothing (only its own asks: receipts are the requester's)."""
        a, now, st = self.actor, self.now(), self.state
        others = [x for x in st.asks if x not in self.my_asks]
        kind = rng.randrange(5)
        if kind == 4 or not others:
            return self._own_receipt(rng)
        ask_id = rng.choice(others)
        ask = st.asks[ask_id].message
        assert isinstance(ask, Ask)
        if kind == 0:
            return a.invalid_inputs(now=now, ask=ask_id, reason="no effect: holds no slot")
        if kind == 1:
            return a.proof(now=now, ask=ask_id, proof=b"no effect: holds no slot")
        mine = st.book.current.get(self.pk)
        if (
            mine is None
            or not mine.bid.timestamp <= now < mine.bid.expires_at
            or mine.bid.price > ask.max_price
            or mine.bid.proof_time > ask.max_proof_time
        ):
            return a.invalid_inputs(now=now, ask=ask_id, reason="no effect: holds no slot")
        window = self.world.market.commit_window_ms
        if kind == 2:  # a round that no receipt opened
            rnd, attempt = sha256(b"no such round %d" % rng.getrandbits(64)), 0
        else:  # round 0, two windows ahead of the current one: signed before it opens
            rnd, attempt = ask_id, max(0, (now - ask.timestamp) // window) + 2
        if (ask_id, rnd, attempt) in self.signed_commits:  # never two for one attempt
            return a.invalid_inputs(now=now, ask=ask_id, reason="no effect: holds no slot")
        self.signed_commits.add((ask_id, rnd, attempt))
        return a.commit(
            now=now, ask=ask_id, bid=mine.id, price=mine.bid.price,
            proof_time=mine.bid.proof_time, round=rnd, attempt=attempt,
        )  # fmt: skip

    def _own_receipt(self, rng: random.Random) -> bytes | None:
        """A receipt about a prover on one of its own asks, which nobody can serve
        (max price below every bid): no prover ever holds a slot of it. Places such
        an ask first when it has none that is still open."""
        world, now = self.world, self.now()
        open_asks = [x for x in self.my_asks if x in self.state.asks]
        provers = sorted(self.state.book.current)
        if not open_asks:
            sc = world.scenario
            raw = self.actor.ask(
                now=now, max_price=min(sc.prices) - 1, max_proof_time=min(sc.max_proof_times),
                ttl=sc.ask_ttl_ms, inputs=b"no effect %d" % now,
            )  # fmt: skip
            _, env = world.validator.check(raw)
            assert env is not None
            self.my_asks.add(env.id)
            return raw
        if not provers:
            return None
        return self.actor.receipt(
            now=now, ask=rng.choice(sorted(open_asks)), prover=rng.choice(provers),
            outcome=rng.choice(("accepted", "invalid", "timed_out")),
        )  # fmt: skip

    def _start_proving(self, e: fx.Assigned) -> None:
        key = (e.ask, e.deadline)
        if key in self.proving or self.behaviour == "never-proves":
            return
        room = e.deadline - self.now() - 150
        if room <= 0:
            return
        self.proving.add(key)
        took = max(1, int(room * self.world.rng.uniform(0.2, 0.9)))
        self.world.loop.after(took, self._deliver_proof, self.epoch, e.ask)

    def _deliver_proof(self, epoch: int, ask_id: bytes) -> None:
        if epoch != self.epoch or not self.up:
            return
        proof = good_proof(ask_id)
        if self.behaviour == "invalid-proof":
            proof = b"bogus:" + ask_id[:8]
        self.world.stats.proofs += 1
        self.publish(self.actor.proof(now=self.now(), ask=ask_id, proof=proof))

    # -- requester policy ----------------------------------------------------------
    def place_ask(self, epoch: int) -> None:
        world = self.world
        if epoch != self.epoch or not self.up or world.loop.now >= world.active_end:
            return
        sc = world.scenario
        rng = world.rng
        if rng.random() < sc.impossible_share:
            max_price = min(sc.prices) - 1
        else:
            max_price = rng.choice(sc.max_prices)
        max_proof_time = rng.choice(sc.max_proof_times)
        prefer = rng.choice(("cost", "time"))
        replicas = rng.choices([r for r, _ in sc.replicas], [w for _, w in sc.replicas])[0]
        now = self.now()
        raw = self.actor.ask(
            now=now, max_price=max_price, max_proof_time=max_proof_time, prefer=prefer,
            replicas=replicas, ttl=sc.ask_ttl_ms, inputs=b"sim inputs %d" % world.loop.now,
        )  # fmt: skip
        _, env = world.validator.check(raw)
        assert env is not None
        meets = sum(
            1
            for o in world.honest_offers
            if o.price <= max_price and o.proof_time <= max_proof_time
        )
        rec = AskRecord(
            id=env.id,
            requester=self.idx,
            placed_at=world.loop.now,
            expires_at=now + sc.ask_ttl_ms,
            max_price=max_price,
            max_proof_time=max_proof_time,
            replicas=replicas,
            expected=self.honest and meets >= replicas,
        )
        world.asks[env.id] = rec
        if world.on_ask_placed is not None:
            world.on_ask_placed(rec)
        self.my_asks.add(env.id)
        if rng.random() < sc.cancel_share:
            rec.cancel_tried = True
            world.loop.after(rng.randint(0, 2_500), self._cancel, self.epoch, env.id)
        self.publish(raw)
        rate = sc.asks_per_s / max(1, world.requesters)
        world.loop.after(max(1, round(rng.expovariate(rate) * 1_000)), self.place_ask, self.epoch)

    def _cancel(self, epoch: int, ask_id: bytes) -> None:
        if epoch != self.epoch or not self.up:
            return
        self.world.stats.cancels += 1
        self.publish(self.actor.cancel(now=self.now(), ask=ask_id))

    def _verify(self, e: fx.ProofDelivered) -> None:
        proof = None
        signed_at = 0
        for env in self.state.events.get(e.ask, {}).values():
            m = env.message
            if env.signer == e.prover and isinstance(m, Proof) and m.proof_hash == e.proof_hash:
                # the same bytes, whichever delivered; sign after the latest of them
                proof, signed_at = m.proof, max(signed_at, m.timestamp)
        ok = proof is not None and proof == good_proof(e.ask)
        # Per slot, not per proof hash: a prover reorganised out of a slot it had
        # delivered for may win a later slot of the ask and deliver the same proof.
        run = self.state.settlement().runs.get(e.ask)
        slot = run.slots.get(e.prover) if run is not None else None
        about = (e.proof_hash, None if slot is None else slot.deadline)
        self._receipt(e.ask, e.prover, "accepted" if ok else "invalid", about, signed_at)

    def _receipt(
        self, ask_id: bytes, prover: bytes, outcome: str, about: object, not_before: int = 0
    ) -> None:
        """One receipt per thing the core told: per slot (its deadline) for a timeout
        and for a verdict on a proof. The fold takes, in signed order, the first receipt
        that can take effect, so a requester that timed out a winner whose on-time
        proof it could not see (partition) accepts the proof when it shows up, and one
        whose timeout was refused times the same prover out again if it wins again.

        A verdict is signed no earlier than the proof it judges (`not_before`): a
        prover whose clock runs ahead (within the tolerance) signs a proof "in the
        future" of the requester, and a receipt signed at the requester's own `now`
        would come before the proof in the fold, take no effect, and never be
        repeated (the core tells a delivery once)."""
        key = (ask_id, prover, outcome, about)
        if self.behaviour == "silent" or key in self.receipted or not self.up:
            return
        self.receipted.add(key)
        stats = self.world.stats
        if outcome == "accepted":
            stats.receipts_accepted += 1
        elif outcome == "invalid":
            stats.receipts_invalid += 1
        else:
            stats.receipts_timed_out += 1
        now = max(self.now(), not_before)
        self.publish(self.actor.receipt(now=now, ask=ask_id, prover=prover, outcome=outcome))

    def _as_requester(self) -> None:
        """A requester's core settles its own asks after the real requester role's
        award lag, so that its awards come when the real role's do."""
        if self.role == REQUESTER:
            self.state.local_requester = self.pk
            self.state.award_lag_ms = L.DEFAULT_AWARD_LAG_MS

    def _award(self, e: fx.AttemptSettled) -> None:
        """The requester makes a settled attempt's winners final (as the real
        requester role does), unless it is silent or down."""
        if self.behaviour == "silent" or not self.up:
            return
        now = max(self.now(), e.window_end)
        self.publish(
            self.actor.award(
                now=now, ask=e.ask, commits=list(e.commits), round=e.round, attempt=e.attempt
            )
        )

    # -- spammer -------------------------------------------------------------------
    def spam(self, epoch: int) -> None:
        world = self.world
        if epoch != self.epoch or not self.up or world.loop.now >= world.active_end:
            return
        raw = self._garbage(world.rng)
        world.spam_ids.add(sha256(raw))
        world.stats.garbage_sent += 1
        for peer in world.net.mesh[self.idx]:
            world.net.send(self.idx, peer, raw)
        delay = round(world.rng.expovariate(world.scenario.spam_per_s) * 1_000)
        world.loop.after(max(1, delay), self.spam, self.epoch)

    def _garbage(self, rng: random.Random) -> bytes:
        """One envelope every honest node must refuse, and so never forward."""
        a, now, st = self.actor, self.now(), self.state
        kind = rng.randrange(8)
        asks, bids = list(st.asks), list(st.book.by_id)
        if kind == 0:
            return rng.randbytes(rng.randint(1, 300))
        if kind == 1:  # a well-formed ask with a broken signature
            k, body, signer, sig = codec.unpack(
                a.ask(now=now, max_price=10, max_proof_time=3_000, ttl=10_000)
            )
            return codec.pack((k, body, signer, bytes([sig[0] ^ 1]) + sig[1:]))
        if kind == 2:  # signed for another market
            other = Actor(a.name, default_market(name="elsewhere"))
            return other.bid(now=now, price=1, proof_time=1_000, ttl=10_000)
        if kind == 3:
            return b"\x94" + b"\x00" * (L.MAX_ENVELOPE_BYTES + 1)
        if kind == 4:  # not canonical: the body travels as str, not bin
            k, body, signer, sig = codec.unpack(a.cancel(now=now, ask=sha256(b"x")))
            return bytes(msgpack.packb((k, body, signer, sig), use_bin_type=False))
        if kind == 5 and asks:  # cancel someone else's ask
            return a.cancel(now=now, ask=rng.choice(asks))
        if kind == 6 and asks and bids:  # commit on someone else's bid
            bid = st.book.by_id[rng.choice(bids)].bid
            return a.commit(
                now=now, ask=rng.choice(asks), bid=rng.choice(bids), price=bid.price,
                proof_time=bid.proof_time,
            )  # fmt: skip
        # an ask living longer than the market allows
        return a.ask(
            now=now, max_price=10, max_proof_time=3_000, ttl=self.world.market.max_lifetime_ms + 1
        )

    # -- heartbeat (gossip recovery) and sync ----------------------------------------
    def heartbeat(self) -> None:
        if not self.up:
            return
        world = self.world
        horizon = world.loop.now - world.scenario.mcache_ms
        mc = self.mcache
        old = 0
        for t, _ in mc.values():  # in the order forwarded, so in time order
            if t >= horizon:
                break
            old += 1
        if old == len(mc):
            mc.clear()
            return
        for mid in list(itertools.islice(mc, old)):
            del mc[mid]
        net = world.net
        ids = set(mc)
        for p in net.mesh[self.idx]:
            peer = world.nodes[p]
            if not peer.up or not net.link_up(self.idx, p):
                continue
            lacking = peer.lacking(ids)
            if lacking:  # sent in mcache order, never in the set's (hash) order
                for mid, (_, env) in mc.items():
                    if mid in lacking:
                        net.send(self.idx, p, env.raw)

    def pull_from(self, peer: SimNode) -> None:
        """What the peer holds (stored or evidence) and this node lacks, over the sync
        stream: reliable, but it needs the link up, and what it brings is applied,
        never gossiped on."""
        world = self.world
        world.stats.syncs += 1
        mine, theirs = self.state, peer.state
        # The digests first, as the real sync does (the usual answer is "the same"),
        # then the ids (set differences), then the bodies of what is missing.
        if mine.holdings_digest() == theirs.holdings_digest():
            return
        missing = theirs.seen.keys() - mine.seen.keys()
        missing |= theirs.evidence.keys() - mine.seen.keys()
        missing -= mine.evidence.keys()
        missing -= self.held.keys()
        if missing:
            batch = [e.raw for e in theirs.stored_envelopes() if e.id in missing]
            world.net.send_batch(peer.idx, self.idx, batch)

    def sync_now(self) -> None:
        """Pull from up to `sync_peers` random connected peers, as the real node's
        `sync_now` does: on join, when its set of connected peers changed, and
        every `sync_ms` (anti-entropy)."""
        if not self.up:
            return
        world = self.world
        net = world.net
        peers = [p for p in net.mesh[self.idx] if world.nodes[p].up and net.link_up(self.idx, p)]
        for p in world.sync_rng.sample(peers, min(world.scenario.sync_peers, len(peers))):
            self.pull_from(world.nodes[p])

    def reconnected(self) -> None:
        """This node's links came back (heal, rejoin, a peer restarted): both ends of
        each link see their peer set change, and each syncs."""
        self.sync_now()
        for p in self.world.net.mesh[self.idx]:
            self.world.nodes[p].sync_now()

    def anti_entropy(self) -> None:
        """Every `sync_ms`, up or down (a crashed node skips its turn)."""
        self.world.loop.after(self.world.scenario.sync_ms, self.anti_entropy)
        self.sync_now()

    # -- crash and restart -----------------------------------------------------------
    def crash(self) -> None:
        if not self.up:
            return
        self.world.stats.crashes += 1
        self.up = False
        self.epoch += 1
        self.crashed_at = self.world.loop.now
        self.reorgs_before = self.reorgs
        self.held.clear()
        self._held_by_parent.clear()
        self.mcache.clear()
        self.proving.clear()

    def restart(self) -> None:
        """A fresh state replays the log, then the node rejoins and syncs."""
        if self.up:
            return
        world = self.world
        if self.crashed_at is not None:
            self.downtime.append((self.crashed_at, world.loop.now))
        # Replay each envelope at the local time it was first taken in, then catch up
        # to now: the fresh state walks through the same views as the old one did, so
        # it announces no winner that the old one had not (replaying everything at the
        # current time would announce each window's first commit, then "reorganise").
        # The replay runs without a local prover: its commit suggestions would be for
        # windows long closed, and each one the shell did not act on would keep a slot
        # reserved in free_slots() until the ask is pruned. The prover comes back for
        # the catch-up tick, which suggests what is due now.
        self.state = world.new_state(world.market, None, self.role)
        replayed: list[fx.Effect] = []
        for env, at in self.log:
            replayed.extend(self.state.apply_checked(env, at)[1])
        if self.role == PROVER:
            self.state.local_prover = self.pk
        self._as_requester()
        replayed.extend(self.state.tick(self.now()))
        # the replay re-announces what the old state had announced (and counted)
        self.reorg_baseline = self.state.reorgs
        self.replay_reorgs += self.state.reorgs
        self.up = True
        self.handle(replayed, replay=True)  # as told by the replay: what is still to do
        self.start_role()
        self.reconnected()

    def start_role(self, first: bool = False) -> None:
        world = self.world
        rng = world.rng
        if self.role == PROVER:
            current = self.state.book.current.get(self.pk)
            lifetime = world.market.max_lifetime_ms
            if first or current is None or current.bid.expires_at - self.now() < lifetime // 4:
                world.loop.after(rng.randint(0, 500) if first else 0, self.publish_bid, self.epoch)
            else:
                due = current.bid.timestamp + lifetime * 3 // 4 - self.now()
                world.loop.after(max(0, due), self.publish_bid, self.epoch)
        elif self.role == REQUESTER:
            delay = rng.randint(2_000, 3_000) if first else rng.randint(0, 1_000)
            world.loop.after(delay, self.place_ask, self.epoch)
        elif self.behaviour == "spammer":
            world.loop.after(rng.randint(1_000, 2_000), self.spam, self.epoch)
        elif self.behaviour == "no-effect":
            world.loop.after(rng.randint(0, 500) if first else 0, self.no_effect_bid, self.epoch)
            world.loop.after(rng.randint(2_000, 3_000), self.no_effect, self.epoch)
