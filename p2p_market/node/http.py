"""A minimal HTTP/1.1 server on trio and h11, for the local control API and metrics.

    async with trio.open_nursery() as nursery:
        port = await nursery.start(functools.partial(serve_http, handler, port=0))
        ...
        nursery.cancel_scope.cancel()   # every connection task ends, the socket closes

h11 does the protocol (sans-IO); this module only moves bytes, and bounds what a
client can make the node hold or wait for (`Limits`): request line and headers
(431), body size (413), concurrent connections (the rest wait in the backlog), time
to send a request (408), to produce a response (503) and to take it. A handler is
an async function `Request -> Response`; whatever it raises (but cancellation)
becomes a 500 JSON response and is logged, and the server goes on serving.
Keep-alive is supported; a connection closes after any error the server cannot
answer on the same connection (protocol error, oversized request, timeout). It
binds 127.0.0.1 unless told otherwise: the control API must not be reachable from
other hosts by accident.
"""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import parse_qsl, urlsplit

import h11
import trio

if TYPE_CHECKING:
    # trio_typing's stubs shadow trio's own annotations for mypy (see net/gossip.py).
    from trio_typing import TaskStatus

log = logging.getLogger(__name__)

JSON: Final = "application/json"
SERVER_NAME: Final = "p2p-market"
_READ_CHUNK: Final = 64 * 1024


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


class _Refused(Exception):
    """A request this server will not read to its end: answer, then close."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


async def serve_http(
    handler: Handler,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    limits: Limits | None = None,
    task_status: TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until cancelled. Reports the bound port (useful with port 0) through
    `task_status`; cancelling ends every connection task and closes the socket."""
    limits = limits or Limits()
    listener = await listen(host, port)
    async with listener:
        bound = listener.socket.getsockname()[1]
        log.info("http: listening on %s:%d", host, bound)
        slots = trio.Semaphore(limits.max_connections)
        idle: dict[_Conn, None] = {}
        async with trio.open_nursery() as nursery:
            task_status.started(bound)
            while True:
                try:
                    slots.acquire_nowait()
                except trio.WouldBlock:
                    _evict_oldest_idle(idle)
                    await slots.acquire()
                try:
                    stream = await listener.accept()
                except OSError as exc:  # e.g. EMFILE: back off instead of spinning
                    slots.release()
                    log.warning("http: accept failed: %s", exc)
                    await trio.sleep(0.1)
                    continue
                except BaseException:
                    slots.release()
                    raise
                nursery.start_soon(_connection, handler, stream, limits, slots, idle)


def _evict_oldest_idle(idle: dict[_Conn, None]) -> None:
    """Every connection is taken: close the one that has waited longest without
    sending a byte of its next request. Clients that open connections and send
    nothing cannot keep others out (70 of them held a status request for 29 s)."""
    for conn in idle:
        del idle[conn]
        conn.evicted = True
        conn._scope.cancel()
        return


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


async def _connection(
    handler: Handler,
    stream: trio.SocketStream,
    limits: Limits,
    slots: trio.Semaphore,
    idle: dict[_Conn, None],
) -> None:
    conn = _Conn(handler, stream, limits, idle)
    try:
        async with stream:
            await conn.run()
    except (trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError, OSError):
        pass  # the client went away or stopped reading: nothing more to tell it
    except Exception:  # a bug here must not take the other connections down
        log.exception("http: connection failed")
    finally:
        idle.pop(conn, None)
        slots.release()


