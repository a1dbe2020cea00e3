"""The HTTP server and the control API over real TCP sockets on 127.0.0.1.

The node behind the API is `FakeNode`: a small in-memory NodeFacade over a real core
`MarketState` of the devnet market, signing with devnet keys. The stdlib ApiClient
runs in a worker thread (it is synchronous, as the CLI uses it); raw trio sockets
test what a well-behaved client never does (pipelining, oversized or slow requests).
"""

from __future__ import annotations

import functools
import http.client
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio

from p2p_market.core.envelope import message_id
from p2p_market.core.state import MarketState
from p2p_market.markets.devnet import GENESIS_MS, Actor, default_market
from p2p_market.node.api import ask_json, bid_json, serve_api
from p2p_market.node.api_client import ApiClient, ApiError
from p2p_market.node.facade import NodeFacade, Submitted
from p2p_market.node.http import Limits, Request, Response, json_response, serve_http

NOW = GENESIS_MS + 60_000
TIMEOUT = 15
TOKEN = "5e" * 32


class FakeNode:
    """A NodeFacade in memory: one market, a fixed clock, the devnet key "api-node"."""

    def __init__(self) -> None:
        self.state = MarketState(default_market())
        self.me = Actor("api-node", self.state.market)
        self.now = NOW
        self.published: list[bytes] = []
        self.fail = False

    # -- reads --------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        if self.fail:
            raise RuntimeError("the fake node was told to fail")
        return {
            "public_key": self.me.public_key.hex(),
            "peer_id": "fake",
            "listen": [],
            "peers": 0,
            "markets": [self.state.market_id.hex()],
            "uptime_s": 0,
        }

    def markets(self) -> list[dict[str, Any]]:
        m = self.state.market
        return [
            {
                "id": self.state.market_id.hex(),
                "name": m.name,
                "proof_system": m.proof_system,
                "difficulty": m.difficulty,
            }
        ]

    def book(self, market: str) -> dict[str, Any]:
        if bytes.fromhex(market) != self.state.market_id:
            raise KeyError(f"unknown market {market}")
        return {
            "bids": [bid_json(s) for s in self.state.book.current.values()],
            "asks": [ask_json(self.state.view(a)) for a in self.state.asks],
        }

    def ask(self, ask_id: str) -> dict[str, Any]:
        key = bytes.fromhex(ask_id)
        if key not in self.state.asks:
            raise KeyError(f"unknown ask {ask_id}")
        return ask_json(self.state.view(key))

    # -- writes -------------------------------------------------------------------------
    async def submit(self, raw: bytes) -> Submitted:
        await trio.lowlevel.checkpoint()
        verdict, _ = self.state.apply(raw, self.now)
        if verdict.accepted:
            self.published.append(raw)
        return Submitted(
            id=message_id(raw).hex(),
            status=verdict.status.value,
            reason=verdict.reason.value,
            detail=verdict.detail,
        )

    def _check_market(self, fields: dict[str, Any]) -> None:
        if "market" not in fields:
            raise ValueError("missing field: market")
        self.book(fields["market"])  # KeyError if unknown

    @staticmethod
    def _need(fields: dict[str, Any], name: str) -> Any:
        if name not in fields:
            raise ValueError(f"missing field: {name}")
        return fields[name]

    async def place_bid(self, fields: dict[str, Any]) -> Submitted:
        self._check_market(fields)
        raw = self.me.bid(
            now=self.now,
            price=self._need(fields, "price"),
            proof_time=self._need(fields, "proof_time"),
            capacity=fields.get("capacity", 1),
            ttl=fields.get("ttl_ms", 3_600_000),
        )
        return await self.submit(raw)

    async def place_ask(self, fields: dict[str, Any]) -> Submitted:
        self._check_market(fields)
        raw = self.me.ask(
            now=self.now,
            max_price=self._need(fields, "max_price"),
            max_proof_time=self._need(fields, "max_proof_time"),
            prefer=fields.get("prefer", "cost"),
            replicas=fields.get("replicas", 1),
            ttl=fields.get("ttl_ms", 600_000),
            inputs=bytes.fromhex(fields.get("inputs", "")),
            confidential=fields.get("confidential", False),
            allow=tuple(bytes.fromhex(k) for k in fields.get("allow", [])),
            deny=tuple(bytes.fromhex(k) for k in fields.get("deny", [])),
        )
        return await self.submit(raw)

    async def cancel(self, ask_id: str) -> Submitted:
        key = bytes.fromhex(ask_id)
        if key not in self.state.asks:
            raise KeyError(f"unknown ask {ask_id}")
        return await self.submit(self.me.cancel(now=self.now, ask=key))


