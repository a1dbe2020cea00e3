"""Faults in a node's own resources, with real `p2p-market node run` processes: its
config file, its data dir and SQLite log, its listen port, its key files. Each ends
in one line `error: ...` naming the problem and what to do, exit status 2 (bad
input) or 1 (the node could not run), never a traceback.

`node run` logs on stderr once it has read its config (`ts=... level=...` lines); the
error is the one other line, and the last."""

from __future__ import annotations

import contextlib
import json
import os
import random
import resource
import socket
import sqlite3
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from p2p_market.core.crypto import devnet_key
from p2p_market.core.envelope import market_id
from p2p_market.markets.devnet import GENESIS_MS, Actor, default_market
from p2p_market.node.api_client import ApiClient, ApiError
from p2p_market.node.keyfile import write_key
from p2p_market.node.storage import Entry, EnvelopeLog
from tests.processes import ANY_PORT, CLI, STARTUP_S, cli, readline

MID = market_id(default_market())


def node_config(
    tmp: Path,
    extra: str = "",
    *,
    key_file: str = "node.pem",
    data_dir: str = "data",
    markets: str = 'preset = "devnet"',
) -> Path:
    """A node config in `tmp` (its key is node.pem), with `extra` [node] lines."""
    if not (tmp / "node.pem").exists():
        write_key(tmp / "node.pem", devnet_key("faults-node"), None)
    config = tmp / "node.toml"
    listen = "" if "listen" in extra else ANY_PORT  # not the default 4701: tests run side by side
    config.write_text(
        f'[node]\nkey_file = "{key_file}"\ndata_dir = "{data_dir}"\n{listen}{extra}\n'
        f"[[markets]]\n{markets}\n"
    )
    return config


def run_node(config: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return cli("node", "run", "--config", str(config), "--log-level", "warning", timeout=timeout)


def node_error(done: subprocess.CompletedProcess[str], code: int) -> str:
    """The error line of a `node run` that failed, after checking its exit status and
    that nothing else but log lines was printed."""
    output = f"exit {done.returncode}\nstdout: {done.stdout}\nstderr: {done.stderr}"
    assert done.returncode == code, output
    assert "Traceback" not in done.stdout + done.stderr, output
    assert done.stdout == "", output
    lines = [line for line in done.stderr.splitlines() if not line.startswith("ts=")]
    assert len(lines) == 1, output
    assert lines[0].startswith("error: ") and done.stderr.splitlines()[-1] == lines[0], output
    return lines[0]


# -- the config file -------------------------------------------------------------------


def test_a_deeply_nested_config_is_one_line(tmp_path: Path) -> None:
    config = node_config(tmp_path, "listen = " + "[" * 100_000 + "]" * 100_000)
    line = node_error(run_node(config), 2)
    assert line == f"error: {config}: not valid TOML: arrays or tables nested too deeply"


def test_a_deeply_nested_market_descriptor_is_one_line(tmp_path: Path) -> None:
    descriptor = tmp_path / "deep.toml"
    descriptor.write_text("name = " + "[" * 30_000 + "]" * 30_000)  # below the size limit
    config = node_config(tmp_path, markets='descriptor = "deep.toml"')
    line = node_error(run_node(config), 2)
    assert line == f"error: markets[0]: {descriptor}: not valid TOML: nested too deeply"


# -- the data dir and its SQLite log ---------------------------------------------------


def write_log(data: Path, bids: int = 3_000) -> Path:
    """The data dir's log with `bids` real bids in it (about 2 MB): many pages."""
    path = data / "envelopes.sqlite"
    who = Actor("faults", default_market())
    now = GENESIS_MS + 3_600_000
    with EnvelopeLog(path) as log:
        log.append_many(
            Entry(MID, who.bid(now=now, price=i, proof_time=1_000, seq=i + 1), now, 2**62)
            for i in range(bids)
        )
    return path


def scribble_on_pages(path: Path) -> None:
    """Garbage over the start of every 7th page but the first (the header stays
    valid, so the file opens and the damage is found while replaying)."""
    rng = random.Random(7)
    data = bytearray(path.read_bytes())
    for offset in range(2 * 4096, len(data), 7 * 4096):
        data[offset : offset + 200] = rng.randbytes(200)
    path.write_bytes(bytes(data))


def truncate(path: Path) -> None:
    os.truncate(path, path.stat().st_size // 2)


def not_sqlite(path: Path) -> None:
    path.write_bytes(b"not SQLite at all " * 300)


def text_row(path: Path) -> None:
    """A row another program wrote: text where the envelope's bytes belong (replayed,
    it was `TypeError: string argument without an encoding`)."""
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        db.execute("INSERT INTO envelopes VALUES (x'00', ?, 'text', 1, 1)", (MID,))


def newer_schema(path: Path) -> None:
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute("PRAGMA user_version = 7")


def a_directory(path: Path) -> None:
    path.unlink()
    path.mkdir()


MOVE_AWAY = "move it away to start from an empty log; the node will sync from peers"
DAMAGE: list[tuple[Callable[[Path], None], str]] = [
    (scribble_on_pages, f"is corrupt (database disk image is malformed): {MOVE_AWAY}"),
    (truncate, f"is corrupt (database disk image is malformed): {MOVE_AWAY}"),
    (not_sqlite, f"is corrupt (file is not a database): {MOVE_AWAY}"),
    (text_row, f"is corrupt (row 3001 of envelopes is not one p2p-market wrote): {MOVE_AWAY}"),
    (newer_schema, "has schema 7, newer than this version's 1: run a newer p2p-market"),
    (a_directory, "is a directory, not a database: move it away"),
]


@pytest.mark.parametrize(("damage", "says"), DAMAGE, ids=[d[0].__name__ for d in DAMAGE])
def test_a_damaged_log_is_one_line_and_exit_1(
    tmp_path: Path, damage: Callable[[Path], None], says: str
) -> None:
    config = node_config(tmp_path)
    path = write_log(tmp_path / "data")
    damage(path)
    line = node_error(run_node(config), 1)
    assert line.startswith(
        f"error: {path}" if damage is a_directory else f"error: database {path} "
    )
    assert says in line, line


@contextlib.contextmanager
def tmpfs(where: Path, size: str, *, read_only: bool = False) -> Iterator[Path]:
    """A tmpfs of `size` mounted on `where` (needs root: the test is skipped if the
    mount is not permitted), unmounted after."""
    where.mkdir(parents=True, exist_ok=True)
    options = f"size={size}" + (",ro" if read_only else "")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip() or done.returncode})")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=True)


