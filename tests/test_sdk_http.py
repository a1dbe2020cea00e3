"""p2p_market.sdk_http, the SDK for any event loop, against real node processes: a
prover (`node run` with [prover], pow devnet market) and a requester (`node run` with
[requester]) on 127.0.0.1. Each test runs the same SDK code under asyncio and under
trio, calling anyio.run itself (pytest-trio's trio_mode would run an async test on
trio only); the examples/ programs run as subprocesses and must buy a proof too."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import anyio
import httpx
import pytest
import sniffio

from p2p_market import sdk_http
from p2p_market.core.crypto import devnet_key
from p2p_market.markets.devnet import default_market
from p2p_market.node.api_client import ApiClient
from p2p_market.node.api_token import TOKEN_ENV
from p2p_market.node.keyfile import write_key
from p2p_market.proving.pow import pow_ok
from tests.processes import ANY_PORT, process

BACKENDS = ["asyncio", "trio"]
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
DIFFICULTY = default_market().difficulty
PRICE = 5
BELOW = 1
"""A cap under the prover's price: nobody wins such an ask."""
SHORT_TTL_MS = 5_000


class Market(NamedTuple):
    api: str
    token_file: Path
    requester: bytes
    prover: bytes
    wrong_token_file: Path
    """The prover's token: a real token, of another node."""
    prover_api: str
    """A node without a requester role."""
    market_id: str


@pytest.fixture(scope="module")
def market(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Market]:
    """A prover bidding PRICE and a requester node holding its bid, shared by the
    module's tests (two processes, started once)."""
    tmp = tmp_path_factory.mktemp("sdk-http")
    write_key(tmp / "p.pem", devnet_key("prover-1"), None)
    write_key(tmp / "q.pem", devnet_key("requester-1"), None)
    (tmp / "p.toml").write_text(
        f'[node]\nkey_file = "p.pem"\ndata_dir = "p"\n{ANY_PORT}'
        '[[markets]]\npreset = "devnet"\n'
        f'[prover]\nmarket = "devnet"\nprice = {PRICE}\nproof_time = 5000\n'
    )
    with process("node", "run", "--config", str(tmp / "p.toml")) as (_, prover):
        (tmp / "q.toml").write_text(
            f'[node]\nkey_file = "q.pem"\ndata_dir = "q"\n{ANY_PORT}'
            f'bootstrap = ["{prover["addr"]}"]\n'
            '[[markets]]\npreset = "devnet"\n[requester]\n'
        )
        with process("node", "run", "--config", str(tmp / "q.toml")) as (_, requester):
            api = ApiClient.for_node(requester)
            mid = prover["prover"]["market"]
            deadline = time.monotonic() + 60
            while not api.book(mid)["bids"]:
                assert time.monotonic() < deadline, "the prover's bid never reached the requester"
                time.sleep(0.2)
            yield Market(
                api=requester["api_url"],
                token_file=Path(requester["api_token_file"]),
                requester=bytes.fromhex(requester["public_key"]),
                prover=bytes.fromhex(prover["public_key"]),
                wrong_token_file=Path(prover["api_token_file"]),
                prover_api=prover["api_url"],
                market_id=mid,
            )


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_proof_through_the_node_under_each_backend(market: Market, backend: str) -> None:
    inputs = f"sdk_http under {backend}".encode()

    async def main() -> dict[str, Any]:
        seen: dict[str, Any] = {"library": sniffio.current_async_library()}
        async with sdk_http.connect(market.api, token_file=market.token_file) as node:
            status = await node.status()
            seen["public_key"] = status.public_key
            bids = await node.wait_for_provers(timeout=30, max_price=10, max_proof_time=10_000)
            seen["bids"] = [(b.prover, b.price) for b in bids]
            async with node.events() as stream:  # live before the ask is placed
                ask = await node.place_ask(inputs, max_price=10, max_proof_time=10_000)
                with anyio.fail_after(90):
                    result = await node.wait(ask, timeout=80)
                states = []
                with anyio.fail_after(30):
                    async for event in stream:
                        if event.kind == "ask_state" and event.data["ask"] == ask.hex():
                            states.append(event.data["after"])
                            if event.data["after"] == "proven":
                                break
            seen["states"] = states
            # Waiting (no timeout of its own) on an ask that is already proven answers:
            # the view is read once the stream is live, not only awaited in events
            # that will never come again.
            with anyio.fail_after(30):
                seen["again"] = await node.wait(ask)
            seen["view"] = await node.ask(ask)
            seen["proofs"] = await node.proofs(ask)
        seen["result"] = result
        return seen

    seen = anyio.run(main, backend=backend)
    assert seen["library"] == backend
    assert seen["public_key"] == market.requester
    assert seen["bids"] == [(market.prover, PRICE)]
    result: sdk_http.ProofResult = seen["result"]
    assert pow_ok(inputs, DIFFICULTY, result.proof)
    assert result.winners == (market.prover,) and result.paid == PRICE
    assert result.proofs == {market.prover: result.proof} == seen["proofs"]
    assert seen["again"] == result
    assert seen["states"][0] == "open" and seen["states"][-1] == "proven", seen["states"]
    view: sdk_http.AskStatus = seen["view"]
    assert (view.state, view.accepted, view.paid) == ("proven", (market.prover,), PRICE)


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_event_parser_skips_comments_and_joins_data_lines(backend: str) -> None:
    """What a real stream shows rarely: a keepalive comment (after 15 s of quiet), a
    data field split over lines, an event without an id; and a last event with no
    blank line after it (a cut stream) is not made up."""
    wire = (
        b'id: 1\nevent: subscribed\ndata: {"seq": 1, "queue": 256}\n\n'
        b": keepalive\n\n"
        b'id: 2\nevent: ask_state\ndata: {"ask": "ab",\ndata:  "after": "open"}\n\n'
        b'event: dropped\ndata: {"reason": "slow"}\n\n'
        b'id: 4\nevent: ask_state\ndata: {"ask": "cut"'
    )

    async def main() -> list[sdk_http.Event]:
        response = httpx.Response(200, content=wire)
        return [e async for e in sdk_http._parse_events(response)]

    assert anyio.run(main, backend=backend) == [
        sdk_http.Event(1, "subscribed", {"seq": 1, "queue": 256}),
        sdk_http.Event(2, "ask_state", {"ask": "ab", "after": "open"}),
        sdk_http.Event(0, "dropped", {"reason": "slow"}),
    ]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("backend", BACKENDS)
