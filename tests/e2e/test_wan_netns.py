"""`p2p-market simulate` with a WAN: nodes in their own network namespaces, joined by
the userspace switch (localnet/wan), with delay, loss and a partition that cuts a
running node off and heals it. Needs root, iproute2 and /dev/net/tun; skipped
otherwise, with the reason in the skip (`pytest -rs` shows it; .ci/run says it)."""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from p2p_market.cli.app import app
from p2p_market.localnet.wan.links import LinkShape
from p2p_market.localnet.wan.netns import (
    NetnsError,
    WanNetwork,
    namespaces,
    preflight,
    sweep_stale,
)
from tests.processes import CLI


@pytest.fixture(scope="module")
def can_netns() -> None:
    try:
        preflight()
    except NetnsError as exc:
        pytest.skip(f"WAN netns tests skipped: {exc}")


def leftovers(pid: int) -> list[str]:
    """Namespaces and devices a run with launcher `pid` made and did not remove."""
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    tag = f"pw{pid % 100_000}"
    devices = [line.split(":")[1].strip() for line in links.splitlines() if f" {tag}" in line]
    return [ns for ns in namespaces() if ns.startswith(f"p2pw{pid}-")] + devices


ECHO = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], 9000))
while True:
    data, peer = s.recvfrom(2048)
    s.sendto(data, peer)
"""

PING = """
import json, socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(0.5)
rtts, lost = [], 0
for _ in range(int(sys.argv[2])):
    t = time.perf_counter()
    s.sendto(b"x" * 64, (sys.argv[1], 9000))
    try:
        s.recvfrom(2048)
        rtts.append((time.perf_counter() - t) * 1000)
    except socket.timeout:
        lost += 1
print(json.dumps({"rtts": rtts, "lost": lost}))
"""


def ping(net: WanNetwork, src: str, dst: str, count: int) -> dict[str, list[float] | int]:
    done = subprocess.run(
        [*net.places[src].prefix, sys.executable, "-c", PING, net.places[dst].ip, str(count)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


@pytest.fixture
def two_hosts(can_netns: None) -> Iterator[WanNetwork]:
    net = WanNetwork(["a", "b"], LinkShape.from_rtt(50), seed=1)
    net.open()
    echo = subprocess.Popen(
        [*net.places["b"].prefix, sys.executable, "-c", ECHO, net.places["b"].ip]
    )
    try:
        yield net
    finally:
        echo.kill()
        echo.wait()
        net.close()


def test_the_switch_gives_the_round_trip_cuts_and_heals(two_hosts: WanNetwork) -> None:
    net = two_hosts
    ping(net, "a", "b", 3)  # ARP, and the echo server up
    rtts = ping(net, "a", "b", 20)["rtts"]
    assert isinstance(rtts, list) and len(rtts) >= 19
    assert 50 <= statistics.median(rtts) < 80, rtts
    net.cut("b")
    assert ping(net, "a", "b", 3) == {"rtts": [], "lost": 3}
    net.heal("b")
    assert len(ping(net, "a", "b", 3)["rtts"]) == 3  # type: ignore[arg-type]
    stats = net.stats()
    assert int(str(stats["dropped_cut"])) >= 3 and stats["cut"] == []
    net.close()
    assert leftovers(os.getpid()) == []


def test_a_network_that_fails_half_way_is_undone(can_netns: None) -> None:
    """The namespaces are made before the switch; when the switch cannot make its
    devices (here: a device of that name exists), all of it is removed again and the
    error is one line."""
    taken = f"pw{os.getpid() % 100_000}n1"
    made = subprocess.run(
        ["ip", "link", "add", taken, "type", "veth", "peer", "name", f"{taken}p"],
        capture_output=True,
    )
    assert made.returncode == 0, made.stderr
    try:
        net = WanNetwork(["a", "b", "c"], LinkShape(), seed=0)
        with pytest.raises(
            NetnsError, match=f"^the switch did not start: cannot create TAP device {taken}"
        ):
            net.open()
        assert not [x for x in leftovers(os.getpid()) if x.startswith("p2pw")]
        with pytest.raises(NetnsError, match="the switch is not running"):
            net.stats()
    finally:
        subprocess.run(["ip", "link", "del", taken], capture_output=True)
    assert leftovers(os.getpid()) == []


SMALL = """\
[run]
name = "wan-ci"
seed = 5
duration_s = 18
settle_s = 15
sync_every_s = 2.0
strict_agreement = true
agree_within_s = 30

[network]
rtt_ms = 50
loss = 0.01

[market]
difficulty = 12
commit_window_ms = 1000
stage_ms = 300
skew_ms = 500

[workload]
rate = 0.4
max_price = [6, 12]
max_proof_time = [3000, 6000]
ttl_ms = 12000
work = [10, 12]

[[nodes]]
name = "prover-1"
role = "prover"
price = 5
proof_time = 3000
capacity = 2

[[nodes]]
name = "requester-1"
role = "requester"

[[nodes]]
name = "relay-1"
role = "relay"

