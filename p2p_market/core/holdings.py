"""What a node holds of one market, and what it derives from it.

Storage: every accepted message under its equivocation key (a twin of a stored
one beside it), the seen cache and the orphans waiting for a parent. Derived
state: the settlement, kept by one `Fold` that takes in what was stored since
the last call and is rebuilt from scratch after a removal, a thaw or a conflict
(fold.py). Views read it; nothing here decides whether a message is admitted
(admission.py), told to the shell (observation.py) or forgotten (retention.py).
The layers build one object, `MarketState` (state.py): each module holds one
concern's rules and calls only those of the layers below it.
"""

from __future__ import annotations

import heapq
from collections import deque
from dataclasses import dataclass

from p2p_market.core import effects as fx
from p2p_market.core.archive import Archive, Archived
from p2p_market.core.book import BidBook, StoredBid
from p2p_market.core.envelope import Envelope, market_id
from p2p_market.core.fold import Fold, new_fold
from p2p_market.core.lifecycle import AskState, SlotState
from p2p_market.core.messages import (
    Ask,
    Award,
    Bid,
    Cancel,
    Commit,
    InvalidInputs,
    Market,
    Proof,
    Receipt,
)
from p2p_market.core.penalties import Windows, last_end, penalty_windows
from p2p_market.core.settlement import (
    AskRun,
    Conflict,
    Settlement,
)

Effects = list[fx.Effect]


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
        # add up (see rules.Rules._award_of): a second one never takes a win away.
        return (env.id,)
    if isinstance(m, Cancel):
        return (env.signer, "Cancel", m.ask)
    return (env.id,)


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


