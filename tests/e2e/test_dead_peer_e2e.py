"""A frozen node among real node processes (issue 13, finding 2): three `p2p-market
node run` processes; one is frozen with SIGSTOP (its connections stay open, with no
FIN or RST). The other two detect it by keepalive and drop it, their gossip goes
on, and when it resumes it is connected again and catches up by the sync on
reconnect."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from p2p_market.core.crypto import devnet_key
from p2p_market.node.api_client import ApiClient
from p2p_market.node.keyfile import write_key
from tests.processes import ANY_PORT, process


def config(tmp: Path, name: str, bootstrap: list[str]) -> Path:
    write_key(tmp / f"{name}.pem", devnet_key(f"dead-peer-{name}"), None)
    cfg = tmp / f"{name}.toml"
    peers = ", ".join(f'"{a}"' for a in bootstrap)
    cfg.write_text(
        f'[node]\nkey_file = "{name}.pem"\ndata_dir = "{name}"\n{ANY_PORT}'
        f"bootstrap = [{peers}]\nsync_every_s = 3600.0\n"
        "keepalive_every_s = 1.0\nkeepalive_misses = 3\nredial_max_s = 2.0\n"
        '[[markets]]\npreset = "devnet"\n'
    )
    return cfg


def wait_for(what: str, check: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.2)


def bids(api: ApiClient, market: str) -> set[Any]:
    return {b["id"] for b in api.book(market)["bids"]}


def test_a_frozen_node_is_dropped_gossip_goes_on_and_it_comes_back(tmp_path: Path) -> None:
    run = ("node", "run", "--config")
    with process(*run, str(config(tmp_path, "a", []))) as (_pa, ready_a):
        boot = [ready_a["addr"]]
        with (
            process(*run, str(config(tmp_path, "b", boot))) as (_pb, ready_b),
            process(*run, str(config(tmp_path, "c", boot))) as (pc, ready_c),
        ):
            a, b, c = (ApiClient.for_node(r) for r in (ready_a, ready_b, ready_c))
            market = a.markets()[0]["id"]
            wait_for("a full mesh of three", lambda: all(
                n.status()["peers"] == 2 for n in (a, b, c)), 30)  # fmt: skip
            os.kill(pc.pid, signal.SIGSTOP)
            try:
                frozen_at = time.monotonic()
                wait_for(
                    "a and b drop the frozen node",
                    lambda: all(
                        n.status()["liveness"]["dropped"] >= 1 and n.status()["peers"] == 1
                        for n in (a, b)
                    ),
                    30,
                )
                assert time.monotonic() - frozen_at >= 2.0  # three missed pings
                placed = a.place_bid({"market": market, "price": 7, "proof_time": 1000})
                assert placed.status == "accept"
                wait_for("the bid reaches b by gossip", lambda: placed.id in bids(b, market), 10)
                assert a.status()["liveness"]["publish_wait_ms_max"] <= 1000
            finally:
                os.kill(pc.pid, signal.SIGCONT)
            wait_for("the resumed node is connected again", lambda: all(
                n.status()["peers"] == 2 for n in (a, b, c)), 45)  # fmt: skip
            wait_for(
                "it catches up by the sync on reconnect", lambda: placed.id in bids(c, market), 20
            )
