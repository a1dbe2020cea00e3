"""Nodes in two network namespaces joined by a veth pair: other machines, as far as
addresses go (issue 13 was measured with six namespaces).

A hub bound to 0.0.0.0 in one namespace, two members bound to 0.0.0.0 in the other,
each knowing only the hub. Before, every node told its peers `/ip4/0.0.0.0/…`, so
the members never found each other and the network stayed a star around the hub.
Now the hub's banner names its veth address, one member announces its address
(`announce`), the other tells its interface addresses, and peer exchange joins the
members directly. Needs root and `ip netns`; skipped otherwise."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from p2p_market.core.crypto import devnet_key
from p2p_market.markets.descriptor import read_descriptor
from p2p_market.node.keyfile import write_key
from p2p_market.proving.pow import pow_ok
from tests.e2e.test_cli_e2e import quick_market
from tests.processes import CLI, process


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10)


@pytest.fixture
def namespaces() -> Iterator[tuple[str, str, str, str]]:
    """Two namespaces, a veth pair between them: (ns_a, ip_a, ns_b, ip_b)."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("network namespaces need root and iproute2's `ip`")
    tag = f"p2pm{os.getpid() % 100_000}"
    ns_a, ns_b = f"{tag}a", f"{tag}b"
    subnet = 100 + os.getpid() % 100
    ip_a, ip_b = f"10.231.{subnet}.1", f"10.231.{subnet}.2"
    made = _ip("netns", "add", ns_a)
    if made.returncode != 0:
        pytest.skip(f"cannot create a network namespace: {made.stderr.strip()}")
    try:
        steps = [
            ("netns", "add", ns_b),
            ("link", "add", f"{tag}va", "type", "veth", "peer", "name", f"{tag}vb"),
            ("link", "set", f"{tag}va", "netns", ns_a),
            ("link", "set", f"{tag}vb", "netns", ns_b),
            ("-n", ns_a, "addr", "add", f"{ip_a}/24", "dev", f"{tag}va"),
            ("-n", ns_b, "addr", "add", f"{ip_b}/24", "dev", f"{tag}vb"),
            ("-n", ns_a, "link", "set", f"{tag}va", "up"),
            ("-n", ns_b, "link", "set", f"{tag}vb", "up"),
            ("-n", ns_a, "link", "set", "lo", "up"),
            ("-n", ns_b, "link", "set", "lo", "up"),
        ]
        for step in steps:
            done = _ip(*step)
            if done.returncode != 0:
                pytest.skip(f"cannot set up the veth pair: ip {' '.join(step)}: {done.stderr}")
        yield ns_a, ip_a, ns_b, ip_b
    finally:
        _ip("netns", "del", ns_a)
        _ip("netns", "del", ns_b)


def config(tmp: Path, name: str, port: int, extra: str = "") -> Path:
    write_key(tmp / f"{name}.pem", devnet_key(f"netns-{name}"), None)
    path = tmp / f"{name}.toml"
    path.write_text(
        f'[node]\nkey_file = "{name}.pem"\ndata_dir = "{name}"\n'
        f'listen = ["/ip4/0.0.0.0/tcp/{port}"]\nsync_every_s = 1.0\n{extra}'
        '[[markets]]\npreset = "devnet"\n'
    )
    return path


