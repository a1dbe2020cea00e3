"""What a user runs, as real processes on 127.0.0.1: `p2p-market prover run` in one
process, `p2p-market request` in another, and the control-API commands; also
`node run` starting the roles its config names."""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path
from typing import Any

from p2p_market.core.crypto import devnet_key
from p2p_market.core.envelope import market_id
from p2p_market.core.messages import sha256
from p2p_market.markets.descriptor import read_descriptor
from p2p_market.node.api_client import ApiClient, ApiError
from p2p_market.node.keyfile import write_key
from p2p_market.proving.pow import pow_ok
from tests.processes import ANY_PORT, cli, process, readline

QUICK = [
    "--proof-system", "pow", "--difficulty", "10",
    "--commit-window-ms", "1000", "--skew-ms", "300", "--stage-ms", "200",
]  # fmt: skip


def quick_market(tmp: Path, name: str = "quick") -> Path:
    path = tmp / f"{name}.toml"
    done = cli("market", "create", "--name", name, *QUICK, "--out", str(path))
    assert done.returncode == 0, done.stderr
    return path


def wait_state(api: ApiClient, ask: str, state: str, timeout: float = 20) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        try:
            view = api.ask(ask)
            if view["state"] == state:
                return view
        except ApiError as exc:
            if exc.status != 404:
                raise
            view = {}  # not there yet
        if time.monotonic() > deadline:
            raise AssertionError(f"ask {ask[:16]} not {state}: {view}")
        time.sleep(0.2)


def wait_metrics(url: str, line: str, timeout: float = 20) -> str:
    """The exposition text at `url` once it holds `line`."""
    deadline = time.monotonic() + timeout
    while True:
        with urllib.request.urlopen(url, timeout=10) as response:
            text: str = response.read().decode()
        if line in text.splitlines():
            return text
        if time.monotonic() > deadline:
            raise AssertionError(f"no {line!r} in {url}:\n{text}")
        time.sleep(0.2)