def _is_facade(node: NodeFacade) -> NodeFacade:
    return node  # mypy checks here that FakeNode implements the protocol


_is_facade(FakeNode())


# -- helpers ---------------------------------------------------------------------------
async def in_thread(fn: Callable[..., Any], *args: Any) -> Any:
    return await trio.to_thread.run_sync(fn, *args)


async def api_error(fn: Callable[..., Any], *args: Any) -> ApiError:
    with pytest.raises(ApiError) as info:
        await in_thread(fn, *args)
    error = info.value
    assert "\n" not in error.message and error.message
    return error


async def start_api(nursery: trio.Nursery, node: FakeNode, **kw: Any) -> tuple[int, ApiClient]:
    port: int = await nursery.start(functools.partial(serve_api, node, token=TOKEN, **kw))
    return port, ApiClient(f"http://127.0.0.1:{port}", token=TOKEN, timeout=TIMEOUT)


async def read_response(
    stream: trio.SocketStream, buf: bytearray
) -> tuple[int, dict[str, str], bytes]:
    """One HTTP response off a raw stream (content-length framing only); what follows
    it stays in `buf`."""
    while b"\r\n\r\n" not in buf:
        data = await stream.receive_some(65536)
        if not data:
            raise EOFError(bytes(buf))
        buf += data
    head, _, rest = bytes(buf).partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    size = int(headers.get("content-length", "0"))
    body = bytearray(rest)
    while len(body) < size:
        data = await stream.receive_some(65536)
        if not data:
            raise EOFError(bytes(body))
        body += data
    buf[:] = body[size:]
    return status, headers, bytes(body[:size])


async def read_to_eof(stream: trio.SocketStream) -> bytes:
    out = bytearray()
    while data := await stream.receive_some(65536):
        out += data
    return bytes(out)


def get(path: str, extra: str = "", *, port: int = 0) -> bytes:
    """A GET; with `port`, its Host is the API's own (127.0.0.1:port)."""
    host = f"127.0.0.1:{port}" if port else "x"
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n".encode()


