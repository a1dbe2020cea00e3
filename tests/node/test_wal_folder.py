"""Folding the log's WAL elsewhere (storage.py `fold_elsewhere`, `fold`) and the
node's service that does it in a worker thread (node/wal_folder.py), on real
SQLite files.

The WAL file's size is the most it ever held: SQLite writes it from the start
again after a fold, without shrinking it."""

from __future__ import annotations

import os
import sqlite3
import threading
from pathlib import Path

import trio

from p2p_market.node.storage import (
    FALLBACK_WAL_PAGES,
    WAL_PAGES,
    Entry,
    EnvelopeLog,
)
from p2p_market.node.wal_folder import WalFolder

MID = bytes(range(32))
NOW = 1_700_000_000_000
PAGE = 4_096


def entry(i: int, size: int = 300) -> Entry:
    return Entry(MID, i.to_bytes(4, "big") + os.urandom(size - 4), NOW, NOW + 1)


def wal_bytes(path: Path) -> int:
    wal = path.with_name(path.name + "-wal")
    return wal.stat().st_size if wal.exists() else 0


def autocheckpoint(log: EnvelopeLog) -> int:
    return int(log._db.execute("PRAGMA wal_autocheckpoint").fetchone()[0])


def test_folding_elsewhere_leaves_the_wal_to_the_folder(tmp_path: Path) -> None:
    """The commits no longer fold (the WAL grows past WAL_PAGES), the log says a
    fold is due about every WAL_PAGES pages, and a fold lets the WAL start over."""
    path = tmp_path / "log.sqlite"
    due: list[int] = []
    with EnvelopeLog(path) as log:
        log.fold_elsewhere(lambda: due.append(log.unfolded_pages))
        assert autocheckpoint(log) == FALLBACK_WAL_PAGES
        for i in range(60):  # about 4 pages each: over WAL_PAGES, under the fallback
            log.append(MID, entry(i).raw, NOW, NOW + 1, durable=False)
        grown = wal_bytes(path)
        assert grown > (WAL_PAGES + 20) * PAGE, grown
        assert due and all(pages >= WAL_PAGES for pages in due), due
        log.unfolded_pages = 0
        log.fold()
        for i in range(60, 120):  # the WAL starts over: it does not grow
            log.append(MID, entry(i).raw, NOW, NOW + 1, durable=False)
        assert wal_bytes(path) <= grown
        log.fold_elsewhere(None)
        assert autocheckpoint(log) == WAL_PAGES
    with EnvelopeLog(path) as log:
        assert log.count(MID) == 120


def test_a_folder_that_keeps_up_bounds_the_wal_as_sqlite_did(tmp_path: Path) -> None:
    """Folding when told (here at once, in the same thread), the WAL stays near
    WAL_PAGES pages, as with SQLite folding inside commits, for commits of one
    envelope and for commits of whole frames."""
    path = tmp_path / "log.sqlite"
    with EnvelopeLog(path) as log:

        def fold_now() -> None:
            log.unfolded_pages = 0
            log.fold()

        log.fold_elsewhere(fold_now)
        for i in range(600):
            log.append(MID, entry(i).raw, NOW, NOW + 1, durable=False)
        for f in range(40):
            log.append_many([entry(10_000 + 31 * f + i) for i in range(31)], durable=False)
        assert wal_bytes(path) <= (WAL_PAGES + 80) * PAGE < 1 << 20, wal_bytes(path)
        assert log.count(MID) == 600 + 40 * 31


def test_folds_in_another_thread_while_writing_lose_nothing(tmp_path: Path) -> None:
    """Folds run back to back in a thread while the log takes 3,000 envelopes:
    every one is there after a reopen, and the file is sound."""
    path = tmp_path / "log.sqlite"
    stop = threading.Event()
    folds = 0
    with EnvelopeLog(path) as log:
        log.fold_elsewhere(lambda: None)

        def fold_again_and_again() -> None:
            nonlocal folds
            while not stop.is_set():
                log.fold()
                folds += 1

        folder = threading.Thread(target=fold_again_and_again)
        folder.start()
        try:
            for f in range(100):
                log.append_many([entry(30 * f + i) for i in range(30)], durable=False)
        finally:
            stop.set()
            folder.join()
        assert folds >= 1
    with EnvelopeLog(path) as log:
        assert log.count(MID) == 3_000
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


async def test_the_service_folds_in_a_worker_thread_and_hands_back_on_exit(
    tmp_path: Path,
) -> None:
    """A node's folder: the WAL stays bounded while commits go on on the event loop,
    and once the service ends SQLite folds inside commits again."""
    path = tmp_path / "log.sqlite"
    with EnvelopeLog(path) as log:
        folder = WalFolder(log)
        async with trio.open_nursery() as nursery:
            await nursery.start(folder.run)
            assert autocheckpoint(log) == FALLBACK_WAL_PAGES
            for f in range(60):
                log.append_many([entry(20 * f + i) for i in range(20)], durable=False)
                await trio.sleep(0.01)
            nursery.cancel_scope.cancel()
        assert folder.folds >= 5 and folder.failures == 0, (folder.folds, folder.failures)
        assert wal_bytes(path) < FALLBACK_WAL_PAGES * PAGE, wal_bytes(path)
        assert autocheckpoint(log) == WAL_PAGES
        assert log.count(MID) == 1_200
