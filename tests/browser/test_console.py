"""The web console in a real browser: Debian's chromium, driven by Playwright, against
real nodes (py-libp2p hosts on 127.0.0.1, SQLite logs, signed messages, real pow
proofs), served by the node's own control API.

Playwright's sync API runs its own event loop, so each test's browser session runs
in one worker thread (`trio.to_thread.run_sync`) while the nodes serve from the
test's trio loop; the session places its ask through the API from that thread.

Without /usr/bin/chromium (or the playwright package) these tests skip, saying why,
unless P2P_MARKET_REQUIRE_BROWSER=1 (.ci/run sets it): then that is a failure.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from p2p_market.core.crypto import devnet_key
from p2p_market.core.envelope import market_id
from p2p_market.core.messages import Market
from p2p_market.markets.devnet import default_market
from p2p_market.node.api_client import ApiClient
from p2p_market.node.api_token import read_token
from p2p_market.node.config import NodeConfig
from p2p_market.node.runtime import Node
from p2p_market.proving.pow import PowBackend
from p2p_market.roles.inbox import Inbox
from p2p_market.roles.prover import ProverRole, ProverSettings
from p2p_market.roles.requester import RequesterRole

CHROMIUM = Path("/usr/bin/chromium")
REQUIRED = os.environ.get("P2P_MARKET_REQUIRE_BROWSER") == "1"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
MARKET = default_market(commit_window_ms=1_000, stage_ms=200, skew_ms=300, difficulty=10)
MID = market_id(MARKET)
WAIT_MS = 45_000
"""How long the page may take to show what the test waits for (a loaded 2-core box)."""


def _browser_or_skip() -> None:
    missing = None
    if not CHROMIUM.exists():
        missing = f"{CHROMIUM} is missing (apt-get install chromium)"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            missing = "the playwright package is not installed (the dev extra)"
    if missing is None:
        return
    if REQUIRED:
        pytest.fail(f"P2P_MARKET_REQUIRE_BROWSER=1 but {missing}")
    pytest.skip(missing)


def in_browser(tmp: Path, scenario: Callable[[Any], Any]) -> Any:
    """Run `scenario(page)` in a fresh headless chromium (its own user-data-dir)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(tmp / "chromium-profile"),
            executable_path=str(CHROMIUM),
            headless=True,
            args=ARGS,
            viewport={"width": 1400, "height": 1000},
        )
        try:
            page = context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            result = scenario(page)
            assert errors == [], f"the page raised: {errors}"
            return result
        finally:
            context.close()


def _node(tmp: Path, name: str, market: Market, bootstrap: tuple[str, ...] = ()) -> Node:
    config = NodeConfig(
        key_file=tmp / "unused.pem",
        data_dir=tmp / name,
        bootstrap=bootstrap,
        frames_per_second=50.0,
        markets=(market,),
    )
    return Node(config, devnet_key(f"console-{name}"), prover=name.startswith("prover"))


@asynccontextmanager
async def market_pair(tmp: Path) -> AsyncIterator[tuple[Node, Node]]:
    """A prover node (its prover role bids 7, proves with pow) and a requester node
    (its requester role looks after the asks placed through its API), connected."""
    prover = _node(tmp, "prover", MARKET)
    async with trio.open_nursery() as nursery:
        await nursery.start(prover.run)
        settings = ProverSettings(market=MID, price=7, proof_time=5_000)
        await nursery.start(ProverRole(prover, PowBackend(), settings, Inbox()).run)
        assert prover.gossip is not None
        requester = _node(tmp, "requester", MARKET, (prover.gossip.addr,))
        await nursery.start(requester.run)
        await nursery.start(RequesterRole(requester, {MID: PowBackend()}, Inbox()).run)
        yield prover, requester
        nursery.cancel_scope.cancel()


