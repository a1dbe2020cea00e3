"""GET /v1/events: the node's server-sent events, read off a real node's control API
over TCP as they come (no polling): an ask placed through the API shows up on the
stream; the stream needs the token; a client that falls behind is dropped, not the
node; and stopping the API ends every connection, streams included."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import trio

from p2p_market.node.api import serve_api
from p2p_market.node.api_client import ApiClient
from p2p_market.node.api_token import read_token
from p2p_market.node.events import EventHub
from p2p_market.node.http import Limits
from tests.node.test_http_api import FakeNode, all_tasks, read_to_eof
from tests.node.test_runtime import MID, make_node, running

TIMEOUT = 15
TOKEN = "5e" * 32


class EventStream:
    """A raw SSE client: the request, the response head, then one event at a time."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buf = bytearray()

    @classmethod
    async def open(cls, port: int, token: str | None) -> tuple[EventStream, int, dict[str, str]]:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        auth = f"Authorization: Bearer {token}\r\n" if token else ""
        await stream.send_all(
            f"GET /v1/events HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{auth}"
            "Accept: text/event-stream\r\n\r\n".encode()
        )
        self = cls(stream)
        head = await self._until(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        return self, int(lines[0].split()[1]), headers

    async def _until(self, end: bytes) -> bytes:
        while end not in self.buf:
            data = await self.stream.receive_some(65536)
            if not data:
                raise EOFError(bytes(self.buf))
            self.buf += data
        found, _, rest = bytes(self.buf).partition(end)
        self.buf[:] = rest
        return found

    async def _chunk(self) -> bytes:
        """One chunk of the chunked body (b"" at its end)."""
        size = int(await self._until(b"\r\n"), 16)
        while len(self.buf) < size + 2:
            data = await self.stream.receive_some(65536)
            if not data:
                raise EOFError(bytes(self.buf))
            self.buf += data
        chunk = bytes(self.buf[:size])
        self.buf[:] = self.buf[size + 2 :]
        return chunk

    async def events(self) -> Any:
        """(kind, id, data) of each event as it comes, comments skipped."""
        pending = b""
        while True:
            chunk = await self._chunk()
            if not chunk:
                return
            pending += chunk
            while b"\n\n" in pending:
                block, _, pending = pending.partition(b"\n\n")
                fields = dict(
                    line.split(": ", 1)
                    for line in block.decode().split("\n")
                    if not line.startswith(":")
                )
                if fields:
                    yield fields["event"], int(fields["id"]), json.loads(fields["data"])


async def test_an_ask_placed_through_the_api_comes_on_the_event_stream(tmp_path: Path) -> None:
    node = make_node(tmp_path, "a")
    async with running(node):
        assert node.api_port is not None
        token = read_token(node.api_token_file)
        client = ApiClient(f"http://127.0.0.1:{node.api_port}", token=token, timeout=TIMEOUT)
        with trio.fail_after(TIMEOUT):
            sse, status, headers = await EventStream.open(node.api_port, token)
            assert status == 200
            assert headers["content-type"].startswith("text/event-stream")
            events = sse.events()
            kind, _, first = await anext(events)
            assert kind == "subscribed" and first["queue"] > 0  # live from here on

            ask = {"market": MID.hex(), "max_price": 9, "max_proof_time": 900}
            placed = await trio.to_thread.run_sync(client.place_ask, ask)
            assert placed.status == "accept"
            seen: list[tuple[str, int, dict[str, Any]]] = []
            async for event in events:
                seen.append(event)
                kind, _, data = event
                if kind == "ask_state" and data["ask"] == placed.id:
                    break
        submitted = [d for k, _, d in seen if k == "submitted"]
        assert submitted == [
            {"kind": "ask", "id": placed.id, "status": "accept", "reason": "ok", "detail": ""}
        ]
        state = next(d for k, _, d in seen if k == "ask_state")
        assert state == {"market": MID.hex(), "ask": placed.id, "before": None, "after": "open"}
        ids = [i for _, i, _ in seen]
        assert ids == sorted(ids) and len(set(ids)) == len(ids)
        await sse.stream.aclose()
        # The stream's end is noticed: its subscription goes away.
        with trio.fail_after(TIMEOUT):
            while node.events.subscribers:
                await trio.sleep(0.01)


async def test_the_event_stream_needs_the_token(nursery: trio.Nursery) -> None:
    port = await nursery.start(functools.partial(serve_api, FakeNode(), token=TOKEN))
    with trio.fail_after(TIMEOUT):
        for token, status in ((None, 401), ("0f" * 32, 401)):
            sse, got, headers = await EventStream.open(port, token)
            async with sse.stream:
                assert (got, headers["www-authenticate"]) == (status, "Bearer")
        # A facade that tells no events: 404, not a stream that never says anything.
        sse, got, _ = await EventStream.open(port, TOKEN)
        async with sse.stream:
            assert got == 404


async def test_a_client_that_falls_behind_is_dropped_not_the_node(nursery: trio.Nursery) -> None:
    hub = EventHub(queue=4)
    port = await nursery.start(functools.partial(serve_api, FakeNode(), token=TOKEN, events=hub))
    with trio.fail_after(TIMEOUT):
        sse, status, _ = await EventStream.open(port, TOKEN)
        assert status == 200
        events = sse.events()
        assert (await anext(events))[0] == "subscribed"
        # Ten events at once, with no checkpoint between them: the stream's task
        # cannot read them as they come, its queue holds 4, publishing never waits.
        for n in range(10):
            hub.publish("peer_connected", {"peer": f"p{n}"})
        assert hub.dropped == 1 and hub.subscribers == 0
        got = [(kind, data) async for kind, _, data in events]  # to the stream's end
        assert got[-1][0] == "dropped"
        # What the queue held, and the one event handed straight to the stream's
        # task if it was already waiting for one: the first events, in order.
        kept = got[:-1]
        assert 4 <= len(kept) <= 5
        assert kept == [("peer_connected", {"peer": f"p{n}"}) for n in range(len(kept))]
        await sse.stream.aclose()
        # Another client is served as before.
        again, status, _ = await EventStream.open(port, TOKEN)
        async with again.stream:
            assert status == 200 and (await anext(again.events()))[0] == "subscribed"


async def test_stopping_the_api_ends_streams_and_connections() -> None:
    before = all_tasks()
    hub = EventHub()
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(
                functools.partial(serve_api, FakeNode(), token=TOKEN, events=hub)
            )
            sse, status, _ = await EventStream.open(port, TOKEN)
            assert status == 200 and (await anext(sse.events()))[0] == "subscribed"
            idle = await trio.open_tcp_stream("127.0.0.1", port)
            nursery.cancel_scope.cancel()
        async with sse.stream, idle:
            await read_to_eof(sse.stream)
            assert await read_to_eof(idle) == b""
    assert hub.subscribers == 0
    assert all_tasks() == before
    try:
        await trio.open_tcp_stream("127.0.0.1", port)
    except OSError:
        pass
    else:
        raise AssertionError("the API's socket is still open")


async def test_a_client_that_stops_reading_holds_neither_its_task_nor_the_shutdown() -> None:
    """A stream whose client reads nothing fills the socket's buffers: its write then
    waits. The hub drops the client (its queue fills), and the write gives up after
    `write_timeout`, closing the connection; stopping the API does not wait on it."""
    before = all_tasks()
    hub = EventHub(queue=8)
    limits = Limits(write_timeout=0.5)
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(
                functools.partial(serve_api, FakeNode(), token=TOKEN, events=hub, limits=limits)
            )
            sse, status, _ = await EventStream.open(port, TOKEN)
            assert status == 200 and (await anext(sse.events()))[0] == "subscribed"
            big = "x" * 500_000  # the client reads none of it from here on
            while hub.subscribers:
                hub.publish("peer_connected", {"peer": big})
                await trio.sleep(0.01)  # the stream's task writes what it can
            assert hub.dropped == 1
            nursery.cancel_scope.cancel()
        await sse.stream.aclose()
    assert all_tasks() == before


def test_every_effect_of_the_core_has_an_event_name() -> None:
    """An effect added to the core and not named here would never reach the stream."""
    from typing import get_args

    from p2p_market.core.effects import Effect
    from p2p_market.node.events import EFFECT_KINDS

    assert set(get_args(Effect)) == set(EFFECT_KINDS)
