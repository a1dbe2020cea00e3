"""MarketState: the one entry point of the core for one market.

    verdict, effects = state.apply(envelope_bytes, now)
    effects = state.tick(now)

The shell feeds it bytes and time and performs the effects; the simulator and the
tests drive the very same object. Validation runs cheapest check first: size,
decode, canonical form, then the seen cache (a seen id means byte-identical input,
so it is safe and cheaper to ask before verifying), then the signature, then the
checks that need the book. Every stored message can be explained by a named
verdict; nothing that is not stored changes the state.
"""

from __future__ import annotations

import hashlib
import heapq
from collections import deque
from dataclasses import dataclass

from p2p_market.core import effects as fx
from p2p_market.core.archive import Archive, Archived
from p2p_market.core.book import BidBook, StoredBid
from p2p_market.core.envelope import Envelope, market_id
from p2p_market.core.lifecycle import TERMINAL, AskState, SlotState
from p2p_market.core.limits import MAX_PENDING_ORPHANS
from p2p_market.core.messages import (
    Ask,
    Award,
    Bid,
    Cancel,
    Commit,
    InvalidInputs,
    Market,
    Prefer,
    Proof,
    Receipt,
)
from p2p_market.core.ranking import rank_key
from p2p_market.core.settlement import (
    AFTER_AWARD,
    AskRun,
    Attempt,
    Conflict,
    Fold,
    Round,
    Settlement,
    Slot,
    last_activity,
    new_fold,
)
from p2p_market.core.validation import check_form, check_signature
from p2p_market.core.verdict import ACCEPTED, Reason, Verdict, ignore, reject

Effects = list[fx.Effect]
_LATE_CANCEL = "cancel after assignment"


def equivocation_key(env: Envelope) -> tuple[object, ...]:
    """Two different messages with the same key from the same signer equivocate."""
    m = env.message
    if isinstance(m, Bid):
        return (env.signer, "bid", m.seq)
    if isinstance(m, Ask):
        return (env.signer, "ask", m.nonce)
    if isinstance(m, Commit):
        return (env.signer, "commit", m.ask, m.round, m.attempt)
    if isinstance(m, Receipt | Proof | InvalidInputs | Award):
        # These never equivocate: the fold takes, in signed order, the first one that
        # can take effect. So a premature timeout (a fast clock) does not block a
        # proper one, and a requester that timed out a winner whose on-time proof it
        # had not yet seen can still accept it. And a prover that delivered (or
        # attested) for a slot it was then reorganised out of (a late better commit)
        # can still deliver for a slot of the same ask it wins later: a proof does not
        # name its slot, so keyed per (signer, ask) the first one would block it, and
        # the prover would be timed out and excluded for work it did twice. Awards
        # add up (see settlement.Fold._award_of): a second one never takes a win away.
        return (env.id,)
    if isinstance(m, Cancel):
        return (env.signer, "Cancel", m.ask)
    return (env.id,)


def _order(env: Envelope) -> tuple[int, bytes]:
    return (env.message.timestamp if not isinstance(env.message, Market) else 0, env.id)


@dataclass(frozen=True, slots=True)
class AskView:
    """What any node can say about an ask at `now`."""

    id: bytes
    ask: Ask
    requester: bytes
    state: AskState
    winners: tuple[bytes, ...]
    """Every prover that ever won a slot of this ask, in order of assignment."""
    prices: tuple[int, ...]
    """What each winner asked (pay-as-bid), aligned with `winners`."""
    slot_states: tuple[SlotState, ...]
    accepted: tuple[bytes, ...]

    @property
    def paid(self) -> int:
        """What the requester owes: the price of every accepted proof."""
        return sum(
            p for p, s in zip(self.prices, self.slot_states, strict=True) if s is SlotState.ACCEPTED
        )


