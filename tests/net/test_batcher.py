"""The batcher without a network: a fake clock is a plain float."""

from __future__ import annotations

import random

import pytest

from p2p_market.net.batcher import Batch, Batcher, FrameBudget
from p2p_market.net.frame import MAX_FRAME_BYTES, MAX_FRAME_ITEMS, frame_size

M1 = b"1" * 32
M2 = b"2" * 32


def env(i: int, size: int = 100) -> bytes:
    return i.to_bytes(4, "big") * (size // 4)


def test_under_budget_each_envelope_leaves_at_once_alone() -> None:
    b = Batcher(frames_per_second=2.0, burst=3)
    for i in range(3):
        assert b.push(M1, env(i), 0.0)
        assert b.next_due(0.0) == 0.0
        assert b.take(0.0) == Batch(M1, (env(i),))
    assert b.next_due(0.0) is None
    assert b.take(0.0) is None


def test_over_budget_envelopes_coalesce_into_one_frame_when_a_token_comes() -> None:
    b = Batcher(frames_per_second=2.0, burst=1)
    b.push(M1, env(0), 0.0)
    assert b.take(0.0) == Batch(M1, (env(0),))
    for i in range(1, 6):
        b.push(M1, env(i), 0.0)
    assert b.take(0.1) is None  # bucket empty: nothing spent, all waits
    assert b.pending == 5
    assert b.next_due(0.1) == pytest.approx(0.5)
    batch = b.take(0.5)
    assert batch == Batch(M1, tuple(env(i) for i in range(1, 6)))
    assert b.pending == 0


def test_frames_not_full_never_exceed_the_rate_however_many_envelopes() -> None:
    b = Batcher(frames_per_second=4.0, burst=2, max_items=16, early_items=16)
    partial = full = 0
    now = 0.0
    for i in range(1000):
        b.push(M1, env(i), now)
        now += 0.001  # 1000 envelopes a second for one second
        while (batch := b.take(now)) is not None:
            if len(batch.items) == 16:
                full += 1
            else:
                partial += 1
    assert partial <= 2 + 4 * now + 1
    # The rest left in full frames, as soon as each filled: nothing waits for a token
    # but what does not fill a frame.
    assert full >= (1000 - 16 * partial) // 16 and b.pending < 16


def test_a_full_frame_goes_without_a_token_and_a_partial_one_waits() -> None:
    b = Batcher(frames_per_second=1.0, burst=1, max_items=4, early_items=4)
    b.budget.try_spend(0.0)  # the bucket is empty until 1.0
    for i in range(3):
        b.push(M1, env(i), 0.0)
    assert b.free_frame_waiting(0.1) is None
    assert b.next_due(0.1) == pytest.approx(1.0) and b.take(0.1) is None
    b.push(M1, env(3), 0.0)
    assert b.free_frame_waiting(0.1) == M1 and b.next_due(0.1) == 0.1
    assert b.take(0.1) == Batch(M1, tuple(env(i) for i in range(4)))
    assert b.budget.tokens(0.1) == pytest.approx(0.0)  # it took the 0.1 there was
    # By bytes too: two envelopes that cannot share a frame make one full.
    small = Batcher(frames_per_second=1.0, burst=1, max_bytes=1000)
    small.budget.try_spend(0.0)
    small.push(M2, env(0, 600), 0.0)
    assert small.take(0.0) is None
    small.push(M2, env(1, 600), 0.0)
    assert small.take(0.0) == Batch(M2, (env(0, 600),))
    assert small.take(0.0) is None  # the one left does not fill a frame: it waits
    assert small.take(1.0) == Batch(M2, (env(1, 600),))


def test_a_well_filled_queue_goes_without_a_token_once_it_has_lingered() -> None:
    # 2 frames a second, the bucket empty until 0.5: 16 envelopes (a quarter of a
    # frame) pushed from 0.0 to 0.15 leave at 0.25, when the first has waited the
    # linger, without a token; 15 would wait for the token.
    b = Batcher(frames_per_second=2.0, burst=1)
    assert (b.early_items, b.linger_s) == (16, 0.25)
    b.budget.try_spend(0.0)
    for i in range(16):
        b.push(M1, env(i), i * 0.01)
    assert b.next_due(0.15) == pytest.approx(0.25)
    assert b.take(0.2) is None and b.free_frame_waiting(0.2) is None
    assert b.free_frame_waiting(0.25) == M1
    assert b.take(0.25) == Batch(M1, tuple(env(i) for i in range(16)))
    assert b.budget.tokens(0.25) == pytest.approx(0.0)  # it took the half token there was
    fewer = Batcher(frames_per_second=2.0, burst=1)
    fewer.budget.try_spend(0.0)
    for i in range(15):
        fewer.push(M1, env(i), 0.0)
    assert fewer.next_due(0.25) == pytest.approx(0.5)
    assert fewer.take(0.4) is None
    batch = fewer.take(0.5)  # the token's frame
    assert batch is not None and len(batch.items) == 15
    assert fewer.budget.tokens(0.5) == pytest.approx(0.0)


def test_a_busy_queue_leaves_in_well_filled_frames_not_in_token_sized_scraps() -> None:
    # 213 envelopes a second (a bench net publisher at 640 orders/s in all), arriving
    # at random, and a send loop that is busy for up to 0.1 s after each frame (it
    # publishes it); 2 tokens a second. The frames that go early (~50 envelopes each,
    # about every linger) are what the flow needs, so they spend the tokens that
    # accrue between them. When they did not, the bucket refilled behind them and a
    # token sent whatever had queued since the last frame: measured in bench net,
    # about half of a publisher's frames carried 3-20 envelopes (37 on average),
    # each costing every node a whole frame.
    rng = random.Random(1)
    b = Batcher(frames_per_second=2.0, burst=4)
    sizes: list[int] = []
    i, arrival, free_at = 0, 0.0, 0.0
    for tick in range(4_000):  # 20 s, the loop looking every 5 ms
        now = tick * 0.005
        while arrival <= now:
            b.push(M1, env(i), arrival)
            i += 1
            arrival += rng.expovariate(213.0)
        if now >= free_at and (batch := b.take(now)) is not None:
            sizes.append(len(batch.items))
            free_at = now + rng.uniform(0.0, 0.1)
    steady = sizes[4:]  # the burst's first frames go at once, alone
    assert min(steady) >= b.early_items * 2
    assert sum(steady) / len(steady) >= 50


def test_frames_that_go_early_number_at_most_the_envelope_rate_over_early_items() -> None:
    # A steady 80 envelopes a second for 10 s, 2 tokens a second: at most one frame
    # per 16 envelopes goes early, the rest by token, and no envelope waits longer
    # than the linger once the flow fills a quarter frame in it (16 in 0.2 s).
    b = Batcher(frames_per_second=2.0, burst=1)
    b.budget.try_spend(0.0)
    waits: list[float] = []
    pushed: dict[bytes, float] = {}
    frames = 0
    for i in range(800):
        now = i / 80
        pushed[env(i)] = now
        b.push(M1, env(i), now)
        while (batch := b.take(now)) is not None:
            frames += 1
            waits.extend(now - pushed[e] for e in batch.items)
    assert frames <= 800 / 16 + 2 * 10 + 1
    assert max(waits) <= 0.25 + 1 / 80


def test_a_frame_holds_at_most_max_items() -> None:
    b = Batcher(frames_per_second=1.0, burst=1)
    for i in range(100):
        b.push(M1, env(i), 0.0)
    first = b.take(0.0)
    assert first is not None and len(first.items) == MAX_FRAME_ITEMS
    second = b.take(1.0)
    assert second is not None and len(second.items) == 100 - MAX_FRAME_ITEMS
    assert first.items + second.items == tuple(env(i) for i in range(100))


def test_a_frame_holds_at_most_max_bytes() -> None:
    b = Batcher(frames_per_second=1.0, burst=10, max_bytes=1000)
    for i in range(5):
        b.push(M1, env(i, 300), 0.0)
    sizes = []
    now = 0.0
    while (batch := b.take(now)) is not None:
        assert frame_size([len(x) for x in batch.items]) <= 1000
        sizes.append(len(batch.items))
    assert sizes == [3, 2]


def test_an_envelope_too_big_for_any_frame_is_refused() -> None:
    b = Batcher(max_bytes=1000)
    with pytest.raises(ValueError):
        b.push(M1, env(0, 1000), 0.0)
    with pytest.raises(ValueError):
        Batcher().push(M1, b"", 0.0)
    assert frame_size([64 * 1024]) <= MAX_FRAME_BYTES


def test_markets_take_turns_by_their_oldest_envelope_and_keep_their_order() -> None:
    b = Batcher(frames_per_second=1.0, burst=1)
    b.push(M2, env(0), 0.0)
    b.push(M1, env(1), 0.0)
    b.push(M2, env(2), 0.0)
    b.push(M1, env(3), 0.0)
    assert b.take(0.0) == Batch(M2, (env(0), env(2)))
    assert b.take(1.0) == Batch(M1, (env(1), env(3)))


def test_duplicates_are_queued_once_and_a_full_queue_refuses() -> None:
    b = Batcher(frames_per_second=1.0, burst=1, max_pending=3)
    assert b.take(0.0) is None  # nothing waits: no token spent
    b.budget.try_spend(0.0)  # empty the bucket
    assert b.push(M1, env(0), 0.0) and b.push(M1, env(0), 0.0)
    assert b.pending == 1
    assert b.push(M1, env(1), 0.0) and b.push(M1, env(2), 0.0)
    assert not b.has_room()
    assert not b.push(M1, env(3), 0.0)
    batch = b.take(1.0)
    assert batch is not None and len(batch.items) == 3
    assert b.push(M1, env(3), 0.0)


def test_the_budget_saves_up_to_its_burst_only() -> None:
    budget = FrameBudget(frames_per_second=10.0, burst=3)
    assert budget.tokens(0.0) == 3
    for _ in range(3):
        assert budget.try_spend(0.0)
    assert not budget.try_spend(0.0)
    assert budget.next_token_at(0.0) == pytest.approx(0.1)
    assert budget.tokens(100.0) == 3  # a long quiet spell saves no more than the burst
    assert budget.tokens(50.0) == 3  # a clock read out of order changes nothing
    with pytest.raises(ValueError):
        FrameBudget(0.0, 1)