def status(ns: str, ready: dict[str, Any]) -> dict[str, Any]:
    """The node's status, asked from inside its namespace (its API is on loopback)."""
    script = (
        "import json,sys;from p2p_market.node.api_client import ApiClient;"
        f"print(json.dumps(ApiClient('http://127.0.0.1:{ready['api_port']}').status()))"
    )
    done = subprocess.run(
        ["ip", "netns", "exec", ns, CLI[0], "-c", script],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def test_nodes_bound_to_0000_find_each_other_by_the_addresses_they_tell(
    namespaces: tuple[str, str, str, str], tmp_path: Path
) -> None:
    ns_a, ip_a, ns_b, ip_b = namespaces
    in_a, in_b = ("ip", "netns", "exec", ns_a), ("ip", "netns", "exec", ns_b)
    with ExitStack() as stack:
        _, hub = stack.enter_context(
            process("node", "run", "--config", str(config(tmp_path, "hub", 4701)), prefix=in_a)
        )
        # The banner hands out the veth address, not 0.0.0.0 nor loopback.
        assert hub["addr"].startswith(f"/ip4/{ip_a}/tcp/4701/p2p/"), hub["addr"]
        boot = f'bootstrap = ["{hub["addr"]}"]\n'
        announced = f'announce = ["/ip4/{ip_b}/tcp/4701"]\n'
        _, one = stack.enter_context(
            process(
                "node", "run", "--config", str(config(tmp_path, "one", 4701, boot + announced)),
                prefix=in_b,
            )
        )  # fmt: skip
        assert one["addr"] == f"/ip4/{ip_b}/tcp/4701/p2p/" + one["addr"].rsplit("/", 1)[1]
        deadline = time.monotonic() + 20
        while status(ns_a, hub)["peers"] != 1:
            assert time.monotonic() < deadline, "the member never reached the hub"
            time.sleep(0.5)
        _, two = stack.enter_context(
            process(
                "node", "run", "--config", str(config(tmp_path, "two", 4702, boot)), prefix=in_b
            )
        )
        assert two["addr"].startswith(f"/ip4/{ip_b}/tcp/4702/p2p/"), two["addr"]
        # Peer exchange through the hub joins the two members directly.
        deadline = time.monotonic() + 30
        while status(ns_b, two)["peers"] < 2 or status(ns_b, one)["peers"] < 2:
            assert time.monotonic() < deadline, (status(ns_b, one), status(ns_b, two))
            time.sleep(0.5)
        told = status(ns_a, hub)["advertised_remote"]
        assert told and all(str(a).startswith(f"/ip4/{ip_a}/") for a in told), told


def test_a_confidential_ask_across_namespaces_gets_its_proof(
    namespaces: tuple[str, str, str, str], tmp_path: Path
) -> None:
    """Issue 13: confidential asks failed across namespaces ("cannot reach the
    recipient"): the requester learnt only 0.0.0.0 for the prover and could not send
    it the inputs. A hub and a prover (0.0.0.0) in one namespace, a `request
    --confidential` (its node on 0.0.0.0, --listen) in the other, knowing the hub."""
    ns_a, ip_a, ns_b, _ = namespaces
    in_a, in_b = ("ip", "netns", "exec", ns_a), ("ip", "netns", "exec", ns_b)
    descriptor = quick_market(tmp_path)
    market = read_descriptor(descriptor)
    hub_config = (
        config(tmp_path, "hub", 4701)
        .read_text()
        .replace('preset = "devnet"', f'descriptor = "{descriptor.name}"')
    )
    (tmp_path / "hub.toml").write_text(hub_config)
    inputs, out = tmp_path / "inputs.txt", tmp_path / "proof.bin"
    inputs.write_bytes(b"secret inputs\n")
    with ExitStack() as stack:
        _, hub = stack.enter_context(
            process("node", "run", "--config", str(tmp_path / "hub.toml"), prefix=in_a)
        )
        assert hub["addr"].startswith(f"/ip4/{ip_a}/tcp/4701/")
        stack.enter_context(
            process(
                "prover", "run", "--market", str(descriptor), "--price", "7",
                "--proof-time", "3000", "--devnet-key", "prover-1",
                "--data-dir", str(tmp_path / "prover"), "--listen", "/ip4/0.0.0.0/tcp/4702",
                "--bootstrap", hub["addr"], prefix=in_a,
            )
        )  # fmt: skip
        done = subprocess.run(
            [
                *in_b, *CLI, "request", "--market", str(descriptor), "--input", str(inputs),
                "--max-price", "20", "--max-proof-time", "10000", "--confidential",
                "--listen", "/ip4/0.0.0.0/tcp/4703", "--bootstrap", hub["addr"],
                "--out", str(out), "--timeout", "90",
            ],
            capture_output=True, text=True, timeout=150,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        assert pow_ok(inputs.read_bytes(), market.difficulty, out.read_bytes())
