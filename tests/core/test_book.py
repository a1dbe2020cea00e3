"""The indexed matcher must give exactly what a full scan gives."""

from __future__ import annotations

import hashlib

from hypothesis import given
from hypothesis import strategies as st

from p2p_market.core.book import BidBook, StoredBid
from p2p_market.core.messages import Ask, Bid

MARKET = b"m" * 32
NOW = 1_000_000


def key(i: int) -> bytes:
    return hashlib.sha256(b"prover-%d" % i).digest()


bid_terms = st.tuples(st.integers(0, 20), st.integers(1, 20), st.integers(0, 3))


@given(
    bids=st.lists(bid_terms, min_size=0, max_size=60),
    max_price=st.integers(0, 25),
    max_time=st.integers(1, 25),
    prefer=st.sampled_from(["cost", "time"]),
    k=st.integers(1, 5),
    deny=st.sets(st.integers(0, 59), max_size=5),
    busy=st.sets(st.integers(0, 59), max_size=10),
)
def test_top_equals_full_scan(bids, max_price, max_time, prefer, k, deny, busy) -> None:
    book = BidBook()
    for i, (price, ptime, life) in enumerate(bids):
        bid = Bid(
            market=MARKET,
            timestamp=NOW - 10,
            price=price,
            proof_time=ptime,
            capacity=1,
            expires_at=NOW + 1 - (life == 0) * 2,
            seq=1,
        )  # life 0: already expired
        book.add(StoredBid(hashlib.sha256(b"bid-%d" % i).digest(), key(i), bid))
    book.check_invariants()
    ask = Ask(
        market=MARKET,
        timestamp=NOW,
        max_price=max_price,
        max_proof_time=max_time,
        prefer=prefer,
        replicas=k,
        expires_at=NOW + 10,
        inputs_hash=b"\0" * 32,
        deny=tuple(sorted(key(i) for i in deny)),
        nonce=1,
    )
    busy_keys = {key(i) for i in busy}
    free = lambda p: p not in busy_keys  # noqa: E731
    ask_id = b"a" * 32
    fast = book.top(ask, ask_id, NOW, k, free)
    slow = book.scan_top(ask, ask_id, NOW, k, free)
    assert [r.stored.prover for r in fast] == [r.stored.prover for r in slow]
    ranked = book.scan_top(ask, ask_id, NOW, len(bids) + 1, free)
    for place, r in enumerate(ranked):
        assert book.position(ask, ask_id, r.stored.prover, NOW, free) == place


def test_higher_seq_replaces_and_removal_restores() -> None:
    book = BidBook()
    p = key(1)
    old = Bid(market=MARKET, timestamp=1, price=5, proof_time=5, capacity=1, expires_at=NOW, seq=1)
    new = Bid(market=MARKET, timestamp=2, price=9, proof_time=5, capacity=1, expires_at=NOW, seq=2)
    book.add(StoredBid(b"n" * 32, p, new))
    book.add(StoredBid(b"o" * 32, p, old))  # late arrival of the older seq: stored, not current
    assert book.current[p].bid.seq == 2 and len(book) == 1
    book.check_invariants()
    book.remove(b"n" * 32)
    assert book.current[p].bid.seq == 1
    book.check_invariants()
    assert book.newer_seq_at(p, 1, 1) is False


@given(
    ops=st.lists(
        st.tuples(st.booleans(), st.integers(0, 2), st.integers(1, 6), st.integers(0, 1)),
        max_size=60,
    )
)
def test_adds_and_removes_in_any_order_leave_the_book_a_rebuild_would_hold(ops) -> None:
    """The book keeps each prover's highest seq as it goes (a prover re-bidding all
    day holds thousands); whatever is added and removed, twins included (two bids
    of one seq, `twin` 0 or 1), it holds what a book built from the remaining bids
    in one go holds, and its invariants after every step."""
    book = BidBook()
    held: dict[bytes, StoredBid] = {}
    for add, prover, seq, twin in ops:
        bid_id = hashlib.sha256(b"%d/%d/%d" % (prover, seq, twin)).digest()
        if add:
            bid = Bid(
                market=MARKET,
                timestamp=seq * 10 + twin,
                price=seq + twin,
                proof_time=5,
                capacity=1,
                expires_at=NOW,
                seq=seq,
            )
            stored = StoredBid(bid_id, key(prover), bid)
            if bid_id not in held:  # the state never stores an id twice
                held[bid_id] = stored
                book.add(stored)
        elif bid_id in held:
            del held[bid_id]
            assert book.remove(bid_id) is not None
        book.check_invariants()
        rebuilt = BidBook()
        for stored in sorted(held.values(), key=lambda s: (s.bid.timestamp, s.id)):
            rebuilt.add(stored)
        assert book.current == rebuilt.current
        assert book.history == rebuilt.history
