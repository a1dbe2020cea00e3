"""The local control API: JSON over HTTP on 127.0.0.1, served from a `NodeFacade`.

    GET  /v1/status                    node identity, listen addrs, peers, markets, uptime, and
                                       what its roles tell (a prover: its latest proofs' times)
    GET  /v1/markets                   {"markets": [...]}
    GET  /v1/markets/known             {"markets": [...]}: what peers announce (discovery.py)
    GET  /v1/markets/{id}/book         {"bids": [...], "asks": [...]}
    GET  /v1/asks/{id}                 one ask's view
    GET  /v1/asks/{id}/proofs          token: the proofs of the node's ask its role verified
    POST /v1/envelopes                 token: a signed envelope, as JSON {"hex": "..."}
    POST /v1/bids                      token: JSON fields of a Bid, signed with the node's key
    POST /v1/asks                      token: JSON fields of an Ask, signed with the node's key
    POST /v1/asks/{id}/cancel          token: sign and submit a Cancel of one of the node's asks
    GET  /v1/stats                     counters: gossip frames and envelopes, admitted, peers
    GET  /v1/markets/{id}/check        state_hash, check_invariants(), reorgs, envelopes per ask
    POST /v1/peers                     token: {"addrs": [full multiaddrs]}: dial them now, and
                                       keep them with the bootstrap peers

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
view, stats and check show what the node's peers see anyway (signed orders and market
announcements gossiped to everyone, the state derived from them, counters), and
`p2p-market status`, `book` and monitoring should work without the secret; the checks
of Host and Origin still keep them from web pages. The one private read, an ask's
verified proofs (what its requester paid for, perhaps of confidential inputs), needs
the token. The API binds loopback addresses, unless the token is required on every
call ("token everywhere", config `node.api_token_everywhere`): then it may bind any
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

JSON bodies are checked here for shape (known field names, JSON types, hex strings),
so the facade receives well-typed values and a typo is an error, not a default.
"""

from __future__ import annotations

import dataclasses
import enum
import hmac
import ipaddress
import json
import re
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final

import trio

from p2p_market.core.book import StoredBid
from p2p_market.core.state import AskView
from p2p_market.node.api_token import TOKEN_FILE, check_token
from p2p_market.node.facade import NodeFacade, Submitted
from p2p_market.node.http import JSON, Limits, Request, Response, error_response, serve_http
from p2p_market.node.http import json_response as _json_response

if TYPE_CHECKING:
    from trio_typing import TaskStatus

_HEX_ID: Final = re.compile(r"[0-9a-fA-F]{64}")
MAX_DIAL: Final = 64
"""Addresses one POST /v1/peers may ask the node to dial (it dials them at once)."""
_HEX: Final = re.compile(r"(?:[0-9a-fA-F]{2})*")
LOOPBACK_NAMES: Final = ("127.0.0.1", "localhost", "[::1]")
"""What a Host header may name (with the API's port), besides the bound address."""
READS: Final = frozenset({"GET", "HEAD"})
"""Methods that change nothing; every other one needs the token and a JSON body."""
PRIVATE_READS: Final = frozenset({("v1", "asks", "*", "proofs")})
"""GET routes that need the token too: what the node's owner alone may read."""
_AUTHORITY: Final = re.compile(r"(\[[0-9a-f:.]+\]|[^:\[\]@/\s]+)(?::([0-9]{1,5}))?")

_STR, _INT, _BOOL, _HEXSTR, _HEXLIST = "text", "integer", "boolean", "hex", "hex list"

BID_FIELDS: Final[dict[str, str]] = {
    "market": _HEXSTR,
    "price": _INT,
    "proof_time": _INT,
    "capacity": _INT,
    "ttl_ms": _INT,
    "max_size": _INT,
}
ASK_FIELDS: Final[dict[str, str]] = {
    "market": _HEXSTR,
    "max_price": _INT,
    "max_proof_time": _INT,
    "prefer": _STR,
    "replicas": _INT,
    "size": _INT,
    "ttl_ms": _INT,
    "inputs": _HEXSTR,
    "inputs_hash": _HEXSTR,
    "confidential": _BOOL,
    "allow": _HEXLIST,
    "deny": _HEXLIST,
}


class BadRequest(ValueError):
    """A 400, with its one-line message."""


