"""Group commit (node/group_sync.py) over a real log's `flush` (a real fsync of its
WAL, in a worker thread)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import trio

from p2p_market.node.group_sync import GroupSync
from p2p_market.node.storage import EnvelopeLog, WriteFailed


async def test_submissions_made_together_share_one_fsync(tmp_path: Path) -> None:
    with EnvelopeLog(tmp_path / "log.sqlite") as log:
        group = GroupSync(log.flush)
        for i in range(10):
            log.append(b"m" * 32, os.urandom(100), i, 10**12, durable=False)
        done: list[int] = []

        async def submit(i: int) -> None:
            await group.sync()
            done.append(i)

        async with trio.open_nursery() as nursery:
            for i in range(10):
                nursery.start_soon(submit, i)
        # The first runs a sync alone; the nine that came while it ran share the next.
        assert sorted(done) == list(range(10)) and group.syncs == 2
        await group.sync()  # alone again: a sync of its own
        assert group.syncs == 3


async def test_a_failed_sync_fails_its_runner_and_the_others_try_their_own() -> None:
    calls: list[str] = []
    outcomes: list[str] = []

    def flaky() -> None:  # the first fsync fails, the next ones work
        calls.append("sync")
        if len(calls) == 1:
            raise WriteFailed("cannot sync log.sqlite-wal (Input/output error)", full=False)

    group = GroupSync(flaky)

    async def submit(name: str) -> None:
        try:
            await group.sync()
        except WriteFailed:
            outcomes.append(f"{name}: failed")
        else:
            outcomes.append(f"{name}: synced")

    async with trio.open_nursery() as nursery:
        for name in ("a", "b", "c"):
            nursery.start_soon(submit, name)
    # whichever ran first (trio picks the order) failed; the other two synced
    assert sorted(o.split(": ")[1] for o in outcomes) == ["failed", "synced", "synced"]
    assert len(calls) == 2 and group.syncs == 1


def test_flush_without_a_wal_is_nothing_to_do(tmp_path: Path) -> None:
    log = EnvelopeLog(tmp_path / "log.sqlite")
    log.close()  # the last connection folds the WAL in and removes it
    assert not (tmp_path / "log.sqlite-wal").exists()
    log.flush()


def test_a_wal_that_cannot_be_opened_is_a_write_failure(tmp_path: Path) -> None:
    with EnvelopeLog(tmp_path / "log.sqlite") as log:
        wal = tmp_path / "log.sqlite-wal"
        wal.unlink()
        wal.symlink_to(wal)  # a loop: open() fails with ELOOP
        with pytest.raises(WriteFailed, match=r"cannot sync .*log\.sqlite-wal"):
            log.flush()
        wal.unlink()