@contextlib.contextmanager
def read_only_dir(where: Path) -> Iterator[Path]:
    """A directory the node cannot write: mode 0555 for a normal user; for root
    (whom modes do not stop) a read-only tmpfs."""
    if os.geteuid() != 0:
        where.mkdir()
        where.chmod(0o555)
        try:
            yield where
        finally:
            where.chmod(0o755)
    else:
        with tmpfs(where, "1m", read_only=True):
            yield where


def test_a_read_only_data_dir_is_one_line_and_exit_1(tmp_path: Path) -> None:
    config = node_config(tmp_path)
    with read_only_dir(tmp_path / "data"):
        line = node_error(run_node(config), 1)
    data = tmp_path / "data"
    assert (
        line == f"error: data dir {data} is read-only: make it writable or choose another data_dir"
    )


def test_a_data_dir_that_cannot_be_made_is_one_line_and_exit_1(tmp_path: Path) -> None:
    with read_only_dir(tmp_path / "locked"):
        line = node_error(run_node(node_config(tmp_path, data_dir="locked/data")), 1)
    assert line.startswith(f"error: cannot create data dir {tmp_path / 'locked' / 'data'} (")
    assert line.endswith("make its parent writable or choose another data_dir")
    (tmp_path / "a-file").write_text("not a directory")
    line = node_error(run_node(node_config(tmp_path, data_dir="a-file")), 1)
    assert (
        line == f"error: data dir {tmp_path / 'a-file'} is not a directory: choose another data_dir"
    )


# -- the listen address ----------------------------------------------------------------


def test_a_listen_port_in_use_is_one_line_and_exit_2(tmp_path: Path) -> None:
    """py-libp2p only logged the failed listener: the node went on without a listen
    address, and died on "the host has no TCP listen address yet"."""
    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = node_config(tmp_path, f'listen = ["/ip4/127.0.0.1/tcp/{port}"]')
        line = node_error(run_node(config), 2)
    assert line == (
        f"error: cannot start the node: cannot listen on /ip4/127.0.0.1/tcp/{port} (Address"
        " already in use): choose another listen address or port, or stop what uses it"
    )


def test_a_listen_address_not_of_this_machine_is_one_line_and_exit_2(tmp_path: Path) -> None:
    config = node_config(tmp_path, 'listen = ["/ip4/192.0.2.1/tcp/4001"]')  # TEST-NET-1
    line = node_error(run_node(config), 2)
    assert line.startswith("error: cannot start the node: cannot listen on /ip4/192.0.2.1/tcp/4001")
    assert "(Cannot assign requested address)" in line


# -- key, passphrase and config files ----------------------------------------------------


def bounded(*args: str) -> subprocess.CompletedProcess[str]:
    """`p2p-market ARGS` with its address space capped at 2 GiB: a command that reads
    a file with no end (/dev/zero) fails with a MemoryError instead of filling the
    machine's memory."""

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))

    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, timeout=120, preexec_fn=cap
    )


def test_a_passphrase_too_long_to_encrypt_with_is_one_line(tmp_path: Path) -> None:
    """It was `ValueError: Passwords longer than 1023 bytes are not supported by this
    backend`, from deep in `cryptography`."""
    passphrase = tmp_path / "long.txt"
    passphrase.write_text("x" * 2_000)
    done = cli("keys", "new", "--dir", str(tmp_path), "--passphrase-file", str(passphrase))
    assert node_error(done, 2) == (
        "error: the passphrase is 2000 bytes long: at most 1023 can encrypt a key file"
    )
    assert not (tmp_path / "node.pem").exists()


