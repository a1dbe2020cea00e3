"""`p2p-market node run` as a real process: ready line, API, clean SIGTERM, and a
one-line error for a bad config."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from p2p_market.core.crypto import devnet_key
from p2p_market.node.api_client import ApiClient
from p2p_market.node.keyfile import write_key
from tests.processes import ANY_PORT

CLI = [sys.executable, "-m", "p2p_market.cli"]


def write_config(tmp: Path, extra: str = "") -> Path:
    write_key(tmp / "node.pem", devnet_key("process-node"), None)
    cfg = tmp / "node.toml"
    cfg.write_text(
        f'[node]\nkey_file = "node.pem"\ndata_dir = "data"\napi_port = 0\n{ANY_PORT}{extra}\n'
        '[[markets]]\npreset = "devnet"\n'
    )
    return cfg


def test_node_runs_serves_its_api_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    proc = subprocess.Popen(
        [*CLI, "node", "run", "--config", str(cfg)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        ready = json.loads(proc.stdout.readline())
        assert ready["event"] == "ready"
        assert ready["api_token_file"] == str(tmp_path / "data" / "api.token")
        api = ApiClient.for_node(ready)
        status = api.status()
        assert status["public_key"] == devnet_key("process-node").public_key.hex()
        market = api.markets()[0]["id"]
        placed = api.place_bid({"market": market, "price": 5, "proof_time": 1000})
        assert placed.status == "accept"
        assert len(api.book(market)["bids"]) == 1
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert (tmp_path / "data" / "envelopes.sqlite").exists()


def test_bad_config_is_one_line_and_exit_2(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, "bogus = 1")
    out = subprocess.run(
        [*CLI, "node", "run", "--config", str(cfg)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == ["error: unknown setting node.bogus"]
    missing = subprocess.run(
        [*CLI, "node", "run", "--config", str(tmp_path / "nope.toml")],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ},
    )
    assert missing.returncode == 2
    assert "config file not found" in missing.stderr and len(missing.stderr.splitlines()) == 1
