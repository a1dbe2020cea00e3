"""What the roles must remember across a restart, in `<data_dir>/roles.sqlite`.

The envelope log (storage.py) rebuilds the market's state, but the roles also hold
bytes no signed message carries. A requester: the inputs of the asks it placed (a
confidential or large ask's are nowhere else, and a winner assigned after a restart
still needs them), a proof that came directly (sent once) until it is judged, and
the proofs it verified, which `GET /v1/asks/<id>/proofs` serves. A prover: the
confidential inputs the requester sends once, and a large proof it made and
delivers directly. Without them a restarted requester cannot serve its proofs and
a restarted prover abandons confidential work (its slot times out).

Why a file of its own beside the log, not a table in it: the log holds public,
signed messages that sync serves to anyone and that a damaged file may be moved
away from ("the node will sync from peers"); these rows are private and nothing
can sync them back, so they are kept, versioned and moved apart from it.

Every value is sealed at rest (XChaCha20-Poly1305) with a key derived from the
node's Ed25519 seed (`storage_key`: keyed BLAKE2b with a label, so the key is used
for nothing else), and the row's kind, ask and peer as associated data, so a row
copied onto another row does not open. Another node's key opens nothing: such a row
reads as absent (`get`), and its ask goes on as if it had never been stored.

Retention: a row lives until its ask's retention horizon, `MarketState.forget_after`
of the ask (its expiry plus twice the market's max lifetime): the very moment the
core's `_prune` forgets the ask and the log deletes it, and never longer than that
bound. `prune(now)` deletes rows past it; `keep_only` drops the rows of asks the
node no longer holds (at a restart: the log was moved away, or the ask was refused).

A prover's bid settings, as its operator last changed them through the control API
(roles/bid_control.py: terms, paused or not), are a row of `settings` by name, in
the clear (they are signed into public bids anyway), kept until replaced: they are
not an ask's, so no horizon applies. Schema 2 added that table; a schema-1 file
gains it when opened.

Durability as the log's: WAL and `synchronous=FULL`, so a row is on disk when `put`
returns (a prover stores inputs before it proves from them). The same file may be
open twice in one process (a node with both roles): a writer waits for the other.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Final, Literal, Self

import nacl.bindings
import nacl.encoding
import nacl.exceptions
import nacl.hash
import nacl.utils
import trio

from p2p_market.node.storage import StorageError, _fault, _make_dir, _not_writable

log = logging.getLogger("p2p_market.role_store")

SCHEMA_VERSION: Final = 2
FILE_NAME: Final = "roles.sqlite"
KEY_LABEL: Final = b"p2p-market role store v1"
"""Domain separation: the derived key seals these rows and nothing else."""
BUSY_TIMEOUT_MS: Final = 5_000
PRUNE_EVERY_S: Final = 60.0
"""Rows past their horizon are deleted this often: a horizon is days after the ask
ends, so a minute late costs nothing."""

Kind = Literal["own_inputs", "received", "verified", "inputs", "proof"]
"""own_inputs: a requester's inputs of its own ask (peer = b"").
received: a proof that came to the requester directly, until it is judged.
verified: a proof the requester verified (peer = the prover).
inputs: confidential inputs a prover received (peer = the requester).
proof: a proof a prover delivers directly (peer = the requester)."""

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS items (
    kind          TEXT NOT NULL,
    ask           BLOB NOT NULL,
    peer          BLOB NOT NULL,
    market        BLOB NOT NULL,
    sealed        BLOB NOT NULL,
    forget_after  INTEGER NOT NULL,
    PRIMARY KEY (kind, ask, peer)
);
CREATE INDEX IF NOT EXISTS items_by_horizon ON items (forget_after);
CREATE TABLE IF NOT EXISTS settings (
    name   TEXT PRIMARY KEY,
    value  TEXT NOT NULL
);
"""

_NONCE: Final = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_NPUBBYTES


def storage_key(seed: bytes) -> bytes:
    """The 32-byte key that seals the role store, from the node's Ed25519 seed."""
    return nacl.hash.blake2b(KEY_LABEL, key=seed, digest_size=32, encoder=nacl.encoding.RawEncoder)


def _aad(kind: str, ask: bytes, peer: bytes) -> bytes:
    return kind.encode() + b"\0" + ask + peer


def store_path(data_dir: Path) -> Path:
    return data_dir / FILE_NAME