def test_a_key_or_passphrase_file_with_no_end_is_one_line(tmp_path: Path) -> None:
    config = node_config(tmp_path, 'passphrase_file = "/dev/zero"')
    done = bounded("node", "run", "--config", str(config))
    assert node_error(done, 2) == (
        "error: passphrase file /dev/zero is larger than 64 KiB: is it the right file?"
    )
    config = node_config(tmp_path, key_file="/dev/zero")
    done = bounded("node", "run", "--config", str(config))
    assert node_error(done, 2) == (
        "error: key file /dev/zero is larger than 64 KiB: is it the right file?"
    )


def test_a_config_file_with_no_end_is_one_line() -> None:
    done = bounded("node", "run", "--config", "/dev/zero")
    assert node_error(done, 2) == (
        "error: config file /dev/zero is larger than 1 MiB: is it the right file?"
    )


NUL: list[tuple[dict[str, str], str]] = [
    ({"key_file": "node\\u0000.pem"}, "node.key_file"),
    ({"data_dir": "da\\u0000ta"}, "node.data_dir"),
    ({"extra": 'passphrase_file = "pass\\u0000"'}, "node.passphrase_file"),
    ({"extra": 'listen = ["/ip4/127.0.0.1/tcp/0\\u0000"]'}, "node.listen[0]"),
    ({"extra": '"key\\u0000" = 1'}, "node.key\\u0000"),
    ({"markets": 'descriptor = "market\\u0000.toml"'}, "markets[0].descriptor"),
]


@pytest.mark.parametrize(("settings", "where"), NUL, ids=[n[1] for n in NUL])
def test_a_nul_character_in_the_config_is_one_line(
    tmp_path: Path, settings: dict[str, str], where: str
) -> None:
    """A TOML string may hold U+0000, no path can: it was `ValueError: embedded null
    byte` from the first system call given it."""
    config = node_config(tmp_path, **settings)
    line = node_error(run_node(config), 2)
    assert line == f"error: {config}: {where} holds a NUL character (\\u0000)"


# -- a full disk -------------------------------------------------------------------------


@contextlib.contextmanager
def node_process(config: Path, stderr: Path) -> Iterator[ApiClient]:
    """`node run` with its stderr in a file; its control API once it is ready. Stopped
    after with SIGTERM, which it must obey with exit status 0."""
    with stderr.open("a") as err:
        args = [*CLI, "node", "run", "--config", str(config), "--log-level", "warning"]
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=err, text=True)
        try:
            line = readline(proc, STARTUP_S)
            assert line, stderr.read_text()
            yield ApiClient.for_node(json.loads(line))
            proc.terminate()
            assert proc.wait(timeout=20) == 0, stderr.read_text()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
            if proc.stdout is not None:
                proc.stdout.close()


def test_a_full_disk_refuses_asks_with_507_and_the_node_recovers(tmp_path: Path) -> None:
    """The data dir on a 1 MiB tmpfs, a quarter of it taken by a file the test
    deletes later. Asks are stored until the disk is full, then answered 507 and
    refused (not in the book), the node logging it once; once the file is deleted
    the node takes asks again. After a restart it holds exactly the asks it stored."""
    with tmpfs(tmp_path / "data", "1m"):
        filler = tmp_path / "data" / "filler"
        filler.write_bytes(b"\0" * (256 << 10))
        config = node_config(tmp_path)
        stderr = tmp_path / "node.log"
        with node_process(config, stderr) as api:
            market = api.markets()[0]["id"]
            fields = {"market": market, "max_price": 10, "max_proof_time": 5_000}
            stored: set[str] = set()
            refused: list[ApiError] = []
            for i in range(20_000):
                try:
                    placed = api.place_ask({**fields, "inputs": f"{i:0600x}"})
                except ApiError as exc:
                    refused.append(exc)
                    if len(refused) == 5:
                        break
                else:
                    assert placed.status == "accept" and not refused, placed
                    stored.add(placed.id)
            assert len(refused) == 5 and stored, refused
            for error in refused:
                assert error.status == 507, error
                assert error.message.startswith("not stored: disk full: cannot write ")
            assert {a["id"] for a in api.book(market)["asks"]} == stored
            assert api.status()["storage"].startswith("disk full: ")
            filler.unlink()
            placed = api.place_ask({**fields, "inputs": "ff" * 300})
            assert placed.status == "accept"
            stored.add(placed.id)
            assert api.status()["storage"] == "ok"
        log = stderr.read_text()
        assert "Traceback" not in log, log
        assert log.count("level=ERROR") == 1, log
        assert log.count("cannot write the log: disk full: cannot write ") == 1, log
        assert log.count("the log can be written again; 5 messages were refused") == 1, log
        with node_process(config, stderr) as api:
            assert {a["id"] for a in api.book(market)["asks"]} == stored