def check_png(path: Path) -> tuple[int, int]:
    """The PNG's size; fails unless it is a PNG whose pixels are not all one colour."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    width, height, depth, colour = struct.unpack(">IIBB", data[16:26])
    assert width > 100 and height > 100 and depth == 8 and colour in (2, 6)
    raw = bytearray()
    at = 8
    while at < len(data):
        size, kind = struct.unpack(">I4s", data[at : at + 8])
        if kind == b"IDAT":
            raw += data[at + 8 : at + 8 + size]
        at += 12 + size
    pixels = zlib.decompress(bytes(raw))
    # Rows start with a filter byte; a blank image is one byte value repeated after
    # the filters of a flat colour: count distinct bytes over the whole image.
    assert len(set(pixels)) > 16, "the screenshot is blank"
    return width, height


async def test_an_ask_placed_through_the_api_reaches_proven_in_the_console_without_reload(
    tmp_path: Path,
) -> None:
    _browser_or_skip()
    async with market_pair(tmp_path) as (prover, requester):
        url = f"http://127.0.0.1:{requester.api_port}"
        token = read_token(requester.api_token_file)
        client = ApiClient(url, token=token, timeout=20)
        me = prover.key.public_key.hex()
        shot = tmp_path / "console.png"

        def scenario(page: Any) -> dict[str, Any]:
            page.goto(f"{url}/console#token={token}")
            # The token left the address bar; the stream is live.
            assert "token" not in page.url
            page.wait_for_selector('#live[data-mode="events"]', timeout=WAIT_MS)
            page.evaluate("window.__sameDocument = true")
            page.wait_for_selector(f'#markets tr[data-market="{MID.hex()}"]', timeout=WAIT_MS)
            assert "devnet-pow" in page.inner_text("#markets")
            # The prover's bid: in the depth charts and the provers' table.
            page.wait_for_selector(f'#provers tr[data-prover="{me}"]', timeout=WAIT_MS)
            placed = client.place_ask(
                {
                    "market": MID.hex(),
                    "max_price": 10,
                    "max_proof_time": 10_000,
                    "inputs": b"proved in the console".hex(),
                }
            )
            assert placed.status == "accept", placed
            row = f'#asks tr[data-ask="{placed.id}"]'
            page.wait_for_selector(row, timeout=WAIT_MS)
            page.wait_for_selector(f'{row}[data-state="proven"]', timeout=WAIT_MS)
            page.wait_for_selector(f'{row} [data-step="receipted"]', timeout=WAIT_MS)
            steps = page.eval_on_selector_all(
                f"{row} [data-step]", "els => els.map(e => e.dataset.step)"
            )
            page.wait_for_function(
                "me => [...document.querySelectorAll('#provers tr')].some("
                " r => r.dataset.prover === me && r.children[5].textContent === '7')",
                arg=me,
                timeout=WAIT_MS,
            )
            same = page.evaluate("window.__sameDocument === true")
            events = page.eval_on_selector_all("#events li", "els => els.map(e => e.dataset.kind)")
            depth = page.inner_text("#depth-price")
            peers = page.eval_on_selector_all("#peers tr[data-peer]", "els => els.length")
            page.screenshot(path=str(shot), full_page=True)
            return {"steps": steps, "same": same, "events": events, "depth": depth, "peers": peers}

        seen = await trio.to_thread.run_sync(in_browser, tmp_path, scenario)
    assert seen["same"], "the page was reloaded"
    for step in ("placed", "committed", "assigned", "delivered", "verified", "receipted"):
        assert step in seen["steps"], seen["steps"]
    assert seen["steps"][0] == "placed"
    assert {"ask_state", "assigned", "slot_judged"} <= set(seen["events"]), seen["events"]
    assert "7" in seen["depth"]  # the prover's price level
    assert seen["peers"] >= 1
    check_png(shot)


EVIL_NAME = '<img src=x onerror="window.__xss=1">'
EVIL_VERIFIER = "<script>window.__xss=2</script><b>bold</b>"


async def test_market_data_is_shown_as_text_never_run_as_html(tmp_path: Path) -> None:
    """A market's name and verifier are whatever its creator signed: the console
    shows them as text. Without a token the console polls (no event stream)."""
    _browser_or_skip()
    evil = default_market(name=EVIL_NAME, verifier=EVIL_VERIFIER)
    node = _node(tmp_path, "evil", evil)
    async with trio.open_nursery() as nursery:
        await nursery.start(node.run)
        url = f"http://127.0.0.1:{node.api_port}/console"

        def scenario(page: Any) -> dict[str, Any]:
            page.goto(url)
            page.wait_for_selector('#live[data-mode="polling"]', timeout=WAIT_MS)
            page.wait_for_selector("#markets tr[data-market]", timeout=WAIT_MS)
            return {
                "markets": page.inner_text("#markets"),
                "title": page.inner_text("#book-market"),
                "injected": page.eval_on_selector_all(
                    "#markets img, #markets script, #markets b, #book-market *",
                    "els => els.length",
                ),
                "xss": page.evaluate("window.__xss === undefined ? null : window.__xss"),
            }

        seen = await trio.to_thread.run_sync(in_browser, tmp_path, scenario)
        nursery.cancel_scope.cancel()
    assert EVIL_NAME in seen["markets"] and EVIL_VERIFIER in seen["markets"]
    assert EVIL_NAME in seen["title"]
    assert seen["injected"] == 0
    assert seen["xss"] is None
