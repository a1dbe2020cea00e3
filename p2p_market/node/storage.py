"""The node's append-only log of accepted envelopes, in one SQLite file.

A node's state is a pure function (a fold) of the signed messages it accepted,
so the log of those messages is all it needs to rebuild after a restart: replay
them into a fresh `MarketState`. What makes that true is durability, so:

- WAL journal. A durable commit (`synchronous=FULL`, the default of `append`) is
  on disk (WAL fsynced) when it returns; a process crash at any moment, even
  mid-write, loses nothing that was reported appended; a torn transaction is
  rolled back on open.
- `durable=False` commits without the fsync (`synchronous=NORMAL`): the node logs
  what it receives from peers so. A killed process still loses none of it (the
  OS holds the WAL); a power cut or an OS crash may lose the last ones, which
  sync brings back from the peers that sent them (the state is a function of the
  set, so nothing disagrees meanwhile). Why: one fsync per received envelope held
  a node's event loop for 3-5 ms each, about 40% of a prover's wall time at 24
  asks/s (`bench market`).
- What the node's owner submits (its own signed messages) is on disk before the
  node keeps or publishes it (a signer that forgot what it signed could sign a
  conflicting message after a restart), and that fsync also covers every commit
  before it. The node commits it like the others, then `flush` fsyncs the WAL from
  a worker thread, so the event loop goes on judging frames while the disk works
  (a durable `append` held it: 67 % of a publisher's wall samples at 213 orders/s,
  `bench net`), and submissions made together share one fsync.
- The WAL is folded into the database every WAL_PAGES pages, not SQLite's 1,000:
  each commit appends every page it changed (the row's and each index's, four or
  five for one envelope), and a WAL is folded only if the database can grow by the
  pages it holds, so SQLite's default let the WAL alone fill a small disk (1 MiB:
  55 envelopes of 450 bytes, against about 800 now).
- `append_many` is one transaction: the node writes the envelopes of one gossip
  frame so (`Node.logged_ahead`), paying one commit, and the pages they share
  once, for all of them instead of one each.
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

Every failure is a `StorageError` whose message is one line naming the file, the
problem and what to do (a corrupt file, a read-only data dir, a newer schema): the
CLI prints it as it is. A write that did not happen (disk full, I/O error) is the
subclass `WriteFailed`: the log is exactly as it was before the write, so the
caller may refuse what it was about to keep and try again later.
"""

from __future__ import annotations

import errno
import os
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, Final, NamedTuple, Self

from p2p_market.core.envelope import message_id

SCHEMA_VERSION: Final = 1
_PAGE: Final = 1_000
WAL_PAGES: Final = 100
"""Fold the WAL into the database at this many pages (SQLite: 1,000 of 4 KiB)."""
WAL_LIMIT: Final = 1 << 20
"""A WAL grown past this (one large batch) is truncated back to it once folded."""

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
    """The log cannot be used; the message is one line naming the file, the problem
    and what to do about it."""


class WriteFailed(StorageError):
    """A write did not happen (disk full, I/O error, the file became read-only or
    corrupt): the log is as it was before it, and a later write may succeed. `full`
    when the disk (or the database's size limit) is full."""

    def __init__(self, message: str, *, full: bool) -> None:
        super().__init__(message)
        self.full = full


_MOVE_AWAY: Final = "move it away to start from an empty log; the node will sync from peers"


def _fault(path: Path, exc: sqlite3.Error, *, writing: bool = False) -> StorageError:
    """What a SQLite error means for the node, in one line that says what to do; a
    `WriteFailed` when `writing` (SQLite rolled the transaction back)."""
    code = getattr(exc, "sqlite_errorcode", 0) & 0xFF  # the primary result code
    if code in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB):
        message = f"database {path} is corrupt ({exc}): {_MOVE_AWAY}"
    elif code == sqlite3.SQLITE_FULL:
        message = f"disk full: cannot write {path} ({exc}): free space on its disk"
    elif code in (sqlite3.SQLITE_READONLY, sqlite3.SQLITE_PERM, sqlite3.SQLITE_CANTOPEN):
        message = _not_writable(path) or f"cannot open or write database {path} ({exc})"
    elif code == sqlite3.SQLITE_IOERR:
        message = f"I/O error on database {path} ({exc}): check its disk"
    else:
        message = f"database {path}: {exc}"
    if writing:
        return WriteFailed(message, full=code == sqlite3.SQLITE_FULL)
    return StorageError(message)


