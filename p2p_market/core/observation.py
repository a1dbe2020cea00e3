"""Observation: what the shell is told, and when the local prover should commit.

Effects report changes only: each ask's state, each slot's assignment and outcome
are told once, and told again only if a reorganisation changed them. The commit
policy (protocols/market-v1.md §16, non-normative) suggests a commit when the local
prover's bid ranks within the ask's staged fallback and it has a free slot.
"""

from __future__ import annotations

import heapq

from p2p_market.core import effects as fx
from p2p_market.core.holdings import Effects
from p2p_market.core.lifecycle import AskState, SlotState
from p2p_market.core.messages import (
    Ask,
    Prefer,
)
from p2p_market.core.no_show import find_no_shows
from p2p_market.core.ranking import rank_key
from p2p_market.core.retention import Retention
from p2p_market.core.settlement import (
    Attempt,
    Round,
    Settlement,
    Slot,
    overlapping,
)
from p2p_market.core.work import takes, within

JUDGED = frozenset({SlotState.ACCEPTED, SlotState.INVALID, SlotState.TIMED_OUT})
"""Slot states that only the requester's receipt makes (`SlotJudged`)."""


class Observation(Retention):
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
        lag = self._settle_lag(ask_id)
        for key in fold.attempts_by_ask.get(ask_id, ()):
            att = s.attempts[key]
            if not att.settled:
                continue
            if now < att.window_end + lag and not att.awarded:
                self._watch_at(att.window_end + lag, ask_id)
                continue
            announced = self._announced.setdefault(ask_id, {})
            before = announced.get(key[1:])
            if before != att.winners:
                self._note_no_shows(key, att, s)
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
            if slot.state in JUDGED and self._tell_once(slot.state.value, ask_id, slot):
                out.append(
                    fx.SlotJudged(
                        ask=ask_id, prover=slot.prover, outcome=slot.state, price=slot.price
                    )
                )
        self._tell_state(ask_id, run.state, out)

    def _settle_lag(self, ask_id: bytes) -> int:
        """How long after a window's end its winners are announced, unless an award
        decides them sooner. Others' asks: the skew, so that a commit signed inside the
        window by a prover whose clock lags can still arrive (protocols/market-v1.md
        §11). The local requester's own asks: its award lag, which is never longer;
        it awards then, and the award is final wherever it arrives, at once."""
        env = self.asks.get(ask_id)
        if env is not None and env.signer == self.local_requester:
            return min(self.award_lag_ms, self.market.skew_ms)
        return self.market.skew_ms

    def _note_no_shows(self, key: tuple[bytes, bytes, int], att: Attempt, s: Settlement) -> None:
        """Record the bids that would have won this settled attempt and stayed away."""
        env = self.asks.get(key[0])
        if env is None:
            return
        assert isinstance(env.message, Ask)
        for stored in find_no_shows(
            book=self.book,
            ask_id=key[0],
            ask=env.message,
            attempt=att,
            run=s.runs.get(key[0]),
            occupancy=s.occupancy,
            skew_ms=self.market.skew_ms,
        ):
            seen = (att.window_end, *key)
            known = self.no_shows.get(stored.id)
            if known is None or seen < known:  # the first it stayed away from
                self.no_shows[stored.id] = seen

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
            for o in overlapping(s.occupancy, prover, now - skew, now)
            if o.start <= now and (not o.settled or now < o.end + skew)
        )
        if prover == self.local_prover:
            held += len(self._outstanding)
        return stored.bid.capacity - held

    def decline(self, ask: bytes, round_id: bytes, attempt: int) -> None:
        """The local prover will not make a commit it was told to make (it paused, or
        its node refused the commit): its slot is free again. Until then a suggestion
        holds a slot in `free_slots`, and one never made would hold it until its ask
        is pruned. Node-local bookkeeping: no stored message, and so no state, changes;
        the attempt is not suggested again."""
        key = (ask, round_id, attempt)
        if key not in self._my_commits:
            self._outstanding.discard(key)

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
        # The last stage that starts inside the window: a prover behind more better
        # bids than the window has stages still commits, at that stage (§16).
        last_stage = -(-window // stage) - 1
        runs, live, archived = s.runs, self._live, self._archive.asks
        room: dict[bytes, bool] = {}
        current, no_shows = self.book.current, self.no_shows

        def ahead(prover: bytes) -> bool:
            """Whether a better bid holds this prover back: it has a free slot (once
            per other prover per call: nothing the policy does while it looks changes
            another prover's slots) and is not a no-show (no_show.py)."""
            if prover == me:  # its own slots change as it is told to commit
                return self.free_slots(prover, now) > 0
            known = room.get(prover)
            if known is None:
                known = room[prover] = (
                    current[prover].id not in no_shows and self.free_slots(prover, now) > 0
                )
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
            if now >= ask.expires_at or not within(mine.bid.price, mine.bid.proof_time, ask):
                continue
            if not takes(mine.bid, ask):
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
                    lambda p, ex=excluded: p not in ex and ahead(p),  # type: ignore[misc]
                    # Past this many better bids this prover is at the last stage:
                    # no need to count further.
                    limit=rnd.unfilled + last_stage,
                )
                if pos is None:
                    continue
                if pos >= rnd.unfilled:
                    stage_at = start + min(pos - rnd.unfilled + 1, last_stage) * stage
                    if now < stage_at:
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
                    if key not in self._slot_waited:
                        self._slot_waited.add(key)
                        self.slot_waits += 1
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
