"""The `p2p-market` command on real files: keys, the demo, and the bench wiring."""

from __future__ import annotations

import json
import subprocess
import sys
import types
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from p2p_market.cli.app import DEVNET_NAMES, app
from p2p_market.core.crypto import devnet_key
from p2p_market.dst.demo import run_demo
from p2p_market.net.host import peer_id_of
from p2p_market.node.keyfile import read_key
from p2p_market.sdk import check_bootstrap

runner = CliRunner()
SCRIPT = Path(sys.executable).parent / "p2p-market"


def invoke(*args: str) -> Result:
    return runner.invoke(app, list(args))


def one_line_error(result: Result, code: int = 2) -> str:
    assert result.exit_code == code, result.output
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in result.output
    return lines[0]


# -- keys ----------------------------------------------------------------------------


def test_keys_new_then_show_print_the_same_public_id(tmp_path: Path) -> None:
    created = invoke("keys", "new", "--name", "alice", "--dir", str(tmp_path))
    assert created.exit_code == 0, created.output
    path = tmp_path / "alice.pem"
    assert str(path) in created.stdout
    pid = read_key(path, None).public_key.hex()
    assert f"public id: {pid}" in created.stdout

    shown = invoke("keys", "show", "--name", "alice", "--dir", str(tmp_path), "--hex")
    assert shown.exit_code == 0, shown.output
    assert shown.stdout.strip() == pid
    by_file = invoke("keys", "show", "--file", str(path))
    assert by_file.stdout.splitlines()[0] == pid


def test_keys_show_prints_the_peer_id_and_the_addresses_to_hand_out(tmp_path: Path) -> None:
    """Issue 13: bootstrap addresses had to be written by hand with /p2p/<peer id>,
    and `keys show` printed the hex key only."""
    invoke("keys", "new", "--name", "n", "--dir", str(tmp_path))
    key = read_key(tmp_path / "n.pem", None)
    peer = peer_id_of(key.public_key).to_base58()
    shown = invoke("keys", "show", "--name", "n", "--dir", str(tmp_path), "--port", "4999")
    assert shown.exit_code == 0, shown.output
    lines = shown.stdout.splitlines()
    assert lines[0] == key.public_key.hex()
    assert lines[1] == f"peer id:   {peer}"
    addrs = [line.removeprefix("bootstrap: ") for line in lines[2:]]
    assert addrs, shown.stdout
    for addr in addrs:
        assert addr.endswith(f"/tcp/4999/p2p/{peer}")
        assert check_bootstrap([addr]) == (addr,)
    assert "port" in one_line_error(invoke("keys", "show", "--dir", str(tmp_path), "--port", "0"))


def test_encrypted_key_through_the_cli(tmp_path: Path) -> None:
    passfile = tmp_path / "pass.txt"
    passfile.write_text("open sesame\n")
    created = invoke("keys", "new", "--dir", str(tmp_path), "--passphrase-file", str(passfile))
    assert created.exit_code == 0, created.output
    path = tmp_path / "node.pem"
    assert path.read_bytes().startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    pid = read_key(path, b"open sesame").public_key.hex()
    shown = invoke("keys", "show", "--dir", str(tmp_path), "--passphrase-file", str(passfile))
    assert shown.exit_code == 0, shown.output
    assert shown.stdout.splitlines()[0] == pid

    line = one_line_error(invoke("keys", "show", "--file", str(path)))
    assert "passphrase is needed" in line
    wrong = tmp_path / "wrong.txt"
    wrong.write_text("guess\n")
    line = one_line_error(
        invoke("keys", "show", "--file", str(path), "--passphrase-file", str(wrong))
    )
    assert "wrong passphrase" in line


def test_missing_passphrase_file_is_one_line_and_exit_2(tmp_path: Path) -> None:
    missing = tmp_path / "x.txt"
    line = one_line_error(
        invoke("keys", "new", "--dir", str(tmp_path), "--passphrase-file", str(missing))
    )
    assert line == f"error: passphrase file not found: {missing}"
    assert not (tmp_path / "node.pem").exists()


