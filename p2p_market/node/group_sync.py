"""Group commit for the owner's envelopes: one fsync for every commit made before it
started, run in a worker thread.

The node's owner's signed messages must be on disk before the node keeps or
publishes them (node/storage.py). An fsync each, on the event loop, held it for the
whole disk flush: 67 % of a publisher's wall samples at 213 orders/s (`bench net`).
So each submission commits its row without an fsync and then waits here: if no
sync is running, it starts one in a worker thread; if one is running, it waits for
it to end and then, unless a sync that started after its commit already covered
it, starts the next. However many submissions arrive together, at most one sync
runs at a time, each covers all that came before it, and the event loop is never
held by the disk.

A failed sync raises in the task that ran it; the others that waited on it try
their own, so each learns its own fate.

Submissions woken by one sync go on in no particular order. That order is not one
a client could rely on anyway: a client that waits for each answer is served in
order, and requests in flight together have none; the state does not depend on the
order its messages came in.
"""

from __future__ import annotations

from collections.abc import Callable

import trio


class GroupSync:
    """Durability barriers over one `flush` (EnvelopeLog.flush)."""

    def __init__(self, flush: Callable[[], None]) -> None:
        self._flush = flush
        self._asked = 0
        """Tickets handed out, one per `sync` call, in call order."""
        self._synced = 0
        """Every ticket up to this one is durable."""
        self._running = False
        self._ended = trio.Event()
        self.syncs = 0
        """Flushes that succeeded: fewer than `sync` calls when they shared one."""

    async def sync(self) -> None:
        """Return once every commit made before this call is on disk."""
        self._asked += 1
        ticket = self._asked
        while self._synced < ticket:
            if self._running:
                await self._ended.wait()
                continue
            self._running = True
            covers = self._asked  # every commit made before now is in the WAL
            try:
                await trio.to_thread.run_sync(self._flush)
                self._synced = max(self._synced, covers)
                self.syncs += 1
            finally:
                self._running = False
                ended, self._ended = self._ended, trio.Event()
                ended.set()
