"""What a run gathers about proof times: each prover's from its node status (polled
again and again, across restarts), the verifier's from the requesters' events."""

from __future__ import annotations

from p2p_market.localnet.collect import AskBook, ProveTimes


def status(*times: tuple[str, int, int]) -> dict[str, object]:
    return {
        "peers": 1,
        "prover": {"proved": len(times), "prove_times": [
            {"ask": a, "started": s, "ms": ms} for a, s, ms in times
        ]},
    }  # fmt: skip


def test_a_proof_polled_twice_counts_once_and_a_restart_loses_none() -> None:
    seen = ProveTimes()
    seen.feed("p", status(("aa", 1_000, 120)))
    seen.feed("p", status(("aa", 1_000, 120), ("bb", 2_000, 90)))  # the next poll
    seen.feed("p", status(("cc", 9_000, 300)))  # after a restart: the list starts over
    seen.feed("p", status(("aa", 5_000, 110)))  # the same ask proven again (a later slot)
    assert sorted(seen.of("p")) == [90, 110, 120, 300]
    assert seen.of("nobody") == []


def test_statuses_without_timings_are_ignored() -> None:
    seen = ProveTimes()
    for odd in (None, {}, {"prover": "x"}, {"prover": {"prove_times": "x"}},
                {"prover": {"prove_times": [1, {"ask": "aa", "started": "1", "ms": 2},
                                            {"ask": "aa", "started": 1, "ms": 2.5}]}}):  # fmt: skip
        seen.feed("p", odd)
    assert seen.of("p") == []


def test_the_verify_time_of_each_slot_comes_from_the_requesters_events() -> None:
    book = AskBook()
    book.feed("r", [
        {"t": 1, "ask": "a1", "kind": "placed", "ts": 1, "ttl_ms": 9_000},
        {"t": 2, "ask": "a1", "kind": "assigned", "prover": "p1", "price": 5},
        {"t": 3, "ask": "a1", "kind": "assigned", "prover": "p2", "price": 6},
        {"t": 4, "ask": "a1", "kind": "delivered", "prover": "p1"},
        {"t": 5, "ask": "a1", "kind": "verified", "prover": "p1", "size": 800, "verify_ms": 42},
        {"t": 6, "ask": "a1", "kind": "rejected", "prover": "p2", "verify_ms": 7},
    ])  # fmt: skip
    slots = book.asks["a1"].slots
    assert (slots["p1"].outcome, slots["p1"].verify_ms) == ("verified", 42)
    assert (slots["p2"].outcome, slots["p2"].verify_ms) == ("rejected", 7)
