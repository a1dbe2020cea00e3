"""The local control API: JSON over HTTP on 127.0.0.1, served from a `NodeFacade` by
FastAPI on Hypercorn's trio connections, in a task of the node's nursery (`serve_api`).
The reference for clients is docs/api.md; the OpenAPI document is served.

    GET  /v1/status                    node identity, listen addrs, peers, markets, uptime, and
                                       what its roles tell (a prover: its latest proofs' times)
    GET  /v1/markets                   {"markets": [...]}
    GET  /v1/markets/known             {"markets": [...]}: what peers announce (discovery.py)
    GET  /v1/markets/{id}/book         {"bids": [...], "asks": [...]}
    GET  /v1/asks                      the asks it holds (?mine=true: its own; ?market, ?state)
    GET  /v1/asks/{id}                 one ask's view
    GET  /v1/asks/{id}/proofs          token: the proofs of the node's ask its role verified
    POST /v1/envelopes                 token: a signed envelope, as JSON {"hex": "..."}
    POST /v1/bids                      token: JSON fields of a Bid, signed with the node's key
    POST /v1/asks                      token: JSON fields of an Ask, signed with the node's key
    POST /v1/asks/{id}/cancel          token: sign and submit a Cancel of one of the node's asks
    GET  /v1/stats                     counters: gossip frames and envelopes, admitted, peers
    GET  /v1/markets/{id}/check        state_hash, check_invariants(), reorgs, envelopes per ask
    GET  /v1/markets/{id}/asks         {"asks": [...]}: newest first, each with its timeline
    GET  /v1/markets/{id}/provers      {"provers": [...]}: terms, load, earnings, evidence
    GET  /v1/peers                     connected peers and gossip health (node/console_views.py)
    POST /v1/peers                     token: {"addrs": [full multiaddrs]}: dial them now, and
                                       keep them with the bootstrap peers
    GET  /v1/prover/bid                the prover role's bid: its terms and state
    POST /v1/prover/bid                token: new terms (price, proof_time, capacity, max_size,
                                       bid_ttl_ms), posted at once, kept across a restart
    POST /v1/prover/bid/pause          token: stop committing; out of matching (also
                                       /withdraw); /resume posts the terms again
    GET  /v1/prover/jobs               the prover's current and recent jobs
    GET  /v1/prover/earnings           what its accepted proofs earned, per market
    GET  /v1/events                    token: server-sent events, ask lifecycle and node events
                                       as they happen (node/events.py)
    GET  /openapi.json                 the OpenAPI document of all of the above
    GET  /console                      the web console (node/console/, docs/console.md)

The API only obeys its owner. Binding 127.0.0.1 keeps other hosts out, but not the
web pages the operator's browser opens: any page can send a cross-site POST to
127.0.0.1 (a form, or fetch with `text/plain`, needs no CORS preflight), and a page
on a domain that the attacker re-points to 127.0.0.1 (DNS rebinding) is, to the
browser, the same origin as the API, so it may read the answers as well. Either would
let a stranger's page sign bids, place or cancel asks, or dial peers with the node's
key. So every request is checked, in this order:

1. `Host` must name this API: 127.0.0.1, localhost or [::1] (or the address it is
   bound to) with the port the request came in on; anything else is DNS rebinding,
   or a mistake: 421.
2. A browser's `Origin`, if sent, must be this API's own (`http://127.0.0.1:PORT`, ...),
   and `Sec-Fetch-Site`, if sent, must not be `cross-site` or `same-site`: else 403.
   Browsers send these on cross-site requests; the CLI and scripts do not.
3. Every method but GET (and HEAD) changes the node's state and needs the node's API
   token (node/api_token.py) as `Authorization: Bearer <token>`, compared in constant
   time: a missing, malformed or wrong one is a 401 naming which. A web page cannot
   read the token file, and cannot set this header on a cross-site request without a
   CORS preflight, which this API never grants.
4. Those requests must also say `Content-Type: application/json` (even a cancel, whose
   body is `{}`): anything else is a 415, so that no request a browser may send
   without a preflight (`text/plain`, forms) is ever parsed.

Reads of public data need no token: status, markets, known markets, book, an ask's
view, a market's asks and provers, peers, stats and check show what the node's peers
see anyway (signed orders and market announcements gossiped to everyone, the state
derived from them, counters), and `p2p-market status`, `book`, the console and
monitoring should work without the secret; the checks of Host and Origin still keep
them from web pages. The one private read, an ask's verified proofs (what its
requester paid for, perhaps of confidential inputs), needs the token. The API binds
loopback addresses, unless the token is required on every call ("token
everywhere", config `node.api_token_everywhere`): then it may bind any
address (`node.api_listen`), and every request, reads included, needs the token, since
off loopback anyone who can reach the port could read the book, the asks and the
node's status, and a request without a secret proves nothing about who sends it. With
the token on every call the Host check (1.) no longer guards anything (a rebinding
page cannot send the token: it cannot read the file, nor set the header cross-site
without a preflight), so any Host with the right port is taken, which lets an operator
name the node by a DNS name or any of its addresses; Origin (2.) must then be the
Host's own. `serve_api` refuses a non-loopback bind without token everywhere.

Stats and check are for simulations and operators (`p2p-market simulate` compares
them across nodes); they need the runtime's node (`states`, `gossip`, `metrics`), and
answer 404 on a facade without them, as does /v1/peers on a facade that cannot dial.

A submission answers 200 with `{"id", "status", "reason", "detail"}` whatever the
verdict: an ignored or rejected envelope is the node's answer, not an HTTP error.
Not so when the node could not write it to its log (it is then refused, not kept,
not published): 507 when the disk is full (reason `storage_full`), 503 for another
write failure (`storage_failed`), with the same fields and an "error" line; submit
again once the operator has made room. Errors are `{"error": "<one line>"}`: 400 for
a bad body or field, 401 without the token, 403 for a foreign origin, 404 for an
unknown route, market or ask, 405 for a wrong method, 413 for a body above the limit
(from the HTTP layer), 415 for a body that is not JSON, 421 for a foreign Host. Ids
are 64 hex characters.

The console (GET /console and its two files) is a public read too: static files of
the package, served with a Content-Security-Policy that allows scripts, styles and
connections from this origin only (node/console_files.py). It reads the public
routes; for the event stream, which needs the token, the page takes the token from
its URL's fragment (never sent to a server) and sends it in the Authorization header
with fetch, like any client: no route takes a token from the URL.

The OpenAPI document is a public read: it describes the shape of the API, which is
in the source anyway, and nothing of the node's data; the Host and Origin checks
apply to it as to every read (with token everywhere, it needs the token too). The
interactive pages FastAPI can serve (/docs, /redoc) are off: they load scripts from
elsewhere and would be pages on the API's own origin. The event stream needs the
token: it tells what the node does as it does it (its own submissions among them),
and it holds a connection open for as long as its client likes.

Bodies are checked by the models of node/api_models.py (strict types, known fields
only) after a strict JSON parse here (no NaN, bounded depth, an object), so the
facade receives well-typed values and a typo is an error, not a default; every
failure is told in one line, as before the framework.

HTTP/1.1 is Hypercorn's (its trio connection class, on h11), on a listener of ours:
node/http.py's `serve_asgi`, the one accept loop the metrics use too, bounded as
`Limits` says: at most `max_connections` at once, the longest idle one closed for a
newcomer at the cap; head and body sizes (431, 413, answered before any other check,
the connection then closed); the idle time before a request, the time to send a head
or body (408), the time a handler may take (503; not the event stream's). A request
that does not parse as HTTP is answered by Hypercorn itself (400 or 431, no body)
and the connection closed. The guard
(`_Guard`) is plain ASGI around the FastAPI app: it does every check above before
FastAPI routes the request, so no route, body parser or exception handler runs for
a request that is refused. Cancelling `serve_api` ends every connection, streams
included, and closes the socket.
"""

