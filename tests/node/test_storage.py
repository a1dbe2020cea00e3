"""The envelope log: round trip, idempotence, pruning, durability across a hard
kill, and that replaying it rebuilds the very state the node had."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from p2p_market.core.envelope import market_id, message_id, parse
from p2p_market.core.state import MarketState
from p2p_market.core.verdict import Reason
from p2p_market.markets.devnet import GENESIS_MS, Actor, default_market
from p2p_market.node.storage import (
    WAL_PAGES,
    Entry,
    EnvelopeLog,
    StorageError,
    WriteFailed,
)

MARKET = default_market()
MID = market_id(MARKET)
OTHER = bytes(32)
NOW = GENESIS_MS + 3_600_000
REPO = Path(__file__).resolve().parents[2]


def bids(n: int, name: str = "log") -> list[bytes]:
    who = Actor(name, MARKET)
    return [who.bid(now=NOW, price=100 + i, proof_time=1_000, seq=i + 1) for i in range(n)]


def test_round_trip_in_append_order(tmp_path: Path) -> None:
    raws = bids(30)
    path = tmp_path / "node" / "envelopes.sqlite"
    with EnvelopeLog(path) as log:
        assert log.append(MID, raws[0], NOW, NOW + 10)
        assert log.append_many(Entry(MID, r, NOW, NOW + 10) for r in raws[1:20]) == 19
        log.append(OTHER, raws[20], NOW, NOW + 10)  # another market, same file
        log.append_many([Entry(MID, r, NOW, NOW + 10) for r in raws[21:]])
        log.put_market(MID, b"descriptor bytes")
    with EnvelopeLog(path) as log:  # reopened: everything is still there, in order
        assert list(log.replay(MID)) == raws[:20] + raws[21:]
        assert list(log.replay(OTHER)) == [raws[20]]
        assert (log.count(MID), log.count(OTHER)) == (29, 1)
        assert log.markets() == {MID: b"descriptor bytes"}
        assert message_id(raws[3]) in log and bytes(32) not in log
        assert [t for _, t in log.replay_timed(OTHER)] == [NOW]


def test_duplicates_are_ignored_whatever_the_path(tmp_path: Path) -> None:
    raws = bids(5)
    with EnvelopeLog(tmp_path / "log.sqlite") as log:
        assert log.append_many(Entry(MID, r, NOW, NOW + 1) for r in raws[:3]) == 3
        assert not log.append(MID, raws[1], NOW + 5, NOW + 9)  # again, later: ignored
        assert log.append_many(Entry(MID, r, NOW, NOW + 1) for r in raws) == 2  # 2 new of 5
        assert log.append_many([]) == 0
        assert list(log.replay(MID)) == raws
        # The first arrival wins: its time is the one kept.
        assert [t for _, t in log.replay_timed(MID)][1] == NOW


def test_prune_drops_what_passed_its_horizon(tmp_path: Path) -> None:
    raws = bids(10)
    with EnvelopeLog(tmp_path / "log.sqlite") as log:
        log.append_many(Entry(MID, r, NOW, NOW + 1_000 * i) for i, r in enumerate(raws))
        assert log.prune(NOW + 4_500) == 5  # horizons 0 .. 4000 are before now
        assert log.prune(NOW + 4_500) == 0
        assert list(log.replay(MID)) == raws[5:]
        assert log.count(MID) == 5
        log.append(MID, raws[0], NOW, NOW + 99_000)  # a pruned id may come back: new row
        assert list(log.replay(MID)) == [*raws[5:], raws[0]]


def test_a_long_replay_survives_writes_during_it(tmp_path: Path) -> None:
    raws = bids(2_500)
    with EnvelopeLog(tmp_path / "log.sqlite") as log:
        log.append_many(Entry(MID, r, NOW, NOW + i) for i, r in enumerate(raws[:2_400]))
        seen = []
        for i, raw in enumerate(log.replay(MID)):
            seen.append(raw)
            if i == 10:
                log.prune(NOW + 5)  # rows 0..4 gone (already read)
                log.append_many(Entry(MID, r, NOW, NOW + 10**6) for r in raws[2_400:])
        assert seen == raws


def test_not_a_database_is_a_named_error(tmp_path: Path) -> None:
    path = tmp_path / "junk.sqlite"
    path.write_bytes(b"this is not SQLite" * 100)
    with pytest.raises(StorageError, match=r"is corrupt \(file is not a database\): move it"):
        EnvelopeLog(path)


def test_the_wal_is_folded_often_enough_not_to_fill_a_small_disk(tmp_path: Path) -> None:
    """One envelope a commit, as the node writes: the WAL stays near WAL_PAGES pages
    (it reached SQLite's 1,000, 4 MiB, which is more than a small disk holds)."""
    path = tmp_path / "log.sqlite"
    with EnvelopeLog(path) as log:
        for raw in bids(1_500):
            log.append(MID, raw, NOW, NOW + 1)
        wal = path.with_name(path.name + "-wal").stat().st_size
        assert wal <= (WAL_PAGES + 10) * 4_096 < 1 << 20, wal
        assert log.count(MID) == 1_500


def test_a_write_that_fails_leaves_the_log_as_it_was(tmp_path: Path) -> None:
    """A full disk (SQLite's max_page_count: SQLITE_FULL, as on a full disk): the
    batch is refused whole, WriteFailed says so, the log is as it was, and it takes
    writes again once there is room."""
    raws = bids(400)
    with EnvelopeLog(tmp_path / "log.sqlite") as log:
        assert log.append_many(Entry(MID, r, NOW, NOW + 1) for r in raws[:10]) == 10
        pages = log._db.execute("PRAGMA page_count").fetchone()[0]
        log._db.execute(f"PRAGMA max_page_count = {pages}")
        with pytest.raises(WriteFailed, match=r"^disk full: cannot write .*: free space") as e:
            log.append_many(Entry(MID, r, NOW, NOW + 1) for r in raws[10:])
        assert e.value.full
        assert list(log.replay(MID)) == raws[:10]
        log._db.execute("PRAGMA max_page_count = 1073741823")
        assert log.append_many(Entry(MID, r, NOW, NOW + 1) for r in raws[10:]) == 390
    with EnvelopeLog(tmp_path / "log.sqlite") as log:
        assert list(log.replay(MID)) == raws


CHILD = """
import sys
from pathlib import Path
from p2p_market.markets.devnet import Actor, default_market
from p2p_market.core.envelope import market_id, message_id
from p2p_market.node.storage import EnvelopeLog, Entry

path, seed = Path(sys.argv[1]), int(sys.argv[2])
durable = seed % 2 == 0  # odd seeds: a peer's envelopes, committed without an fsync
market = default_market()
mid = market_id(market)
who = Actor(f"crash-{seed}", market)
log = EnvelopeLog(path)
seq = 0
while True:  # until killed: batches of 1..8, each reported once durable
    batch = []
    for _ in range(1 + seq % 8):
        seq += 1
        batch.append(who.bid(now=1_767_229_200_000, price=seq, proof_time=1, seq=seq))
    if len(batch) == 1:
        log.append(mid, batch[0], seq, 2**62, durable)
    else:
        log.append_many((Entry(mid, raw, seq, 2**62) for raw in batch), durable)
    sys.stdout.write("".join(message_id(raw).hex() + "\\n" for raw in batch))
    sys.stdout.flush()
"""


@pytest.mark.parametrize("seed", range(4))
def test_a_hard_kill_loses_nothing_reported_appended(tmp_path: Path, seed: int) -> None:
    """With or without the fsync (odd seeds: `durable=False`): a killed process
    leaves its WAL with the OS, so only a power cut could lose an unsynced commit."""
    rng = random.Random(seed)
    path = tmp_path / "log.sqlite"
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path), str(seed)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert child.stdout is not None
    reported: list[str] = []
    try:
        want = rng.randrange(50, 400)
        deadline = time.monotonic() + 20
        while len(reported) < want and time.monotonic() < deadline:
            line = child.stdout.readline()
            if not line:
                break
            reported.append(line.decode().strip())
        time.sleep(rng.random() * 0.02)  # land somewhere inside a later transaction
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
    # Lines the child wrote before dying but we had not read yet were durable too.
    reported.extend(line.decode().strip() for line in child.stdout.readlines())
    child.stdout.close()
    assert child.returncode == -signal.SIGKILL
    assert len(reported) >= 50
    with EnvelopeLog(path) as log:
        stored = [message_id(raw).hex() for raw in log.replay(MID)]
    assert stored[: len(reported)] == reported  # all of them, in the order reported
    assert len(stored) - len(reported) <= 8  # at most the batch being reported when killed


