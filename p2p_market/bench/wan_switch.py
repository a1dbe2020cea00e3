"""What the userspace WAN switch costs (`p2p-market bench wan-switch`): two network
namespaces joined through it with no delay nor loss, beside the same two joined by
a kernel veth pair, measured in the same run: UDP round trips (p50/p99), UDP
datagrams forwarded per second under a flood, and TCP throughput. The ratios say
how far the switch is from a wire; the absolute numbers depend on the machine."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from p2p_market.localnet.wan.links import LinkShape
from p2p_market.localnet.wan.netns import PREFIX, NetnsError, WanNetwork, preflight

SERVER = r"""
import socket, sys, threading
ip = sys.argv[1]
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind((ip, 9000))
f = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); f.bind((ip, 9001))
f.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
t = socket.socket(); t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
t.bind((ip, 9002)); t.listen()
def echo():
    while True:
        d, a = u.recvfrom(2048); u.sendto(d, a)
def flood():  # count datagrams; a 1-byte datagram asks for the count
    n = 0
    while True:
        d, a = f.recvfrom(2048)
        if len(d) == 1:
            f.sendto(str(n).encode(), a); n = 0
        else:
            n += 1
def sink():
    while True:
        c, _ = t.accept()
        while c.recv(1 << 16):
            pass
        c.close()
for fn in (echo, flood, sink):
    threading.Thread(target=fn, daemon=True).start()
print("up", flush=True)
threading.Event().wait()
"""

CLIENT = r"""
import json, socket, sys, time
ip = sys.argv[1]
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.settimeout(1)
rtts = []
for i in range(1100):
    t = time.perf_counter(); u.sendto(b"x" * 64, (ip, 9000))
    try:
        u.recvfrom(2048)
    except socket.timeout:
        continue
    if i >= 100:
        rtts.append((time.perf_counter() - t) * 1e6)
rtts.sort()
f = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); f.settimeout(2)
f.sendto(b"?", (ip, 9001)); f.recvfrom(64)
sent, end = 0, time.perf_counter() + 2.0
while time.perf_counter() < end:
    for _ in range(100):
        try:
            f.sendto(b"y" * 200, (ip, 9001)); sent += 1
        except OSError:
            pass
time.sleep(0.3)
f.sendto(b"?", (ip, 9001)); got = int(f.recvfrom(64)[0])
t = socket.create_connection((ip, 9002))
block, total, end = b"z" * 65536, 0, time.perf_counter() + 2.0
start = time.perf_counter()
while time.perf_counter() < end:
    total += t.send(block)
t.close()
print(json.dumps({
    "rtt_p50_us": round(rtts[len(rtts) // 2]), "rtt_p99_us": round(rtts[int(len(rtts) * 0.99)]),
    "udp_sent_per_s": round(sent / 2), "udp_forwarded_per_s": round(got / 2),
    "tcp_mb_per_s": round(total / (time.perf_counter() - start) / 1e6, 1),
}))
"""


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=20)
    if done.returncode != 0:
        raise NetnsError(f"ip {' '.join(args)}: {done.stderr.strip()}")


@contextmanager
def veth_pair() -> Iterator[tuple[list[str], list[str], str]]:
    """The baseline: two namespaces and a kernel veth pair (prefixes, server address)."""
    pid = os.getpid()
    a, b = f"{PREFIX}{pid}-va", f"{PREFIX}{pid}-vb"
    made = []
    try:
        for ns in (a, b):
            _ip("netns", "add", ns)
            made.append(ns)
        tag = f"pw{pid % 100_000}"
        _ip("link", "add", f"{tag}va", "netns", a, "type", "veth", "peer", f"{tag}vb", "netns", b)
        _ip("-n", a, "addr", "add", "10.234.0.1/24", "dev", f"{tag}va")
        _ip("-n", b, "addr", "add", "10.234.0.2/24", "dev", f"{tag}vb")
        for ns, dev in ((a, f"{tag}va"), (b, f"{tag}vb")):
            _ip("-n", ns, "link", "set", dev, "up")
            _ip("-n", ns, "link", "set", "lo", "up")
        yield ["ip", "netns", "exec", a], ["ip", "netns", "exec", b], "10.234.0.2"
    finally:
        for ns in made:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=20)


def measure(client: list[str], server: list[str], ip: str) -> dict[str, Any]:
    srv = subprocess.Popen(
        [*server, sys.executable, "-c", SERVER, ip], stdout=subprocess.PIPE, text=True
    )
    try:
        assert srv.stdout is not None and srv.stdout.readline().strip() == "up"
        time.sleep(0.2)
        done = subprocess.run(
            [*client, sys.executable, "-c", CLIENT, ip], capture_output=True, text=True, timeout=120
        )
        if done.returncode != 0:
            raise NetnsError(f"the measuring client failed: {done.stderr.strip()[-300:]}")
        return json.loads(done.stdout)  # type: ignore[no-any-return]
    finally:
        srv.kill()
        srv.wait()


def wan_switch_bench() -> dict[str, Any]:
    """NetnsError (one line) if this machine cannot make namespaces."""
    preflight()
    with veth_pair() as (client, server, ip):
        base = measure(client, server, ip)
    with WanNetwork(["a", "b"], LinkShape(), seed=0) as net:
        switched = measure(net.places["a"].prefix, net.places["b"].prefix, net.places["b"].ip)
        switch_stats = net.stats()
    ratios = {
        "rtt_p50": round(switched["rtt_p50_us"] / base["rtt_p50_us"], 2),
        "rtt_p99": round(switched["rtt_p99_us"] / base["rtt_p99_us"], 2),
        "udp_forwarded_per_s": round(
            switched["udp_forwarded_per_s"] / base["udp_forwarded_per_s"], 3
        ),
        "tcp_mb_per_s": round(switched["tcp_mb_per_s"] / base["tcp_mb_per_s"], 3),
    }
    return {
        "baseline_veth": base,
        "switch": switched,
        "switch_over_baseline": ratios,
        "added_rtt_p50_us": switched["rtt_p50_us"] - base["rtt_p50_us"],
        "switch_counters": switch_stats,
    }