from __future__ import annotations

import dataclasses
import hmac
import ipaddress
import json
import logging
import math
import re
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, Final

import trio
from fastapi import FastAPI, Path, Query
from fastapi import Request as FastRequest
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.responses import Response as FastResponse
from starlette.routing import BaseRoute, Match

from p2p_market.node import api_asks, console_files, console_views
from p2p_market.node import api_models as m
from p2p_market.node.api_token import TOKEN_FILE, check_token
from p2p_market.node.events import Event, EventHub, plain
from p2p_market.node.facade import NodeFacade, Submitted
from p2p_market.node.http import (
    JSON,
    Gone,
    Limits,
    Message,
    Receive,
    Refused,
    Request,
    Response,
    Scope,
    Send,
    answer,
    error_response,
    hypercorn_config,
    read_request,
    replay,
    serve_asgi,
)
from p2p_market.node.views import ask_json as ask_json
from p2p_market.node.views import bid_json as bid_json

if TYPE_CHECKING:
    from trio_typing import TaskStatus

log = logging.getLogger(__name__)


_HEX_ID: Final = re.compile(r"[0-9a-fA-F]{64}")
MAX_DIAL: Final = m.MAX_DIAL
LOOPBACK_NAMES: Final = ("127.0.0.1", "localhost", "[::1]")
"""What a Host header may name (with the API's port), besides the bound address."""
READS: Final = frozenset({"GET", "HEAD"})
"""Methods that change nothing; every other one needs the token and a JSON body."""
PRIVATE_READS: Final = frozenset({"/v1/asks/{ask_id}/proofs", "/v1/events"})
"""GET routes that need the token too: what the node's owner alone may read."""
PROVER_ACTIONS: Final = ("pause", "resume", "withdraw")
RAW_BODY: Final = frozenset({"/v1/asks/{ask_id}/cancel"})
"""Write routes whose body is not read (a cancel's is `{}`): its JSON is not parsed."""
STREAMS: Final = frozenset({"/v1/events"})
"""Routes that answer for as long as the client reads: no handler timeout."""
KEEPALIVE_S: Final = 15.0
"""An event stream's comment line when nothing happened for this long: proxies and
clients see the connection is alive, and a client that went away is noticed."""
_AUTHORITY: Final = re.compile(r"(\[[0-9a-f:.]+\]|[^:\[\]@/\s]+)(?::([0-9]{1,5}))?")

