"""The bid book of one market and the matcher over it.

Current bids (the highest seq per prover) are kept in two sorted indexes, by
(price, proof_time) and by (proof_time, price). Ranking an ask walks the index of
its preference from the best end and stops as soon as the k best eligible bids
are certain, so its cost grows with k and with the bids it must skip, not with the
size of the book. `scan_top` is the naive full scan, kept as the benchmark baseline
and as the reference the tests compare against.
"""

from __future__ import annotations

import hashlib
import heapq
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from sortedcontainers import SortedList

from p2p_market.core.messages import Ask, Bid, Prefer
from p2p_market.core.ranking import RankKey, rank_key, tiebreak
from p2p_market.core.work import takes, unit_caps, within


@dataclass(frozen=True, slots=True)
class StoredBid:
    id: bytes
    prover: bytes
    bid: Bid


Eligible = Callable[[bytes], bool]
"""Extra per-prover condition (free slot, not excluded), supplied by the caller."""


@dataclass(frozen=True, slots=True)
class Ranked:
    key: RankKey
    stored: StoredBid


class BidBook:
    __slots__ = ("_by_cost", "_by_time", "_per_seq", "_top", "by_id", "current", "history")

    def __init__(self) -> None:
        self.by_id: dict[bytes, StoredBid] = {}
        self.current: dict[bytes, StoredBid] = {}
        self.history: dict[bytes, dict[int, StoredBid]] = {}
        self._by_cost: SortedList = SortedList()
        self._by_time: SortedList = SortedList()
        self._per_seq: dict[tuple[bytes, int], int] = {}
        """How many stored bids a prover has with one seq (more than 1: twins)."""
        self._top: dict[bytes, int] = {}
        """Each prover's highest stored seq, `max(history[prover])`: a prover that
        re-bids all day holds thousands of seqs until they pass their horizon, and
        every new bid asked for the highest (21 us a bid at 700, `bench net`)."""

    def __len__(self) -> int:
        return len(self.current)

    # -- mutation -------------------------------------------------------------
    def add(self, stored: StoredBid) -> None:
        """Store a bid; it becomes current if its seq is the prover's highest. Of two
        bids with one seq (an equivocation: both stay stored, commits may cite
        either), the history holds the first in signed order, whichever came first."""
        self.by_id[stored.id] = stored
        per = (stored.prover, stored.bid.seq)
        self._per_seq[per] = self._per_seq.get(per, 0) + 1
        seqs = self.history.setdefault(stored.prover, {})
        twin = seqs.get(stored.bid.seq)
        if twin is not None and _signed(twin) < _signed(stored):
            return  # the later twin: stored by id only
        if seqs and self._top[stored.prover] > stored.bid.seq:
            seqs[stored.bid.seq] = stored
            return  # an older offer, kept for the commits that cite it
        seqs[stored.bid.seq] = stored
        self._top[stored.prover] = stored.bid.seq
        old = self.current.get(stored.prover)
        if old is not None:
            self._unindex(old)
        self._promote(stored)

    def remove(self, bid_id: bytes) -> StoredBid | None:
        stored = self.by_id.pop(bid_id, None)
        if stored is None:
            return None
        per = (stored.prover, stored.bid.seq)
        left = self._per_seq.pop(per) - 1
        if left:
            self._per_seq[per] = left
        seqs = self.history.get(stored.prover, {})
        if seqs.get(stored.bid.seq) is stored:
            del seqs[stored.bid.seq]
            twins = left and [
                s
                for s in self.by_id.values()
                if s.prover == stored.prover and s.bid.seq == stored.bid.seq
            ]
            if twins:  # the other twin takes the seq over
                seqs[stored.bid.seq] = min(twins, key=_signed)
            elif seqs and self._top[stored.prover] == stored.bid.seq:
                self._top[stored.prover] = max(seqs)
        if not seqs:
            self.history.pop(stored.prover, None)
            self._top.pop(stored.prover, None)
        if self.current.get(stored.prover) is stored:
            self._unindex(stored)
            del self.current[stored.prover]
            if seqs:
                self._promote(seqs[self._top[stored.prover]])
        return stored

    def _promote(self, stored: StoredBid) -> None:
        self.current[stored.prover] = stored
        b = stored.bid
        self._by_cost.add((b.price, b.proof_time, stored.prover))
        self._by_time.add((b.proof_time, b.price, stored.prover))

    def _unindex(self, stored: StoredBid) -> None:
        b = stored.bid
        self._by_cost.remove((b.price, b.proof_time, stored.prover))
        self._by_time.remove((b.proof_time, b.price, stored.prover))

    def expire(self, now: int) -> list[StoredBid]:
        """Take expired bids out of the matcher's indexes. They stay stored (by id and
        in the prover's history): commits that cite them are still judged by them."""
        gone = [s for s in self.current.values() if s.bid.expires_at <= now]
        for s in gone:
            self._unindex(s)
            del self.current[s.prover]
        return gone

    # -- queries ----------------------------------------------------------------
    def newer_seq_at(self, prover: bytes, seq: int, t: int) -> bool:
        """Did the prover publish a higher-seq bid with timestamp <= t?"""
        return any(
            s > seq and st.bid.timestamp <= t for s, st in self.history.get(prover, {}).items()
        )

    def _walk(self, ask: Ask) -> Iterator[tuple[int, int, StoredBid]]:
        """Current bids within the ask's caps, in the order of its preference,
        yielding (primary, secondary, bid)."""
        max_price, max_proof_time = unit_caps(ask)
        if ask.prefer == Prefer.COST.value:
            index, cap1, cap2 = self._by_cost, max_price, max_proof_time
        else:
            index, cap1, cap2 = self._by_time, max_proof_time, max_price
        current = self.current
        for primary, secondary, prover in index:
            if primary > cap1:
                return
            if secondary <= cap2:
                yield primary, secondary, current[prover]

    @staticmethod
    def _admissible(ask: Ask, stored: StoredBid, now: int, extra: Eligible | None) -> bool:
        if stored.bid.expires_at <= now or not takes(stored.bid, ask):
            return False
        p = stored.prover
        if ask.allow and p not in ask.allow:
            return False
        if ask.deny and p in ask.deny:
            return False
        return extra is None or extra(p)

    def top(
        self, ask: Ask, ask_id: bytes, now: int, k: int, extra: Eligible | None = None
    ) -> list[Ranked]:
        """The k best eligible bids for the ask, best first."""
        prefer_cost = ask.prefer == Prefer.COST.value
        picked: list[Ranked] = []
        cut: tuple[int, int] | None = None
        for primary, secondary, stored in self._walk(ask):
            if cut is not None and (primary, secondary) != cut:
                break
            if not self._admissible(ask, stored, now, extra):
                continue
            b = stored.bid
            picked.append(
                Ranked(rank_key(prefer_cost, b.price, b.proof_time, ask_id, stored.prover), stored)
            )
            if cut is None and len(picked) >= k:
                cut = (primary, secondary)
        picked.sort(key=lambda r: r.key)
        return picked[:k]

    def position(
        self,
        ask: Ask,
        ask_id: bytes,
        prover: bytes,
        now: int,
        extra: Eligible | None = None,
        limit: int | None = None,
    ) -> int | None:
        """How many eligible bids rank strictly better than this prover's (None if
        the prover's own bid is not eligible), counted up to `limit` at most."""
        mine = self.current.get(prover)
        if mine is None or not self._admissible(ask, mine, now, None):
            return None
        b = mine.bid
        prefer_cost = ask.prefer == Prefer.COST.value
        if not within(b.price, b.proof_time, ask):
            return None
        my_key = rank_key(prefer_cost, b.price, b.proof_time, ask_id, prover)
        better = 0
        for primary, secondary, stored in self._walk(ask):
            if limit is not None and better >= limit:
                break
            if stored is mine:
                continue
            if (primary, secondary) > my_key[:2]:
                break
            # Only an exact tie on (primary, secondary) needs the hashed tiebreak.
            if (primary, secondary) == my_key[:2] and tiebreak(ask_id, stored.prover) > my_key[2]:
                continue
            if self._admissible(ask, stored, now, extra):
                better += 1
        return better

    def scan_top(
        self, ask: Ask, ask_id: bytes, now: int, k: int, extra: Eligible | None = None
    ) -> list[Ranked]:
        """Reference matcher: test every current bid. Same result as `top`."""
        prefer_cost = ask.prefer == Prefer.COST.value
        ranked = [
            Ranked(rank_key(prefer_cost, s.bid.price, s.bid.proof_time, ask_id, s.prover), s)
            for s in self.current.values()
            if within(s.bid.price, s.bid.proof_time, ask) and self._admissible(ask, s, now, extra)
        ]
        return heapq.nsmallest(k, ranked, key=lambda r: r.key)

    def digest(self) -> bytes:
        h = hashlib.sha256()
        for prover in sorted(self.current):
            h.update(prover + self.current[prover].id)
        return h.digest()

    def check_invariants(self) -> None:
        assert len(self._by_cost) == len(self.current) == len(self._by_time)
        for prover, stored in self.current.items():
            assert stored.prover == prover
            assert stored.id in self.by_id
            assert stored.bid.seq == max(self.history[prover])
            assert self.history[prover][stored.bid.seq] is stored
            assert (stored.bid.price, stored.bid.proof_time, prover) in self._by_cost
        assert self._top == {prover: max(seqs) for prover, seqs in self.history.items()}


def _signed(stored: StoredBid) -> tuple[int, bytes]:
    return (stored.bid.timestamp, stored.id)
