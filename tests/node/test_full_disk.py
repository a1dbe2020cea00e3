"""A node whose log cannot take a message: the message is refused with the state
untouched (not applied, not forwarded, not served by sync), the local submitter is
answered 507 with the reason, the failure is logged once, and the node keeps running
and takes messages again once the log can be written.

The full disk is real SQLite: `PRAGMA max_page_count` on the node's own connection
to its database file caps the file at the pages it has, so the next write that needs
a page fails with SQLITE_FULL ("database or disk is full"), exactly as on a full
disk. (tests/e2e/test_node_faults.py fills a real tmpfs.)"""

from __future__ import annotations

import http.client
import json
import logging
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
import trio

from p2p_market.markets.devnet import Actor
from p2p_market.node import runtime
from p2p_market.node.api_token import read_token
from p2p_market.node.runtime import Node
from tests.node.test_runtime import MARKET, MID, make_node, running, wait_until

UNLIMITED = 1_073_741_823
"""SQLite's default max_page_count."""


def cap_pages(node: Node, pages: int | None) -> None:
    """Cap the node's database file at its present size (None: lift the cap)."""
    assert node.log is not None
    db = node.log._db
    now = db.execute("PRAGMA page_count").fetchone()[0]
    db.execute(f"PRAGMA max_page_count = {now if pages is None else pages}")


def post_ask(node: Node, max_price: int) -> tuple[int, dict[str, Any]]:
    """POST /v1/asks as the node's owner; the HTTP status and the JSON answer,
    whatever the status."""
    conn = http.client.HTTPConnection("127.0.0.1", node.api_port, timeout=10)
    try:
        body = {"market": MID.hex(), "max_price": max_price, "max_proof_time": 5_000}
        headers = {
            "Content-Type": "application/json",
            "Authorization": f"Bearer {read_token(node.api_token_file)}",
        }
        conn.request("POST", "/v1/asks", json.dumps(body), headers)
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def log_lines(caplog: pytest.LogCaptureFixture, level: int, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == level and text in r.getMessage()]


