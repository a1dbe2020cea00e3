"""MarketState: the one entry point of the core for one market.

    verdict, effects = state.apply(envelope_bytes, now)
    effects = state.tick(now)

It is built in layers, one concern per module, each calling only the layers below
it: holdings.py (what is stored, the settlement derived from it, views),
retention.py (archive and forget), observation.py (effects, the commit policy),
admission.py (the checks that need state), and here the entry points and the
checks every test runs after every step (`state_hash`, `check_invariants`).

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

from p2p_market.core.admission import Admission
from p2p_market.core.envelope import Envelope
from p2p_market.core.holdings import AskView, Effects, _id_int
from p2p_market.core.lifecycle import AskState
from p2p_market.core.messages import Commit
from p2p_market.core.settlement import (
    Attempt,
    Settlement,
)
from p2p_market.core.validation import check_form, check_signature
from p2p_market.core.verdict import Reason, Verdict, ignore

__all__ = ["AskView", "MarketState"]


class MarketState(Admission):
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

    def keeps(self, env: Envelope, now: int) -> bool:
        """Whether `apply_checked(env, now)` would keep `env` (store it, hold it as an
        orphan until its parent comes, keep it as evidence), changing nothing. A
        shell that must make what the core keeps durable writes it first, and skips
        `apply_checked` if it cannot: the state stays as if `env` never came."""
        if env.id in self.seen or env.id in self.evidence:
            return False
        return not isinstance(self._judge(env, now), Verdict)

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
        orphan_bytes = sum(len(e.raw) for kids in self.pending.values() for e in kids.values())
        if orphan_bytes != self._pending_bytes:
            problems.append(f"held orphans: {orphan_bytes} bytes, counted {self._pending_bytes}")
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