def _not_writable(path: Path) -> str | None:
    """Why the node cannot write its database, if the file system says so."""
    if path.is_dir():
        return f"{path} is a directory, not a database: move it away"
    if not os.access(path.parent, os.W_OK):
        return f"data dir {path.parent} is read-only: make it writable or choose another data_dir"
    if path.exists() and not os.access(path, os.W_OK):
        return f"database {path} is read-only: make it writable or choose another data_dir"
    return None


def _make_dir(directory: Path) -> None:
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise StorageError(
            f"data dir {directory} is not a directory: choose another data_dir"
        ) from None
    except OSError as exc:
        raise StorageError(
            f"cannot create data dir {directory} ({exc.strerror}): make its parent"
            " writable or choose another data_dir"
        ) from None


class EnvelopeLog:
    """An append-only, durable log of accepted envelopes, and the descriptors of
    the markets they belong to. Use as a context manager, or call `close()`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        _make_dir(path.parent)
        problem = _not_writable(path)  # found now, not at the first write
        if problem is not None:
            raise StorageError(problem)
        try:
            # isolation_level=None: no implicit transactions; we BEGIN and COMMIT
            # ourselves so that a batch is exactly one transaction, one fsync.
            self._db = sqlite3.connect(path, isolation_level=None)
            self._synchronous = ""
            self.commits = {"fsynced": 0, "unsynced": 0}
            """Write transactions committed with and without an fsync."""
        except sqlite3.Error as exc:
            raise _fault(path, exc) from None
        try:
            self._setup()
        except sqlite3.Error as exc:
            self._db.close()
            raise _fault(path, exc) from None
        except StorageError:
            self._db.close()
            raise

    def _setup(self) -> None:
        db = self._db
        mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise StorageError(
                f"database {self.path}: SQLite refused WAL mode ({mode}): choose a data_dir"
                " on a local disk"
            )
        self._set_synchronous(durable=True)
        db.execute(f"PRAGMA wal_autocheckpoint={WAL_PAGES}")
        db.execute(f"PRAGMA journal_size_limit={WAL_LIMIT}")
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StorageError(
                f"database {self.path} has schema {version}, newer than this version's"
                f" {SCHEMA_VERSION}: run a newer p2p-market, or choose another data_dir"
            )
        if version == SCHEMA_VERSION:
            return  # nothing to write: a node can start on a full disk, and serve
        with self._transaction():
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def _set_synchronous(self, *, durable: bool) -> None:
        """FULL (fsync at each commit) or NORMAL (none) for the next transactions;
        a pragma only when it changes (it cannot change inside a transaction)."""
        mode = "FULL" if durable else "NORMAL"
        if mode != self._synchronous:
            self._db.execute(f"PRAGMA synchronous={mode}")
            self._synchronous = mode

    @contextmanager
    def _transaction(self, *, durable: bool = True) -> Iterator[sqlite3.Connection]:
        """One write transaction: committed (and fsynced, if `durable`) on exit,
        rolled back on error. IMMEDIATE takes the write lock up front, so it cannot
        fail half-way on a lock. A SQLite error is a `WriteFailed` (or a
        `StorageError` for a corrupt file)."""
        try:
            self._set_synchronous(durable=durable)
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
                self._db.execute("COMMIT")
                self.commits["fsynced" if durable else "unsynced"] += 1
            except BaseException:
                if self._db.in_transaction:  # also when COMMIT itself failed (disk full)
                    self._db.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise _fault(self.path, exc, writing=True) from None

    # -- writing ----------------------------------------------------------------------

    def append(
        self, market: bytes, raw: bytes, received_at: int, forget_after: int, durable: bool = True
    ) -> bool:
        """Append one envelope (durable: on disk when this returns; else without an
        fsync, module doc). False if already logged."""
        entry = Entry(market, raw, received_at, forget_after)
        return self.append_many([entry], durable=durable) == 1

    def append_many(self, entries: Iterable[Entry], durable: bool = True) -> int:
        """Append envelopes in one transaction (one fsync if `durable`: on disk when
        this returns), all or none. Returns how many were new."""
        rows = [
            (message_id(e.raw), e.market, e.raw, e.received_at, e.forget_after) for e in entries
        ]
        if not rows:
            return 0
        before = self._db.total_changes
        with self._transaction(durable=durable) as db:
            db.executemany(
                "INSERT OR IGNORE INTO envelopes (id, market, raw, received_at, forget_after)"
                " VALUES (?, ?, ?, ?, ?)",
                rows,
            )
        return self._db.total_changes - before

    def flush(self) -> None:
        """Make every commit so far durable, as a `durable` commit would be: fsync
        the WAL, which holds every commit since the last checkpoint (a checkpoint
        syncs the WAL before, and the database after, folding it in). Touches
        neither the connection nor its state, so a worker thread may call it while
        the node goes on writing (node/group_sync.py). A failed fsync
        is a `WriteFailed`: what was committed may not be on disk."""
        wal = self.path.with_name(self.path.name + "-wal")
        try:
            fd = os.open(wal, os.O_RDONLY)
        except FileNotFoundError:
            return  # no WAL: nothing was written since the last full checkpoint
        except OSError as exc:
            message = f"cannot sync {wal} ({exc.strerror}): check its disk"
            raise WriteFailed(message, full=False) from None
        try:
            os.fsync(fd)
        except OSError as exc:
            message = f"cannot sync {wal} ({exc.strerror}): check its disk"
            raise WriteFailed(message, full=exc.errno == errno.ENOSPC) from None
        finally:
            os.close(fd)

    def put_market(self, market: bytes, descriptor: bytes) -> None:
        """Remember a followed market's descriptor (its canonical bytes or envelope),
        so a restart knows which markets to rebuild. Replaces an older one; writes
        nothing when it is already there."""
        if self.markets().get(market) == descriptor:
            return
        with self._transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO markets (id, descriptor) VALUES (?, ?)",
                (market, descriptor),
            )

    def delete(self, ids: Iterable[bytes]) -> int:
        """Delete these envelopes (held orphans the core let go); how many were there."""
        rows = [(mid,) for mid in ids]
        if not rows:
            return 0
        before = self._db.total_changes
        with self._transaction() as db:
            db.executemany("DELETE FROM envelopes WHERE id = ?", rows)
        return self._db.total_changes - before

    def prune(self, now: int) -> int:
        """Delete every envelope whose retention horizon is before `now`; how many."""
        with self._transaction() as db:
            deleted = db.execute("DELETE FROM envelopes WHERE forget_after < ?", (now,)).rowcount
        return int(deleted)

    # -- reading ----------------------------------------------------------------------

    def markets(self) -> dict[bytes, bytes]:
        """Every stored market descriptor, by market id."""
        rows = self._read("SELECT id, descriptor, rowid FROM markets ORDER BY id")
        found: dict[bytes, bytes] = {}
        for mid, desc, rowid in rows:
            if not isinstance(mid, bytes) or not isinstance(desc, bytes):
                raise self._foreign_row("markets", rowid)
            found[mid] = desc
        return found

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
            page = self._read(
                "SELECT rowid, raw, received_at FROM envelopes"
                " WHERE market = ? AND rowid > ? ORDER BY rowid LIMIT ?",
                (market, last, _PAGE),
            )
            for rowid, raw, received_at in page:
                if not isinstance(raw, bytes) or type(received_at) is not int:
                    raise self._foreign_row("envelopes", rowid)
                last = rowid
                yield raw, received_at
            if len(page) < _PAGE:
                return

    def _read(self, query: str, args: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
        """All rows of a query; a SQLite error (a corrupt page) is a `StorageError`."""
        try:
            return self._db.execute(query, args).fetchall()
        except sqlite3.Error as exc:
            raise _fault(self.path, exc) from None

    def _foreign_row(self, table: str, rowid: object) -> StorageError:
        """A row this code never writes (a text where bytes belong, say): the file was
        damaged or written by something else."""
        return StorageError(
            f"database {self.path} is corrupt (row {rowid} of {table} is not one"
            f" p2p-market wrote): {_MOVE_AWAY}"
        )

    def count(self, market: bytes) -> int:
        rows = self._read("SELECT COUNT(*) FROM envelopes WHERE market = ?", (market,))
        return int(rows[0][0])

    def __contains__(self, mid: object) -> bool:
        if not isinstance(mid, bytes):
            return False
        return bool(self._read("SELECT 1 FROM envelopes WHERE id = ?", (mid,)))

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