# -- the routes ------------------------------------------------------------------------
async def test_every_route_over_tcp(nursery: trio.Nursery) -> None:
    node = FakeNode()
    _, client = await start_api(nursery, node)
    mid = node.state.market_id.hex()
    with trio.fail_after(TIMEOUT):
        status = await in_thread(client.status)
        assert status["public_key"] == node.me.public_key.hex()
        assert status["markets"] == [mid]

        markets = await in_thread(client.markets)
        assert [m["id"] for m in markets] == [mid]
        assert markets[0]["name"] == "devnet-pow"

        bid = await in_thread(client.place_bid, {"market": mid, "price": 7, "proof_time": 2_000})
        assert (bid.status, bid.reason, bid.detail) == ("accept", "ok", "")
        assert bid.id == message_id(node.published[-1]).hex()

        ask = await in_thread(
            client.place_ask,
            {"market": mid, "max_price": 10, "max_proof_time": 5_000, "inputs": "00ff"},
        )
        assert ask.status == "accept"
        view = await in_thread(client.ask, ask.id)
        assert view["id"] == ask.id
        assert view["state"] == "open"
        assert view["requester"] == node.me.public_key.hex()
        assert (view["max_price"], view["inputs_size"], view["winners"]) == (10, 2, [])

        book = await in_thread(client.book, mid)
        assert [b["id"] for b in book["bids"]] == [bid.id]
        assert book["bids"][0]["price"] == 7
        assert [a["id"] for a in book["asks"]] == [ask.id]

        # An envelope signed elsewhere: raw bytes, then the same again (a duplicate is
        # the node's verdict, still a 200), then another one as JSON {"hex": ...}.
        other = Actor("someone-else", node.state.market)
        raw = other.bid(now=NOW, price=3, proof_time=1_000)
        first = await in_thread(client.submit, raw)
        assert (first.id, first.status) == (message_id(raw).hex(), "accept")
        again = await in_thread(client.submit, raw)
        assert (again.status, again.reason) == ("ignore", "duplicate")
        raw2 = other.ask(now=NOW, max_price=5, max_proof_time=5_000)
        body = json.dumps({"hex": raw2.hex()}).encode()
        as_json = await in_thread(client.request, "POST", "/v1/envelopes", body)
        assert as_json == {"id": message_id(raw2).hex(), "status": "accept", "reason": "ok",
                           "detail": ""}  # fmt: skip
        book = await in_thread(client.book, mid.upper())  # ids are case-insensitive
        assert len(book["bids"]) == 2 and len(book["asks"]) == 2

        cancelled = await in_thread(client.cancel, ask.id)
        assert cancelled.status == "accept"
        assert (await in_thread(client.ask, ask.id))["state"] == "cancelled"

        # Someone else's ask: the node signs a Cancel, the core refuses it (200 all the same).
        refused = await in_thread(client.cancel, message_id(raw2).hex())
        assert (refused.status, refused.reason) == ("reject", "not_ask_owner")


async def test_errors_are_one_json_line_with_the_right_status(nursery: trio.Nursery) -> None:
    node = FakeNode()
    _, client = await start_api(nursery, node)
    mid = node.state.market_id.hex()
    unknown = "ab" * 32
    bid = {"market": mid, "price": 7, "proof_time": 2_000}
    cases: list[tuple[Callable[..., Any], tuple[Any, ...], int, str]] = [
        (client.book, (unknown,), 404, f"unknown market {unknown}"),
        (client.book, ("xyz",), 400, "market id must be 64 hex characters"),
        (client.known_markets, (), 404, "this node does not hear market announcements"),
        (client.ask, (unknown,), 404, f"unknown ask {unknown}"),
        (client.cancel, (unknown,), 404, f"unknown ask {unknown}"),
        (client.cancel, ("12",), 400, "ask id must be 64 hex characters"),
        (client.place_bid, ({**bid, "market": unknown},), 404, f"unknown market {unknown}"),
        (client.place_bid, ({"price": 7, "proof_time": 1},), 400, "missing field: market"),
        (client.place_bid, ({"market": mid, "proof_time": 1},), 400, "missing field: price"),
        (client.place_bid, ({**bid, "price": "7"},), 400, 'price must be an integer, not "7"'),
        (client.place_bid, ({**bid, "price": True},), 400, "price must be an integer, not true"),
        (client.place_bid, ({**bid, "price": 1.5},), 400, "price must be an integer, not 1.5"),
        (
            client.place_bid,
            ({**bid, "market": "zz"},),
            400,
            'market must be a hex string, not "zz"',
        ),
        (client.place_bid, ({**bid, "capacity": 0},), 400, "capacity=0 outside [1, 1024]"),
        (
            client.place_bid,
            ({**bid, "prise": 1},),
            400,
            "unknown field: prise (known: market, price, proof_time, capacity, ttl_ms, max_size)",
        ),
        (
            client.place_ask,
            ({"market": mid, "max_price": 1, "max_proof_time": 1, "allow": ["x"]},),
            400,
            'allow must be a list of hex strings, not ["x"]',
        ),
        (
            client.place_ask,
            ({"market": mid, "max_price": 1, "max_proof_time": 1, "prefer": "fast"},),
            400,
            "prefer must be one of ['cost', 'time']",
        ),
        (client.request, ("POST", "/v1/bids", b"{nope"), 400, "the body is not valid JSON"),
        (client.request, ("POST", "/v1/bids", b"[1, 2]"), 400, "must be a JSON object, not list"),
        (client.request, ("POST", "/v1/bids", b""), 400, "must be a JSON object, not empty"),
        (client.request, ("POST", "/v1/bids", b"\xff"), 400, "the body is not valid JSON"),
        (client.request, ("POST", "/v1/bids", b"[" * 100_000), 400, "not valid JSON"),
        (client.request, ("POST", "/v1/bids", b'{"price": NaN}'), 400, "not valid JSON"),
        (client.request, ("POST", "/v1/envelopes", b'{"hx": "00"}'), 400, '{"hex": "<envelope'),
        (client.request, ("POST", "/v1/envelopes", b'{"hex": "0"}'), 400, "hex must be a hex"),
        (client.submit, (b"",), 400, "empty envelope"),
        (client.request, ("GET", "/v1/nope"), 404, "no such route: GET /v1/nope"),
        (client.request, ("GET", "/"), 404, "no such route: GET /"),
        (client.request, ("GET", "/v1/bids"), 405, "GET not allowed on /v1/bids (use POST)"),
        (client.request, ("DELETE", f"/v1/asks/{unknown}"), 405, "(use GET)"),
        (client.request, ("GET", f"/v1/asks/{unknown}/cancel"), 405, "(use POST)"),
    ]
    with trio.fail_after(TIMEOUT):
        for fn, args, status, message in cases:
            error = await api_error(fn, *args)
            assert error.status == status, (args, error)
            assert message in error.message, (args, error)
        # A verdict other than accept is an answer, not an error.
        garbage = await in_thread(client.submit, b"\x94not an envelope")
        assert (garbage.status, garbage.reason) == ("reject", "undecodable")
        assert node.published == []