async def test_a_full_log_refuses_what_it_cannot_store_and_the_node_recovers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    a = make_node(tmp_path, "a")
    async with running(a) as nursery:
        assert a.gossip is not None and a.api_port is not None
        b = make_node(tmp_path, "b", (a.gossip.addr,))
        await nursery.start(b.run)
        assert b.gossip is not None
        await wait_until(lambda: b.status()["peers"] >= 1)
        await a.gossip.wait_for_mesh(MID, b.gossip.peer_id)

        status, first = await trio.to_thread.run_sync(post_ask, a, 1)
        assert status == 200 and first["status"] == "accept"
        stored = {bytes.fromhex(first["id"])}
        await wait_until(lambda: set(b.states[MID].asks) == stored)

        # The disk fills: the last page's free room takes a few more asks, then none.
        # The event stream tells when it does, and when it has room again.
        subscription = ExitStack()
        told = subscription.enter_context(a.events.subscribe())
        cap_pages(a, None)
        refused: list[dict[str, Any]] = []
        for price in range(2, 200):
            status, answer = await trio.to_thread.run_sync(post_ask, a, price)
            if status == 200:
                assert answer["status"] == "accept" and not refused, answer
                stored.add(bytes.fromhex(answer["id"]))
            else:
                assert status == 507, (status, answer)
                refused.append(answer)
                if len(refused) == 5:
                    break
        assert len(refused) == 5
        for answer in refused:
            assert answer["status"] == "ignore" and answer["reason"] == "storage_full"
            assert answer["error"].startswith("not stored: disk full: cannot write ")
            assert answer["error"].endswith("free space on its disk")
        refused_ids = {bytes.fromhex(r["id"]) for r in refused}
        assert len(refused_ids) == 5 and not refused_ids & stored

        # Not admitted, not published, not served by sync; the node says why.
        assert set(a.states[MID].asks) == stored
        await wait_until(lambda: set(b.states[MID].asks) == stored)
        await b.sync_now()
        assert set(b.states[MID].asks) == stored
        assert a.status()["storage"].startswith("disk full: cannot write ")
        assert len(log_lines(caplog, logging.ERROR, "cannot write the log: disk full")) == 1

        # A peer's message that reaches a meanwhile is refused too, without blame.
        peer_ask = Actor("peer", MARKET).ask(now=b.clock(), max_price=7, max_proof_time=5_000)
        assert (await b.submit(peer_ask)).status == "accept"
        await trio.sleep(1.0)
        assert len(b.states[MID].asks) == len(stored) + 1
        assert set(a.states[MID].asks) == stored

        # Room again: the next message is stored, the recovery is logged once, and
        # what the node refused comes back from its peer by sync.
        cap_pages(a, UNLIMITED)
        status, answer = await trio.to_thread.run_sync(post_ask, a, 500)
        assert status == 200 and answer["status"] == "accept", answer
        stored.add(bytes.fromhex(answer["id"]))
        assert a.status()["storage"] == "ok"
        storage: list[dict[str, Any]] = []
        while True:
            try:
                event = told.receive_nowait()
            except trio.WouldBlock:
                break
            if event.kind == "storage":
                storage.append(event.data)
        subscription.close()
        assert [e["storage"].split(":")[0] for e in storage] == ["disk full", "ok"]
        assert storage[1]["refused"] >= 5
        again = log_lines(caplog, logging.WARNING, "the log can be written again")
        assert len(again) == 1 and "messages were refused meanwhile" in again[0]
        await a.sync_now()
        assert set(a.states[MID].asks) == stored | set(b.states[MID].asks)
        held = set(a.states[MID].asks)
        assert len(held) == len(stored) + 1
        assert len(log_lines(caplog, logging.ERROR, "cannot write the log")) == 1

    # A restart holds exactly what the node held: nothing it refused, nothing lost.
    restarted = make_node(tmp_path, "a")
    async with running(restarted):
        assert set(restarted.states[MID].asks) == held


def read_only(node: Node, on: bool) -> None:
    """Writes on the node's connection fail with SQLITE_READONLY (or work again)."""
    assert node.log is not None
    node.log._db.execute(f"PRAGMA query_only = {int(on)}")


async def test_another_write_failure_is_503_and_refused_too(tmp_path: Path) -> None:
    a = make_node(tmp_path, "a")
    async with running(a):
        assert a.api_port is not None
        read_only(a, True)
        status, answer = await trio.to_thread.run_sync(post_ask, a, 1)
        assert status == 503 and answer["reason"] == "storage_failed", answer
        assert "attempt to write a readonly database" in answer["error"]
        assert a.states[MID].asks == {}
        read_only(a, False)
        status, answer = await trio.to_thread.run_sync(post_ask, a, 1)
        assert status == 200 and answer["status"] == "accept", answer
        assert list(a.states[MID].asks) == [bytes.fromhex(answer["id"])]


async def test_a_prune_that_cannot_write_leaves_the_node_running(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ticker prunes the log every PRUNE_EVERY_MS; a delete needs to write too.
    A failed prune is logged (once) and tried again later: it did stop the node."""
    monkeypatch.setattr(runtime, "PRUNE_EVERY_MS", 0)  # prune at every tick
    a = make_node(tmp_path, "a")
    async with running(a):
        read_only(a, True)
        await trio.sleep(10 * runtime.TICK_S)
        assert a.status()["storage"].startswith("cannot open or write database ")
        assert len(log_lines(caplog, logging.ERROR, "cannot write the log")) == 1
        read_only(a, False)
        await wait_until(lambda: a.status()["storage"] == "ok")
        placed = await a.place_bid({"market": MID.hex(), "price": 1, "proof_time": 500})
        assert placed.status == "accept"