def _log_accepted(state: MarketState, log: EnvelopeLog, raw: bytes, now: int) -> None:
    verdict, _ = state.apply(raw, now)
    assert verdict.accepted, verdict
    log.append(state.market_id, raw, now, state._forget_after(parse(raw)))


def _trading_day(state: MarketState, log: EnvelopeLog) -> int:
    """Bids, asks and commits over time, one bid short-lived; the last `now`."""
    t = NOW
    provers = [Actor(f"prover-{i}", MARKET) for i in range(12)]
    requesters = [Actor(f"requester-{i}", MARKET) for i in range(6)]
    short = provers[0].bid(now=t, price=10, proof_time=500, ttl=60_000)
    _log_accepted(state, log, short, t)
    for i, p in enumerate(provers[1:]):
        _log_accepted(state, log, p.bid(now=t, price=20 + i, proof_time=800 + 10 * i), t)
    asks = []
    for r in requesters:
        t += 250
        raw = r.ask(now=t, max_price=1_000, max_proof_time=5_000, inputs=b"x" * 8)
        _log_accepted(state, log, raw, t)
        asks.append(raw)
    t += 100
    commit = provers[0].commit(
        now=t, ask=message_id(asks[0]), bid=message_id(short), price=10, proof_time=500
    )
    _log_accepted(state, log, commit, t)
    t += 30_000
    _log_accepted(state, log, requesters[1].cancel(now=t, ask=message_id(asks[1])), t)
    return t + 120_000  # the short bid has expired by now


def test_replaying_the_log_rebuilds_the_same_state(tmp_path: Path) -> None:
    original = MarketState(MARKET)
    path = tmp_path / "log.sqlite"
    with EnvelopeLog(path) as log:
        end = _trading_day(original, log)
        original.tick(end)
    with EnvelopeLog(path) as log:  # a restart
        rebuilt = MarketState(MARKET)
        for raw, received_at in log.replay_timed(MID):
            verdict, _ = rebuilt.apply(raw, received_at)
            assert verdict.accepted, verdict
        rebuilt.tick(end)
        assert rebuilt.state_hash() == original.state_hash()
        assert not rebuilt.check_invariants()

        # Fed at the restart's "now" instead, the state is the same too: the expired
        # bid is kept (until its horizon), so the commit that names it is not left
        # waiting for it as an orphan (it was, before an expired message was kept).
        naive = MarketState(MARKET)
        verdicts = [naive.apply(raw, end)[0] for raw in log.replay(MID)]
        naive.tick(end)
        assert naive.state_hash() == original.state_hash()
        assert any(v.reason is Reason.EXPIRED for v in verdicts)
