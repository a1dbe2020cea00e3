"""The role store (node/role_store.py) on a real SQLite file: values survive a
reopen, are never on disk in the clear, open with the node's own key only (another
node's key reads nothing), and leave at their ask's horizon."""

from __future__ import annotations

from pathlib import Path

from p2p_market.core.crypto import devnet_key
from p2p_market.node.role_store import RoleStore, storage_key

SECRET = b"confidential: the launch code is 0451" * 10
MARKET, ASK, PEER = b"m" * 32, b"a" * 32, b"p" * 32


def on_disk(directory: Path) -> bytes:
    return b"".join(f.read_bytes() for f in sorted(directory.iterdir()) if f.is_file())


def test_inputs_are_sealed_at_rest_and_open_with_the_nodes_key_only(tmp_path: Path) -> None:
    mine, theirs = devnet_key("store-mine"), devnet_key("store-theirs")
    with RoleStore(tmp_path, mine.seed) as store:
        store.put("inputs", MARKET, ASK, PEER, SECRET, forget_after=10_000)
        assert SECRET[:37] not in on_disk(tmp_path)  # the database and its WAL
    assert SECRET[:37] not in on_disk(tmp_path)
    with RoleStore(tmp_path, theirs.seed) as store:  # another node's key
        assert store.get("inputs", ASK, PEER) is None
        assert store.items("inputs") == []
    with RoleStore(tmp_path, mine.seed) as store:  # survives the reopen
        assert store.get("inputs", ASK, PEER) == SECRET
        assert store.items("inputs") == [(MARKET, ASK, PEER, SECRET)]
    assert storage_key(mine.seed) != storage_key(theirs.seed)
    assert storage_key(mine.seed) != mine.seed


def test_a_value_moved_to_another_ask_does_not_open(tmp_path: Path) -> None:
    """The row's kind, ask and peer are bound to its value (associated data)."""
    seed = devnet_key("store-mine").seed
    with RoleStore(tmp_path, seed) as store:
        store.put("inputs", MARKET, ASK, PEER, SECRET, forget_after=10_000)
        store._db.execute("UPDATE items SET ask = ?", (b"b" * 32,))
        assert store.get("inputs", b"b" * 32, PEER) is None


def test_rows_leave_at_their_asks_horizon_or_with_their_ask(tmp_path: Path) -> None:
    with RoleStore(tmp_path, devnet_key("store-mine").seed) as store:
        store.put("verified", MARKET, ASK, PEER, b"proof", forget_after=1_000)
        store.put("own_inputs", MARKET, b"b" * 32, b"", b"in", forget_after=5_000)
        store.put("inputs", MARKET, b"c" * 32, PEER, b"in", forget_after=5_000)
        assert store.prune(1_000) == 0  # at the horizon it is still kept
        assert store.prune(1_001) == 1
        assert store.get("verified", ASK, PEER) is None
        assert store.keep_only(lambda m, a: a == b"b" * 32) == 1  # the core forgot ask c
        assert store.get("own_inputs", b"b" * 32, b"") == b"in"
        assert store.get("inputs", b"c" * 32, PEER) is None


def test_settings_survive_a_reopen_and_a_schema_1_file_gains_their_table(
    tmp_path: Path,
) -> None:
    """The prover's bid settings (roles/bid_control.py) are a named row kept until
    replaced: no horizon prunes them, and `keep_only` (asks) leaves them alone. A
    file made by schema 1 (no settings table) is migrated when opened."""
    import sqlite3

    old = tmp_path / "old"
    old.mkdir()
    with sqlite3.connect(old / "roles.sqlite") as db:
        db.execute(
            "CREATE TABLE items (kind TEXT NOT NULL, ask BLOB NOT NULL, peer BLOB NOT NULL,"
            " market BLOB NOT NULL, sealed BLOB NOT NULL, forget_after INTEGER NOT NULL,"
            " PRIMARY KEY (kind, ask, peer))"
        )
        db.execute("PRAGMA user_version=1")
    seed = devnet_key("store-mine").seed
    for directory in (tmp_path / "new", old):
        with RoleStore(directory, seed) as store:
            assert store.setting("prover_bid") is None
            store.put_setting("prover_bid", '{"a": 1}')
            store.put_setting("prover_bid", '{"a": 2}')
            store.prune(2**62)
            store.keep_only(lambda m, a: False)
        with RoleStore(directory, seed) as store:
            assert store.setting("prover_bid") == '{"a": 2}'
            assert store._db.execute("PRAGMA user_version").fetchone()[0] == 2