def test_prover_run_then_request_gets_a_verified_proof(tmp_path: Path) -> None:
    descriptor = quick_market(tmp_path)
    market = read_descriptor(descriptor)
    inputs = tmp_path / "inputs.txt"
    inputs.write_bytes(b"prove me, please\n")
    out = tmp_path / "proof.bin"
    with process(
        "prover", "run", "--market", str(descriptor), "--price", "7", "--proof-time", "3000",
        "--devnet-key", "prover-1", "--data-dir", str(tmp_path / "prover"),
        "--listen", "/ip4/127.0.0.1/tcp/0", "--metrics-port", "0",
    ) as (proc, ready):  # fmt: skip
        assert ready["roles"] == ["prover"]
        assert ready["metrics_url"] == f"http://127.0.0.1:{ready['metrics_port']}/metrics"
        assert ready["prover"]["market"] == market_id(market).hex()
        assert ready["public_key"] == devnet_key("prover-1").public_key.hex()
        banner = readline(proc, 10) + readline(proc, 10)
        assert f"--bootstrap {ready['addr']}" in banner
        done = cli(
            "request", "--market", str(descriptor), "--input", str(inputs),
            "--max-price", "20", "--max-proof-time", "10000", "--prefer", "cost",
            "--bootstrap", ready["addr"], "--out", str(out), "--timeout", "60",
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        assert pow_ok(inputs.read_bytes(), market.difficulty, out.read_bytes())
        lines = dict(line.split(":", 1) for line in done.stdout.splitlines())
        ask = lines["ask"].strip()
        assert lines["price paid"].strip() == "7"
        for step in ("placed", "assigned", "delivered", "verified"):
            assert step in done.stderr
        assert "prover-1" in done.stderr
        api_url = f"http://127.0.0.1:{ready['api_port']}"
        view = wait_state(ApiClient(api_url), ask, "proven", timeout=10)
        assert view["paid"] == 7 and view["slot_states"] == ["accepted"]
        assert view["inputs_hash"] == sha256(inputs.read_bytes()).hex()
        # the prover's metrics: one job, one proof timed, paid 7 on the accepted receipt
        mid = market_id(market).hex()
        paid = f'p2p_market_prover_earned_total{{market="{mid}"}} 7.0'
        metrics = wait_metrics(ready["metrics_url"], paid)
        assert f'p2p_market_prover_jobs_started_total{{market="{mid}"}} 1.0' in metrics
        assert f'p2p_market_prover_proving_seconds_count{{market="{mid}"}} 1.0' in metrics
        shown = cli("status", ask, "--api", api_url, "--json")
        assert shown.returncode == 0, shown.stderr
        assert json.loads(shown.stdout)["state"] == "proven"
        table = cli("status", ask, "--api", api_url)
        assert "PROVEN" in table.stdout and "prover-1" in table.stdout
        book = cli("book", "--api", api_url, "--market", str(descriptor))
        assert book.returncode == 0, book.stderr
        assert "PROVEN" in book.stdout and "prover-1" in book.stdout


def test_request_without_provers_exits_1_and_says_why(tmp_path: Path) -> None:
    descriptor = quick_market(tmp_path)
    write_key(tmp_path / "relay.pem", devnet_key("relay-1"), None)
    config = tmp_path / "relay.toml"
    config.write_text(
        f'[node]\nkey_file = "relay.pem"\ndata_dir = "relay"\n{ANY_PORT}'
        f'[[markets]]\ndescriptor = "{descriptor.name}"\n'
    )
    inputs = tmp_path / "inputs.txt"
    inputs.write_text("x")
    with process("node", "run", "--config", str(config)) as (_, ready):
        done = cli(
            "request", "--market", str(descriptor), "--input", str(inputs),
            "--max-price", "20", "--max-proof-time", "10000",
            "--bootstrap", ready["addr"], "--out", str(tmp_path / "p.bin"),
            "--discover-timeout", "2",
        )  # fmt: skip
        assert done.returncode == 1, done.stdout + done.stderr
        assert "error: no provers found" in done.stderr
        assert done.stdout == ""
        assert not (tmp_path / "p.bin").exists()
        api = ApiClient(f"http://127.0.0.1:{ready['api_port']}")
        assert api.book(market_id(read_descriptor(descriptor)).hex())["asks"] == []


def test_node_run_starts_the_roles_its_config_names(tmp_path: Path) -> None:
    """A prover from [prover], a requester from [requester] that verifies and
    receipts the asks placed through its control API."""
    descriptor = quick_market(tmp_path)
    mid = market_id(read_descriptor(descriptor)).hex()
    write_key(tmp_path / "p.pem", devnet_key("prover-2"), None)
    write_key(tmp_path / "q.pem", devnet_key("requester-1"), None)
    (tmp_path / "p.toml").write_text(
        f'[node]\nkey_file = "p.pem"\ndata_dir = "p"\n{ANY_PORT}'
        f'[prover]\nmarket = "{descriptor.name}"\nprice = 3\nproof_time = 3000\n'
    )
    with process("node", "run", "--config", str(tmp_path / "p.toml")) as (_, prover):
        assert prover["roles"] == ["prover"]
        (tmp_path / "q.toml").write_text(
            f'[node]\nkey_file = "q.pem"\ndata_dir = "q"\n{ANY_PORT}'
            f'bootstrap = ["{prover["addr"]}"]\n'
            f'[[markets]]\ndescriptor = "{descriptor.name}"\n[requester]\n'
        )
        with process("node", "run", "--config", str(tmp_path / "q.toml")) as (_, requester):
            assert requester["roles"] == ["requester"]
            api = ApiClient.for_node(requester)
            deadline = time.monotonic() + 20
            while not api.book(mid)["bids"]:
                assert time.monotonic() < deadline, "the prover's bid never arrived"
                time.sleep(0.2)
            time.sleep(1.5)  # one gossip heartbeat: the requester joins the mesh
            placed = api.place_ask(
                {
                    "market": mid,
                    "max_price": 10,
                    "max_proof_time": 5000,
                    "inputs": b"api inputs".hex(),
                }
            )
            assert placed.status == "accept", placed
            view = wait_state(api, placed.id, "proven", timeout=30)
            assert view["paid"] == 3
            wait_state(ApiClient(f"http://127.0.0.1:{prover['api_port']}"), placed.id, "proven")
            # The same, from the command line: `request --api` buys through this node
            # (its key, its requester role) and writes a proof it verified again. The
            # market by id alone: the node follows it and tells its descriptor.
            inputs = tmp_path / "cli-inputs.txt"
            inputs.write_bytes(b"through the api\n")
            out = tmp_path / "api-proof.bin"
            api_url = f"http://127.0.0.1:{requester['api_port']}"
            unknown = cli(
                "request", "--api", api_url, "--market", "ab" * 32,
                "--input", str(inputs), "--max-price", "10", "--max-proof-time", "5000",
                "--out", str(out), "--api-token-file", requester["api_token_file"],
            )  # fmt: skip
            assert unknown.returncode == 2, unknown.stdout + unknown.stderr
            assert unknown.stderr.startswith("error: the node does not follow market ababab")
            assert unknown.stderr.count("\n") == 1
            done = cli(
                "request", "--api", api_url, "--market", mid,
                "--input", str(inputs), "--max-price", "10", "--max-proof-time", "5000",
                "--out", str(out), "--timeout", "60",
                "--api-token-file", requester["api_token_file"],
            )  # fmt: skip
            assert done.returncode == 0, done.stdout + done.stderr
            market = read_descriptor(descriptor)
            assert pow_ok(inputs.read_bytes(), market.difficulty, out.read_bytes())
            lines = dict(line.split(":", 1) for line in done.stdout.splitlines())
            ask = lines["ask"].strip()
            view = api.ask(ask)
            assert view["state"] == "proven" and view["paid"] == 3
            assert view["requester"] == devnet_key("requester-1").public_key.hex()
            assert "assigned" in done.stderr and "verified by the node" in done.stderr
            # --api with an identity of its own is refused before anything is placed
            asks_before = len(api.book(mid)["asks"])
            bad = cli(
                "request", "--api", api_url, "--market", str(descriptor),
                "--input", str(inputs), "--max-price", "10", "--max-proof-time", "5000",
                "--out", str(out), "--confidential",
            )  # fmt: skip
            assert bad.returncode == 2 and bad.stderr.startswith("error: --confidential")
            assert len(api.book(mid)["asks"]) == asks_before
