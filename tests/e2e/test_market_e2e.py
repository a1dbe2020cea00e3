"""The market end to end, every node its own `p2p-market` process on 127.0.0.1:

- the happy path: a requester (`p2p-market request`), two provers (`prover run`)
  and a relay-only node (`node run`); the proof is verified and the receipt is
  accepted on every node;
- cancel before assignment with both provers bidding (never assigned, nobody
  proves it), cancel after assignment (refused with a reason), and a winning
  prover SIGKILLed mid-proof: its slot times out and the other prover proves the
  ask in the next round.

Proving is made slow for one prover with an external market whose prove command
(a small Python script) blocks until its prover process is gone.
"""

from __future__ import annotations

import functools
import shlex
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from p2p_market.cli.app import app
from p2p_market.core.crypto import devnet_key
from p2p_market.core.envelope import market_id
from p2p_market.markets.descriptor import read_descriptor
from p2p_market.node.api_client import ApiClient
from p2p_market.node.keyfile import write_key
from p2p_market.proving.pow import pow_ok
from tests.e2e.test_cli_e2e import quick_market, wait_state
from tests.processes import ANY_LISTEN, ANY_PORT, cli, process

PROVER_1 = devnet_key("prover-1").public_key.hex()
PROVER_2 = devnet_key("prover-2").public_key.hex()


def wait_for(what: str, check: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)


def api_of(ready: dict[str, Any]) -> ApiClient:
    """The node's control API, with the token its ready line names."""
    return ApiClient.for_node(ready)


def node_config(tmp: Path, name: str, descriptor: Path, extra: str = "", boot: str = "") -> Path:
    """A `node run` config following the market in `descriptor`, keyed `name`."""
    write_key(tmp / f"{name}.pem", devnet_key(name), None)
    path = tmp / f"{name}.toml"
    bootstrap = f'bootstrap = ["{boot}"]\n' if boot else ""
    path.write_text(
        f'[node]\nkey_file = "{name}.pem"\ndata_dir = "{name}"\n{ANY_PORT}{bootstrap}'
        f'[[markets]]\ndescriptor = "{descriptor.name}"\n{extra}'
    )
    return path


def has_bids(api: ApiClient, mid: str) -> bool:
    """Both provers' bids are in the node's book."""
    return {b["prover"] for b in api.book(mid)["bids"]} == {PROVER_1, PROVER_2}


def one_error_line(stderr: str) -> str:
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: "), stderr
    assert "Traceback" not in stderr
    return lines[0]