class RoleStore:
    """Sealed bytes by (kind, ask, peer); see the module docstring."""

    def __init__(self, data_dir: Path, seed: bytes) -> None:
        self.path = store_path(data_dir)
        self._key = storage_key(seed)
        _make_dir(data_dir)
        problem = _not_writable(self.path)
        if problem is not None:
            raise StorageError(problem)
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None)
            self._setup()
        except sqlite3.Error as exc:
            raise _fault(self.path, exc) from None

    def _setup(self) -> None:
        db = self._db
        db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StorageError(
                f"database {self.path} has schema {version}, newer than this version's"
                f" {SCHEMA_VERSION}: run a newer p2p-market, or choose another data_dir"
            )
        if version < SCHEMA_VERSION:
            db.execute("BEGIN IMMEDIATE")
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            db.execute("COMMIT")

    def _write(self, query: str, args: tuple[object, ...]) -> int:
        """One statement in its own transaction; durable when this returns."""
        try:
            return int(self._db.execute(query, args).rowcount)
        except sqlite3.Error as exc:
            raise _fault(self.path, exc, writing=True) from None

    def put(
        self, kind: Kind, market: bytes, ask: bytes, peer: bytes, value: bytes, forget_after: int
    ) -> None:
        """Seal and keep `value` (replacing the row's old value) until `forget_after`."""
        nonce = nacl.utils.random(_NONCE)
        sealed = nonce + nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(
            value, _aad(kind, ask, peer), nonce, self._key
        )
        self._write(
            "INSERT OR REPLACE INTO items (kind, ask, peer, market, sealed, forget_after)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (kind, ask, peer, market, sealed, forget_after),
        )

    def keep(
        self, kind: Kind, market: bytes, ask: bytes, peer: bytes, value: bytes, forget_after: int
    ) -> bool:
        """`put`, but a write that fails (disk full) is logged and the role goes on
        from memory: the store is for after a restart, and the work comes first (a
        receipt must not wait for a disk). False if it was not kept."""
        try:
            self.put(kind, market, ask, peer, value, forget_after)
        except StorageError as exc:
            log.warning("%s: not kept for a restart: %s", kind, exc)
            return False
        return True

    def get(self, kind: Kind, ask: bytes, peer: bytes) -> bytes | None:
        """The value, or None: not stored, or not sealed with this node's key."""
        rows = self._read(
            "SELECT sealed FROM items WHERE kind = ? AND ask = ? AND peer = ?", (kind, ask, peer)
        )
        return self._open(kind, ask, peer, rows[0][0]) if rows else None

    def items(self, kind: Kind) -> list[tuple[bytes, bytes, bytes, bytes]]:
        """(market, ask, peer, value) of every readable row of `kind`."""
        found = []
        for market, ask, peer, sealed in self._read(
            "SELECT market, ask, peer, sealed FROM items WHERE kind = ? ORDER BY rowid", (kind,)
        ):
            value = self._open(kind, ask, peer, sealed)
            if value is not None:
                found.append((market, ask, peer, value))
        return found

    def _open(self, kind: str, ask: bytes, peer: bytes, sealed: object) -> bytes | None:
        if not isinstance(sealed, bytes) or len(sealed) < _NONCE:
            return None
        try:
            return bytes(
                nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(
                    sealed[_NONCE:], _aad(kind, ask, peer), sealed[:_NONCE], self._key
                )
            )
        except nacl.exceptions.CryptoError:
            log.warning(
                "%s: a %s row of ask %s is not sealed with this node's key; ignored",
                self.path,
                kind,
                ask.hex()[:16],
            )
            return None

    def delete(self, kind: Kind, ask: bytes, peer: bytes) -> None:
        """Delete one row; a failed delete is logged (the row leaves at its horizon)."""
        try:
            self._write(
                "DELETE FROM items WHERE kind = ? AND ask = ? AND peer = ?", (kind, ask, peer)
            )
        except StorageError as exc:
            log.warning("%s", exc)

    def setting(self, name: str) -> str | None:
        """A named setting (`put_setting`), or None if never set."""
        rows = self._read("SELECT value FROM settings WHERE name = ?", (name,))
        return str(rows[0][0]) if rows else None

    def put_setting(self, name: str, value: str) -> None:
        """Keep a named setting (replacing it); durable when this returns.
        StorageError if it cannot be written."""
        self._write("INSERT OR REPLACE INTO settings (name, value) VALUES (?, ?)", (name, value))

    def prune(self, now: int) -> int:
        """Delete every row past its ask's retention horizon; how many."""
        return self._write("DELETE FROM items WHERE forget_after < ?", (now,))

    def keep_only(self, held: Callable[[bytes, bytes], bool]) -> int:
        """Delete the rows whose (market, ask) the node does not hold; how many. A
        failed delete is logged: the rows leave at their horizon anyway."""
        rows = self._read("SELECT DISTINCT market, ask FROM items")
        gone = [(m, a) for m, a in rows if not held(m, a)]
        try:
            for market, ask in gone:
                self._write("DELETE FROM items WHERE market = ? AND ask = ?", (market, ask))
        except StorageError as exc:
            log.warning("%s", exc)
        return len(gone)

    async def prune_every(self, clock: Callable[[], int], every_s: float = PRUNE_EVERY_S) -> None:
        """`prune` with the node's clock, forever (a role's task). A failed delete
        (disk full) is logged and tried again next time."""
        while True:
            await trio.sleep(every_s)
            try:
                self.prune(clock())
            except StorageError as exc:
                log.warning("%s", exc)

    def _read(self, query: str, args: tuple[object, ...] = ()) -> list[tuple[bytes, ...]]:
        try:
            return self._db.execute(query, args).fetchall()
        except sqlite3.Error as exc:
            raise _fault(self.path, exc) from None

    def close(self) -> None:
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
