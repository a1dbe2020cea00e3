"""`p2p-market node run` as a real process: ready line, API, clean SIGTERM, and a
one-line error for a bad config."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from p2p_market.core.crypto import devnet_key
from p2p_market.node.api_client import ApiClient
from p2p_market.node.heap import GEN0_THRESHOLD
from p2p_market.node.keyfile import write_key
from tests.processes import ANY_PORT, process

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
        # what start-up built is out of the collector's sight (node/heap.py)
        assert status["heap"]["frozen"] > 50_000, status["heap"]
        assert status["heap"]["thresholds"][0] == GEN0_THRESHOLD
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


def test_a_private_node_listens_nowhere_and_is_found_through_its_relay(tmp_path: Path) -> None:
    """Two `node run` processes: a relay, and a node with `listen = []` behind it,
    whose ready line names its circuit address and whose status shows its slot; it
    stops cleanly. (Trading through the relay: tests/node/test_relay.py.)"""
    relay_dir, private_dir = tmp_path / "relay", tmp_path / "private"
    relay_dir.mkdir()
    private_dir.mkdir()
    with process(
        "node", "run", "--config", str(write_config(relay_dir, "relay_service = true"))
    ) as (
        _,
        relay,
    ):
        extra = f'reachability = "private"\nrelays = ["{relay["addr"]}"]\n'
        cfg = write_config(private_dir, extra)
        cfg.write_text(cfg.read_text().replace(ANY_PORT, "listen = []\n"))
        write_key(private_dir / "node.pem", devnet_key("process-private"), None, overwrite=True)
        with process("node", "run", "--config", str(cfg)) as (proc, ready):
            assert ready["addr"].startswith(relay["addr"] + "/p2p-circuit/p2p/")
            api = ApiClient.for_node(ready)
            deadline = time.monotonic() + 20
            while not api.status()["reachability"]["relays"][relay["addr"]]["reserved"]:
                assert time.monotonic() < deadline, api.status()["reachability"]
                time.sleep(0.1)
            assert api.status()["reachability"]["mode"] == "private"
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=20) == 0