def test_keys_new_refuses_to_overwrite(tmp_path: Path) -> None:
    assert invoke("keys", "new", "--dir", str(tmp_path)).exit_code == 0
    before = (tmp_path / "node.pem").read_bytes()
    line = one_line_error(invoke("keys", "new", "--dir", str(tmp_path)))
    assert "already exists" in line
    assert (tmp_path / "node.pem").read_bytes() == before


def test_keys_show_missing_and_non_key_files(tmp_path: Path) -> None:
    assert "key file not found" in one_line_error(invoke("keys", "show", "--dir", str(tmp_path)))
    junk = tmp_path / "junk.pem"
    junk.write_text("hello\n")
    assert "not a PEM key file" in one_line_error(invoke("keys", "show", "--file", str(junk)))
    assert "cannot read" in one_line_error(invoke("keys", "show", "--file", str(tmp_path)))


def test_key_names_are_plain_file_names(tmp_path: Path) -> None:
    line = one_line_error(invoke("keys", "new", "--dir", str(tmp_path), "--name", "../up"))
    assert "invalid key name" in line
    assert list(tmp_path.parent.glob("up.pem")) == []


def test_devnet_keys_are_deterministic(tmp_path: Path) -> None:
    target = tmp_path / "devnet"
    first = invoke("keys", "devnet", "--dir", str(target))
    assert first.exit_code == 0, first.output
    snapshot = {p.name: p.read_bytes() for p in target.iterdir()}
    assert len(snapshot) == len(DEVNET_NAMES) + 1
    readme = (target / "README.md").read_text()
    assert "INSECURE" in readme
    for name in DEVNET_NAMES:
        expected = devnet_key(name).public_key
        assert read_key(target / f"{name}.pem", None).public_key == expected
        assert f"| {name} | `{expected.hex()}` |" in readme
    again = invoke("keys", "devnet", "--dir", str(target))
    assert again.exit_code == 0, again.output
    assert {p.name: p.read_bytes() for p in target.iterdir()} == snapshot


def test_committed_devnet_keys_match_their_names() -> None:
    committed = Path(__file__).resolve().parent.parent / "keys" / "devnet"
    for name in DEVNET_NAMES:
        key = read_key(committed / f"{name}.pem", None)
        assert key.public_key == devnet_key(name).public_key


def test_usage_errors_exit_2() -> None:
    assert invoke("keys", "new", "--bogus").exit_code == 2
    assert invoke("no-such-command").exit_code == 2