[[faults]]
at_s = 3
node = "{cut}"
kind = "partition"
for_s = 8
"""


def test_three_nodes_through_the_switch_agree_after_a_partition(
    can_netns: None, tmp_path: Path
) -> None:
    """The requester is cut off for 8 s (its asks then reach nobody, nobody's reach
    it) and healed; every node must end with the same state, with 50 ms round trips
    and 1 % loss throughout."""
    scenario = tmp_path / "wan-ci.toml"
    scenario.write_text(SMALL.format(cut="requester-1"))
    proc = subprocess.Popen(
        [*CLI, "simulate", str(scenario), "--out", str(tmp_path / "out")],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    out, _ = proc.communicate(timeout=180)
    assert proc.returncode == 0, out
    summary = json.loads(next((tmp_path / "out").glob("wan-ci-*/summary.json")).read_text())
    assert summary["checks"]["ok"] and summary["checks"]["honest_nodes"] == 3
    assert summary["asks"]["proven"] >= 1
    switch = summary["network"]["switch"]
    assert switch["dropped_cut"] > 0 and switch["dropped_loss"] > 0, switch
    assert [f["event"] for f in summary["faults"]] == ["begin", "end"]
    assert summary["checks"]["agreed_after_heal_s"] is not None
    nodes = tmp_path.glob("out/wan-ci-*/nodes/relay-1/node.toml")
    assert '"/ip4/10.233.' in next(nodes).read_text()  # its own address, not loopback
    assert leftovers(proc.pid) == []


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_or_sigterm_leaves_no_namespace_nor_device(
    can_netns: None, tmp_path: Path, sig: signal.Signals
) -> None:
    scenario = tmp_path / "wan-ci.toml"
    scenario.write_text(SMALL.format(cut="relay-1"))
    proc = subprocess.Popen(
        [*CLI, "simulate", str(scenario), "--out", str(tmp_path / "out")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while not any((tmp_path / "out").glob("*/nodes/relay-1/node.log")):
            assert time.monotonic() < deadline, "the run never started a node"
            time.sleep(0.2)
        assert len(leftovers(proc.pid)) >= 3  # the namespaces are there now
        proc.send_signal(sig)
        assert proc.wait(timeout=60) == 1
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert leftovers(proc.pid) == []


def test_a_signal_while_the_switch_is_forked_is_not_lost(can_netns: None, tmp_path: Path) -> None:
    """SIGTERM arrives in a fork hook of the switch's start, before any node
    (tests/localnet/signal_in_fork.py): the run ends interrupted, starts no node, and
    removes what it made. It used to be raised as a KeyboardInterrupt inside the
    hook, where Python drops it, and the run went on to its end."""
    scenario = tmp_path / "wan-ci.toml"
    scenario.write_text(SMALL.format(cut="relay-1"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.localnet.signal_in_fork", str(scenario),
         str(tmp_path / "run"), str(int(signal.SIGTERM)), "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        cwd=Path(__file__).resolve().parents[2],
    )  # fmt: skip
    out, err = proc.communicate(timeout=150)
    assert proc.returncode == 0, err
    result = json.loads(out)
    assert result["interrupted"] is True, result
    assert result["error"] == "interrupted (SIGTERM): every node was stopped"
    assert set(result["starts"].values()) == {0}
    assert leftovers(proc.pid) == []


def _as_nobody() -> list[str]:
    return (
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] if os.geteuid() == 0 else []
    )


def test_without_root_simulate_netns_is_one_line_and_exit_2() -> None:
    """As root, the test drops to nobody (setpriv) for the command; the scenario is
    in a file nobody can read (pytest's tmp_path is not). A checkout in a directory
    only root may enter (e.g. under `mktemp -d`) cannot be run as nobody at all: then
    the test says so and skips."""
    probe = subprocess.run(
        [*_as_nobody(), *CLI, "--help"], capture_output=True, text=True, timeout=60
    )
    if probe.returncode != 0:
        pytest.skip(f"nobody cannot run this checkout's p2p-market: {probe.stderr.strip()[-200:]}")
    with tempfile.NamedTemporaryFile("w", suffix=".toml", dir="/tmp") as scenario:
        scenario.write(SMALL.format(cut="relay-1"))
        scenario.flush()
        os.chmod(scenario.name, 0o644)
        done = subprocess.run(
            [*_as_nobody(), *CLI, "simulate", scenario.name, "--out", "/nonexistent"],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "HOME": "/nonexistent"},
        )
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.strip() == "error: --netns needs root (network namespaces and TAP devices)"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--loss", "0.9"], "error: --loss must be a number between 0 and 0.5"),
        (["--rtt-ms", "-5"], "error: --rtt-ms must be a number between 0 and 10000"),
        (["--netns", "--jitter-ms", "20000"], "error: --jitter-ms must be a number between 0 and"),
    ],
)
def test_bad_network_options_are_one_line_and_exit_2(
    tmp_path: Path, args: list[str], message: str
) -> None:
    scenario = tmp_path / "wan-ci.toml"
    scenario.write_text(SMALL.format(cut="relay-1"))
    result = CliRunner().invoke(app, ["simulate", str(scenario), *args])
    assert result.exit_code == 2, result.output
    assert result.output.strip().startswith(message) and result.output.count("\n") == 1


def test_a_partition_without_a_network_is_one_line_and_exit_2(tmp_path: Path) -> None:
    scenario = tmp_path / "wan-ci.toml"
    scenario.write_text(
        SMALL.format(cut="relay-1").replace("[network]\nrtt_ms = 50\nloss = 0.01\n", "")
    )
    result = CliRunner().invoke(app, ["simulate", str(scenario)])
    assert (result.exit_code, result.output.strip()) == (
        2,
        "error: a partition fault needs a [network] section or simulate --netns",
    )


def test_namespaces_a_killed_launcher_left_are_swept_by_the_next_run(can_netns: None) -> None:
    """A launcher killed with SIGKILL cannot clean up: its nodes and switch die with
    it (PR_SET_PDEATHSIG), its namespaces stay until the next run deletes them."""
    dead = subprocess.Popen(["true"])
    dead.wait()  # a pid that no process has now
    stale = f"p2pw{dead.pid}-0"
    subprocess.run(["ip", "netns", "add", stale], check=True, capture_output=True)
    try:
        assert stale in sweep_stale()
        assert stale not in namespaces()
    finally:
        subprocess.run(["ip", "netns", "del", stale], capture_output=True)
