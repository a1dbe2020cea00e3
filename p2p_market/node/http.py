"""The node's one HTTP server, for the control API (node/api.py, FastAPI) and the
metrics (node/metrics.py): Hypercorn's trio connections (HTTP/1.1 on h11) on a
listener of ours, in one accept loop (`serve_asgi`).

    async with trio.open_nursery() as nursery:
        port = await nursery.start(functools.partial(serve_http, handler, port=0))
        ...
        nursery.cancel_scope.cancel()   # every connection task ends, the socket closes

It bounds what a client can make the node hold or wait for (`Limits`): request line
and headers (431), body size (413), concurrent connections (the rest wait in the
backlog; at the cap the longest idle one is closed for a newcomer), the idle time
before a request and the time to send a body (408; a head still incomplete when the
idle time is up is cut off without an answer), the time to produce a response (503)
and to take it. `serve_http` serves a plain handler, an async function `Request ->
Response` (the metrics); whatever it raises (but cancellation) becomes a 500 JSON
response and is logged, and the server goes on serving. Keep-alive is supported; a
connection closes after an error the server cannot answer on the same connection
(protocol error, oversized request). It binds 127.0.0.1 unless told otherwise: the
control API must not be reachable from other hosts by accident.
"""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import parse_qsl

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.events import Closed, RawData, Updated
from hypercorn.events import Event as HypercornEvent
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import ConnectionState
from hypercorn.utils import wrap_app

if TYPE_CHECKING:
    # trio_typing's stubs shadow trio's own annotations for mypy (see net/gossip.py).
    from trio_typing import TaskStatus

log = logging.getLogger(__name__)

JSON: Final = "application/json"
SERVER_NAME: Final = "p2p-market"
_READ_CHUNK: Final = 64 * 1024

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Limits:
    """What one client may cost the server. Every timeout is in seconds."""

    max_head_bytes: int = 16 * 1024
    """Request line and headers together (h11's `max_incomplete_event_size`)."""
    max_body_bytes: int = 1024 * 1024
    max_connections: int = 64
    """Further clients wait in the listen backlog until a connection ends."""
    request_timeout: float = 10.0
    """From the start of a request (its first byte) to its last byte."""
    idle_timeout: float = 30.0
    """How long a kept-alive connection may wait for its next request."""
    handler_timeout: float = 30.0
    write_timeout: float = 10.0
    drain_bytes: int = 4 * 1024 * 1024
    """How much unread request data to swallow before closing after an early response
    (so the client can read a 413 instead of getting a reset)."""
    drain_timeout: float = 2.0


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str
    """The path of the target, not percent-decoded, without the query."""
    query: dict[str, str]
    """Decoded query parameters; of a repeated name, the last value."""
    body: bytes
    headers: dict[str, str]
    """Names in lower case; repeated headers joined with ", "."""
    local_port: int = 0
    """The port the request arrived on (what a `Host` header must name)."""

    @property
    def content_type(self) -> str:
        """The media type alone, lower case, without parameters ("" if absent)."""
        return self.headers.get("content-type", "").split(";", 1)[0].strip().lower()


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes = b""
    content_type: str = JSON
    headers: tuple[tuple[str, str], ...] = field(default=())
    """Extra headers (e.g. Allow on a 405); content-type and -length are set here."""


Handler = Callable[[Request], Awaitable[Response]]


def json_response(
    obj: Any,
    status: int = 200,
    *,
    headers: tuple[tuple[str, str], ...] = (),
    default: Callable[[Any], Any] | None = None,
) -> Response:
    """`default` is json.dumps's fallback for values JSON has no type for."""
    body = json.dumps(obj, separators=(",", ":"), allow_nan=False, default=default)
    return Response(status, body.encode() + b"\n", JSON, headers)


def error_response(
    status: int, message: str, *, headers: tuple[tuple[str, str], ...] = ()
) -> Response:
    """The one error shape of every JSON endpoint: `{"error": "<one line>"}`."""
    return json_response({"error": " ".join(message.split())}, status, headers=headers)