class Holdings:
    def __init__(self, market: Market, *, local_prover: bytes | None = None) -> None:
        self.market = market
        self.market_id = market_id(market)
        self.local_prover = local_prover
        self.local_requester: bytes | None = None
        """The key of this node's requester role, if it has one: its own asks are
        announced after `award_lag_ms` rather than the skew (observation.py)."""
        self.award_lag_ms = market.skew_ms
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
        which arrived first does not matter), and every stored proof its market's
        pure verifier shows to be invalid (statements.py)."""
        self.invalid_proofs: set[bytes] = set()
        """The ids in `evidence` that are there as invalid proofs."""
        self.penalties: Windows = {}
        """What the evidence proves: who may not win when (penalties.py)."""
        self.twins: dict[bytes, Envelope] = {}
        """Stored twins whose equivocation key another stored message holds in `keyed`."""
        self._awarded: dict[bytes, int] = {}
        """How many awards are stored per ask."""
        self.pending: dict[bytes, dict[bytes, Envelope]] = {}
        self._pending_order: deque[tuple[bytes, bytes]] = deque()
        self._pending_bytes = 0
        self.evicted_orphans: list[bytes] = []
        """Ids of held orphans evicted over the limits since the shell last took them
        (`take_evicted_orphans`): a shell that logged them deletes them again."""
        self._settlement: Settlement | None = None
        self._archive = Archive()
        self._live: set[bytes] = set()
        """Stored asks with ask-scoped messages that are not archived: what the fold replays."""
        self._next_forget = 0
        self._fold: Fold | None = None
        self._thaw_since: int | None = None
        """The earliest time a message stored since the last settlement could reach
        back to, if some archived ask the fold watches lies after it: thawed only if
        the fold must be rebuilt (archive.py)."""
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
        self._refold_causes: set[str] = set()
        """Why the fold must be rebuilt (`_refold_for`): counted at the rebuild."""
        self._committers: dict[bytes, int] = {}
        self._active_requesters: set[bytes] = set()
        """Signers of asks some other signer committed to (see `known_signer`)."""
        self.now = 0
        self.reorgs = 0
        # What this node has already told its shell (local, never part of the state hash).
        self._announced: dict[bytes, dict[tuple[bytes, int], tuple[bytes, ...]]] = {}
        self._told_states: dict[bytes, AskState] = {}
        self._told: dict[bytes, set[tuple[str, bytes, bytes, int]]] = {}
        self._suggested: set[tuple[bytes, bytes, int]] = set()
        self._outstanding: set[tuple[bytes, bytes, int]] = set()
        """Suggested commits not stored (yet): they hold a slot in `free_slots`."""
        self.slot_waits = 0
        """Attempts the commit policy would have entered for the local prover had
        one of its slots been free (each counted once): how often its capacity,
        not the market, held it back. A benchmark figure, local."""
        self._slot_waited: set[tuple[bytes, bytes, int]] = set()
        self.no_shows: dict[bytes, tuple[int, bytes, bytes, int]] = {}
        """Current bids that would have won a settled attempt and did not commit to
        it (no_show.py), by bid id -> (window end, ask, round, attempt) of the first
        such attempt: the commit policy ranks them last. Local policy, never part of
        the state hash."""
        self._expiries: list[tuple[int, bytes]] = []
        self._next_prune = 0
        self._digest_seen = 0
        self._digest_evidence = 0
        """XOR of the ids in `seen` and in `evidence` (see `holdings_digest`)."""
        self._forget_queue: list[tuple[int, bytes]] = []
        """(when it may be forgotten, id) of every message stored (see `_prune`)."""

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

    def _thaw_for(self, env: Envelope) -> None:
        """Bring back into the fold every archived ask this message could affect."""
        m = env.message
        if isinstance(m, Market | Ask):
            return
        since = m.timestamp
        if isinstance(m, Award):
            since = min(since, self._award_reach(m))
        # Entries the kept fold watches wait: the fold reports a change to them as a
        # conflict, and only a rebuild thaws them (`_settle`; archive.py). Not for a
        # message the fold will not take in now (its ask is not stored).
        now_folded = isinstance(m, Bid) or m.ask in self.asks
        thawed = self._archive.thaw_from(since, watched=not now_folded)
        if now_folded and self._archive.watches_from(since):
            self._thaw_since = since if self._thaw_since is None else min(self._thaw_since, since)
        if not isinstance(m, Bid):
            entry = self._archive.thaw(m.ask)
            if entry is not None:
                thawed[m.ask] = entry
        if thawed:
            key = f"thawed_by_{type(m).__name__.lower()}"
            self._fold_totals[key] = self._fold_totals.get(key, 0) + len(thawed)
        self._thawed(thawed)

    def _award_reach(self, m: Award) -> int:
        """How far back an award can change its ask's slot intervals, all that other
        asks see of it. It decides its attempt and closes the earlier attempts of
        its round (rules.py `_award_of`): from its attempt's end on, winners and
        slots may change, and every commit to those attempts it does not name
        never held a slot at all, from the commit's own time. Under a cancel,
        which any award voids, every commit of the ask may have held one. A commit
        stored later reaches back by itself."""
        ask = self.asks.get(m.ask)
        if ask is None or not isinstance(ask.message, Ask):
            return m.timestamp
        events = self.events.get(m.ask, {})
        window = self.market.commit_window_ms
        opener = ask if m.round == m.ask else events.get(m.round)
        if opener is None:
            return ask.message.timestamp + window  # its round is not open (yet)
        reach: int = opener.message.timestamp + (m.attempt + 1) * window  # type: ignore[union-attr]
        cancelled = any(isinstance(e.message, Cancel) for e in events.values())
        for env in events.values():
            x = env.message
            if isinstance(x, Commit) and (
                cancelled or (x.round == m.round and x.attempt <= m.attempt)
            ):
                reach = min(reach, x.timestamp)
        return reach

    def _thawed(self, thawed: dict[bytes, Archived]) -> None:
        for ask_id, entry in thawed.items():
            self._announced[ask_id] = entry.announced
            self._live.add(ask_id)
            self._refold_for("thaw")

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
                home = self.asks.get(ask_id)
                if home is not None and home.signer != env.signer:
                    self._active_requesters.add(home.signer)
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
            self._slot_waited = {k for k in self._slot_waited if k[0] != env.id}
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
            self._refold_for("removal")

    def _refold_for(self, cause: str) -> None:
        """The fold must be rebuilt, because of `cause` (thaw, removal, penalties,
        conflict): `fold_stats` counts the rebuilds each cause asked for."""
        self._refold = True
        self._refold_causes.add(cause)

    def _find_event(self, mid: bytes) -> Envelope | None:
        home = self._home.get(mid)
        return None if home is None else self.events[home].get(mid)

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

    def _update_penalties(self) -> None:
        """Recompute the penalty windows from the evidence; a change refolds (the
        windows are fixed within one fold)."""
        groups: dict[tuple[object, ...], list[Envelope]] = {}
        for env in self.evidence.values():
            groups.setdefault(equivocation_key(env), []).append(env)
        singles = [self.evidence[mid] for mid in sorted(self.invalid_proofs)]
        windows = penalty_windows(groups.values(), self.lifetime, singles)
        if windows != self.penalties:
            self.penalties = windows
            self._refold_for("penalties")

    def _evidence_horizon(self, env: Envelope) -> int:
        """Evidence stays until every ask a commit it penalised could belong to is
        forgotten (an ask lives at most `lifetime` and is kept 2 x `lifetime` after),
        so that no fold ever runs without the penalty it once applied."""
        end = last_end(self.penalties, env.signer) or 0
        return max(self._forget_after(env), end + 3 * self.lifetime)

    def take_evicted_orphans(self) -> list[bytes]:
        """The ids of held orphans evicted over the limits since the last call."""
        taken, self.evicted_orphans = self.evicted_orphans, []
        return taken

    def known_signer(self, signer: bytes, now: int) -> bool:
        """Whether a signer has history in this market: a live bid, a stored commit, or
        an ask someone committed to. The node spends a shared newcomer budget on the
        others (node/runtime.py), so that fresh keys cannot crowd out known ones.
        Local policy, never part of the state hash."""
        current = self.book.current.get(signer)
        if current is not None and current.bid.expires_at > now:
            return True
        return signer in self._committers or signer in self._active_requesters

    def holds(self, mid: bytes) -> bool:
        """Whether a sync peer need not send this id: stored, evidence or seen."""
        return mid in self.seen or mid in self.evidence

    def _settle(self, now: int) -> Settlement:
        """The settlement at `now`: the fold takes in what was stored since the last
        call; a removal, a thaw or a conflict (see fold.py) rebuilds it."""
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
                self._thaw_since = None  # nothing the fold watches was changed
            except Conflict:
                self._refold_for("conflict")
                self._fold_totals["conflicts"] += 1
        if fold is None or self._refold:
            if self._thaw_since is not None:
                # what the messages since the last settlement could have changed
                self._thawed(self._archive.thaw_from(self._thaw_since))
                self._thaw_since = None
            self._archive.unwatch_all()  # the new fold holds no archived ask's checks
            if fold is not None:
                self._fold_totals["reopened"] += fold.reopened
                self._fold_totals["replayed"] += fold.replayed
                self._fold_totals["in_place"] += fold.in_place
            live = sorted(self._live)
            active = [self.asks[a] for a in live]
            events = [e for a in live for e in self.events[a].values()]
            fold = new_fold(
                self.market,
                self.book,
                active,
                events,
                self._archive.fixed_occupancy(),
                self.penalties,
            )
            fold.advance(now)
            self._fold, self._refold, self._observe_all = fold, False, True
            for cause in self._refold_causes:
                key = f"refolds_for_{cause}"
                self._fold_totals[key] = self._fold_totals.get(key, 0) + 1
            self._refold_causes.clear()
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
        `in_place` in the past; `refolds_for_<cause>` the rebuilds each cause asked
        for (thaw: a late message about an archived ask; removal; penalties;
        conflict), one rebuild counted under each cause it had; `thawed_by_<kind>`
        the archived asks a late message of that kind brought back."""
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

    def run(self, ask_id: bytes) -> AskRun | None:
        """The settlement's run of a stored ask (rounds, slots, history), archived or
        live; None for one nothing happened to yet. A read for views (the console's
        timelines, node/console_views.py): the caller must not change it."""
        return self._run(ask_id)

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

    def settlement(self) -> Settlement:
        return self._settle(self.now)


def _id_int(mid: bytes) -> int:
    return int.from_bytes(mid, "big")


def equivocation_key_of_bid(stored: StoredBid) -> tuple[object, ...]:
    return (stored.prover, "bid", stored.bid.seq)