@pytest.mark.skipif(not SCRIPT.exists(), reason="console script not installed")
def test_console_script_error_path(tmp_path: Path) -> None:
    """Through the real entry point: one line on stderr, status 2, no traceback."""
    done = subprocess.run(
        [str(SCRIPT), "keys", "show", "--passphrase-file", str(tmp_path / "x.txt")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr == f"error: passphrase file not found: {tmp_path / 'x.txt'}\n"


# -- demo ----------------------------------------------------------------------------


def test_demo_nodes_agree_and_cover_every_outcome() -> None:
    result = run_demo()
    assert result.agree
    assert len({n.state_hash for n in result.nodes}) == 1
    assert len(result.nodes) == 5
    assert all(n.violations == () for n in result.nodes)
    assert result.invariants_hold and result.ok
    assert result.refused == ()
    states = [a.state for a in result.asks]
    assert "proven" in states
    assert "cancelled" in states
    assert any(a.state in ("expired", "open") and not a.winners for a in result.asks)
    for a in result.asks:
        if a.state == "proven":
            assert len(a.winners) == a.replicas
            assert 0 < a.paid <= a.max_price * a.replicas
        else:
            assert a.paid == 0
    assert any(a.replicas == 2 and a.state == "proven" for a in result.asks)
    assert {a.prefer for a in result.asks} == {"cost", "time"}


def test_demo_winners_follow_the_preference() -> None:
    bids = {b.prover: b for b in run_demo().bids}
    asks = [a for a in run_demo().asks if a.state == "proven" and a.replicas == 1]
    cheapest = min(bids.values(), key=lambda b: b.price)
    fastest = min(bids.values(), key=lambda b: b.proof_time)
    assert any(a.prefer == "cost" and a.winners == (cheapest.prover,) for a in asks)
    assert any(a.prefer == "time" and a.winners == (fastest.prover,) for a in asks)


def test_demo_is_deterministic() -> None:
    assert run_demo() == run_demo()


def test_demo_command() -> None:
    result = invoke("demo")
    assert result.exit_code == 0, result.output
    assert "all nodes agree" in result.stdout
    assert "no violations" in result.stdout
    hashes = {n.state_hash for n in run_demo().nodes}
    assert hashes.pop() in result.stdout


# -- bench wiring (the benchmark itself is not run here) -----------------------------


def test_bench_json_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = types.ModuleType("p2p_market.bench.core")
    seen: list[int] = []

    def core_bench(bids: int = 10_000) -> dict[str, float]:
        seen.append(bids)
        return {"ingest_per_s": 1.5, "verify_per_s": 3.0, "ingest_vs_verify": 0.5}

    fake.core_bench = core_bench  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "p2p_market.bench.core", fake)
    result = invoke("bench", "core", "--json", "--bids", "123")
    assert result.exit_code == 0, result.output
    assert seen == [123]
    lines = result.stdout.splitlines()
    assert len(lines) == 1
    assert json.loads(lines[0])["ingest_vs_verify"] == 0.5
    table = invoke("bench", "core", "--bids", "7")
    assert table.exit_code == 0, table.output
    assert "ingest_per_s" in table.stdout


def test_bench_unavailable_is_exit_2(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "p2p_market.bench.core", None)
    line = one_line_error(invoke("bench", "core", "--json"))
    assert "benchmark unavailable" in line


# -- help ------------------------------------------------------------------------------


def _commands(command: object, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], object]]:
    """Every command and group under `command`, with the words that reach it."""
    out: list[tuple[tuple[str, ...], object]] = [(path, command)]
    for name, sub in sorted(getattr(command, "commands", {}).items()):
        out += _commands(sub, (*path, name))
    return out


def test_every_help_shows_the_bracketed_names_its_text_gives() -> None:
    """Rich reads `[word]` as markup and drops it (`node run --help` once said "the
    roles its config names (, ; ...)"): every `[section]` a command's own text names
    must reach its --help page."""
    import re

    import typer.main

    root = typer.main.get_command(app)
    checked = 0
    for path, command in _commands(root):
        text = (getattr(command, "help", None) or "").replace("\\[", "[").replace("\\", "")
        names = set(re.findall(r"\[\[?[a-z_]+\]\]?", text))
        if not names:
            continue
        result = runner.invoke(app, [*path, "--help"], terminal_width=200)
        assert result.exit_code == 0, result.output
        page = " ".join(result.output.split())
        for name in names:
            assert name in page, f"{' '.join(path)} --help lost {name}"
            checked += 1
    assert checked >= 2  # node run names [prover] and [requester]


# -- markets by id ---------------------------------------------------------------------


def test_joining_by_id_and_network_listing_need_their_peer_or_node(tmp_path: Path) -> None:
    unknown = "ab" * 32
    line = one_line_error(
        invoke(
            "prover", "run", "--market", unknown, "--price", "1", "--proof-time", "1000",
            "--devnet-key", "prover-1", "--data-dir", str(tmp_path / "p"),
        )
    )  # fmt: skip
    assert "unknown market id" in line and "--bootstrap" in line
    assert "--api" in one_line_error(invoke("market", "list", "--network"))
    assert "--network" in one_line_error(invoke("market", "list", "--api", "http://127.0.0.1:1"))