async def test_a_405_names_the_allowed_methods_in_a_header(nursery: trio.Nursery) -> None:
    port, _ = await start_api(nursery, FakeNode())
    with trio.fail_after(TIMEOUT):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(get("/v1/envelopes", port=port))
            status, headers, body = await read_response(stream, bytearray())
    assert status == 405 and headers["allow"] == "POST"
    assert headers["content-type"] == "application/json"
    assert json.loads(body) == {"error": "GET not allowed on /v1/envelopes (use POST)"}


async def test_a_failing_node_is_a_one_line_500_and_the_api_goes_on(
    nursery: trio.Nursery,
) -> None:
    node = FakeNode()
    _, client = await start_api(nursery, node)
    node.fail = True
    with trio.fail_after(TIMEOUT):
        error = await api_error(client.status)
        assert (error.status, error.message) == (500, "internal error (RuntimeError)")
        node.fail = False
        assert (await in_thread(client.status))["peers"] == 0


# -- the HTTP layer -------------------------------------------------------------------
async def test_keep_alive_serves_several_requests_on_one_connection(
    nursery: trio.Nursery,
) -> None:
    node = FakeNode()
    port, _ = await start_api(nursery, node)

    def two_requests_then_a_failure_then_one_more() -> list[tuple[int, int]]:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
        seen: list[tuple[int, int]] = []
        try:
            for path in ("/v1/status", "/v1/markets", "/v1/status", "/v1/status"):
                node.fail = len(seen) == 2  # the third request fails in the handler
                conn.request("GET", path)
                response = conn.getresponse()
                response.read()
                assert conn.sock is not None  # not closed after the response
                seen.append((response.status, id(conn.sock)))
        finally:
            conn.close()
        return seen

    with trio.fail_after(TIMEOUT):
        seen = await in_thread(two_requests_then_a_failure_then_one_more)
    assert [s for s, _ in seen] == [200, 200, 500, 200]
    assert len({sock for _, sock in seen}) == 1


async def test_pipelined_requests_are_answered_in_order(nursery: trio.Nursery) -> None:
    port, _ = await start_api(nursery, FakeNode())
    with trio.fail_after(TIMEOUT):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(
                get("/v1/status", port=port)
                + get("/v1/nope", port=port)
                + get("/v1/markets", "Connection: close\r\n", port=port)
            )
            buf = bytearray()
            answers = [await read_response(stream, buf) for _ in range(3)]
            assert await read_to_eof(stream) == b""  # closed, as asked
    assert [a[0] for a in answers] == [200, 404, 200]
    assert "markets" in json.loads(answers[2][2])


