"""Finding and reaching peers across restarts and names, exposing the API, and clocks
(issue 13), with whole nodes on real hosts in one trio run."""

from __future__ import annotations

import json
import logging
import socket
import time
from pathlib import Path
from typing import Any

import pytest
import trio

from p2p_market.cli.common import first_of
from p2p_market.core.crypto import devnet_key
from p2p_market.core.envelope import seal
from p2p_market.core.messages import Bid
from p2p_market.net.addrs import ResolveError, interface_ips, resolve
from p2p_market.node.api_client import ApiClient, ApiError
from p2p_market.node.api_token import read_token
from p2p_market.node.config import NodeConfig
from p2p_market.node.known_peers import FILE, KnownPeers
from p2p_market.node.runtime import Node
from tests.node.test_runtime import MARKET, MID, running, wait_until


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def node(tmp: Path, name: str, **settings: object) -> Node:
    cfg = NodeConfig(
        key_file=tmp / f"{name}.pem",
        data_dir=tmp / name,
        markets=(MARKET,),
        frames_per_second=50.0,
        **settings,  # type: ignore[arg-type]
    )
    return Node(cfg, devnet_key(f"reach-{name}"))


async def start(nursery: trio.Nursery, n: Node) -> trio.CancelScope:
    """Run `n` in `nursery` until the returned scope is cancelled."""
    scope = trio.CancelScope()

    async def run(task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        with scope:
            await n.run(task_status=task_status)

    await nursery.start(run)
    return scope


async def test_a_bootstrap_node_restarted_on_a_new_port_finds_its_peers_again(
    tmp_path: Path,
) -> None:
    """Issue 13: the bootstrap node, restarted on another port, stayed at 0 peers: it
    had no bootstrap list, and the others redialled only its old address. It now
    remembers its peers (peers.json in its data dir) and dials them."""
    first, second = free_port(), free_port()
    boot = node(tmp_path, "boot", listen=(f"/ip4/127.0.0.1/tcp/{first}",))
    async with trio.open_nursery() as nursery:
        stop_boot = await start(nursery, boot)
        assert boot.gossip is not None
        member = node(tmp_path, "member", bootstrap=(boot.gossip.addr,))
        await start(nursery, member)
        assert member.host is not None
        member_id = member.host.get_id()
        known = tmp_path / "boot" / FILE
        await wait_until(lambda: boot.status()["peers"] == 1)
        await wait_until(lambda: known.exists() and member_id.to_base58() in known.read_text())

        stop_boot.cancel()
        await wait_until(lambda: member.status()["peers"] == 0)
        again = node(tmp_path, "boot", listen=(f"/ip4/127.0.0.1/tcp/{second}",))
        await start(nursery, again)
        assert again.gossip is not None and f"/tcp/{second}/" in again.gossip.addr
        assert again.host is not None
        network = again.host.get_network()
        await wait_until(lambda: member_id in network.connections, timeout=20)
        nursery.cancel_scope.cancel()


def test_the_known_peers_file_is_bounded_and_survives_junk(tmp_path: Path) -> None:
    known = KnownPeers(tmp_path, limit=3)
    known.note([f"/ip4/10.0.0.{i}/tcp/4701/p2p/Qm{i}" for i in range(5)])
    assert len(known.addrs) == 3
    known.note(["/ip4/10.0.0.9/tcp/4701/p2p/Qm9"])
    assert known.addrs[0].startswith("/ip4/10.0.0.9/") and len(known.addrs) == 3
    known.save_if_due(0.0)
    assert json.loads((tmp_path / FILE).read_text()) == known.addrs
    (tmp_path / FILE).write_text("{not json")
    assert KnownPeers(tmp_path).addrs == []


async def test_a_dns_bootstrap_entry_is_resolved_at_dial_time(tmp_path: Path) -> None:
    assert await resolve("/dns4/localhost/tcp/4701/p2p/X") == ["/ip4/127.0.0.1/tcp/4701/p2p/X"]
    with pytest.raises(ResolveError, match=r"cannot resolve no-such-host\.invalid"):
        await resolve("/dns4/no-such-host.invalid/tcp/4701/p2p/X")
    a = node(tmp_path, "dns-a")
    async with running(a) as nursery:
        assert a.gossip is not None and a.host is not None
        port = a.gossip.addr.split("/")[4]
        named = f"/dns4/localhost/tcp/{port}/p2p/{a.host.get_id().to_base58()}"
        b = node(tmp_path, "dns-b", bootstrap=(named,))
        await nursery.start(b.run)
        await wait_until(lambda: b.status()["peers"] == 1)


async def test_no_bootstrap_reachable_is_one_error_line_naming_why(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    peer = devnet_key("nobody")
    from p2p_market.net.host import peer_id_of

    bad = f"/dns4/no-such-host.invalid/tcp/4701/p2p/{peer_id_of(peer.public_key).to_base58()}"
    lonely = node(tmp_path, "lonely", bootstrap=(bad,))
    with caplog.at_level(logging.ERROR, logger="p2p_market.node"):
        async with running(lonely):
            await wait_until(lambda: any("no bootstrap peer" in r.message for r in caplog.records))
            await trio.sleep(0.5)
    lines = [r.getMessage() for r in caplog.records if "no bootstrap peer" in r.getMessage()]
    assert len(lines) == 1 and "\n" not in lines[0]
    assert "cannot resolve no-such-host.invalid" in lines[0]


async def test_messages_from_the_future_are_told_once_and_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 13: a clock beyond the skew tolerance dropped messages with only a
    counter moving."""
    n = node(tmp_path, "clock")
    signer = devnet_key("fast-clock")
    now = n.clock()
    ahead = MARKET.skew_ms + 60_000

    def bid(seq: int) -> bytes:
        fields = dict(price=1, proof_time=1000, capacity=1, expires_at=now + ahead + 600_000)
        return seal(Bid(market=MID, timestamp=now + ahead, seq=seq, **fields), signer)

    with caplog.at_level(logging.WARNING, logger="p2p_market.node"):
        for seq in (1, 2, 3):
            assert n.apply_raw(bid(seq)).reason.value == "from_future"
    warnings = [r.getMessage() for r in caplog.records if "in the future" in r.getMessage()]
    assert len(warnings) == 1, warnings  # rate-limited: once per signer per minute
    assert signer.public_key.hex()[:16] in warnings[0] and "NTP" in warnings[0]
    status = n.status()["from_future"]
    assert status["dropped"] == 3
    assert status["last"]["signer"] == signer.public_key.hex()
    assert status["last"]["ahead_ms"] >= ahead - 1000


async def test_a_clock_off_by_more_than_the_tolerance_is_told_with_the_peers_offsets(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 13, finding 7: the warning says where the peers' clocks stand against
    this node's (from what gossip brought), so that an operator can tell whose clock
    is off. A node whose clock runs 5 s past the tolerance bids; its peer drops the
    bid and tells the fast node's offset, measured over the real gossip path."""
    ahead = MARKET.skew_ms + 5_000
    fast = Node(
        NodeConfig(
            key_file=tmp_path / "fast.pem",
            data_dir=tmp_path / "fast",
            frames_per_second=50.0,
            markets=(MARKET,),
        ),
        devnet_key("reach-fast-clock"),
        clock=lambda: time.time_ns() // 1_000_000 + ahead,
    )
    with caplog.at_level(logging.WARNING, logger="p2p_market.node"):
        async with running(fast) as nursery:
            assert fast.gossip is not None
            honest = node(tmp_path, "honest", bootstrap=(fast.gossip.addr,))
            await nursery.start(honest.run)
            assert honest.gossip is not None
            await fast.gossip.wait_for_mesh(MID, honest.gossip.peer_id)
            await fast.place_bid({"market": MID.hex(), "price": 3, "proof_time": 1000})
            await wait_until(lambda: honest.status()["from_future"]["dropped"] >= 1)
    offsets = honest.status()["from_future"]["peer_offsets"]
    assert offsets["signers"] == 1
    assert ahead - 1_000 <= offsets["median_ms"] <= ahead + 1_000
    lines = [r.getMessage() for r in caplog.records if "in the future" in r.getMessage()]
    assert len(lines) == 1
    assert "peers' clocks against this node's: median +" in lines[0]


REMOTE = [str(ip) for ip in interface_ips(4) if not ip.is_loopback]


@pytest.mark.skipif(not REMOTE, reason="no non-loopback IPv4 address to bind the API to")
async def test_an_api_off_loopback_needs_the_token_on_every_call(tmp_path: Path) -> None:
    ip = REMOTE[0]
    n = node(
        tmp_path,
        "exposed",
        api_listen=ip,
        metrics_listen=ip,
        metrics_port=0,
        api_token_everywhere=True,
    )
    async with running(n):
        token = read_token(n.api_token_file)
        anonymous = ApiClient(f"http://{ip}:{n.api_port}")
        with pytest.raises(ApiError) as refused:
            await trio.to_thread.run_sync(anonymous.status)
        assert refused.value.status == 401
        owner = ApiClient(f"http://{ip}:{n.api_port}", token=token)
        status = await trio.to_thread.run_sync(owner.status)
        assert status["api_port"] == n.api_port

        def scrape(auth: str | None) -> int:
            import urllib.error
            import urllib.request

            req = urllib.request.Request(f"http://{ip}:{n.metrics_port}/metrics")
            if auth:
                req.add_header("Authorization", f"Bearer {auth}")
            try:
                with urllib.request.urlopen(req, timeout=5) as answer:
                    return int(answer.status)
            except urllib.error.HTTPError as exc:
                return exc.code

        assert await trio.to_thread.run_sync(scrape, None) == 401
        assert await trio.to_thread.run_sync(scrape, token) == 200

        def get(host_header: str, origin: str | None = None) -> int:
            """GET /v1/status with the token and the given Host (and Origin)."""
            import http.client

            conn = http.client.HTTPConnection(ip, n.api_port, timeout=5)
            headers = {"Host": host_header, "Authorization": f"Bearer {token}"}
            if origin is not None:
                headers["Origin"] = origin
            try:
                conn.request("GET", "/v1/status", headers=headers)
                return conn.getresponse().status
            finally:
                conn.close()

        # With the token on every call, the node may be named by any name (a DNS
        # name of the machine); a browser's Origin must still be the Host's own.
        named = f"node.example:{n.api_port}"
        assert await trio.to_thread.run_sync(get, named) == 200
        assert await trio.to_thread.run_sync(get, named, f"http://{named}") == 200
        assert await trio.to_thread.run_sync(get, named, "http://evil.example") == 403
        assert await trio.to_thread.run_sync(get, "node.example:1") == 421  # wrong port


async def test_an_api_off_loopback_without_the_token_everywhere_does_not_start(
    tmp_path: Path,
) -> None:
    n = node(tmp_path, "open", api_listen="0.0.0.0")
    with pytest.raises(BaseExceptionGroup) as info:
        async with running(n):
            pass
    refused = first_of(info.value, ValueError)
    assert refused is not None and "unless the token is required on every call" in str(refused)


def test_the_ready_line_names_where_the_api_is() -> None:
    from p2p_market.node.service import api_url

    assert api_url("127.0.0.1", 8080) == "http://127.0.0.1:8080"
    assert api_url("0.0.0.0", 8080) == "http://127.0.0.1:8080"
    assert api_url("10.0.0.5", 8080) == "http://10.0.0.5:8080"
    assert api_url("fd00::2", 8080) == "http://[fd00::2]:8080"


def test_request_with_an_unresolvable_bootstrap_name_fails_at_once_in_one_line(
    tmp_path: Path,
) -> None:
    from p2p_market.net.host import peer_id_of
    from tests.processes import cli

    inputs = tmp_path / "in.bin"
    inputs.write_bytes(b"x")
    peer = peer_id_of(devnet_key("nobody").public_key).to_base58()
    started = time.monotonic()
    done = cli(
        "request", "--input", str(inputs), "--max-price", "10", "--max-proof-time", "5000",
        "--out", str(tmp_path / "p.bin"),
        "--bootstrap", f"/dns4/no-such-host.invalid/tcp/4701/p2p/{peer}",
        timeout=60,
    )  # fmt: skip
    assert done.returncode == 1, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot resolve no-such-host.invalid" in lines[0], done.stderr
    assert time.monotonic() - started < 25  # not the 30 s discovery timeout


def test_request_listen_on_a_port_in_use_is_one_line(tmp_path: Path) -> None:
    from p2p_market.net.host import peer_id_of
    from tests.processes import cli

    inputs = tmp_path / "in.bin"
    inputs.write_bytes(b"x")
    peer = peer_id_of(devnet_key("nobody").public_key).to_base58()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = cli(
            "request", "--input", str(inputs), "--max-price", "10", "--max-proof-time", "5000",
            "--out", str(tmp_path / "p.bin"), "--listen", f"/ip4/127.0.0.1/tcp/{port}",
            "--bootstrap", f"/ip4/127.0.0.1/tcp/1/p2p/{peer}", timeout=60,
        )  # fmt: skip
    assert done.returncode == 2, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(
        f"error: cannot start the node: cannot listen on /ip4/127.0.0.1/tcp/{port}"
    )
