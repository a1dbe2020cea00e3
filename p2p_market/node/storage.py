"""The node's append-only log of accepted envelopes, in one SQLite file.

A node's state is a pure function (a fold) of the signed messages it accepted,
so the log of those messages is all it needs to rebuild after a restart: replay
them into a fresh `MarketState`. What makes that true is durability, so:

- WAL journal and `synchronous=FULL`: a commit is on disk (WAL fsynced) when
  `append` returns. A crash at any moment, even mid-write, loses nothing that
  was reported appended; a torn transaction is rolled back on open.
- `append_many` is one transaction: the node batches the envelopes of one tick,
  paying one fsync for all of them instead of one each.
- `INSERT OR IGNORE` on the message id (SHA-256 of the envelope): the same
  envelope from gossip and from sync is one row, whatever the order.
- Rows keep `received_at` so a replay can feed each envelope at the time it was
  first accepted (`replay_timed`): replayed at "now", an expired bid would be
  refused and the commits that name it would become orphans.
- `forget_after` is the message's retention horizon (`MarketState._forget_after`):
  `prune(now)` drops what no valid message can still refer to, so the file does
  not grow forever.

The API is synchronous on purpose: SQLite calls are short and the node calls
them from its trio task between awaits. Nothing here knows about markets' rules.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Final, NamedTuple, Self

from p2p_market.core.envelope import message_id

SCHEMA_VERSION: Final = 1
_PAGE: Final = 1_000

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS envelopes (
    id            BLOB PRIMARY KEY,
    market        BLOB NOT NULL,
    raw           BLOB NOT NULL,
    received_at   INTEGER NOT NULL,
    forget_after  INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS envelopes_by_market ON envelopes (market);
CREATE INDEX IF NOT EXISTS envelopes_by_horizon ON envelopes (forget_after);
CREATE TABLE IF NOT EXISTS markets (
    id            BLOB PRIMARY KEY,
    descriptor    BLOB NOT NULL
);
"""


class Entry(NamedTuple):
    """One envelope to append: the market it was applied to, its bytes, when it
    was accepted (ms since the epoch) and its retention horizon (ms)."""

    market: bytes
    raw: bytes
    received_at: int
    forget_after: int


class StorageError(RuntimeError):
    """The log file is not one this code can use (newer schema, not SQLite)."""


class EnvelopeLog:
    """An append-only, durable log of accepted envelopes, and the descriptors of
    the markets they belong to. Use as a context manager, or call `close()`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: no implicit transactions; we BEGIN and COMMIT ourselves
        # so that a batch is exactly one transaction, one fsync.
        self._db = sqlite3.connect(path, isolation_level=None)
        try:
            self._setup()
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise StorageError(f"{path}: {exc}") from exc

    def _setup(self) -> None:
        db = self._db
        mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise StorageError(f"{self.path}: SQLite refused WAL mode ({mode})")
        db.execute("PRAGMA synchronous=FULL")
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StorageError(f"{self.path}: schema {version} is newer than {SCHEMA_VERSION}")
        with self._transaction():
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: committed (and fsynced) on exit, rolled back on error.
        IMMEDIATE takes the write lock up front, so it cannot fail half-way on a lock."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
            self._db.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:  # also when COMMIT itself failed (disk full)
                self._db.execute("ROLLBACK")
            raise

    # -- writing ----------------------------------------------------------------------

    def append(self, market: bytes, raw: bytes, received_at: int, forget_after: int) -> bool:
        """Append one envelope; durable when this returns. False if already logged."""
        return self.append_many([Entry(market, raw, received_at, forget_after)]) == 1

    def append_many(self, entries: Iterable[Entry]) -> int:
        """Append envelopes in one transaction (one fsync); durable when this
        returns, all or none. Returns how many were new."""
        rows = [
            (message_id(e.raw), e.market, e.raw, e.received_at, e.forget_after) for e in entries
        ]
        if not rows:
            return 0
        before = self._db.total_changes
        with self._transaction() as db:
            db.executemany(
                "INSERT OR IGNORE INTO envelopes (id, market, raw, received_at, forget_after)"
                " VALUES (?, ?, ?, ?, ?)",
                rows,
            )
        return self._db.total_changes - before

    def put_market(self, market: bytes, descriptor: bytes) -> None:
        """Remember a followed market's descriptor (its canonical bytes or envelope),
        so a restart knows which markets to rebuild. Replaces an older one."""
        with self._transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO markets (id, descriptor) VALUES (?, ?)",
                (market, descriptor),
            )

    def prune(self, now: int) -> int:
        """Delete every envelope whose retention horizon is before `now`; how many."""
        with self._transaction() as db:
            deleted = db.execute("DELETE FROM envelopes WHERE forget_after < ?", (now,)).rowcount
        return int(deleted)

    # -- reading ----------------------------------------------------------------------

    def markets(self) -> dict[bytes, bytes]:
        """Every stored market descriptor, by market id."""
        return {
            bytes(mid): bytes(desc)
            for mid, desc in self._db.execute("SELECT id, descriptor FROM markets ORDER BY id")
        }

    def replay(self, market: bytes) -> Iterator[bytes]:
        """The market's envelopes in append order."""
        for raw, _ in self.replay_timed(market):
            yield raw

    def replay_timed(self, market: bytes) -> Iterator[tuple[bytes, int]]:
        """(envelope, received_at) in append order: apply each at its own time to
        rebuild exactly the state the node had (see the module docstring).

        Read in pages by rowid (which only grows: rows are never updated, and a new
        row's rowid is above every remaining one), so appending or pruning while a
        replay is under way neither breaks the iteration nor repeats a row."""
        last = -1
        while True:
            page = self._db.execute(
                "SELECT rowid, raw, received_at FROM envelopes"
                " WHERE market = ? AND rowid > ? ORDER BY rowid LIMIT ?",
                (market, last, _PAGE),
            ).fetchall()
            for rowid, raw, received_at in page:
                last = rowid
                yield bytes(raw), int(received_at)
            if len(page) < _PAGE:
                return

    def count(self, market: bytes) -> int:
        return int(
            self._db.execute(
                "SELECT COUNT(*) FROM envelopes WHERE market = ?", (market,)
            ).fetchone()[0]
        )

    def __contains__(self, mid: object) -> bool:
        if not isinstance(mid, bytes):
            return False
        return (
            self._db.execute("SELECT 1 FROM envelopes WHERE id = ?", (mid,)).fetchone() is not None
        )

    # -- lifecycle --------------------------------------------------------------------

    def close(self) -> None:
        """Close the file (a checkpoint folds the WAL back into the main file)."""
        self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