def test_happy_path_requester_two_provers_and_a_relay(tmp_path: Path) -> None:
    descriptor = quick_market(tmp_path)
    market = read_descriptor(descriptor)
    mid = market_id(market).hex()
    inputs = tmp_path / "inputs.bin"
    inputs.write_bytes(b"four processes, one proof\n")
    out = tmp_path / "proof.bin"
    with ExitStack() as stack:
        _, relay = stack.enter_context(
            process("node", "run", "--config", str(node_config(tmp_path, "relay-1", descriptor)))
        )
        assert relay["roles"] == []  # relay only: no prover, no requester
        nodes = {"relay-1": relay}
        for name, price in (("prover-1", 9), ("prover-2", 4)):
            args = [
                "prover", "run", "--market", str(descriptor), "--price", str(price),
                "--proof-time", "3000", "--devnet-key", name,
                "--data-dir", str(tmp_path / name), "--bootstrap", relay["addr"], *ANY_LISTEN,
            ]  # fmt: skip
            _, nodes[name] = stack.enter_context(process(*args))
        apis = {name: api_of(ready) for name, ready in nodes.items()}
        for name, api in apis.items():  # every node has both bids before the ask
            wait_for(f"both bids on {name}", functools.partial(has_bids, api, mid))

        # The requester knows only the relay: everything it sees and sends goes through it.
        done = cli(
            "request", "--market", str(descriptor), "--input", str(inputs),
            "--max-price", "20", "--max-proof-time", "10000", "--prefer", "cost",
            "--bootstrap", relay["addr"], "--out", str(out), "--timeout", "60",
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        assert pow_ok(inputs.read_bytes(), market.difficulty, out.read_bytes())
        lines = dict(line.split(":", 1) for line in done.stdout.splitlines())
        ask = lines["ask"].strip()
        assert "prover-2" in lines["prover"]  # the cheaper one, as --prefer cost asks
        assert lines["price paid"].strip() == "4"
        assert "verified" in lines["proof"]

        for name, api in apis.items():  # the accepted receipt reaches every node
            view = wait_state(api, ask, "proven", timeout=20)
            assert view["winners"] == [PROVER_2], name
            assert view["slot_states"] == ["accepted"], name
            assert view["accepted"] == [PROVER_2], name
            assert view["paid"] == 4, name


SCRIPT = """
import hashlib, os, sys, time

def expected(path):
    with open(path, "rb") as f:
        return b"proof:" + hashlib.sha256(f.read()).digest()

mode, inputs, proof = sys.argv[1:4]
if mode == "prove":
    with open(proof, "wb") as f:
        f.write(expected(inputs))
elif mode == "slow":  # tell the test, then block until the prover process is gone
    parent = os.getppid()
    with open(sys.argv[4], "w") as f:
        f.write(str(os.getpid()))
    stop = time.monotonic() + 120
    while os.getppid() == parent and time.monotonic() < stop:
        time.sleep(0.1)
    sys.exit(3)
else:
    with open(proof, "rb") as f:
        sys.exit(0 if f.read() == expected(inputs) else 1)
"""


def test_cancel_before_and_after_assignment_and_a_killed_winner(tmp_path: Path) -> None:
    script = tmp_path / "proofs.py"
    script.write_text(SCRIPT)
    python = f"{shlex.quote(sys.executable)} {shlex.quote(str(script))}"
    marker = tmp_path / "slow-prover-started"
    descriptor = tmp_path / "slow.toml"
    made = cli(
        "market", "create", "--name", "slow", "--proof-system", "external",
        "--verifier", f"{python} verify {{inputs}} {{proof}}",
        "--commit-window-ms", "1500", "--skew-ms", "300", "--stage-ms", "200",
        "--out", str(descriptor),
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    slow = read_descriptor(descriptor)
    mid = market_id(slow).hex()
    config = node_config(tmp_path, "requester-1", descriptor, extra="[requester]\n")
    with ExitStack() as stack:
        _, requester = stack.enter_context(process("node", "run", "--config", str(config)))
        assert requester["roles"] == ["requester"]
        api = api_of(requester)
        ask_fields = {"market": mid, "max_price": 20, "max_proof_time": 10_000}

        # prover-1 is cheaper (it wins) and never finishes; prover-2 proves at once.
        # prover-1 promises 6 s: time enough to see it assigned and refuse a cancel.
        procs, apis = {}, {}
        for name, price, mode, ms in (("prover-1", 5, "slow", 6), ("prover-2", 9, "prove", 3)):
            extra = f" {shlex.quote(str(marker))}" if mode == "slow" else ""
            args = [
                "prover", "run", "--market", str(descriptor), "--price", str(price),
                "--proof-time", f"{ms}000", "--devnet-key", name,
                "--prove-cmd", f"{python} {mode} {{inputs}} {{proof}}{extra}",
                "--data-dir", str(tmp_path / name), "--bootstrap", requester["addr"], *ANY_LISTEN,
            ]  # fmt: skip
            procs[name], ready = stack.enter_context(process(*args))
            apis[name] = api_of(ready)
        backup = apis["prover-2"]
        for where, node in (("the requester", api), *apis.items()):
            wait_for(f"both bids at {where}", functools.partial(has_bids, node, mid))

        # Cancel before assignment, with both provers online, bidding and idle: both
        # fit the ask, and were the cancel without effect prover-1 would win it when
        # its commit window settles. (This `cancel` runs in the test's process: a new
        # one can take longer to start than the 1.5 s window lasts on a busy machine.)
        early = api.place_ask({**ask_fields, "inputs": b"cancel me".hex()})
        assert early.status == "accept", early
        token = ["--api-token-file", requester["api_token_file"]]
        cancelled = CliRunner().invoke(app, ["cancel", early.id, "--api", api.base_url, *token])
        assert cancelled.exit_code == 0, cancelled.output
        assert cancelled.stdout.strip() == f"cancelled ask {early.id}"
        view = wait_state(api, early.id, "cancelled")
        # past the window's settling (window end + skew) everywhere, with a margin
        settled = view["timestamp"] + slow.commit_window_ms + slow.skew_ms + 1_000
        time.sleep(max(0, settled / 1000 - time.time()))
        for where, node in (("the requester", api), *apis.items()):
            view = node.ask(early.id)
            got = (view["state"], view["winners"], view["paid"])
            assert got == ("cancelled", [], 0), where
        assert not marker.exists(), "prover-1 started proving the cancelled ask"

        placed = api.place_ask({**ask_fields, "inputs": b"prove me".hex()})
        assert placed.status == "accept", placed
        ask = placed.id
        view = wait_state(api, ask, "assigned")
        assert view["winners"] == [PROVER_1]  # as the cancelled ask would have been
        wait_for("prover-1 to start proving", marker.exists)

        # Cancel after assignment: refused, with the reason, and the ask stays assigned.
        # (the token from the environment this time, as a script may pass it)
        env = {"P2P_MARKET_API_TOKEN": Path(requester["api_token_file"]).read_text().strip()}
        refused = cli("cancel", ask, "--api", api.base_url, env=env)
        assert refused.returncode == 1, refused.stdout + refused.stderr
        line = one_error_line(refused.stderr)
        assert line.startswith("error: cancel refused"), line
        assert "cancel_after_assignment" in line, line
        assert refused.stdout == ""
        assert api.ask(ask)["state"] == "assigned"

        procs["prover-1"].kill()  # SIGKILL, mid-proof
        procs["prover-1"].wait(timeout=10)
        view = wait_state(api, ask, "proven", timeout=40)
        assert view["winners"] == [PROVER_1, PROVER_2]
        assert view["slot_states"] == ["timed_out", "accepted"]
        assert view["paid"] == 9
        backup_view = wait_state(backup, ask, "proven")
        assert backup_view["slot_states"] == ["timed_out", "accepted"]

        # The early ask stayed cancelled, its winners none, on the nodes still up.
        for node in (api, backup):
            early_view = node.ask(early.id)
            assert (early_view["state"], early_view["winners"]) == ("cancelled", [])
