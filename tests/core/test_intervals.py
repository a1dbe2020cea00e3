"""`Intervals` (core/settlement.py) against the plain scans it replaced: random intervals, random
changes of their ends (shrunk, set before the start, given back to no end, as the
fold's reopen does), removals, and every query the capacity rules make."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from p2p_market.core.settlement import INF, Intervals, Occupancy

times = st.integers(min_value=0, max_value=200)
ends = st.one_of(st.just(INF), st.integers(min_value=0, max_value=260))
step = st.one_of(
    st.tuples(st.just("add"), times, st.integers(0, 3), st.just(False)),
    st.tuples(st.just("end"), st.integers(0, 1000), ends, st.booleans()),
    st.tuples(st.just("remove"), st.integers(0, 1000), st.just(0), st.just(False)),
)


def occupied(items: list[Occupancy], t: int, cid: bytes) -> int:
    return sum(
        1 for o in items if t < o.end and (o.start < t or (o.start == t and o.commit_id < cid))
    )


def busy(items: list[Occupancy], start: int, end: int, skew: int) -> int:
    return sum(1 for o in items if o.start < end and o.end + skew > start)


def held(items: list[Occupancy], now: int, skew: int) -> int:
    return sum(1 for o in items if o.start <= now and (not o.settled or now < o.end + skew))


@settings(max_examples=300, deadline=None)
@given(
    st.lists(step, max_size=60),
    st.lists(st.tuples(times, st.integers(0, 40), st.integers(0, 30)), min_size=1, max_size=8),
)
def test_every_query_counts_what_a_scan_of_all_counts(
    steps: list[tuple[str, int, int, bool]], queries: list[tuple[int, int, int]]
) -> None:
    index = Intervals()
    plain: list[Occupancy] = []
    serial = 0
    for kind, a, b, settled in steps:
        if kind == "add":
            serial += 1
            o = Occupancy(a, bytes([b]) + serial.to_bytes(4, "big"))
            index.add(o)
            plain.append(o)
        elif plain and kind == "end":
            o = plain[a % len(plain)]
            o.end, o.settled = b, settled and b != INF
            index.changed(o)
        elif plain and kind == "remove":
            o = plain.pop(a % len(plain))
            index.remove(o)
        assert sorted(map(id, index)) == sorted(map(id, plain))
        for t, width, skew in queries:
            cid = bytes([t % 4]) + b"\xff" * 4
            assert sum(
                1
                for o in index.overlapping(t, t)
                if t < o.end and (o.start < t or (o.start == t and o.commit_id < cid))
            ) == occupied(plain, t, cid)
            assert sum(
                1
                for o in index.overlapping(t - skew, t + width)
                if o.start < t + width and o.end + skew > t
            ) == busy(plain, t, t + width, skew)
            assert sum(
                1
                for o in index.overlapping(t - skew, t)
                if o.start <= t and (not o.settled or t < o.end + skew)
            ) == held(plain, t, skew)
            assert any(o.end == t for o in index.overlapping(t, t)) == any(
                o.end == t for o in plain
            )


def test_a_query_looks_only_at_the_window_and_the_loose() -> None:
    # 1 000 settled intervals of 10 ms, one a second, and one with no end yet: a
    # check at 500 s looks at the interval there and the open one, not at all.
    index = Intervals()
    for i in range(1000):
        o = Occupancy(i * 1000, i.to_bytes(4, "big"))
        index.add(o)
        o.end, o.settled = i * 1000 + 10, True
        index.changed(o)
    open_one = Occupancy(3_000, b"open")
    index.add(open_one)
    seen = list(index.overlapping(500_000, 500_000))
    assert open_one in seen and len(seen) == 2
    assert index.span == 10 and len(index) == 1001