# -- JSON views of core objects, for facade implementations ------------------------
def bid_json(stored: StoredBid) -> dict[str, Any]:
    b = stored.bid
    return {
        "id": stored.id.hex(),
        "prover": stored.prover.hex(),
        "price": b.price,
        "proof_time": b.proof_time,
        "capacity": b.capacity,
        "max_size": b.max_size,
        "timestamp": b.timestamp,
        "expires_at": b.expires_at,
        "seq": b.seq,
    }


def ask_json(view: AskView) -> dict[str, Any]:
    a = view.ask
    return {
        "id": view.id.hex(),
        "market": a.market.hex(),
        "requester": view.requester.hex(),
        "state": view.state.value,
        "timestamp": a.timestamp,
        "max_price": a.max_price,
        "max_proof_time": a.max_proof_time,
        "prefer": a.prefer,
        "replicas": a.replicas,
        "size": a.size,
        "expires_at": a.expires_at,
        "inputs_hash": a.inputs_hash.hex(),
        "inputs_size": len(a.inputs),
        "confidential": a.confidential,
        "allow": [k.hex() for k in a.allow],
        "deny": [k.hex() for k in a.deny],
        "nonce": a.nonce,
        "winners": [p.hex() for p in view.winners],
        "prices": list(view.prices),
        "slot_states": [s.value for s in view.slot_states],
        "accepted": [p.hex() for p in view.accepted],
        "paid": view.paid,
    }


def _plain(obj: Any) -> Any:
    """json.dumps fallback: bytes as hex, enums by value, dataclasses as maps."""
    if isinstance(obj, bytes | bytearray):
        return obj.hex()
    if isinstance(obj, enum.Enum):
        return obj.value
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    if isinstance(obj, tuple | set | frozenset):
        return list(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def json_response(obj: Any, status: int = 200) -> Response:
    """http.json_response that also renders bytes, enums and dataclasses."""
    return _json_response(obj, status, default=_plain)


# -- request bodies -----------------------------------------------------------------
def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def parse_json_object(body: bytes) -> dict[str, Any]:
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
        return _BOOL
    if isinstance(value, int):
        return _INT
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, list):
        return "list"
    return "object"


def check_fields(fields: dict[str, Any], schema: dict[str, str]) -> dict[str, Any]:
    """Known names only, each of its JSON type; hex strings well-formed."""
    for name, value in fields.items():
        kind = schema.get(name)
        if kind is None:
            raise BadRequest(f"unknown field: {name} (known: {', '.join(schema)})")
        if kind == _INT:
            ok = type(value) is int
        elif kind == _BOOL:
            ok = type(value) is bool
        elif kind == _STR:
            ok = type(value) is str
        elif kind == _HEXSTR:
            ok = type(value) is str and _HEX.fullmatch(value) is not None
        else:
            ok = isinstance(value, list) and all(
                type(v) is str and _HEX.fullmatch(v) is not None for v in value
            )
        if not ok:
            raise BadRequest(f"{name} must be {_article(kind)}, not {_shown(value)}")
    return fields


def _article(kind: str) -> str:
    return {
        _HEXSTR: "a hex string",
        _HEXLIST: "a list of hex strings",
        _INT: "an integer",
    }.get(kind, f"a {kind}")