def test_each_failure_is_a_typed_error_with_one_line(
    market: Market, backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(TOKEN_ENV, raising=False)

    async def main() -> tuple[dict[str, BaseException], bytes, bytes]:
        caught: dict[str, BaseException] = {}

        async def expect(name: str, kind: type[BaseException], coro: Any) -> None:
            with pytest.raises(kind) as info:
                await coro
            caught[name] = info.value

        async def enter(**kwargs: Any) -> None:
            async with sdk_http.connect(**kwargs):
                pass

        gone = f"http://127.0.0.1:{closed_port()}"
        await expect("unreachable", sdk_http.NodeUnreachable, enter(api=gone))
        await expect(
            "wrong token",
            sdk_http.BadToken,
            enter(api=market.api, token_file=market.wrong_token_file),
        )
        async with sdk_http.connect(market.api) as reader:  # no token: reads need none
            assert (await reader.status()).public_key == market.requester
            await expect(
                "no token", sdk_http.BadToken, reader.place_ask(b"x", max_price=1, max_proof_time=1)
            )
        async with sdk_http.connect(market.api, token_file=market.token_file) as node:
            await expect(
                "bad terms",
                sdk_http.BadRequest,
                node.place_ask(b"x", max_price=-1, max_proof_time=10_000),
            )
            await expect(
                "no provers",
                sdk_http.NoProvers,
                node.request_proof(
                    b"x", max_price=BELOW, max_proof_time=10_000, discover_timeout=1
                ),
            )
            expiring = await node.place_ask(
                b"nobody wins", max_price=BELOW, max_proof_time=10_000, ttl_ms=SHORT_TTL_MS
            )
            with anyio.fail_after(60):
                await expect("expired", sdk_http.AskExpired, node.wait(expiring, timeout=50))
            unwon = await node.place_ask(b"nobody wins either", max_price=BELOW,
                                         max_proof_time=10_000)  # fmt: skip
            await expect("timeout", sdk_http.ProofTimeout, node.wait(unwon, timeout=1))
            assert (await node.ask(unwon)).state == "cancelled"
            await expect("cancelled", sdk_http.AskCancelled, node.wait(unwon, timeout=10))
        async with sdk_http.connect(market.prover_api, token_file=market.wrong_token_file) as node:
            await expect(
                "no requester role",
                sdk_http.AskRefused,
                node.place_ask(b"x", max_price=10, max_proof_time=10_000),
            )
        return caught, expiring, unwon

    caught, expiring, unwon = anyio.run(main, backend=backend)
    for name, exc in caught.items():
        assert "\n" not in str(exc), (name, str(exc))
    assert str(caught["unreachable"]).startswith("cannot reach the node at http://127.0.0.1:")
    assert "wrong API token" in str(caught["wrong token"])
    assert "missing API token" in str(caught["no token"])
    assert isinstance(caught["bad terms"], ValueError) and "max_price" in str(caught["bad terms"])
    assert f"cheapest bid {PRICE}" in str(caught["no provers"])
    reasons = {
        name: (exc.reason, exc.ask)
        for name, exc in caught.items()
        if isinstance(exc, sdk_http.RequestFailed)
    }
    assert reasons == {
        "no provers": ("no_provers", None),
        "expired": ("expired", expiring),
        "timeout": ("timeout", unwon),
        "cancelled": ("cancelled", unwon),
        "no requester role": ("refused", None),
    }
    assert "ask cancelled" in str(caught["timeout"])
    assert "runs no requester role" in str(caught["no requester role"])
    prover_asks = ApiClient(market.prover_api).book(market.market_id)["asks"]
    assert market.prover.hex() not in {a["requester"] for a in prover_asks}  # nothing placed


def run_example(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        capture_output=True,
        text=True,
        timeout=180,
    )


@pytest.mark.parametrize("example", ["asyncio_request.py", "trio_request.py"])
def test_each_example_buys_a_verified_proof(market: Market, example: str, tmp_path: Path) -> None:
    inputs, out = f"bought by {example}", tmp_path / "proof.bin"
    done = run_example(
        example, "--api", market.api, "--token-file", str(market.token_file),
        "--inputs", inputs, "--out", str(out), "--max-price", "10",
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert pow_ok(inputs.encode(), DIFFICULTY, out.read_bytes())
    assert f"proven, paid {PRICE}" in done.stdout
    states = [line.rsplit(" ", 1)[-1] for line in done.stderr.splitlines() if "… " in line]
    assert states[0] == "open" and states[-1] == "proven", done.stderr


@pytest.mark.parametrize("example", ["asyncio_request.py", "trio_request.py"])
def test_each_example_fails_with_one_line_and_its_status(market: Market, example: str) -> None:
    common = ("--inputs", "x", "--out", "/nonexistent/proof.bin")
    gone = run_example(
        example, "--api", f"http://127.0.0.1:{closed_port()}",
        "--token-file", str(market.token_file), *common,
    )  # fmt: skip
    assert gone.returncode == 1
    assert gone.stderr.startswith("error: cannot reach the node at ")
    wrong = run_example(
        example, "--api", market.api, "--token-file", str(market.wrong_token_file), *common
    )
    assert wrong.returncode == 2
    assert wrong.stderr.startswith("error: the node at ") and "wrong API token" in wrong.stderr
    for done in (gone, wrong):
        assert len(done.stderr.splitlines()) == 1, done.stderr