MIB = 1024 * 1024


def hex_envelope(size: int) -> bytes:
    """A JSON envelope body of exactly `size` bytes (an even size, or one more)."""
    body = b'{"hex":""}'
    digits = (size - len(body)) // 2 * 2
    return b'{"hex":"' + b"0" * digits + b'"}' + b" " * (size - len(body) - digits)


async def test_a_body_above_the_limit_is_a_413_and_the_server_goes_on(
    nursery: trio.Nursery,
) -> None:
    port, client = await start_api(nursery, FakeNode())
    with trio.fail_after(TIMEOUT):
        # The stdlib client sends all of its 1 MiB + 1 body: the server answers early,
        # and swallows the rest before closing so that the client reads the 413.
        error = await api_error(client.request, "POST", "/v1/envelopes", hex_envelope(MIB + 1))
        assert error.status == 413
        assert error.message == "request body above 1048576 bytes"
        # Exactly at the limit is served (and judged by the core: too big to be an envelope).
        verdict = await in_thread(client.request, "POST", "/v1/envelopes", hex_envelope(MIB))
        assert (verdict["status"], verdict["reason"]) == ("reject", "oversized")

        # Declared too large: answered at once, without waiting for the body.
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(
                b"POST /v1/envelopes HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999\r\n\r\n"
            )
            status, headers, _ = await read_response(stream, bytearray())
            assert (status, headers["connection"]) == (413, "close")
            assert await read_to_eof(stream) == b""

        # Chunked, with no declared length: counted as it arrives.
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            chunk = b"\x00" * 65536
            await stream.send_all(
                b"POST /v1/envelopes HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            )
            with trio.move_on_after(5):  # the server stops reading after the limit
                for _ in range(17):
                    await stream.send_all(b"10000\r\n" + chunk + b"\r\n")
            status, _, body = await read_response(stream, bytearray())
            assert status == 413 and b"request body above" in body

        assert (await in_thread(client.status))["peers"] == 0


async def test_headers_above_the_limit_are_refused(nursery: trio.Nursery) -> None:
    port, client = await start_api(nursery, FakeNode())
    with trio.fail_after(TIMEOUT):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(get("/v1/status", f"X-Big: {'a' * 20_000}\r\n"))
            status, _, body = await read_response(stream, bytearray())
        assert status == 431 and b"request head above 16384 bytes" in body
        assert (await in_thread(client.status))["peers"] == 0


async def test_a_malformed_request_gets_a_400_and_the_connection_closes(
    nursery: trio.Nursery,
) -> None:
    port, _ = await start_api(nursery, FakeNode())
    with trio.fail_after(TIMEOUT):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(b"NOT HTTP AT ALL\r\n\r\n")
            status, headers, body = await read_response(stream, bytearray())
            assert await read_to_eof(stream) == b""
    # Hypercorn answers what does not parse as HTTP itself, before the API sees a
    # request: the status and the close, without a body.
    assert status == 400 and headers["connection"] == "close"
    assert body == b""


async def test_expect_100_continue(nursery: trio.Nursery) -> None:
    node = FakeNode()
    port, _ = await start_api(nursery, node)
    fields = {"market": node.state.market_id.hex(), "price": 1, "proof_time": 1}
    payload = json.dumps(fields).encode()
    with trio.fail_after(TIMEOUT):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(
                f"POST /v1/bids HTTP/1.1\r\nHost: localhost:{port}\r\n"
                f"Expect: 100-continue\r\nAuthorization: Bearer {TOKEN}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n".encode()
            )
            buf = bytearray()
            assert (await read_response(stream, buf))[0] == 100  # go on: send the body
            await stream.send_all(payload)
            status, _, body = await read_response(stream, buf)
    assert status == 200 and json.loads(body)["status"] == "accept"


async def _echo(request: Request) -> Response:
    if request.path == "/sleep":
        await trio.sleep_forever()
    if request.path == "/boom":
        raise ZeroDivisionError("no")
    return json_response({"path": request.path, "query": request.query, "size": len(request.body)})


async def test_the_query_and_the_handler_errors(nursery: trio.Nursery) -> None:
    limits = Limits(handler_timeout=0.2)
    port = await nursery.start(functools.partial(serve_http, _echo, limits=limits))
    with trio.fail_after(TIMEOUT):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            buf = bytearray()
            await stream.send_all(get("/echo?a=1&b=x%20y&a=2"))
            status, _, body = await read_response(stream, buf)
            assert status == 200
            assert json.loads(body) == {"path": "/echo", "query": {"a": "2", "b": "x y"}, "size": 0}
            await stream.send_all(get("/boom"))
            status, headers, body = await read_response(stream, buf)
            assert (status, headers["content-type"]) == (500, "application/json")
            assert json.loads(body) == {"error": "internal error (ZeroDivisionError)"}
            await stream.send_all(get("/sleep"))
            status, _, body = await read_response(stream, buf)
            assert status == 503 and json.loads(body) == {
                "error": "the node did not answer in time"
            }
            await stream.send_all(get("/after"))  # still the same connection
            assert (await read_response(stream, buf))[0] == 200


async def test_idle_and_slow_clients_are_cut_off(nursery: trio.Nursery) -> None:
    limits = Limits(idle_timeout=0.2, request_timeout=0.3)
    port = await nursery.start(functools.partial(serve_http, _echo, limits=limits))
    with trio.fail_after(TIMEOUT):
        idle = await trio.open_tcp_stream("127.0.0.1", port)
        async with idle:
            assert await read_to_eof(idle) == b""  # closed, nothing said
        slow = await trio.open_tcp_stream("127.0.0.1", port)
        async with slow:
            await slow.send_all(b"GET / HTTP/1.1\r\nHost:")  # and nothing more
            status, _, body = await read_response(slow, bytearray())
            assert status == 408 and b"not received in time" in body
            assert await read_to_eof(slow) == b""
        kept = await trio.open_tcp_stream("127.0.0.1", port)
        async with kept:  # after one answer, a kept-alive connection idles out as well
            await kept.send_all(get("/x"))
            assert (await read_response(kept, bytearray()))[0] == 200
            assert await read_to_eof(kept) == b""


async def test_connections_beyond_the_cap_wait_for_a_free_slot(nursery: trio.Nursery) -> None:
    """A connection in the middle of a request keeps its slot; the next waits."""
    port = await nursery.start(
        functools.partial(serve_http, _echo, limits=Limits(max_connections=1))
    )
    with trio.fail_after(TIMEOUT):
        first = await trio.open_tcp_stream("127.0.0.1", port)
        await first.send_all(b"GET /one HTTP/1.1\r\nHost:")  # started, not finished
        await trio.sleep(0.1)
        second = await trio.open_tcp_stream("127.0.0.1", port)  # lands in the backlog
        async with second:
            await second.send_all(get("/two"))
            with trio.move_on_after(0.3) as waited:
                await second.receive_some(1)
            assert waited.cancelled_caught  # not served while the first holds the slot
            await first.aclose()
            status, _, body = await read_response(second, bytearray())
            assert status == 200 and json.loads(body)["path"] == "/two"


async def test_idle_connections_make_room_for_a_new_client(nursery: trio.Nursery) -> None:
    """The review held 70 connections open without a byte, and a status request
    waited 29 s for a slot: at the cap, the longest idle connection is closed."""
    limits = Limits(max_connections=4, idle_timeout=60.0)
    port = await nursery.start(functools.partial(serve_http, _echo, limits=limits))
    with trio.fail_after(TIMEOUT):
        idle = [await trio.open_tcp_stream("127.0.0.1", port) for _ in range(6)]
        await trio.sleep(0.2)
        client = await trio.open_tcp_stream("127.0.0.1", port)
        async with client:
            await client.send_all(get("/status"))
            with trio.fail_after(3):  # not the 60 s idle timeout
                status, _, body = await read_response(client, bytearray())
            assert status == 200 and json.loads(body)["path"] == "/status"
        assert await read_to_eof(idle[0]) == b""  # the oldest was closed, nothing said
        for stream in idle:
            await stream.aclose()


async def test_the_api_makes_room_for_a_new_client_by_closing_the_longest_idle(
    nursery: trio.Nursery,
) -> None:
    """What serve_http does for the metrics, Hypercorn's connections of the control
    API do too: at the cap, the connection idle the longest is closed for a newcomer,
    and one serving a request keeps its slot."""
    node = FakeNode()
    port, client = await start_api(
        nursery, node, limits=Limits(max_connections=4, idle_timeout=60.0)
    )
    with trio.fail_after(TIMEOUT):
        busy = await trio.open_tcp_stream("127.0.0.1", port)  # a request in flight
        await busy.send_all(
            f"POST /v1/bids HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 11\r\n"
            f"Authorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\n\r\n{{".encode()
        )
        idle = [await trio.open_tcp_stream("127.0.0.1", port) for _ in range(6)]
        status = await in_thread(client.status)  # not after the 60 s idle timeout
        assert status["peers"] == 0
        assert await read_to_eof(idle[0]) == b""  # the oldest was closed, nothing said
        await busy.send_all(b'"price":1}')  # still served: its body comes in time
        answer, _, body = await read_response(busy, bytearray())
        assert answer == 400 and b"missing field: market" in body
        for stream in [busy, *idle]:
            await stream.aclose()


async def test_binds_loopback_only_by_default(nursery: trio.Nursery) -> None:
    # Every 127/8 address reaches the loopback interface (on Linux), but a socket bound
    # to 127.0.0.1 only takes connections to 127.0.0.1; one bound to every interface
    # takes them on 127.0.0.2 too, which shows that the check can fail.
    everywhere = await nursery.start(functools.partial(serve_http, _echo, host="0.0.0.0"))
    try:
        probe = await trio.open_tcp_stream("127.0.0.2", everywhere)
    except OSError:
        pytest.skip("127.0.0.2 does not reach the loopback interface here")
    await probe.aclose()
    default = await nursery.start(serve_http, _echo)
    local = await trio.open_tcp_stream("127.0.0.1", default)
    await local.aclose()
    with pytest.raises(OSError):
        await trio.open_tcp_stream("127.0.0.2", default)


def all_tasks() -> set[trio.lowlevel.Task]:
    root = trio.lowlevel.current_root_task()
    assert root is not None
    found, todo = set(), [root]
    while todo:
        task = todo.pop()
        found.add(task)
        todo.extend(t for n in task.child_nurseries for t in n.child_tasks)
    return found


async def test_shutdown_ends_every_connection_and_closes_the_socket() -> None:
    handler_exits: list[str] = []
    before = all_tasks()

    async def stuck(request: Request) -> Response:
        try:
            await trio.sleep_forever()
        finally:
            handler_exits.append(request.path)
        raise AssertionError("unreachable")

    async def run_and_cancel(make_handler: Callable[[Request], Awaitable[Response]]) -> int:
        async with trio.open_nursery() as nursery:
            port: int = await nursery.start(serve_http, make_handler)
            busy = await trio.open_tcp_stream("127.0.0.1", port)  # a request in flight
            await busy.send_all(get("/busy"))
            idle = await trio.open_tcp_stream("127.0.0.1", port)  # an idle connection
            await trio.sleep(0.2)
            assert not handler_exits
            assert len(all_tasks() - before) >= 3  # the server, a task per connection...
            nursery.cancel_scope.cancel()
        async with busy, idle:
            assert await read_to_eof(busy) == b""
            assert await read_to_eof(idle) == b""
        return port

    with trio.fail_after(TIMEOUT):
        port = await run_and_cancel(stuck)
    assert handler_exits == ["/busy"]
    assert all_tasks() == before
    with pytest.raises(OSError):
        await trio.open_tcp_stream("127.0.0.1", port)
