"""Fold the log's WAL into its database in a worker thread, never on the event loop.

SQLite folds its WAL inside the commit that fills it past a threshold, and a fold
fsyncs the WAL and then the database: inside a commit those fsyncs held the
node's event loop, which meanwhile judged no frame, answered no request and kept
no timer (node/storage.py gives the figures). So the node has the log tell it when
a fold is due (`EnvelopeLog.fold_elsewhere`) and runs `EnvelopeLog.fold` here, in a
worker thread, one at a time, while it goes on committing: a fold is a passive
checkpoint, which neither waits for the node's writes nor makes them wait.

A fold that fails (an I/O error, a full disk while the database grows) leaves the
WAL whole: it is logged, and the next one is tried after RETRY_S. Should the
folds fall far behind, SQLite folds inside a commit again (FALLBACK_WAL_PAGES), so
the WAL stays bounded whatever happens here.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Final

import trio

from p2p_market.node.storage import EnvelopeLog, WriteFailed

if TYPE_CHECKING:
    from trio_typing import TaskStatus

log = logging.getLogger(__name__)

RETRY_S: Final = 1.0
"""After a failed fold, the wait before the next one."""


class WalFolder:
    """The service that folds one log's WAL (see the module docstring)."""

    def __init__(self, envelope_log: EnvelopeLog) -> None:
        self._log = envelope_log
        self._due = trio.Event()
        self.folds = 0
        """Folds that succeeded."""
        self.failures = 0

    def _poke(self) -> None:
        self._due.set()

    async def run(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Fold whenever the log says so, until cancelled; then SQLite folds inside
        commits again, as for a log nobody runs this for."""
        self._log.fold_elsewhere(self._poke)
        try:
            task_status.started()
            while True:
                await self._due.wait()
                self._due = trio.Event()
                self._log.unfolded_pages = 0
                try:
                    await trio.to_thread.run_sync(self._log.fold)
                except WriteFailed as exc:
                    self.failures += 1
                    log.warning("could not fold the log's WAL (tried again later): %s", exc)
                    await trio.sleep(RETRY_S)
                    self._due.set()
                else:
                    self.folds += 1
        finally:
            self._log.fold_elsewhere(None)