def _shown(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def envelope_bytes(request: Request) -> bytes:
    """The raw envelope of POST /v1/envelopes, sent as JSON {"hex": ...}."""
    fields = parse_json_object(request.body)
    if set(fields) != {"hex"}:
        raise BadRequest('a JSON envelope must be {"hex": "<envelope bytes in hex>"}')
    check_fields(fields, {"hex": _HEXSTR})
    body = bytes.fromhex(fields["hex"])
    if not body:
        raise BadRequest("empty envelope")
    return body


def _hex_id(value: str, what: str) -> str:
    if _HEX_ID.fullmatch(value) is None:
        raise BadRequest(f"{what} id must be 64 hex characters")
    return value.lower()


NOT_STORED: Final = {"storage_full": 507, "storage_failed": 503}
"""The verdicts of a message the node could not write to its log, as HTTP statuses:
the node failed, not the request (507 Insufficient Storage, 503 Unavailable)."""


def _submitted(result: Submitted) -> Response:
    fields = dataclasses.asdict(result)
    status = NOT_STORED.get(result.reason)
    if status is None:
        return json_response(fields)
    return json_response({**fields, "error": result.detail}, status)


# -- routing ------------------------------------------------------------------------
Route = Callable[[Request, list[str]], Awaitable[Response]]


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


class ControlApi:
    """The request handler for serve_http: the checks of the module's docstring, then
    the routes. `token` is the node's API token; `bind_host` the address the API is
    bound to (a Host header may name it too)."""

    def __init__(
        self,
        node: NodeFacade,
        *,
        token: str,
        bind_host: str = "127.0.0.1",
        token_everywhere: bool = False,
    ) -> None:
        self.node = node
        self._token = check_token(token, "the API token").encode("ascii")
        self.names = frozenset({*LOOPBACK_NAMES, _host_name(bind_host)})
        self.token_everywhere = token_everywhere
        """Every request needs the token, reads too; any Host is taken (docstring)."""
        # (pattern of path segments, "*" = an id) -> {method: route}
        self.routes: list[tuple[tuple[str, ...], dict[str, Route]]] = [
            (("v1", "status"), {"GET": self._status}),
            (("v1", "markets"), {"GET": self._markets}),
            (("v1", "markets", "known"), {"GET": self._known_markets}),
            (("v1", "markets", "*", "book"), {"GET": self._book}),
            (("v1", "asks", "*"), {"GET": self._ask}),
            (("v1", "envelopes"), {"POST": self._submit}),
            (("v1", "bids"), {"POST": self._bid}),
            (("v1", "asks"), {"POST": self._place_ask}),
            (("v1", "asks", "*", "cancel"), {"POST": self._cancel}),
            (("v1", "asks", "*", "proofs"), {"GET": self._proofs}),
            (("v1", "stats"), {"GET": self._stats}),
            (("v1", "markets", "*", "check"), {"GET": self._check}),
            (("v1", "peers"), {"POST": self._connect}),
        ]

    async def __call__(self, request: Request) -> Response:
        refused = self._check_origin(request)
        if refused is not None:
            return refused
        found = self._find(request)
        writes = request.method not in READS
        private = isinstance(found, tuple) and found[2]
        if writes or private or self.token_everywhere:
            refused = self._check_token(request)
            if refused is not None:
                return refused
        if isinstance(found, Response):
            return found
        if writes and request.content_type != JSON:
            given = request.content_type or "none"
            return error_response(415, f"Content-Type must be {JSON}, not {given}")
        route, params, _ = found
        try:
            return await route(request, params)
        except BadRequest as exc:
            return error_response(400, str(exc))
        except KeyError as exc:
            return error_response(404, _key_message(exc))
        except ValueError as exc:
            return error_response(400, str(exc) or type(exc).__name__)

    def _find(self, request: Request) -> tuple[Route, list[str], bool] | Response:
        """The route, its parameters and whether it is a private read; or the 404 or
        405 to answer (once the request has the token a write would need)."""
        segments = request.path.strip("/").split("/")
        for pattern, methods in self.routes:
            params = _match(pattern, segments)
            if params is None:
                continue
            route = methods.get(request.method)
            if route is None:
                allowed = ", ".join(sorted(methods))
                message = f"{request.method} not allowed on {request.path} (use {allowed})"
                return error_response(405, message, headers=(("allow", allowed),))
            return route, params, pattern in PRIVATE_READS
        return error_response(404, f"no such route: {request.method} {request.path}")

    def _check_origin(self, request: Request) -> Response | None:
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
            return error_response(
                421, f"Host {shown} is not this API's: use 127.0.0.1:{port} (DNS rebinding guard)"
            )
        origin = request.headers.get("origin")
        if origin is not None:
            own = {f"http://{name}:{port}" for name in names}
            if port == 80:
                own |= {f"http://{name}" for name in names}
            if origin.strip().lower() not in own:
                return error_response(403, f"cross-origin request refused (Origin {origin!r})")
        site = request.headers.get("sec-fetch-site", "").strip().lower()
        if site in ("cross-site", "same-site"):
            return error_response(403, f"cross-origin request refused (Sec-Fetch-Site {site})")
        return None

    def _check_token(self, request: Request) -> Response | None:
        return check_bearer(request, self._token)

    async def _status(self, request: Request, params: list[str]) -> Response:
        return json_response(self.node.status())

    async def _markets(self, request: Request, params: list[str]) -> Response:
        return json_response({"markets": self.node.markets()})

    async def _known_markets(self, request: Request, params: list[str]) -> Response:
        known = getattr(self.node, "known_markets", None)
        if known is None:
            raise KeyError("this node does not hear market announcements")
        return json_response({"markets": known()})

    async def _book(self, request: Request, params: list[str]) -> Response:
        return json_response(self.node.book(_hex_id(params[0], "market")))

    async def _ask(self, request: Request, params: list[str]) -> Response:
        return json_response(self.node.ask(_hex_id(params[0], "ask")))

    async def _submit(self, request: Request, params: list[str]) -> Response:
        return _submitted(await self.node.submit(envelope_bytes(request)))

    async def _bid(self, request: Request, params: list[str]) -> Response:
        fields = check_fields(parse_json_object(request.body), BID_FIELDS)
        return _submitted(await self.node.place_bid(fields))

    async def _place_ask(self, request: Request, params: list[str]) -> Response:
        fields = check_fields(parse_json_object(request.body), ASK_FIELDS)
        return _submitted(await self.node.place_ask(fields))

    async def _cancel(self, request: Request, params: list[str]) -> Response:
        return _submitted(await self.node.cancel(_hex_id(params[0], "ask")))

    async def _proofs(self, request: Request, params: list[str]) -> Response:
        ask = bytes.fromhex(_hex_id(params[0], "ask"))
        source = getattr(self.node, "verified_proofs", None)
        if source is None:
            raise KeyError("this node keeps no proofs")
        proofs = source(ask)
        return json_response({"proofs": {p.hex(): proof.hex() for p, proof in proofs.items()}})

    async def _stats(self, request: Request, params: list[str]) -> Response:
        return json_response(node_stats(_inspectable(self.node)))

    async def _check(self, request: Request, params: list[str]) -> Response:
        return json_response(market_check(_inspectable(self.node), _hex_id(params[0], "market")))

    async def _connect(self, request: Request, params: list[str]) -> Response:
        connect = getattr(self.node, "connect_peers", None)
        if connect is None:
            raise KeyError("this node does not dial peers on request")
        fields = parse_json_object(request.body)
        addrs = fields.get("addrs")
        if set(fields) != {"addrs"} or not isinstance(addrs, list):
            raise BadRequest('the body must be {"addrs": [multiaddr, ...]}')
        if not 1 <= len(addrs) <= MAX_DIAL or not all(type(a) is str for a in addrs):
            raise BadRequest(f"addrs must be 1 to {MAX_DIAL} multiaddr strings")
        return json_response(await connect(addrs))


def check_bearer(request: Request, token: bytes) -> Response | None:
    """None if the request carries `token` as `Authorization: Bearer`, compared in
    constant time; else the 401 naming what is wrong."""
    auth = request.headers.get("authorization")
    if auth is None:
        reason = (
            "missing API token: send Authorization: Bearer <token>, the token in"
            f" {TOKEN_FILE} in the node's data dir"
        )
    else:
        scheme, _, value = auth.strip().partition(" ")
        given = value.strip().encode("latin-1")
        if scheme.lower() != "bearer" or not given:
            reason = "malformed Authorization header: expected Bearer <token>"
        elif hmac.compare_digest(given, token):
            return None
        else:
            reason = "wrong API token"
    return error_response(401, reason, headers=(("www-authenticate", "Bearer"),))


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
    }


def _match(pattern: tuple[str, ...], segments: list[str]) -> list[str] | None:
    if len(pattern) != len(segments):
        return None
    params = []
    for want, got in zip(pattern, segments, strict=True):
        if want == "*":
            if not got:
                return None
            params.append(got)
        elif want != got:
            return None
    return params


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
    task_status: TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """serve_http(ControlApi(node, token=token)): the runtime's control API service.
    ValueError for a `host` that is not a loopback address, unless `token_everywhere`
    (the module docstring says why)."""
    if not is_loopback(host) and not token_everywhere:
        raise ValueError(
            f"the control API binds a loopback address only, not {host!r}, unless the"
            " token is required on every call (node.api_token_everywhere)"
        )
    api = ControlApi(node, token=token, bind_host=host, token_everywhere=token_everywhere)
    await serve_http(api, host=host, port=port, limits=limits, task_status=task_status)
