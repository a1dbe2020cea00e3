"""Faults in a node's own resources, with real `p2p-market node run` processes: its
config file, its data dir and SQLite log, its listen port, its key files. Each ends
in one line `error: ...` naming the problem and what to do, exit status 2 (bad
input) or 1 (the node could not run), never a traceback.

`node run` logs on stderr once it has read its config (`ts=... level=...` lines); the
error is the one other line, and the last."""

from __future__ import annotations

import subprocess
from pathlib import Path

from p2p_market.core.crypto import devnet_key
from p2p_market.node.keyfile import write_key
from tests.processes import cli


def node_config(tmp: Path, extra: str = "", *, markets: str = 'preset = "devnet"') -> Path:
    """A node config in `tmp` (key node.pem, data dir `data`), with `extra` [node] lines."""
    if not (tmp / "node.pem").exists():
        write_key(tmp / "node.pem", devnet_key("faults-node"), None)
    config = tmp / "node.toml"
    config.write_text(
        f'[node]\nkey_file = "node.pem"\ndata_dir = "data"\n{extra}\n[[markets]]\n{markets}\n'
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
