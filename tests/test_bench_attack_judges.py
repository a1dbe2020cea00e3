"""The judges of `bench attacks`' rows, on made-up figures: each row's `ok` can fail,
and fails on the figure it is about. (The rows themselves run real node processes:
tests/e2e/test_bench_attacks.py and `p2p-market bench attacks`.)"""

from __future__ import annotations

import ipaddress
import os
import socket
from typing import Any

import pytest

from p2p_market.bench.attackers import ATTACKS, TRICKLE_CUT_S, _hex_ip, remote_ips
from p2p_market.bench.attacks import Figures

QUIET = Figures(placed=10, proven=10, p99_ms=2_000, victim_rss_mb=100.0, victim_data_mb=1.0)
SERVED = Figures(placed=10, proven=10, p99_ms=2_500, victim_rss_mb=110.0, victim_data_mb=5.0)


def judge(row: str, report: dict[str, Any], attacked: Figures = SERVED) -> bool:
    return ATTACKS[row].judge(QUIET, attacked, report)[0]


def test_replay_fails_on_one_reaccepted_envelope() -> None:
    report = {"distinct_replayed": 40, "frames": 100, "identities": 2, "re_accepted": 0}
    assert judge("replay", report)
    assert not judge("replay", {**report, "re_accepted": 1})
    assert not judge("replay", {**report, "re_accepted": None})  # not measured
    slow = Figures(placed=10, proven=10, p99_ms=4_500)
    assert not judge("replay", report, slow)


def test_orphan_flood_fails_beyond_its_bound_or_still_growing() -> None:
    report = {"proofs_sent": 1_000}

    def flood(rss: float, disk: float, late: float | None) -> Figures:
        return Figures(
            placed=10,
            proven=10,
            p99_ms=2_000,
            victim_rss_mb=rss,
            victim_data_mb=disk,
            victim_rss_late_mb=late,
        )

    assert judge("orphan-flood", report, flood(158, 17, 1.0))
    assert not judge("orphan-flood", report, flood(158, 40, 1.0))  # disk
    assert not judge("orphan-flood", report, flood(170, 17, 1.0))  # memory
    assert not judge("orphan-flood", report, flood(158, 17, 12.0))  # still growing
    assert not judge("orphan-flood", report, flood(158, 17, None))


def test_grief_asks_fail_when_one_is_committed_to_or_proven() -> None:
    report = {"grief_asks": 30, "victim_committed": 0, "attested": 0, "grief_proven": 0}
    assert judge("grief-asks", report)
    assert not judge("grief-asks", {**report, "grief_proven": 1})
    assert not judge("grief-asks", {**report, "victim_committed": 1})


def test_sync_sessions_fail_when_an_honest_sync_is_refused() -> None:
    report = {"sessions_peak": 16, "honest_syncs": {"tried": 5, "served": 5, "max_ms": 40}}
    assert judge("sync-sessions", report)
    assert not judge("sync-sessions", {**report, "honest_syncs": {"tried": 5, "served": 4}})
    assert not judge("sync-sessions", {"sessions_peak": 16})


def test_direct_trickle_fails_on_a_trickle_held_too_long_or_a_refused_delivery() -> None:
    assert 3.0 < TRICKLE_CUT_S < 3.1  # 1 s grace, then 64 KiB/s against 44 KB/s
    report = {
        "trickle": {"trickles": 20, "held_max_s": 3.2, "peak_open": 4},
        "honest_deliveries": {"tried": 4, "served": 4},
    }
    assert judge("direct-trickle", report)
    held = {**report, "trickle": {"trickles": 20, "held_max_s": 9.0}}
    assert not judge("direct-trickle", held)
    refused = {**report, "honest_deliveries": {"tried": 4, "served": 3}}
    assert not judge("direct-trickle", refused)


def test_peer_exchange_fails_on_one_dial_out_of_scope() -> None:
    report = {"asked": 3, "out_of_scope_dials": 0, "huge_bytes_taken_max": 300_000}
    assert judge("peer-exchange", report)
    assert not judge("peer-exchange", {**report, "out_of_scope_dials": 1})
    assert not judge("peer-exchange", {**report, "huge_bytes_taken_max": 7_000_000})
    assert not judge("peer-exchange", {**report, "asked": 0})


def test_proc_net_addresses_decode() -> None:
    assert _hex_ip("0100007F") == ipaddress.ip_address("127.0.0.1")
    assert _hex_ip("0A00FF0A") == ipaddress.ip_address("10.255.0.10")
    assert _hex_ip("0000000000000000FFFF00000100007F") == ipaddress.ip_address("::ffff:127.0.0.1")


@pytest.mark.skipif(not os.path.isdir("/proc/self/net"), reason="needs Linux /proc")
def test_loopback_connections_are_not_remote() -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        client = socket.create_connection(server.getsockname())
        try:
            assert "127.0.0.1" not in remote_ips(os.getpid())
        finally:
            client.close()