class Refused(Exception):
    """A request answered by the guard: status, one line, extra headers."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


class HandlerApp:
    """A plain handler (`Request -> Response`) as an ASGI app, bounded by `limits`:
    the request read whole (431, 413, 408), the handler given `handler_timeout`
    (503), whatever it raises a one-line 500."""

    def __init__(self, handler: Handler, limits: Limits) -> None:
        self.handler = handler
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # a websocket upgrade: no route has one
            await send({"type": "websocket.close", "code": 1008})
            return
        try:
            request = await read_request(scope, receive, self.limits)
        except Gone:
            return
        except Refused as refused:
            await answer(send, refused, close=refused.status in (408, 413, 431))
            return
        response = await self._respond(request)
        headers = [
            (b"content-type", response.content_type.encode("latin-1")),
            (b"content-length", str(len(response.body)).encode()),
            (b"server", SERVER_NAME.encode()),
            *((k.encode("latin-1"), v.encode("latin-1")) for k, v in response.headers),
        ]
        await send({"type": "http.response.start", "status": response.status, "headers": headers})
        await send({"type": "http.response.body", "body": response.body})

    async def _respond(self, request: Request) -> Response:
        try:
            with trio.move_on_after(self.limits.handler_timeout):
                return await self.handler(request)
            log.warning("http: %s %s timed out", request.method, request.path)
            return error_response(503, "the node did not answer in time")
        except Exception as exc:
            log.exception("http: %s %s failed", request.method, request.path)
            return error_response(500, f"internal error ({type(exc).__name__})")


async def serve_http(
    handler: Handler,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    limits: Limits | None = None,
    task_status: TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve a plain handler until cancelled (`serve_asgi` of `HandlerApp`); reports
    the bound port through `task_status`."""
    limits = limits or Limits()
    app = HandlerApp(handler, limits)
    await serve_asgi(app, hypercorn_config(limits), host, port, limits, task_status=task_status)


# -- reading a request, bounded -------------------------------------------------------


async def read_request(scope: Scope, receive: Receive, limits: Limits) -> Request:
    """The request with its whole body, bounded: 431 for a head above the limit
    (Hypercorn bounds a head still incomplete, this one a complete head), 413 for
    a body above it, read on (bounded) before the answer so the client, still
    sending, can read it rather than a reset."""
    raw_path: bytes = scope.get("raw_path") or scope["path"].encode()
    raw_headers: list[tuple[bytes, bytes]] = list(scope["headers"])
    head = len(scope["method"]) + len(raw_path) + sum(len(n) + len(v) for n, v in raw_headers)
    if head > limits.max_head_bytes:
        raise Refused(431, f"request head above {limits.max_head_bytes} bytes")
    headers: dict[str, str] = {}
    for raw_name, raw_value in raw_headers:
        name, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    too_large = Refused(413, f"request body above {limits.max_body_bytes} bytes")
    declared = headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limits.max_body_bytes:
        if int(declared) <= limits.drain_bytes:
            await drain(receive, limits)
        raise too_large
    body = bytearray()
    with trio.move_on_after(limits.request_timeout) as waited:
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                raise Gone()
            body += message.get("body", b"")
            if len(body) > limits.max_body_bytes:
                if message.get("more_body", False):
                    await drain(receive, limits)
                raise too_large
            if not message.get("more_body", False):
                break
    if waited.cancelled_caught:
        raise Refused(408, "request not received in time")
    split_path = raw_path.split(b"?", 1)[0].decode("ascii", "replace")
    server = scope.get("server") or ("", 0)
    return Request(
        method=scope["method"],
        path=split_path or "/",
        query=dict(parse_qsl(scope.get("query_string", b"").decode("latin-1"))),
        body=bytes(body),
        headers=headers,
        local_port=int(server[1] or 0),
    )