class _Conn:
    def __init__(
        self,
        handler: Handler,
        stream: trio.SocketStream,
        limits: Limits,
        idle: dict[_Conn, None] | None = None,
    ) -> None:
        self.handler = handler
        self.stream = stream
        self.limits = limits
        self.idle = {} if idle is None else idle
        """The server's connections waiting for a request's first byte, oldest first."""
        self.evicted = False
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=limits.max_head_bytes)
        self.local_port = int(stream.socket.getsockname()[1])
        self._started = False
        self._scope = trio.CancelScope()

    async def run(self) -> None:
        while True:
            request = await self._read_request()
            if request is None:
                return
            response = await self._respond(request)
            await self._send(response)
            if self.h11.our_state is h11.MUST_CLOSE or self.h11.their_state is not h11.DONE:
                await self._close_gracefully()
                return
            self.h11.start_next_cycle()

    # -- reading ------------------------------------------------------------------
    async def _read_request(self) -> Request | None:
        """The next complete request, or None once the connection is to be closed
        (after answering why, when there is a request to answer)."""
        # Idle until the request's first byte, then `request_timeout` for the rest.
        self._started = bool(self.h11.trailing_data[0])
        wait = self.limits.request_timeout if self._started else self.limits.idle_timeout
        failure: tuple[int, str] | None = None
        with trio.move_on_after(wait) as self._scope:
            if not self._started:
                self.idle[self] = None
            try:
                return await self._read_rest(await self._next_event())
            except h11.RemoteProtocolError as exc:
                failure = (exc.error_status_hint, f"bad request: {exc}")
            except _Refused as exc:
                failure = (exc.status, exc.message)
        if failure is None and self._started:
            failure = (408, "request not received in time")
        if failure is not None:
            await self._fail(*failure)
        return None

    async def _next_event(self) -> Any:
        """The next h11 event, reading as needed; raises RemoteProtocolError."""
        while True:
            event = self.h11.next_event()
            if event is not h11.NEED_DATA:
                return event
            if self.h11.they_are_waiting_for_100_continue:
                await self._write(h11.InformationalResponse(status_code=100, headers=[]))
            data = await self.stream.receive_some(_READ_CHUNK)
            if data and not self._started:
                self._started = True
                self.idle.pop(self, None)
                self._scope.deadline = trio.current_time() + self.limits.request_timeout
            self.h11.receive_data(data)  # b"" is EOF

    async def _read_rest(self, event: Any) -> Request | None:
        if isinstance(event, h11.ConnectionClosed):
            return None
        if not isinstance(event, h11.Request):  # pragma: no cover (h11 guarantees it)
            raise h11.RemoteProtocolError("expected a request", error_status_hint=400)
        head = (
            len(event.method) + len(event.target) + sum(len(n) + len(v) for n, v in event.headers)
        )
        if head > self.limits.max_head_bytes:  # h11 only bounds a head still incomplete
            raise _Refused(431, f"request head above {self.limits.max_head_bytes} bytes")
        declared = _content_length(event.headers)
        if declared is not None and declared > self.limits.max_body_bytes:
            raise self._too_large()
        body = bytearray()
        while True:
            part = await self._next_event()
            if isinstance(part, h11.Data):
                body += part.data
                if len(body) > self.limits.max_body_bytes:
                    raise self._too_large()
            elif isinstance(part, h11.EndOfMessage):
                break
            elif isinstance(part, h11.ConnectionClosed):
                return None
        return _request(event, bytes(body), self.local_port)

    def _too_large(self) -> _Refused:
        return _Refused(413, f"request body above {self.limits.max_body_bytes} bytes")

    # -- answering ----------------------------------------------------------------
    async def _respond(self, request: Request) -> Response:
        try:
            with trio.move_on_after(self.limits.handler_timeout):
                return await self.handler(request)
            log.warning("http: %s %s timed out", request.method, request.path)
            return error_response(503, "the node did not answer in time")
        except Exception as exc:
            log.exception("http: %s %s failed", request.method, request.path)
            return error_response(500, f"internal error ({type(exc).__name__})")

    async def _send(self, response: Response) -> None:
        headers = [
            ("content-type", response.content_type),
            ("content-length", str(len(response.body))),
            ("server", SERVER_NAME),
            *response.headers,
        ]
        await self._write(h11.Response(status_code=response.status, headers=headers))
        await self._write(h11.Data(data=response.body))
        await self._write(h11.EndOfMessage())

    async def _write(self, event: Any) -> None:
        data = self.h11.send(event)
        if data:
            with trio.fail_after(self.limits.write_timeout):
                await self.stream.send_all(data)

    async def _fail(self, status: int, message: str) -> None:
        """Answer a request that will not be served (if h11 still allows a response),
        then close: what the client sent after it cannot be trusted to frame."""
        if self.h11.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        try:
            await self._send(error_response(status, message, headers=(("connection", "close"),)))
        except h11.LocalProtocolError:  # e.g. the request line never parsed
            return
        except trio.TooSlowError:
            return
        await self._close_gracefully()

    async def _close_gracefully(self) -> None:
        """Stop sending, then swallow (bounded) what the client still sends, so that
        closing does not reset the connection before it has read our response."""
        try:
            with trio.move_on_after(self.limits.drain_timeout):
                await self.stream.send_eof()
                left = self.limits.drain_bytes
                while left > 0:
                    data = await self.stream.receive_some(_READ_CHUNK)
                    if not data:
                        break
                    left -= len(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass


def _content_length(headers: Any) -> int | None:
    for name, value in headers:
        if name == b"content-length":
            return int(value)  # h11 has checked it is one non-negative integer
    return None


def _request(event: h11.Request, body: bytes, local_port: int) -> Request:
    target = event.target.decode("ascii", "replace")
    split = urlsplit(target)
    headers: dict[str, str] = {}
    for raw_name, raw_value in event.headers:
        name, value = raw_name.decode("ascii"), raw_value.decode("latin-1")
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return Request(
        method=event.method.decode("ascii"),
        path=split.path or "/",
        query=dict(parse_qsl(split.query, keep_blank_values=True)),
        body=body,
        headers=headers,
        local_port=local_port,
    )