NOT_STORED: Final = {"storage_full": 507, "storage_failed": 503}
"""The verdicts of a message the node could not write to its log, as HTTP statuses:
the node failed, not the request (507 Insufficient Storage, 503 Unavailable)."""


class BadRequest(ValueError):
    """A 400, with its one-line message."""


class NodeJSON(JSONResponse):
    """JSON as the API always wrote it: compact, one line, bytes as hex, enums by
    value, dataclasses as maps (what facades return is rendered, not re-validated).
    A JSONResponse, so that FastAPI documents each route's response model."""

    media_type = JSON

    def render(self, content: Any) -> bytes:
        text = json.dumps(plain(content), separators=(",", ":"), allow_nan=False)
        return text.encode() + b"\n"


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> NodeJSON:
    return NodeJSON({"error": " ".join(message.split())}, status, headers=headers)


# -- request bodies -----------------------------------------------------------------
def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def parse_json_object(body: bytes) -> dict[str, Any]:
    """Stricter than FastAPI's own parse, which it precedes: NaN and Infinity are not
    JSON, a nesting too deep for the parser is a 400 (not a 500), and the body of
    every write is one object."""
    if not body.strip():
        raise BadRequest("the body must be a JSON object, not empty")
    try:
        value = json.loads(body, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, bad UTF-8, depth
        raise BadRequest(f"the body is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise BadRequest(f"the body must be a JSON object, not {_json_type(value)}")
    return value


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, list):
        return "list"
    return "object"


def _hex_id(value: str, what: str) -> str:
    if _HEX_ID.fullmatch(value) is None:
        raise BadRequest(f"{what} id must be 64 hex characters")
    return value.lower()


def _submitted(result: Submitted) -> NodeJSON:
    fields = dataclasses.asdict(result)
    status = NOT_STORED.get(result.reason)
    if status is None:
        return NodeJSON(fields)
    return NodeJSON({**fields, "error": result.detail}, status)


# -- the checks ---------------------------------------------------------------------
def is_loopback(host: str) -> bool:
    """Whether a bind address reaches this machine only."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _host_name(host: str) -> str:
    """A bind address as a Host header names it: lower case, IPv6 in brackets."""
    host = host.lower()
    return f"[{host}]" if ":" in host else host


def bearer_refusal(authorization: str | None, token: bytes) -> str | None:
    """None if `authorization` is `Bearer <token>`, compared in constant time; else
    the one line telling what is wrong."""
    if authorization is None:
        return (
            "missing API token: send Authorization: Bearer <token>, the token in"
            f" {TOKEN_FILE} in the node's data dir"
        )
    scheme, _, value = authorization.strip().partition(" ")
    given = value.strip().encode("latin-1")
    if scheme.lower() != "bearer" or not given:
        return "malformed Authorization header: expected Bearer <token>"
    if hmac.compare_digest(given, token):
        return None
    return "wrong API token"


def check_bearer(request: Request, token: bytes) -> Response | None:
    """None if the request carries `token` as `Authorization: Bearer`; else the 401
    naming what is wrong (the metrics endpoint's check, node/metrics.py)."""
    reason = bearer_refusal(request.headers.get("authorization"), token)
    if reason is None:
        return None
    return error_response(401, reason, headers=(("www-authenticate", "Bearer"),))


class ControlApi:
    """The checks of the module's docstring and the routes, for one node. `token` is
    the node's API token; `bind_host` the address the API is bound to (a Host header
    may name it too). `app` is the ASGI application to serve: the guard, then FastAPI."""

    def __init__(
        self,
        node: NodeFacade,
        *,
        token: str,
        bind_host: str = "127.0.0.1",
        token_everywhere: bool = False,
        limits: Limits | None = None,
        events: EventHub | None = None,
    ) -> None:
        self.node = node
        self._token = check_token(token, "the API token").encode("ascii")
        self.names = frozenset({*LOOPBACK_NAMES, _host_name(bind_host)})
        self.token_everywhere = token_everywhere
        """Every request needs the token, reads too; any Host is taken (docstring)."""
        self.limits = limits or Limits()
        self.events = events if events is not None else getattr(node, "events", None)
        self.fastapi = _make_app(self)
        self.app = _Guard(self)

    # -- what the guard asks ----------------------------------------------------------
    def check_origin(self, request: Request) -> None:
        """Host names this API; a browser's Origin is its own; not a cross-site fetch."""
        port = request.local_port
        host = request.headers.get("host", "").strip().lower()
        match = _AUTHORITY.fullmatch(host)
        names = self.names
        if self.token_everywhere and match is not None:
            names = names | {match.group(1)}  # the token guards; any name will do
        named = match is not None and match.group(1) in names
        if match is None or not named or int(match.group(2) or 80) != port:
            shown = f"{host!r}" if host else "none"
            raise Refused(
                421, f"Host {shown} is not this API's: use 127.0.0.1:{port} (DNS rebinding guard)"
            )
        origin = request.headers.get("origin")
        if origin is not None:
            own = {f"http://{name}:{port}" for name in names}
            if port == 80:
                own |= {f"http://{name}" for name in names}
            if origin.strip().lower() not in own:
                raise Refused(403, f"cross-origin request refused (Origin {origin!r})")
        site = request.headers.get("sec-fetch-site", "").strip().lower()
        if site in ("cross-site", "same-site"):
            raise Refused(403, f"cross-origin request refused (Sec-Fetch-Site {site})")

    def check_token(self, request: Request) -> None:
        reason = bearer_refusal(request.headers.get("authorization"), self._token)
        if reason is not None:
            raise Refused(401, reason, {"www-authenticate": "Bearer"})

    def find(self, scope: Scope, request: Request) -> BaseRoute | Refused:
        """The route of the request, by FastAPI's own router; or the 404 or 405 to
        answer (once the request has the token a write would need)."""
        allowed: set[str] = set()
        for route in self.fastapi.router.routes:
            match, _ = route.matches(scope)
            if match is Match.FULL:
                return route
            if match is Match.PARTIAL:
                allowed |= getattr(route, "methods", None) or set()
        if allowed:
            names = ", ".join(sorted(allowed))
            message = f"{request.method} not allowed on {request.path} (use {names})"
            return Refused(405, message, {"allow": names})
        return Refused(404, f"no such route: {request.method} {request.path}")

    def guard(self, scope: Scope, request: Request) -> BaseRoute:
        """Every check but the sizes (done as the request is read), in the order of
        the module's docstring; raises Refused."""
        self.check_origin(request)
        found = self.find(scope, request)
        path = getattr(found, "path", "")
        writes = request.method not in READS
        if writes or path in PRIVATE_READS or self.token_everywhere:
            self.check_token(request)
        if isinstance(found, Refused):
            raise found
        if writes and request.content_type != JSON:
            given = request.content_type or "none"
            raise Refused(415, f"Content-Type must be {JSON}, not {given}")
        if writes and path not in RAW_BODY:
            try:
                parse_json_object(request.body)
            except BadRequest as exc:
                raise Refused(400, str(exc)) from None
        return found


# -- the ASGI guard -----------------------------------------------------------------
class _Guard:
    """Plain ASGI in front of FastAPI: sizes, then the checks, then the app, with a
    time limit and a one-line 500 for whatever it raises. Every answer of its own
    carries the API's one error shape."""

    def __init__(self, api: ControlApi) -> None:
        self.api = api
        self.limits = api.limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # a websocket upgrade: this API has none
            await send({"type": "websocket.close", "code": 1008})
            return
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message["headers"] = [*message.get("headers", ()), (b"server", b"p2p-market")]
            await send(message)

        try:
            request = await read_request(scope, receive, self.limits)
            route = self.api.guard(scope, request)
        except Gone:
            return
        except Refused as refused:
            close = refused.status in (408, 413, 431)
            await answer(tracked, refused, close=close)
            return
        replayed = replay(request.body, receive)
        path = getattr(route, "path", "")
        timeout = math.inf if path in STREAMS else self.limits.handler_timeout
        try:
            with trio.move_on_after(timeout):
                await self.api.fastapi(scope, replayed, tracked)
                return
            log.warning("api: %s %s timed out", request.method, request.path)
            if not started:
                await answer(tracked, Refused(503, "the node did not answer in time"))
        except Exception as exc:
            log.error("api: %s %s failed", request.method, request.path, exc_info=exc)
            if not started:
                await answer(tracked, Refused(500, f"internal error ({type(exc).__name__})"))


# -- the routes -----------------------------------------------------------------------
_ERRORS: Final[dict[int | str, dict[str, Any]]] = {
    status: {"model": m.ErrorBody, "description": what}
    for status, what in (
        (400, "a bad id, body or field"),
        (403, "a foreign Origin, or a cross-site fetch"),
        (404, "an unknown market or ask, or what this node does not keep"),
        (413, "a body above the limit"),
        (421, "a Host that is not this API's (DNS rebinding guard)"),
        (431, "a request head above the limit"),
        (500, "a bug in the node"),
        (503, "the node did not answer in time"),
    )
}
_TOKEN: Final[dict[int | str, dict[str, Any]]] = {
    401: {"model": m.ErrorBody, "description": "no token, or not the node's"}
}
_WRITE: Final[dict[int | str, dict[str, Any]]] = {
    **_TOKEN,
    415: {"model": m.ErrorBody, "description": "a body that is not application/json"},
}
_NOT_STORED: Final[dict[int | str, dict[str, Any]]] = {
    507: {"model": m.SubmittedBody, "description": "not stored: the node's disk is full"},
    503: {"model": m.SubmittedBody, "description": "not stored, or no answer in time"},
}
_ID_DOC: Final = {"pattern": m.ID_PATTERN}
_EMPTY_BODY: Final[dict[str, Any]] = {
    "requestBody": {
        "required": True,
        "content": {JSON: {"schema": {"type": "object", "maxProperties": 0}}},
    }
}
"""A cancel's body is `{}` (not read: RAW_BODY)."""
_CONFLICT: Final[dict[int | str, dict[str, Any]]] = {
    409: {"model": m.ErrorBody, "description": "terms the market or the back-end cannot take"}
}
_ACTION_DOC: Final = {
    "pause": "Stop committing to asks and re-posting the bid; sign a bid that takes no"
    " ask, so no node matches this prover (protocol v1 has no bid withdrawal). Work"
    " already won goes on. The body is `{}`.",
    "withdraw": "As pause (the same signed bid), its state `withdrawn`: the prover leaves"
    " the market until resumed. The body is `{}`.",
    "resume": "Post the current terms again and take asks. The body is `{}`.",
}
_EVENT_DOC: Final = (
    "Server-sent events (text/event-stream): `event:` is one of "
    + ", ".join(f"`{k}`" for k in ("subscribed", "ask_state", "attempt_settled", "assigned"))
    + " and the others of node/events.py, `id:` the node's event sequence number, `data:`"
    " one JSON object. The first event is `subscribed`: the stream is live from then on."
    " A client that reads slower than the node acts is dropped (a `dropped` event ends"
    " its stream)."
)


def _make_app(api: ControlApi) -> FastAPI:
    """The FastAPI app of the routes. Its handlers see only requests the guard let
    through; their exceptions become the API's one-line errors (KeyError 404,
    ValueError 400, a body the models refuse 400)."""
    node = api.node
    app = FastAPI(
        title="p2p-market node control API",
        version="1",
        description=__doc__,
        docs_url=None,
        redoc_url=None,
        redirect_slashes=False,
        default_response_class=NodeJSON,
        responses=_ERRORS,
    )

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: FastRequest, exc: RequestValidationError) -> NodeJSON:
        route = request.scope.get("route")
        errors = list(exc.errors())
        for error in errors:
            if error["loc"] and error["loc"][0] == "query":
                name = error["loc"][-1]
                return _error(400, f"bad query parameter {name}: {error['msg']}")
        model = _BODY_MODELS.get(getattr(route, "path", ""))
        return _error(400, m.explain(model, errors, exc.body))

    @app.exception_handler(Exception)
    async def _bug(request: FastRequest, exc: Exception) -> NodeJSON:
        # Starlette answers with this, then raises again: the guard logs it.
        return _error(500, f"internal error ({type(exc).__name__})")

    @app.exception_handler(KeyError)
    async def _not_found(request: FastRequest, exc: KeyError) -> NodeJSON:
        return _error(404, _key_message(exc))

    @app.exception_handler(ValueError)
    async def _bad(request: FastRequest, exc: ValueError) -> NodeJSON:
        return _error(400, str(exc) or type(exc).__name__)

    @app.get("/v1/status", response_model=m.StatusBody)
    async def status() -> NodeJSON:
        """The node's identity, addresses, peers, markets, uptime and roles."""
        return NodeJSON(node.status())

    @app.get("/v1/markets", response_model=m.MarketsBody)
    async def markets() -> NodeJSON:
        """The markets this node follows."""
        return NodeJSON({"markets": node.markets()})

    @app.get("/v1/markets/known", response_model=m.MarketsBody)
    async def known_markets() -> NodeJSON:
        """The markets the node's peers announce."""
        known = getattr(node, "known_markets", None)
        if known is None:
            raise KeyError("this node does not hear market announcements")
        return NodeJSON({"markets": known()})

    @app.get("/v1/markets/{market}/book", response_model=m.BookBody)
    async def book(market: str = _path(_ID_DOC)) -> NodeJSON:
        """One market's current bids and its asks."""
        return NodeJSON(node.book(_hex_id(market, "market")))

    app.include_router(api_asks.router(node, NodeJSON))

    @app.get("/v1/asks/{ask_id}", response_model=m.AskView)
    async def ask(ask_id: str = _path(_ID_DOC)) -> NodeJSON:
        """One ask's view: its state, winners, prices, slot states."""
        return NodeJSON(node.ask(_hex_id(ask_id, "ask")))

    @app.get("/v1/asks/{ask_id}/proofs", response_model=m.ProofsBody, responses=_TOKEN)
    async def proofs(ask_id: str = _path(_ID_DOC)) -> NodeJSON:
        """The proofs of one of the node's asks that its requester role verified."""
        key = bytes.fromhex(_hex_id(ask_id, "ask"))
        source = getattr(node, "verified_proofs", None)
        if source is None:
            raise KeyError("this node keeps no proofs")
        found = source(key)
        return NodeJSON({"proofs": {p.hex(): proof.hex() for p, proof in found.items()}})

    @app.post("/v1/envelopes", response_model=m.SubmittedBody, responses=_WRITE | _NOT_STORED)
    async def submit(body: m.EnvelopeBody) -> NodeJSON:
        """Submit an envelope signed elsewhere."""
        raw = bytes.fromhex(body.hex)
        if not raw:
            raise BadRequest("empty envelope")
        return _submitted(await node.submit(raw))

    @app.post("/v1/bids", response_model=m.SubmittedBody, responses=_WRITE | _NOT_STORED)
    async def place_bid(body: m.BidFields) -> NodeJSON:
        """Sign a Bid with the node's key and submit it."""
        return _submitted(await node.place_bid(_given(body)))

    @app.post("/v1/asks", response_model=m.SubmittedBody, responses=_WRITE | _NOT_STORED)
    async def place_ask(body: m.AskFields) -> NodeJSON:
        """Sign an Ask with the node's key and submit it."""
        return _submitted(await node.place_ask(_given(body)))

    @app.post(
        "/v1/asks/{ask_id}/cancel",
        response_model=m.SubmittedBody,
        responses=_WRITE | _NOT_STORED,
        openapi_extra=_EMPTY_BODY,
    )
    async def cancel(ask_id: str = _path(_ID_DOC)) -> NodeJSON:
        """Sign and submit a Cancel of one of the node's asks (the body is `{}`)."""
        return _submitted(await node.cancel(_hex_id(ask_id, "ask")))

    @app.get("/v1/markets/{market}/asks", response_model=m.AsksBody)
    async def market_asks(
        market: str = _path(_ID_DOC),
        limit: int = Query(100, ge=1, le=console_views.MAX_ASKS, description="newest first"),
    ) -> NodeJSON:
        """A market's asks, newest first, each with its lifecycle timeline."""
        state = _state_of(_inspectable(node), _hex_id(market, "market"))
        return NodeJSON({"asks": console_views.asks(state, limit)})

    @app.get("/v1/markets/{market}/provers", response_model=m.ProversBody)
    async def market_provers(market: str = _path(_ID_DOC)) -> NodeJSON:
        """A market's provers: terms, load, earnings, evidence against them."""
        inspected = _inspectable(node)
        state = _state_of(inspected, _hex_id(market, "market"))
        reputation = getattr(inspected, "status_sources", {}).get("reputation")
        rows = console_views.provers(state, reputation() if reputation is not None else None)
        return NodeJSON({"provers": rows})

    @app.get("/v1/peers", response_model=m.PeersView)
    async def peer_list() -> NodeJSON:
        """Connected peers and the node's gossip health."""
        return NodeJSON(console_views.peers(_inspectable(node)))

    @app.get("/console", include_in_schema=False)
    async def console() -> FastResponse:
        """The web console (node/console/): a page of this API's own origin."""
        return _console_file("index.html")

    @app.get("/console/{name}", include_in_schema=False)
    async def console_file(name: str) -> FastResponse:
        return _console_file(name)

    @app.get("/v1/stats", response_model=m.StatsBody)
    async def stats() -> NodeJSON:
        """Counters since the node started."""
        return NodeJSON(node_stats(_inspectable(node)))

    @app.get("/v1/markets/{market}/check", response_model=m.CheckBody)
    async def check(market: str = _path(_ID_DOC)) -> NodeJSON:
        """One market's agreement data: state hash, invariants, reorgs."""
        return NodeJSON(market_check(_inspectable(node), _hex_id(market, "market")))

    @app.post("/v1/peers", response_model=m.PeersDialled, responses=_WRITE)
    async def connect(body: m.PeersBody) -> NodeJSON:
        """Dial these full multiaddrs now, and keep them with the bootstrap peers."""
        dial = getattr(node, "connect_peers", None)
        if dial is None:
            raise KeyError("this node does not dial peers on request")
        return NodeJSON(await dial(list(body.addrs)))

    def prover() -> Any:
        control = getattr(node, "prover_control", None)
        if control is None:
            raise KeyError("this node runs no prover role")
        return control

    @app.get("/v1/prover/bid", response_model=m.ProverBid)
    async def prover_bid() -> NodeJSON:
        """The prover role's bid: the terms it signs and re-posts, and its state."""
        return NodeJSON(prover().bid_view())

    @app.post("/v1/prover/bid", response_model=m.ProverBidChanged, responses=_WRITE | _CONFLICT)
    async def update_bid(body: m.BidUpdate) -> NodeJSON:
        """New terms for the prover's bid: posted at once (if not paused), re-posted
        from then on, kept in the role store for the next start. 409 for terms this
        node cannot take: a ttl above its market's max lifetime, a capacity above
        what its back-end was started to run."""
        changes = _given(body)
        if not changes:
            raise BadRequest(f"nothing to change: give any of {', '.join(m.BID_UPDATE_FIELDS)}")
        control = prover()
        try:
            return NodeJSON(await control.update_bid(changes))
        except ValueError as exc:  # the body is well-formed: the market or back-end says no
            return _error(409, str(exc))

    def _action(action: str) -> None:
        async def act(body: m.EmptyBody) -> NodeJSON:
            control = prover()
            if action == "resume":
                return NodeJSON(await control.resume_bid())
            return NodeJSON(await control.pause_bid("paused" if action == "pause" else "withdrawn"))

        act.__doc__ = _ACTION_DOC[action]
        act.__name__ = f"{action}_bid"
        app.post(f"/v1/prover/bid/{action}", response_model=m.ProverBidChanged, responses=_WRITE)(
            act
        )

    for action in PROVER_ACTIONS:
        _action(action)

    @app.get("/v1/prover/jobs", response_model=m.ProverJobs)
    async def prover_jobs() -> NodeJSON:
        """The prover's current and recent jobs, the newest first."""
        return NodeJSON(prover().jobs_view())

    @app.get("/v1/prover/earnings", response_model=m.ProverEarnings)
    async def prover_earnings() -> NodeJSON:
        """What the prover's accepted proofs earned since the node started."""
        return NodeJSON(prover().earnings_view())

    @app.get(
        "/v1/events",
        response_class=StreamingResponse,
        responses={
            **_TOKEN,
            200: {
                "description": _EVENT_DOC,
                "content": {"text/event-stream": {"schema": {"type": "string"}}},
            },
        },
    )
    async def events() -> StreamingResponse:
        """Ask lifecycle and node events as they happen (server-sent events)."""
        hub = api.events
        if hub is None:
            raise KeyError("this node tells no events")
        return StreamingResponse(
            _event_stream(hub),
            media_type="text/event-stream",
            headers={"cache-control": "no-store", "x-accel-buffering": "no"},
        )

    return app


_BODY_MODELS: Final[dict[str, Any]] = {
    "/v1/envelopes": m.EnvelopeBody,
    "/v1/bids": m.BidFields,
    "/v1/asks": m.AskFields,
    "/v1/peers": m.PeersBody,
    "/v1/prover/bid": m.BidUpdate,
    **{f"/v1/prover/bid/{action}": m.EmptyBody for action in PROVER_ACTIONS},
}


def _console_file(name: str) -> FastResponse:
    """One of the console's files, with the headers that confine it (console_files)."""
    body = console_files.read(name)  # KeyError: a 404
    return FastResponse(body, media_type=console_files.FILES[name], headers=console_files.HEADERS)


def _state_of(node: Any, market: str) -> Any:
    """The core state of a market the node follows; KeyError (404) for another."""
    state = node.states.get(bytes.fromhex(market))
    if state is None:
        raise KeyError(f"unknown market {market}")
    return state


def _path(doc: dict[str, Any]) -> Any:
    """A path parameter documented with `doc` (its pattern) but checked by the
    handler, which says which id is wrong in the API's words."""
    return Path(json_schema_extra=doc)


def _given(body: Any) -> dict[str, Any]:
    """The fields the client sent, and only those: the node applies its defaults."""
    fields: dict[str, Any] = body.model_dump(exclude_unset=True)
    return fields


def sse(event: Event) -> bytes:
    """One event in the text/event-stream format."""
    data = json.dumps(event.data, separators=(",", ":"), allow_nan=False)
    return f"id: {event.seq}\nevent: {event.kind}\ndata: {data}\n\n".encode()


async def _event_stream(hub: EventHub) -> AsyncIterator[bytes]:
    with hub.subscribe() as queue:
        yield sse(Event(hub.seq, "subscribed", {"seq": hub.seq, "queue": hub.queue}))
        while True:
            with trio.move_on_after(KEEPALIVE_S):
                try:
                    event = await queue.receive()
                except (trio.EndOfChannel, trio.ClosedResourceError):
                    yield sse(Event(hub.seq, "dropped", {"reason": "queue full", "seq": hub.seq}))
                    return
                yield sse(event)
                continue
            yield b": keepalive\n\n"


def _inspectable(node: NodeFacade) -> Any:
    """The runtime's node behind the facade (duck-typed: tests use other facades)."""
    if not all(hasattr(node, a) for a in ("states", "gossip", "metrics", "clock")):
        raise KeyError("this node does not expose its core state")
    return node


def node_stats(node: Any) -> dict[str, Any]:
    """Counters since the node started: what `p2p-market simulate` samples."""
    stats = node.gossip.stats if node.gossip is not None else None
    gossip = {}
    if stats is not None:
        gossip = {
            f.name: getattr(stats, f.name)
            for f in dataclasses.fields(stats)
            if isinstance(getattr(stats, f.name), int)
        }
    published: dict[str, int] = {}
    for metric in node.metrics.messages_out.collect():
        for sample in metric.samples:
            if sample.name.endswith("_total"):
                kind = sample.labels.get("kind", "unknown")
                published[kind] = published.get(kind, 0) + int(sample.value)
    reasons = {} if stats is None else {r.value: n for r, n in stats.reasons.items()}
    return {
        "now": node.clock(),
        "admitted": node.admitted,
        "reasons": reasons,
        "peers": node.status().get("peers", 0),
        "gossip": gossip,
        "published": published,
    }


def market_check(node: Any, market: str) -> dict[str, Any]:
    """One market's agreement data: compare `state_hash` across nodes only at the same
    `now` (derived state depends on time: see MarketState.state_hash)."""
    state = node.states.get(bytes.fromhex(market))
    if state is None:
        raise KeyError(f"unknown market {market}")
    by_state: dict[str, int] = {}
    for ask_id in state.asks:
        s = state.ask_state(ask_id).value
        by_state[s] = by_state.get(s, 0) + 1
    return {
        "market": market,
        "now": state.now,
        "state_hash": state.state_hash(),
        "violations": state.check_invariants(),
        "reorgs": state.reorgs,
        "bids": len(state.book),
        "asks": by_state,
        "ask_envelopes": {a.hex(): 1 + len(state.events.get(a, {})) for a in state.asks},
        "fold": state.fold_stats(),
    }


def _key_message(exc: KeyError) -> str:
    """KeyError's str() quotes its argument; the message is the argument itself."""
    if exc.args and isinstance(exc.args[0], str):
        return exc.args[0]
    if exc.args and isinstance(exc.args[0], bytes):
        return f"unknown id {exc.args[0].hex()}"
    return "not found"


async def serve_api(
    node: NodeFacade,
    *,
    token: str,
    host: str = "127.0.0.1",
    port: int = 0,
    limits: Limits | None = None,
    token_everywhere: bool = False,
    events: EventHub | None = None,
    task_status: TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """The runtime's control API service: Hypercorn serving `ControlApi(node).app`
    until cancelled (every connection task ends, the socket closes). Reports the
    bound port (useful with port 0) through `task_status`. ValueError for a `host`
    that is not a loopback address, unless `token_everywhere` (the module docstring
    says why)."""
    if not is_loopback(host) and not token_everywhere:
        raise ValueError(
            f"the control API binds a loopback address only, not {host!r}, unless the"
            " token is required on every call (node.api_token_everywhere)"
        )
    limits = limits or Limits()
    api = ControlApi(
        node,
        token=token,
        bind_host=host,
        token_everywhere=token_everywhere,
        limits=limits,
        events=events,
    )
    await serve_asgi(api.app, hypercorn_config(limits), host, port, limits, task_status=task_status)
