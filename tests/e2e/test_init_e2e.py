"""The README's walkthrough as real processes on 127.0.0.1: `p2p-market init relay`,
`init prover`, `init requester`, each config run by `node run` as written, and a
proof bought through the requester's control API with `request --api`. Only the
ports differ from the defaults (`init --listen`, `--api-port`), since tests run side
by side; the prover and the requester bootstrap from the address `init` read off
the relay's template."""

from __future__ import annotations

import socket
import time
from pathlib import Path

from p2p_market.core.envelope import market_id
from p2p_market.markets.devnet import default_market
from p2p_market.node.api_client import ApiClient
from p2p_market.node.config import load_config
from p2p_market.proving.pow import pow_ok
from tests.processes import cli, process


def free_port() -> int:
    """A port nobody listens on now (bound, then released): the relay's, which
    its template fixes so that the others' bootstrap address holds."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def test_init_templates_form_a_devnet_market_that_proves(tmp_path: Path) -> None:
    any_port = ("--listen", "/ip4/127.0.0.1/tcp/0", "--api-port", "0")
    relay_listen = f"/ip4/127.0.0.1/tcp/{free_port()}"
    for role, ports in (
        ("relay", ("--listen", relay_listen, "--api-port", "0")),
        ("prover", any_port),
        ("requester", any_port),
    ):
        done = cli("init", role, "--out", str(tmp_path / f"{role}.toml"), *ports)
        assert done.returncode == 0, done.stdout + done.stderr
    mid = market_id(default_market()).hex()
    with process("node", "run", "--config", str(tmp_path / "relay.toml")) as (_, relay):
        assert relay["roles"] == []
        # the address init wrote into the others' configs is the one the relay has
        assert load_config(tmp_path / "prover.toml").bootstrap == (relay["addr"],)
        with (
            process("node", "run", "--config", str(tmp_path / "prover.toml")) as (_, prover),
            process("node", "run", "--config", str(tmp_path / "requester.toml")) as (_, buyer),
        ):
            assert prover["roles"] == ["prover"] and buyer["roles"] == ["requester"]
            api = ApiClient.for_node(buyer)
            deadline = time.monotonic() + 30
            while not api.book(mid)["bids"]:  # the prover's bid, through the relay
                assert time.monotonic() < deadline, "the prover's bid never reached the requester"
                time.sleep(0.2)
            inputs = tmp_path / "inputs.txt"
            inputs.write_text("hello, prove me\n")
            out = tmp_path / "proof.bin"
            done = cli(
                "request", "--api", f"http://127.0.0.1:{buyer['api_port']}",
                "--api-token-file", buyer["api_token_file"], "--input", str(inputs),
                "--max-price", "20", "--max-proof-time", "10000", "--out", str(out),
                "--timeout", "90",
            )  # fmt: skip
            assert done.returncode == 0, done.stdout + done.stderr
            assert pow_ok(inputs.read_bytes(), default_market().difficulty, out.read_bytes())
            lines = dict(line.split(":", 1) for line in done.stdout.splitlines())
            view = api.ask(lines["ask"].strip())
            assert view["state"] == "proven" and view["paid"] == 10
            assert view["requester"] == buyer["public_key"]