class Gone(Exception):
    """The client disconnected before its request was whole: nothing to answer."""


async def drain(receive: Receive, limits: Limits) -> None:
    """Swallow what the client still sends of a refused body, up to `drain_bytes`
    and `drain_timeout`, so that it reads the answer instead of a reset."""
    left = limits.drain_bytes
    with trio.move_on_after(limits.drain_timeout):
        while left > 0:
            message = await receive()
            if message["type"] != "http.request":
                return
            left -= len(message.get("body", b""))
            if not message.get("more_body", False):
                return


def replay(body: bytes, receive: Receive) -> Receive:
    """The app's receive: the body already read, then the connection's own events
    (a disconnect, which a stream watches for)."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


async def answer(send: Send, refused: Refused, *, close: bool = False) -> None:
    body = json.dumps({"error": " ".join(refused.message.split())}).encode() + b"\n"
    headers = [(b"content-type", JSON.encode()), (b"content-length", str(len(body)).encode())]
    headers += [(k.encode(), v.encode()) for k, v in refused.headers.items()]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": refused.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


# -- the connections and the accept loop ---------------------------------------------
async def listen(host: str, port: int) -> trio.SocketListener:
    """One listening socket on the first address `host` resolves to (never several
    ports for one `port=0`, as open_tcp_listeners may give for a name)."""
    infos = await trio.socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )
    if not infos:
        raise OSError(f"cannot resolve {host!r}")
    family, kind, proto, _, addr = infos[0]
    sock = trio.socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        await sock.bind(addr)
        sock.listen(128)
    except BaseException:
        sock.close()
        raise
    return trio.SocketListener(sock)


def hypercorn_config(limits: Limits) -> HypercornConfig:
    """Hypercorn bounded as `limits` says: h11 refuses an incomplete head past 4x the
    limit (the guard refuses a complete one past it, with its own 431), idle
    connections close after `idle_timeout`; no access log, errors to this module's
    logger, no Server header of its own (the guard sets ours)."""
    config = HypercornConfig()
    config.h11_max_incomplete_size = 4 * limits.max_head_bytes
    config.keep_alive_timeout = limits.idle_timeout
    config.graceful_timeout = 0.0
    config.include_server_header = False
    config.accesslog = None
    config.errorlog = logging.getLogger(f"{__name__}.hypercorn")
    return config


class HypercornConnection(TCPServer):
    """Hypercorn's connection, with three changes. It tells the server when it waits
    for a request (idle) and when it serves one, so that at the connection cap the
    longest idle one can be closed for a newcomer (clients that connect and send
    nothing cannot keep the owner out); a request's first byte ends the idle time.
    From that byte the head must be whole within `request_timeout`, else a 408 and
    the connection closes (Hypercorn would wait for its keep-alive time, counted
    from before the first byte, and close without a word). And a write that the
    client does not take within `write_timeout` closes the connection: Hypercorn
    shields each write from cancellation with no time limit, so a client that
    stopped reading (an event stream's, whose socket buffers filled) would hold its
    task, and the node's shutdown, for as long as it stayed connected."""

    def __init__(
        self,
        app: Any,
        config: HypercornConfig,
        stream: trio.SocketStream,
        idle: _Idle,
        limits: Limits,
    ) -> None:
        super().__init__(app, config, WorkerContext(None), ConnectionState({}), stream)  # type: ignore[arg-type]
        self.idle = idle
        self.write_timeout = limits.write_timeout
        self.request_timeout = limits.request_timeout
        self.scope = trio.CancelScope()
        idle[self] = None  # waiting for its first request

    async def _read_data(self) -> None:
        """Hypercorn's read loop, but the first byte of a request takes the
        connection off the idle list and starts the head's time limit."""
        while True:
            try:
                data = await self.stream.receive_some(_READ_CHUNK)
            except (trio.ClosedResourceError, trio.BrokenResourceError):
                break
            if data and self in self.idle:
                del self.idle[self]
                await self.idle_task.restart(self._task_group, self._head_timeout)
            await self.protocol.handle(RawData(bytes(data)))
            if data == b"":
                break
        await self.protocol.handle(Closed())

    async def _head_timeout(self) -> None:
        """A head not whole in time: a 408 (nothing else is being answered on this
        connection: it was idle), then close. Stopped once the head is parsed."""
        with trio.move_on_after(self.request_timeout):
            await self.context.terminated.wait()
        body = b'{"error":"request not received in time"}\n'
        head = (
            b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\nconnection: close\r\nserver: %s\r\n\r\n"
        ) % (len(body), SERVER_NAME.encode())
        with trio.CancelScope(shield=True):
            with trio.move_on_after(self.write_timeout):
                try:
                    async with self.send_lock:
                        await self.stream.send_all(head + body)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass
            await self._initiate_server_close()

    async def protocol_send(self, event: HypercornEvent) -> None:
        if isinstance(event, RawData):
            await self._write(event.data)
            return
        if isinstance(event, Updated):
            self.idle.pop(self, None)
            if event.idle:
                self.idle[self] = None  # the newest idle one
        await super().protocol_send(event)

    async def _write(self, data: bytes) -> None:
        """Hypercorn's write: shielded (a write cut short would leave the client half
        a response), but for `write_timeout` at most; then the connection closes."""
        broken = False
        async with self.send_lock:
            with trio.CancelScope(shield=True) as scope:
                scope.deadline = trio.current_time() + self.write_timeout
                try:
                    await self.stream.send_all(data)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    broken = True
        if broken or scope.cancelled_caught:
            if scope.cancelled_caught:
                log.info("http: a client took no data for %g s: closed", self.write_timeout)
            await trio.aclose_forcefully(self.stream)
            await self.protocol.handle(Closed())


_Idle = dict[HypercornConnection, None]


async def serve_asgi(
    app: Any,
    config: HypercornConfig,
    host: str,
    port: int,
    limits: Limits,
    task_status: TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the ASGI `app` until cancelled: Hypercorn's connections on our listener,
    at most `limits.max_connections` at once (a newcomer at the cap has the longest
    idle one closed for it, or waits for a slot, the rest in the backlog), each in a
    task of this nursery, so cancelling it ends every one and closes the socket;
    what Hypercorn's own `serve` adds (worker processes, lifespan events, signals) a
    node's servers do not use.
    The one accept loop of the control API and the metrics. Reports the bound port
    (useful with port 0) through `task_status`."""
    wrapped = wrap_app(app, config.wsgi_max_body_size, "asgi")
    listener = await listen(host, port)
    async with listener:
        slots = trio.Semaphore(limits.max_connections)
        idle: _Idle = {}
        async with trio.open_nursery() as nursery:
            bound = listener.socket.getsockname()[1]
            log.info("http: listening on %s:%d", host, bound)
            task_status.started(bound)
            while True:
                try:
                    stream = await listener.accept()
                except OSError as exc:  # e.g. EMFILE: back off instead of spinning
                    log.warning("http: accept failed: %s", exc)
                    await trio.sleep(0.1)
                    continue
                try:
                    slots.acquire_nowait()
                except trio.WouldBlock:  # a newcomer at the cap: close the longest idle
                    for oldest in idle:
                        del idle[oldest]
                        oldest.scope.cancel()
                        break
                    try:
                        await slots.acquire()
                    except BaseException:
                        await trio.aclose_forcefully(stream)
                        raise
                conn = HypercornConnection(wrapped, config, stream, idle, limits)
                nursery.start_soon(_connection, conn, slots)


async def _connection(conn: HypercornConnection, slots: trio.Semaphore) -> None:
    try:
        with conn.scope:
            await conn.run()
    finally:
        conn.idle.pop(conn, None)
        slots.release()
        await trio.aclose_forcefully(conn.stream)  # Hypercorn's close skips it if cancelled