class MarketState:
    def __init__(self, market: Market, *, local_prover: bytes | None = None) -> None:
        self.market = market
        self.market_id = market_id(market)
        self.local_prover = local_prover
        self.book = BidBook()
        self.asks: dict[bytes, Envelope] = {}
        self.events: dict[bytes, dict[bytes, Envelope]] = {}
        self.commits_by_bid: dict[bytes, set[bytes]] = {}
        self._home: dict[bytes, bytes] = {}
        """Ask id of every stored ask-scoped message, by message id."""
        self.seen: dict[bytes, int] = {}
        self.keyed: dict[tuple[object, ...], Envelope] = {}
        self.evidence: dict[bytes, Envelope] = {}
        """Every stored message that equivocates with another stored one (both twins:
        which arrived first does not matter)."""
        self.twins: dict[bytes, Envelope] = {}
        """Stored twins whose equivocation key another stored message holds in `keyed`."""
        self._awarded: dict[bytes, int] = {}
        """How many awards are stored per ask."""
        self.pending: dict[bytes, dict[bytes, Envelope]] = {}
        self._pending_order: deque[tuple[bytes, bytes]] = deque()
        self._settlement: Settlement | None = None
        self._archive = Archive()
        self._live: set[bytes] = set()
        """Stored asks with ask-scoped messages that are not archived: what the fold replays."""
        self._next_forget = 0
        self._fold: Fold | None = None
        self._refold = True
        """The fold must be rebuilt from the stored messages (a removal, a thaw, a
        conflict): it only ever grows by itself."""
        self._fold_queue: list[Envelope] = []
        """Stored since the last settlement, for the fold to take in."""
        self._bids_added: list[tuple[bytes, int]] = []
        self._observe_all = True
        self._watch: list[tuple[int, bytes]] = []
        """(when, ask): an announcement or a deadline of this ask falls due then."""
        self._watched: set[tuple[int, bytes]] = set()
        self._last_activity: dict[bytes, tuple[int, int]] = {}
        """(fold version, last activity) of terminal asks waiting to be archived."""
        self._terminal: dict[bytes, None] = {}
        """Live asks in a terminal state: the candidates for the archive."""
        self._my_commits: set[tuple[bytes, bytes, int]] = set()
        """(ask, round, attempt) of every stored commit of the local prover."""
        self._open_asks: dict[bytes, None] = {}
        """Stored asks not yet expired at `now`, in arrival order (the commit policy's scope)."""
        self.refolds = 0
        """How many times the fold was rebuilt from scratch (a benchmark figure)."""
        self._fold_totals = {"conflicts": 0, "reopened": 0, "replayed": 0, "in_place": 0}
        self._committers: dict[bytes, int] = {}
        self.now = 0
        self.reorgs = 0
        # What this node has already told its shell (local, never part of the state hash).
        self._announced: dict[bytes, dict[tuple[bytes, int], tuple[bytes, ...]]] = {}
        self._told_states: dict[bytes, AskState] = {}
        self._told: dict[bytes, set[tuple[str, bytes, bytes, int]]] = {}
        self._suggested: set[tuple[bytes, bytes, int]] = set()
        self._outstanding: set[tuple[bytes, bytes, int]] = set()
        """Suggested commits not stored (yet): they hold a slot in `free_slots`."""
        self._expiries: list[tuple[int, bytes]] = []
        self._next_prune = 0
        self._digest_seen = 0
        self._digest_evidence = 0
        """XOR of the ids in `seen` and in `evidence` (see `holdings_digest`)."""
        self._forget_queue: list[tuple[int, bytes]] = []
        """(when it may be forgotten, id) of every message stored (see `_prune`)."""

    # -- limits derived from the market -----------------------------------------------
    @property
    def lifetime(self) -> int:
        return self.market.max_lifetime_ms

    def forget_after(self, env: Envelope) -> int:
        """When this node may forget a message: no valid message can refer to it later.
        The storage log uses it as the row's retention horizon."""
        return self._forget_after(env)

    def _forget_after(self, env: Envelope) -> int:
        m = env.message
        if isinstance(m, Bid):
            return m.expires_at + 3 * self.lifetime
        if isinstance(m, Ask):
            return m.expires_at + 2 * self.lifetime
        return m.timestamp + 3 * self.lifetime  # type: ignore[union-attr]

    # -- the entry points -------------------------------------------------------
    def apply(self, raw: bytes, now: int) -> tuple[Verdict, Effects]:
        # The clock moves whatever the verdict: derived state (and `state_hash`) is
        # that of `now` after a duplicate or a refusal too, as after `tick(now)`.
        self.now = max(self.now, now)
        verdict, env = check_form(raw)
        if env is None:
            return verdict, []
        if env.id in self.seen or env.id in self.evidence:
            return ignore(Reason.DUPLICATE), []
        verdict = check_signature(env)
        if not verdict.accepted:
            return verdict, []
        self.now = max(self.now, now)
        effects: Effects = []
        verdict = self._admit(env, now, effects)
        effects.extend(self._observe(now))
        return verdict, effects

    def apply_many(self, raws: list[bytes], now: int) -> tuple[list[Verdict], Effects]:
        """Apply a batch (sync, replay) and settle once at the end rather than after
        every message: the verdicts are those `apply` would give one by one."""
        verdicts: list[Verdict] = []
        effects: Effects = []
        self.now = max(self.now, now)
        for raw in raws:
            verdict, env = check_form(raw)
            if env is not None:
                if env.id in self.seen or env.id in self.evidence:
                    verdict = ignore(Reason.DUPLICATE)
                else:
                    verdict = check_signature(env)
                    if verdict.accepted:
                        verdict = self._admit(env, now, effects)
            verdicts.append(verdict)
        effects.extend(self._observe(now))
        return verdicts, effects

    def apply_checked(self, env: Envelope, now: int) -> tuple[Verdict, Effects]:
        """For envelopes whose form and signature the caller has already checked
        (the network validator does both before delivery)."""
        self.now = max(self.now, now)
        if env.id in self.seen or env.id in self.evidence:
            return ignore(Reason.DUPLICATE), []
        self.now = max(self.now, now)
        effects: Effects = []
        verdict = self._admit(env, now, effects)
        effects.extend(self._observe(now))
        return verdict, effects

    def tick(self, now: int) -> Effects:
        self.now = max(self.now, now)
        effects: Effects = []
        if now >= self._next_prune:
            self._prune(now)
            self._next_prune = now + max(1_000, self.market.commit_window_ms)
        while self._expiries and self._expiries[0][0] <= now:
            _, ask_id = heapq.heappop(self._expiries)
            self._open_asks.pop(ask_id, None)
            if ask_id in self.asks and ask_id not in self.events:
                self._tell_state(ask_id, AskState.EXPIRED, effects)
        effects.extend(self._observe(now))
        effects.extend(self._suggest(now, list(self._open_asks)))
        self._archive_finished(now)
        return effects

    # -- admission: the checks that need state ---------------------------------------
    def _admit(self, env: Envelope, now: int, effects: Effects) -> Verdict:
        m = env.message
        if isinstance(m, Market):
            if market_id(m) == self.market_id:
                return ignore(Reason.DUPLICATE, "this market's own descriptor")
            return ignore(Reason.WRONG_MARKET, "another market's descriptor")
        if m.market != self.market_id:
            return reject(Reason.WRONG_MARKET)
        if m.timestamp > now + self.market.skew_ms:
            return ignore(Reason.FROM_FUTURE, f"{m.timestamp - now} ms ahead")
        arrived_expired = False
        if isinstance(m, Bid | Ask):
            too_far = m.expires_at - m.timestamp > self.lifetime or (
                isinstance(m, Ask) and m.max_proof_time > self.lifetime
            )
            if m.expires_at <= now:
                # Too late to act on, so not forwarded; yet kept until its horizon if
                # valid: a node that was away while it lived must end up holding the
                # same messages as one that got it in time (its commits, proofs and
                # receipts would stay orphans for good otherwise).
                if too_far or self._forget_after(env) < now:
                    return ignore(Reason.EXPIRED)
                arrived_expired = True
            elif m.expires_at - m.timestamp > self.lifetime:
                return reject(Reason.EXPIRY_TOO_FAR, f"lifetime above {self.lifetime} ms")
            elif too_far:
                return reject(Reason.EXPIRY_TOO_FAR, "max_proof_time above the market lifetime")
        else:
            if m.timestamp + 3 * self.lifetime < now:
                return ignore(Reason.STALE)
            verdict = self._check_parents(env, m)
            if verdict is not None:
                return verdict
        key = equivocation_key(env)
        rival = self.keyed.get(key)
        if rival is not None:
            return self._equivocation(env, rival, now, effects)
        self._store(env, key)
        self._after_store(env, now, effects)
        if arrived_expired:
            return ignore(Reason.EXPIRED, "kept: it expired before it arrived")
        if isinstance(m, Cancel) and self._settle(now).notes.get(env.id) == _LATE_CANCEL:
            # Refused, so not forwarded; yet kept: if the assignment it came after
            # proves invalid (a late equivocation, say) it takes effect, exactly as on
            # a node that received it first. Not provable misbehaviour: the requester
            # may simply not have seen the commits yet.
            return ignore(Reason.CANCEL_AFTER_ASSIGNMENT, "kept without effect")
        if (
            isinstance(m, Commit)
            and m.ask in self._awarded
            and self._settle(now).notes.get(env.id) == AFTER_AWARD
        ):
            # Too late to count: the requester's award decided its attempt. Kept (so
            # every node holds the same set) but not forwarded, and nobody is blamed:
            # the forwarder may only have passed on what a prover held back.
            return ignore(Reason.AFTER_AWARD, "kept without effect")
        return ACCEPTED

    def _check_parents(
        self, env: Envelope, m: Cancel | Commit | Proof | Receipt | InvalidInputs | Award
    ) -> Verdict | None:
        ask_env = self.asks.get(m.ask)
        if ask_env is None:
            return self._orphan(env, m.ask)
        ask = ask_env.message
        assert isinstance(ask, Ask)
        if isinstance(m, Cancel | Receipt | Award) and env.signer != ask_env.signer:
            return reject(Reason.NOT_ASK_OWNER)
        if isinstance(m, Award):
            return self._check_award(env, m)
        if isinstance(m, Commit):
            stored = self.book.by_id.get(m.bid)
            if stored is None:
                return self._orphan(env, m.bid)
            bid = stored.bid
            if stored.prover != env.signer:
                return reject(Reason.NOT_BID_OWNER)
            if (m.price, m.proof_time) != (bid.price, bid.proof_time):
                return reject(Reason.COMMIT_MISMATCH, "price or proof_time differ from the bid")
            if m.price > ask.max_price or m.proof_time > ask.max_proof_time:
                return reject(Reason.COMMIT_OVER_CAPS)
            if not bid.timestamp <= m.timestamp < bid.expires_at:
                return reject(Reason.BID_NOT_LIVE, "commit outside the bid's lifetime")
        return None

    def _check_award(self, env: Envelope, m: Award) -> Verdict | None:
        """Every commit an award names must be stored (the fold needs its terms): it
        is held until each arrives. Naming a commit of another attempt is provable
        misbehaviour by the requester."""
        for cid in m.commits:
            commit = self._find_event(cid)
            if commit is None:
                return self._orphan(env, cid)
            c = commit.message
            if not isinstance(c, Commit) or (c.ask, c.round, c.attempt) != (
                m.ask,
                m.round,
                m.attempt,
            ):
                return reject(Reason.BAD_AWARD, "names a commit of another attempt")
        return None

    def _orphan(self, env: Envelope, parent: bytes) -> Verdict:
        waiting = self.pending.setdefault(parent, {})
        if env.id not in waiting:
            waiting[env.id] = env
            self._pending_order.append((parent, env.id))
        while len(self._pending_order) > MAX_PENDING_ORPHANS:
            old_parent, old_id = self._pending_order.popleft()
            self.pending.get(old_parent, {}).pop(old_id, None)
            if not self.pending.get(old_parent, True):
                del self.pending[old_parent]
        return ignore(Reason.ORPHAN, "held until its parent arrives")

    def _equivocation(self, env: Envelope, rival: Envelope, now: int, effects: Effects) -> Verdict:
        """Both twins are stored and both count, as two messages; they are recorded as
        evidence against their signer. Nothing is ever removed for an equivocation:
        choosing one twin would let a signer who holds the other back (or signs it
        later, backdated) erase what depends on the first, a paid proof included.
        An ask twin is simply another ask; a bid twin is judged like any bid by the
        commits that cite it (the book's current bid is the first in signed order);
        commit twins are two candidates of one prover, of which at most one wins."""
        first, second = sorted((env, rival), key=_order)
        effects.append(fx.EquivocationSeen(signer=env.signer, kept=first.id, dropped=second.id))
        for twin in (env, rival):
            if twin.id not in self.evidence:
                self.evidence[twin.id] = twin
                self._digest_evidence ^= _id_int(twin.id)
        self._store(env, None)
        self._after_store(env, now, effects)
        # IGNORE, not REJECT: the signer misbehaved, not the peer that forwarded the
        # twin it saw first, which must not be blamed (or an equivocator could get
        # honest relays disconnected). Not forwarded either; peers converge on both
        # twins through sync, which serves every stored message.
        return ignore(Reason.EQUIVOCATION, f"kept beside {rival.id.hex()[:16]}")

    # -- storage ------------------------------------------------------------------
    def _thaw_for(self, env: Envelope) -> None:
        """Bring back into the fold every archived ask this message could affect."""
        m = env.message
        if isinstance(m, Market | Ask):
            return
        thawed = self._archive.thaw_from(m.timestamp)
        if not isinstance(m, Bid):
            entry = self._archive.thaw(m.ask)
            if entry is not None:
                thawed[m.ask] = entry
        for ask_id, entry in thawed.items():
            self._announced[ask_id] = entry.announced
            self._live.add(ask_id)
            self._refold = True

    def _store(self, env: Envelope, key: tuple[object, ...] | None) -> None:
        """Store a message under its equivocation key (None: a twin of a stored one)."""
        m = env.message
        self._thaw_for(env)
        if key is None:
            self.twins[env.id] = env
        else:
            self.keyed[key] = env
        until = self._forget_after(env)
        if env.id not in self.seen:
            self._digest_seen ^= _id_int(env.id)
        self.seen[env.id] = until
        heapq.heappush(self._forget_queue, (until, env.id))
        if isinstance(m, Bid):
            self.book.add(StoredBid(env.id, env.signer, m))
            if env.signer in self._committers:
                self._bids_added.append((env.signer, m.timestamp))
        elif isinstance(m, Ask):
            self.asks[env.id] = env
            self._open_asks[env.id] = None
            heapq.heappush(self._expiries, (m.expires_at, env.id))
            if env.id in self.events:
                self._live.add(env.id)
                self._fold_queue.append(env)
                self._fold_queue.extend(self.events[env.id].values())
        else:
            ask_id: bytes = m.ask  # type: ignore[union-attr]
            self.events.setdefault(ask_id, {})[env.id] = env
            if ask_id in self.asks:
                if ask_id not in self._live:
                    self._live.add(ask_id)
                    self._fold_queue.append(self.asks[ask_id])
                self._fold_queue.append(env)
            self._home[env.id] = ask_id
            if isinstance(m, Award):
                self._awarded[ask_id] = self._awarded.get(ask_id, 0) + 1
            if isinstance(m, Commit):
                self.commits_by_bid.setdefault(m.bid, set()).add(env.id)
                self._committers[env.signer] = self._committers.get(env.signer, 0) + 1
                if env.signer == self.local_prover:
                    self._my_commits.add((m.ask, m.round, m.attempt))
                    self._outstanding.discard((m.ask, m.round, m.attempt))

    def _unstore(self, env: Envelope, *, forget: bool = True) -> None:
        """Remove a message and whatever depends on it. `forget=False` (pruning) keeps
        the ids in the seen cache until their own horizon, so a replay stays a duplicate.

        Pruning takes messages past their retention horizon, which nothing later can
        depend on: it neither thaws archived asks nor rebuilds the fold unless a live
        ask loses a message. Any other removal (an equivocation decided the other
        way) does both."""
        m = env.message
        if forget:
            self._thaw_for(env)
        touches_fold = forget or env.id in self._live or getattr(m, "ask", None) in self._live
        key = equivocation_key(env)
        if self.twins.pop(env.id, None) is None and self.keyed.get(key) is env:
            del self.keyed[key]
            for twin in list(self.twins.values()):  # a twin takes the key over
                if equivocation_key(twin) == key:
                    self.keyed[key] = self.twins.pop(twin.id)
                    break
        if forget and self.seen.pop(env.id, None) is not None:
            self._digest_seen ^= _id_int(env.id)
        if isinstance(m, Bid):
            self.book.remove(env.id)
            for cid in sorted(self.commits_by_bid.pop(env.id, ())):
                commit = self._find_event(cid)
                if commit is not None:
                    self._unstore(commit, forget=forget)
        elif isinstance(m, Ask):
            self.asks.pop(env.id, None)
            self._open_asks.pop(env.id, None)
            self._suggested = {k for k in self._suggested if k[0] != env.id}
            self._outstanding = {k for k in self._outstanding if k[0] != env.id}
            self._live.discard(env.id)
            self._last_activity.pop(env.id, None)
            archived = self._archive.thaw(env.id)
            if archived is not None and self._fold is not None:
                self._fold.forget_commits([o.commit_id for _, o in archived.occupancy])
            self._announced.pop(env.id, None)
            self._told.pop(env.id, None)
            self._told_states.pop(env.id, None)
            for child in list(self.events.get(env.id, {}).values()):
                self._unstore(child, forget=forget)
            self.events.pop(env.id, None)
        else:
            self._home.pop(env.id, None)
            bucket = self.events.get(m.ask)  # type: ignore[union-attr]
            if bucket is not None:
                bucket.pop(env.id, None)
                if not bucket:
                    del self.events[m.ask]  # type: ignore[union-attr]
                    self._live.discard(m.ask)  # type: ignore[union-attr]
            if isinstance(m, Award):
                left = self._awarded.get(m.ask, 1) - 1
                if left:
                    self._awarded[m.ask] = left
                else:
                    self._awarded.pop(m.ask, None)
            if isinstance(m, Commit):
                self.commits_by_bid.get(m.bid, set()).discard(env.id)
                left = self._committers.get(env.signer, 1) - 1
                if left:
                    self._committers[env.signer] = left
                else:
                    self._committers.pop(env.signer, None)
                if env.signer == self.local_prover:
                    key = (m.ask, m.round, m.attempt)
                    self._my_commits.discard(key)
                    if key in self._suggested and m.ask in self.asks:
                        self._outstanding.add(key)
        if touches_fold:
            self._refold = True

    def _find_event(self, mid: bytes) -> Envelope | None:
        home = self._home.get(mid)
        return None if home is None else self.events[home].get(mid)

    def _after_store(self, env: Envelope, now: int, effects: Effects) -> None:
        # Children first: an ask that arrives after its commits (sync, reordering)
        # is told and suggested in the state they give it, not as open and empty.
        for child in sorted(self.pending.pop(env.id, {}).values(), key=_order):
            self._admit(child, now, effects)
        if isinstance(env.message, Ask):
            self._tell_state(env.id, self.ask_state(env.id), effects)
            effects.extend(self._suggest(now, [env.id]))

    # -- derived state ------------------------------------------------------------
    def _settle(self, now: int) -> Settlement:
        """The settlement at `now`: the fold takes in what was stored since the last
        call; a removal, a thaw or a conflict (see settlement.Fold) rebuilds it."""
        now = max(now, self.now)
        fold, s = self._fold, self._settlement
        if fold is not None and s is not None and not self._refold:
            due = s.next_wakeup is not None and now >= s.next_wakeup
            if not (self._fold_queue or self._bids_added or due):
                return s
            try:
                for prover, t in self._bids_added:
                    fold.bid_added(prover, t)
                for env in self._fold_queue:
                    fold.add(env)
                fold.advance(now)
            except Conflict:
                self._refold = True
                self._fold_totals["conflicts"] += 1
        if fold is None or self._refold:
            if fold is not None:
                self._fold_totals["reopened"] += fold.reopened
                self._fold_totals["replayed"] += fold.replayed
                self._fold_totals["in_place"] += fold.in_place
            live = sorted(self._live)
            active = [self.asks[a] for a in live]
            events = [e for a in live for e in self.events[a].values()]
            fold = new_fold(self.market, self.book, active, events, self._archive.fixed_occupancy())
            fold.advance(now)
            self._fold, self._refold, self._observe_all = fold, False, True
            self._last_activity.clear()  # keyed by the old fold's versions
            self.refolds += 1
        self._fold_queue.clear()
        self._bids_added.clear()
        s = self._settlement = fold.settlement()
        return s

    def fold_stats(self) -> dict[str, int]:
        """How this node's fold has kept up: rebuilds from scratch (`refolds`, of
        which `conflicts` were out-of-order messages that did not commute), windows
        `reopened` for a late commit, asks `replayed` alone, and items folded
        `in_place` in the past."""
        out = dict(self._fold_totals, refolds=self.refolds)
        if self._fold is not None:
            out["reopened"] += self._fold.reopened
            out["replayed"] += self._fold.replayed
            out["in_place"] += self._fold.in_place
        return out

    def _run(self, ask_id: bytes) -> AskRun | None:
        archived = self._archive.asks.get(ask_id)
        if archived is not None:
            return archived.run
        if ask_id not in self._live:
            return None  # a quiet ask: nothing to fold, no reason to settle
        return self._settle(self.now).runs.get(ask_id)

    def _note(self, mid: bytes) -> str:
        s = self._settle(self.now)
        return s.notes.get(mid) or self._archive.notes.get(mid, "")

    def ask_state(self, ask_id: bytes) -> AskState:
        run = self._run(ask_id)
        if run is not None:
            return run.state
        ask = self.asks[ask_id].message
        assert isinstance(ask, Ask)
        return AskState.OPEN if self.now < ask.expires_at else AskState.EXPIRED

    def view(self, ask_id: bytes) -> AskView:
        env = self.asks[ask_id]
        ask = env.message
        assert isinstance(ask, Ask)
        run = self._run(ask_id)
        slots = sorted(run.slots.values(), key=lambda x: x.assigned_at) if run else []
        return AskView(
            id=ask_id,
            ask=ask,
            requester=env.signer,
            state=self.ask_state(ask_id),
            winners=tuple(x.prover for x in slots),
            prices=tuple(x.price for x in slots),
            slot_states=tuple(x.state for x in slots),
            accepted=tuple(x.prover for x in slots if x.state is SlotState.ACCEPTED),
        )

    def stored_envelopes(self) -> list[Envelope]:
        """Every message this node holds and would give a peer that syncs from it: all
        stored messages and the equivocation evidence (so peers converge on both)."""
        return [*self.keyed.values(), *self.twins.values()]

    def holdings_digest(self) -> tuple[int, int, int, int]:
        """(count, XOR) of the seen ids and of the evidence ids, kept up to date as
        they change: two nodes with equal digests hold the same ids (but for a
        2^-256 accident), so a sync can stop after comparing them, as the real
        sync compares (count, SHA-256 of the sorted ids) first."""
        return (len(self.seen), self._digest_seen, len(self.evidence), self._digest_evidence)

    def holds(self, mid: bytes) -> bool:
        """Whether a sync peer need not send this id: stored, evidence or seen."""
        return mid in self.seen or mid in self.evidence

    def settlement(self) -> Settlement:
        return self._settle(self.now)

    # -- effects: what changed since we last told the shell ---------------------------
    def _tell_state(self, ask_id: bytes, state: AskState, effects: Effects) -> None:
        before = self._told_states.get(ask_id)
        if before is not state:
            self._told_states[ask_id] = state
            effects.append(fx.AskStateChanged(ask=ask_id, before=before, after=state))

    def _forget_told(self, ask: bytes, round: bytes, attempt: int, provers: set[bytes]) -> None:
        """A reorg took these provers' slots: what they were told about them no longer
        holds, so if a later reorg gives a slot back they are told again (its
        `Assigned` carries the deadline that counts now)."""
        told = self._told.get(ask)
        if told:
            for kind in ("assigned", "proof", "deadline"):
                for prover in provers:
                    told.discard((kind, prover, round, attempt))

    def _tell_once(self, kind: str, ask: bytes, slot: Slot) -> bool:
        """Each fact about a slot is told once. A slot is one win: a prover reorganised
        away and winning a later round of the same ask holds a new slot."""
        told = self._told.setdefault(ask, set())
        token = (kind, slot.prover, slot.round, slot.attempt)
        if token in told:
            return False
        told.add(token)
        return True

    def _observe(self, now: int) -> Effects:
        """What changed since the shell was last told: the asks the fold touched,
        and those with an announcement or a deadline due by `now`."""
        s = self._settle(now)
        fold = self._fold
        assert fold is not None
        watch = self._watch
        if not (fold.touched or self._observe_all or (watch and watch[0][0] <= now)):
            return []
        check = set(fold.touched)
        fold.touched.clear()
        if self._observe_all:
            check.update(s.runs)
            check.update(self._announced)
            self._observe_all = False
        while watch and watch[0][0] <= now:
            entry = heapq.heappop(watch)
            self._watched.discard(entry)
            check.add(entry[1])
        out: Effects = []
        for ask_id in sorted(check):
            self._observe_ask(ask_id, s, now, out)
        return out

    def _watch_at(self, when: int, ask_id: bytes) -> None:
        if (when, ask_id) not in self._watched:
            self._watched.add((when, ask_id))
            heapq.heappush(self._watch, (when, ask_id))

    def _observe_ask(self, ask_id: bytes, s: Settlement, now: int, out: Effects) -> None:
        fold = self._fold
        assert fold is not None
        skew = self.market.skew_ms
        for key in fold.attempts_by_ask.get(ask_id, ()):
            att = s.attempts[key]
            if not att.settled:
                continue
            if now < att.window_end + skew:
                self._watch_at(att.window_end + skew, ask_id)
                continue
            announced = self._announced.setdefault(ask_id, {})
            before = announced.get(key[1:])
            if before is None:
                out.append(
                    fx.AttemptSettled(
                        ask=key[0],
                        round=key[1],
                        attempt=key[2],
                        winners=att.winners,
                        commits=att.winner_commits,
                        window_end=att.window_end,
                        final=att.awarded,
                    )
                )
            elif before != att.winners:
                self.reorgs += 1
                out.append(
                    fx.Reorg(
                        ask=key[0], round=key[1], attempt=key[2], before=before, after=att.winners
                    )
                )
                self._forget_told(ask_id, key[1], key[2], set(before) - set(att.winners))
            announced[key[1:]] = att.winners
        announced = self._announced.get(ask_id, {})
        for sub in [sub for sub in announced if (ask_id, *sub) not in s.attempts]:
            before = announced.pop(sub)
            if before:
                self.reorgs += 1
                out.append(
                    fx.Reorg(ask=ask_id, round=sub[0], attempt=sub[1], before=before, after=())
                )
                self._forget_told(ask_id, sub[0], sub[1], set(before))
        run = s.runs.get(ask_id)
        if run is None:
            return
        for slot in run.slots.values():
            told_winners = announced.get((slot.round, slot.attempt), ())
            if slot.prover in told_winners and self._tell_once("assigned", ask_id, slot):
                out.append(
                    fx.Assigned(
                        ask=ask_id,
                        prover=slot.prover,
                        deadline=slot.deadline,
                        price=slot.price,
                        proof_time=slot.proof_time,
                    )
                )
            if slot.state is SlotState.DELIVERED and self._tell_once("proof", ask_id, slot):
                assert slot.proof_hash is not None
                out.append(
                    fx.ProofDelivered(ask=ask_id, prover=slot.prover, proof_hash=slot.proof_hash)
                )
            if slot.state is SlotState.ASSIGNED:
                if now < slot.deadline:
                    self._watch_at(slot.deadline, ask_id)
                elif self._tell_once("deadline", ask_id, slot):
                    out.append(
                        fx.DeadlinePassed(ask=ask_id, prover=slot.prover, deadline=slot.deadline)
                    )
        self._tell_state(ask_id, run.state, out)

    # -- the local prover's policy: when to commit ------------------------------------
    def free_slots(self, prover: bytes, now: int) -> int:
        """Slots the prover can be sure are free at `now` in this node's view: a commit
        holds its slot until the prover can know it was released (settle lag). For the
        local prover, commits it was told to make but that are not stored yet count too."""
        stored = self.book.current.get(prover)
        if stored is None:
            return 0
        s = self._settle(now)
        skew = self.market.skew_ms
        held = sum(
            1
            for o in s.occupancy.get(prover, ())
            if o.start <= now and (not o.settled or now < o.end + skew)
        )
        if prover == self.local_prover:
            held += len(self._outstanding)
        return stored.bid.capacity - held

    def _suggest(self, now: int, ask_ids: list[bytes]) -> Effects:
        me = self.local_prover
        if me is None:
            return []
        mine = self.book.current.get(me)
        if mine is None or mine.bid.expires_at <= now:
            return []
        s = self._settle(now)
        out: Effects = []
        free = None
        window, stage = self.market.commit_window_ms, self.market.stage_ms
        runs, live, archived = s.runs, self._live, self._archive.asks
        room: dict[bytes, bool] = {}

        def has_room(prover: bytes) -> bool:
            """free_slots(prover) > 0, once per other prover per call: nothing the
            policy does while it looks changes another prover's slots."""
            if prover == me:  # its own slots change as it is told to commit
                return self.free_slots(prover, now) > 0
            known = room.get(prover)
            if known is None:
                known = room[prover] = self.free_slots(prover, now) > 0
            return known

        for ask_id in ask_ids:
            # the cheap refusals first: most open asks were assigned long ago
            if ask_id in live:
                known = runs.get(ask_id)
                if known is not None and known.state is not AskState.OPEN:
                    continue
            elif ask_id in archived:
                continue  # archived asks are finished
            env = self.asks.get(ask_id)
            if env is None:
                continue
            ask = env.message
            assert isinstance(ask, Ask)
            if now >= ask.expires_at or mine.bid.price > ask.max_price:
                continue
            if mine.bid.proof_time > ask.max_proof_time:
                continue
            run = self._run(ask_id)
            if run is not None:
                if run.state is not AskState.OPEN or me in run.excluded or me in run.slots:
                    continue
                rounds = [r for r in run.rounds.values() if r.unfilled > 0]
                excluded = run.excluded | set(run.slots)
            else:
                rounds = [Round(id=ask_id, opened_at=ask.timestamp, slots=ask.replicas)]
                excluded = set()
            for rnd in rounds:
                if now < rnd.opened_at:
                    continue
                attempt = (now - rnd.opened_at) // window
                start = rnd.opened_at + attempt * window
                key = (ask_id, rnd.id, attempt)
                if key in self._suggested:
                    continue
                pos = self.book.position(
                    ask,
                    ask_id,
                    me,
                    now,
                    lambda p, ex=excluded: p not in ex and has_room(p),  # type: ignore[misc]
                    # Past this many better bids this prover's stage falls outside
                    # the window, and it does not commit: no need to count further.
                    limit=rnd.unfilled + -(-window // stage),
                )
                if pos is None:
                    continue
                if pos >= rnd.unfilled:
                    stage_at = start + (pos - rnd.unfilled + 1) * stage
                    if now < stage_at or stage_at >= start + window:
                        continue
                att = s.attempts.get(key)
                if att is not None:
                    my_key = rank_key(
                        ask.prefer == Prefer.COST.value,
                        mine.bid.price,
                        mine.bid.proof_time,
                        ask_id,
                        me,
                    )
                    if sum(1 for c in att.candidates if c[0] < my_key) >= rnd.unfilled:
                        continue  # enough better commits are in: standing back saves a message
                if free is None:
                    free = self.free_slots(me, now)
                if free <= 0:
                    return out
                free -= 1
                self._suggested.add(key)
                if key not in self._my_commits:
                    self._outstanding.add(key)
                out.append(
                    fx.CommitToAsk(
                        ask=ask_id,
                        round=rnd.id,
                        attempt=attempt,
                        bid=mine.id,
                        price=mine.bid.price,
                        proof_time=mine.bid.proof_time,
                    )
                )
        return out

    # -- housekeeping -------------------------------------------------------------
    def _archive_finished(self, now: int) -> None:
        """Set aside terminal asks whose activity ended well before `now` (see
        archive.py): a message that could still change them would have to arrive
        later than the settle lag, and it would thaw them."""
        s = self._settle(now)
        fold = self._fold
        assert fold is not None
        line = now - self.market.commit_window_ms - 2 * self.market.skew_ms
        # Only terminal asks can go; an ask joins or leaves that set when it changes.
        for ask_id in sorted(fold.archive_touched):
            run = s.runs.get(ask_id)
            if run is not None and run.state in TERMINAL:
                self._terminal[ask_id] = None
            else:
                self._terminal.pop(ask_id, None)
        fold.archive_touched.clear()
        for ask_id in list(self._terminal):
            run = s.runs.get(ask_id)
            if run is None or run.state not in TERMINAL or ask_id in self._archive:
                del self._terminal[ask_id]
                continue
            version = fold.version.get(ask_id, 0)
            cached = self._last_activity.get(ask_id)
            keys = fold.attempts_by_ask.get(ask_id, [])
            if cached is None or cached[0] != version:
                events = list(self.events.get(ask_id, {}).values())
                last = last_activity(run, [s.attempts[k] for k in keys], events)
                self._last_activity[ask_id] = cached = (version, last)
            last = cached[1]
            if last >= line:
                continue
            del self._terminal[ask_id]
            ids = set(self.events.get(ask_id, {}))
            occupancy = [fold.interval[cid] for cid in sorted(ids) if cid in fold.interval]
            self._archive.put(
                ask_id,
                Archived(
                    run=run,
                    attempts={k: s.attempts[k] for k in keys},
                    notes={mid: s.notes[mid] for mid in ids if mid in s.notes},
                    occupancy=occupancy,
                    last=last,
                    announced=self._announced.pop(ask_id, {}),
                ),
            )
            self._live.discard(ask_id)
            self._last_activity.pop(ask_id, None)
            fold.drop(ask_id, ids)
            self._settlement = fold.settlement()  # its next wakeup may have been the ask's
        if now < self._next_forget:
            return
        self._next_forget = now + 10 * self.market.commit_window_ms
        live = [
            e.message.timestamp  # type: ignore[union-attr]
            for a in s.runs
            for e in self.events.get(a, {}).values()
        ]
        horizon = min([line, *live])
        self._archive.forget_before(horizon)
        live_commits = {cid for a in s.runs for cid in self.events.get(a, {})}
        fold.forget_before(horizon, live_commits)

    def _prune(self, now: int) -> None:
        """Forget what can no longer matter: expired bids leave the index at once,
        and every message is dropped once no valid message could refer to it. Due
        items come off a queue ordered by when they may go, so a prune costs what
        it removes, not what the node holds."""
        self.book.expire(now)
        queue = self._forget_queue
        while queue and queue[0][0] < now:
            until, mid = heapq.heappop(queue)
            if self.seen.get(mid) != until:
                continue  # forgotten already, or stored again since
            env = self.keyed_by_id(mid)
            if env is None:
                del self.seen[mid]
                self._digest_seen ^= _id_int(mid)
            elif isinstance(env.message, Ask | Bid):
                self._unstore(env, forget=False)  # the ids stay seen until their horizon
                heapq.heappush(queue, (until, mid))
            else:
                # an ask-scoped message leaves with its ask; look again after that
                home = self.asks.get(self._home.get(mid, b""))
                later = now + self.lifetime
                if home is not None:
                    later = max(later, self._forget_after(home) + 1)
                self.seen[mid] = later
                heapq.heappush(queue, (later, mid))
        for mid, env in list(self.evidence.items()):
            if self._forget_after(env) < now:
                del self.evidence[mid]
                self._digest_evidence ^= _id_int(mid)
        for parent, children in list(self.pending.items()):
            for cid, child in list(children.items()):
                if self._forget_after(child) < now:
                    del children[cid]
            if not children:
                del self.pending[parent]

    def keyed_by_id(self, mid: bytes) -> Envelope | None:
        """The stored message with this id, if any."""
        env = self.asks.get(mid)
        if env is not None:
            return env
        twin = self.twins.get(mid)
        if twin is not None:
            return twin
        stored = self.book.by_id.get(mid)
        if stored is not None:
            return self.keyed.get(equivocation_key_of_bid(stored))
        return self._find_event(mid)

    # -- checks ---------------------------------------------------------------------
    def state_hash(self) -> str:
        """A digest of everything that any node holding the same messages must agree
        on at the same `now`: stored messages, evidence, and every derived verdict.
        Derived state depends on time (expiry, settlement), so compare two nodes only
        after both have seen the same latest `now` (apply or tick)."""
        h = hashlib.sha256(self.market_id)
        for bid_id in sorted(self.book.by_id):
            h.update(b"B" + bid_id)
        for ask_id in sorted(self.asks):
            h.update(b"A" + ask_id + self.ask_state(ask_id).value.encode())
            run = self._run(ask_id)
            if run is None:
                continue
            for prover in sorted(run.slots):
                slot = run.slots[prover]
                h.update(b"S" + prover + slot.commit_id + slot.state.value.encode())
                h.update(slot.deadline.to_bytes(8, "big"))
            for rid in sorted(run.rounds):
                h.update(b"R" + rid + b"".join(run.rounds[rid].winners))
        for ask_id in sorted(self.events):
            for mid in sorted(self.events[ask_id]):
                h.update(b"E" + mid + self._note(mid).encode())
        for mid in sorted(self.evidence):
            h.update(b"X" + mid)
        for parent in sorted(self.pending):
            for mid in sorted(self.pending[parent]):
                h.update(b"P" + mid)
        return h.hexdigest()

    def check_invariants(self) -> list[str]:
        """Every rule that must hold after any step; returns the violations found."""
        problems: list[str] = []
        try:
            self.book.check_invariants()
        except AssertionError as exc:
            problems.append(f"book: {exc}")
        s = self._settle(self.now)
        runs = dict(s.runs)
        attempts = dict(s.attempts)
        for ask_id, archived in self._archive.asks.items():
            runs[ask_id] = archived.run
            attempts.update(archived.attempts)
        for ask_id, run in runs.items():
            ask = run.ask
            for rnd in run.rounds.values():
                # (Not per ask: a timed-out winner whose proof signed in time turns up
                # later may still be accepted beside the round its timeout opened.)
                if len(rnd.winners) > rnd.slots:
                    problems.append(f"ask {ask_id.hex()[:8]}: a round with too many winners")
            if run.state is AskState.CANCELLED and run.slots:
                problems.append(f"ask {ask_id.hex()[:8]}: cancelled yet assigned")
            for slot in run.slots.values():
                if slot.price > ask.max_price or slot.proof_time > ask.max_proof_time:
                    problems.append(f"ask {ask_id.hex()[:8]}: winner outside the caps")
                if slot.assigned_at > ask.expires_at:
                    problems.append(f"ask {ask_id.hex()[:8]}: assigned after expiry")
                if (ask.allow and slot.prover not in ask.allow) or slot.prover in ask.deny:
                    problems.append(f"ask {ask_id.hex()[:8]}: winner not allowed")
        for key, att in attempts.items():
            run = runs[key[0]]
            if not att.winners or att.awarded:
                continue  # an award decides by the requester's word, not the ranking
            ranked = sorted(att.candidates)
            best = [c[1] for c in ranked][: len(att.winners)]
            if list(att.winners) != best and not any(c[1] in run.slots for c in ranked):
                problems.append(f"attempt {key[0].hex()[:8]}/{key[2]}: winners not the best")
            worst_winner = max(c[0] for c in ranked if c[1] in att.winners)
            for c in ranked:
                if c[1] not in att.winners and c[0] < worst_winner:
                    held = run.slots.get(c[1])
                    if held is None or (held.round, held.attempt) == (key[1], key[2]):
                        problems.append(f"attempt {key[0].hex()[:8]}: a better commit lost")
        problems.extend(self._capacity_problems(s, attempts))
        expected_live = {a for a in self.events if a in self.asks and a not in self._archive}
        if self._live != expected_live:
            problems.append("the live set differs from the stored, unarchived asks with activity")
        for mid in self.asks:
            if mid not in self.seen:
                problems.append("a stored ask is missing from the seen cache")
        xor_seen = xor_evidence = 0
        for mid in self.seen:
            xor_seen ^= _id_int(mid)
        for mid in self.evidence:
            xor_evidence ^= _id_int(mid)
        if (xor_seen, xor_evidence) != (self._digest_seen, self._digest_evidence):
            problems.append("the holdings digest differs from the ids held")
        return problems

    def _capacity_problems(
        self, s: Settlement, attempts: dict[tuple[bytes, bytes, int], Attempt]
    ) -> list[str]:
        problems = []
        valid = {c[2]: c[1] for att in attempts.values() for c in att.candidates}
        for prover, occs in s.occupancy.items():
            for o in occs:
                if o.commit_id not in valid:
                    problems.append("occupancy for a commit that is not valid")
                    continue
                at_once = sum(1 for p in occs if p.start <= o.start < p.end)
                commit = self._find_event(o.commit_id)
                assert commit is not None and isinstance(commit.message, Commit)
                cap = self.book.by_id[commit.message.bid].bid.capacity
                if at_once > cap:
                    problems.append(f"prover {prover.hex()[:8]} over capacity ({at_once} > {cap})")
        return problems


def _id_int(mid: bytes) -> int:
    return int.from_bytes(mid, "big")


def equivocation_key_of_bid(stored: StoredBid) -> tuple[object, ...]:
    return (stored.prover, "bid", stored.bid.seq)
