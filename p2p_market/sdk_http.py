"""The SDK for any event loop: buy proofs through a running node's control API.

    import anyio
    from p2p_market import sdk_http

    async def main() -> None:
        async with sdk_http.connect("http://127.0.0.1:8080", token_file="data/api.token") as node:
            proof = await node.request_proof(b"my inputs", max_price=20, max_proof_time=10_000)

    anyio.run(main)                       # or asyncio.run(main()), or trio.run(main)

`p2p_market.sdk` (`open_client`) runs a node of its own inside the caller's trio
run; py-libp2p runs only on trio, so that SDK cannot serve an asyncio program. This
one needs no node in the program: it talks HTTP (httpx, on anyio) to a node that is
already running with a `[requester]` section (`p2p-market node run`), so the very
same code runs under asyncio and trio. The ask is signed with that node's key, its
requester role verifies and receipts the proofs (which is what pays the prover), and
this client fetches them. Placing and cancelling asks, bidding, reading proofs and
the event stream need the node's API token (docs/api.md).

Every failure is an `SdkError`, one line naming what is wrong: `NodeUnreachable`,
`BadToken`, `ApiError` (any other HTTP error), `BadRequest` (also a ValueError: the
node refused the terms), and `RequestFailed` with a `reason`, one subclass per
reason (`NoProvers`, `AskRefused`, `AskExpired`, `AskCancelled`, `InputsInvalid`,
`ProofTimeout`), with the ask's id where there is one.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import anyio
import httpx

from p2p_market.node.api_token import TOKEN_ENV, read_token

__all__ = [
    "ApiError",
    "AskCancelled",
    "AskExpired",
    "AskRefused",
    "AskStatus",
    "BadRequest",
    "BadToken",
    "Bid",
    "Event",
    "InputsInvalid",
    "NoProvers",
    "NodeClient",
    "NodeStatus",
    "NodeUnreachable",
    "ProofResult",
    "ProofTimeout",
    "RequestFailed",
    "SdkError",
    "connect",
]

DEFAULT_TTL_MS: Final = 300_000
DEFAULT_DISCOVER_S: Final = 30.0
POLL_S: Final = 0.25
"""How often the book is read while waiting for a prover's bid."""
EVENTS_READ_S: Final = 60.0
"""The event stream sends a keepalive after 15 s without events: a stream silent for
this long is a node that is gone."""
PROOFS_WAIT_S: Final = 5.0
TERMINAL: Final = frozenset({"proven", "cancelled", "expired", "invalid_inputs"})
PREFERENCES: Final = ("cost", "time")
_NO_ASK: Final = "0" * 64


# -- errors ---------------------------------------------------------------------------
class SdkError(Exception):
    """Every failure of this client; the message is one line."""


class NodeUnreachable(SdkError):
    """No HTTP answer from the node (refused, reset, timed out, not HTTP)."""


class BadToken(SdkError):
    """The node refused the token (or there is none, for what needs it)."""


class ApiError(SdkError):
    """Any other HTTP error; `message` is the node's own line."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


class BadRequest(ApiError, ValueError):
    """The node refused a request's fields (HTTP 400): bad terms, nothing placed."""


class RequestFailed(SdkError):
    """No verified proof; `reason` says why (the subclasses, one per reason), `ask`
    is the ask's id if one was placed."""

    reason: str = "failed"

    def __init__(self, message: str, *, ask: bytes | None = None) -> None:
        super().__init__(message)
        self.ask = ask


class NoProvers(RequestFailed):
    """No live bid within the caps appeared in time; nothing was placed."""

    reason = "no_provers"


class AskRefused(RequestFailed):
    """The node's core refused the ask (the message has its reason)."""

    reason = "refused"


class AskExpired(RequestFailed):
    reason = "expired"


class AskCancelled(RequestFailed):
    reason = "cancelled"


class InputsInvalid(RequestFailed):
    """A prover attested that the inputs cannot be proven."""

    reason = "invalid_inputs"


class ProofTimeout(RequestFailed):
    """No verified proof in the caller's time (an ask nobody won is cancelled)."""

    reason = "timeout"


# -- results --------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class NodeStatus:
    public_key: bytes
    peers: int
    markets: tuple[bytes, ...]
    raw: dict[str, Any] = field(repr=False)
    """Everything GET /v1/status answered (addresses, uptime, what the roles tell)."""


@dataclass(frozen=True, slots=True)
class Bid:
    id: bytes
    prover: bytes
    price: int
    proof_time: int
    capacity: int
    max_size: int
    expires_at: int


@dataclass(frozen=True, slots=True)
class AskStatus:
    """An ask as the node sees it (GET /v1/asks/{id}; docs/api.md)."""

    id: bytes
    state: str
    """open, assigned, proven, cancelled, expired or invalid_inputs."""
    replicas: int
    expires_at: int
    winners: tuple[bytes, ...]
    prices: tuple[int, ...]
    slot_states: tuple[str, ...]
    accepted: tuple[bytes, ...]
    paid: int
    raw: dict[str, Any] = field(repr=False)


@dataclass(frozen=True, slots=True)
class ProofResult:
    ask: bytes
    proofs: dict[bytes, bytes]
    """Proofs the node's requester role verified, by prover (one per replica)."""
    winners: tuple[bytes, ...]
    paid: int
    """What the requester owes: the bid price of every accepted proof."""

    @property
    def proof(self) -> bytes:
        return next(iter(self.proofs.values()))


@dataclass(frozen=True, slots=True)
class Event:
    """One server-sent event of GET /v1/events (docs/api.md lists the kinds)."""

    seq: int
    kind: str
    data: dict[str, Any]


# -- the client -----------------------------------------------------------------------
class NodeClient:
    """A requester (and bidder) through one node's control API, in one market; made
    by `connect`."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        base_url: str,
        market: bytes,
        *,
        requester_role: bool | None = None,
    ) -> None:
        self._http = http
        self.base_url = base_url
        self.market = market
        self.requester_role = requester_role
        """Whether the node runs a requester role (None: not known without a token).
        Without one nobody verifies or pays for a proof: no ask is placed."""

    # -- reads ------------------------------------------------------------------------
    async def status(self) -> NodeStatus:
        raw = _object(await self._request("GET", "/v1/status"))
        return NodeStatus(
            public_key=bytes.fromhex(raw["public_key"]),
            peers=int(raw["peers"]),
            markets=tuple(bytes.fromhex(m) for m in raw["markets"]),
            raw=raw,
        )

    async def bids(self) -> list[Bid]:
        """The market's live bids the node holds, cheapest first."""
        book = _object(await self._request("GET", f"/v1/markets/{self.market.hex()}/book"))
        now = int(time.time() * 1000)
        bids = [_bid(b) for b in book.get("bids", [])]
        live = [b for b in bids if b.expires_at > now]
        return sorted(live, key=lambda b: (b.price, b.proof_time, b.prover))

    async def ask(self, ask: bytes) -> AskStatus:
        return _ask(_object(await self._request("GET", f"/v1/asks/{ask.hex()}")))

    async def proofs(self, ask: bytes) -> dict[bytes, bytes]:
        """The proofs of one of the node's asks that its requester role verified."""
        found = _object(await self._request("GET", f"/v1/asks/{ask.hex()}/proofs"))["proofs"]
        return {bytes.fromhex(k): bytes.fromhex(v) for k, v in found.items()}

    @asynccontextmanager
    async def events(self) -> AsyncIterator[AsyncIterator[Event]]:
        """The node's event stream, live once entered (its `subscribed` event has
        come): `async with node.events() as stream: async for event in stream`."""
        timeout = httpx.Timeout(self._http.timeout.connect, read=EVENTS_READ_S)
        try:
            async with self._http.stream("GET", "/v1/events", timeout=timeout) as response:
                if response.status_code != 200:
                    await response.aread()
                    _raise_for(response, self.base_url)
                async with aclosing(_parse_events(response)) as stream:
                    first = await anext(stream, None)
                    if first is None or first.kind != "subscribed":
                        raise ApiError(response.status_code, "the event stream did not start")
                    yield stream
        except httpx.TransportError as exc:
            raise _unreachable(exc, self.base_url) from None

    # -- finding provers --------------------------------------------------------------
    async def wait_for_provers(
        self,
        *,
        timeout: float = DEFAULT_DISCOVER_S,
        max_price: int | None = None,
        max_proof_time: int | None = None,
        size: int = 1,
    ) -> list[Bid]:
        """Until the node holds a live bid within the caps (for an ask of `size`
        units of work); NoProvers after `timeout` seconds."""

        def fits(b: Bid) -> bool:
            return (
                b.max_size >= size
                and (max_price is None or b.price * size <= max_price)
                and (max_proof_time is None or b.proof_time <= max_proof_time)
            )

        bids: list[Bid] = []
        with anyio.move_on_after(timeout):
            while True:
                bids = await self.bids()
                found = [b for b in bids if fits(b)]
                if found:
                    return found
                await anyio.sleep(POLL_S)
        if not bids:
            peers = (await self.status()).peers
            raise NoProvers(
                f"no provers found in market {self.market.hex()[:16]}…: the node has"
                f" {peers} peer(s) and no live bid after {timeout:g} s"
            )
        cheapest = bids[0]
        fastest = min(bids, key=lambda b: b.proof_time)
        raise NoProvers(
            f"no prover within the caps: cheapest bid {cheapest.price}"
            f" ({cheapest.proof_time} ms), fastest {fastest.proof_time} ms"
            f" ({fastest.price}); {len(bids)} bid(s) seen"
        )

    # -- asking -----------------------------------------------------------------------
    async def place_ask(
        self,
        inputs: bytes,
        *,
        max_price: int,
        max_proof_time: int,
        prefer: str = "cost",
        replicas: int = 1,
        ttl_ms: int = DEFAULT_TTL_MS,
        size: int | None = None,
    ) -> bytes:
        """Have the node sign and publish an ask (its key, inline inputs); its id.
        BadRequest for terms the node refuses to sign, AskRefused if its core
        refuses the ask or the node runs no requester role."""
        if self.requester_role is False:
            raise AskRefused(
                f"the node at {self.base_url} runs no requester role (a [requester] section):"
                " nobody would verify or pay for the proof; nothing placed"
            )
        if prefer not in PREFERENCES:
            raise ValueError(f"prefer must be cost or time, not {prefer!r}")
        fields: dict[str, Any] = {
            "market": self.market.hex(),
            "max_price": max_price,
            "max_proof_time": max_proof_time,
            "prefer": prefer,
            "replicas": replicas,
            "ttl_ms": ttl_ms,
            "inputs": bytes(inputs).hex(),
        }
        if size is not None:
            fields["size"] = size
        placed = _object(await self._request("POST", "/v1/asks", fields))
        if placed.get("status") != "accept":
            why = f"{placed.get('reason', '')} {placed.get('detail', '')}".strip()
            raise AskRefused(f"the node refused the ask: {why}")
        return bytes.fromhex(placed["id"])

    async def wait(self, ask: bytes, *, timeout: float | None = None) -> ProofResult:
        """Until the ask is proven (every replica verified and receipted by the node's
        requester role), its proofs; else a RequestFailed. On `timeout` (seconds) an
        ask nobody has won is cancelled."""
        view: AskStatus | None = None
        with anyio.move_on_after(math.inf if timeout is None else timeout):
            view = await self._until_final(ask)
        if view is None:
            view = await self.ask(ask)
            if view.state not in TERMINAL:
                note = ""
                if view.state == "open" and not view.winners:
                    note = "; ask cancelled" if await self.cancel(ask) == "ok" else ""
                raise ProofTimeout(
                    f"no verified proof within {timeout:g} s (ask {view.state},"
                    f" {len(view.accepted)} of {view.replicas} proofs{note})",
                    ask=ask,
                )
        if view.state == "proven":
            proofs = await self._verified_proofs(ask, view.replicas)
            return ProofResult(ask, proofs, view.winners, view.paid)
        if view.state == "cancelled":
            raise AskCancelled("the ask was cancelled", ask=ask)
        if view.state == "invalid_inputs":
            raise InputsInvalid("a prover attested that the inputs cannot be proven", ask=ask)
        raise AskExpired(
            f"the ask expired before it was proven ({len(view.accepted)} of"
            f" {view.replicas} proofs accepted)",
            ask=ask,
        )

    async def request_proof(
        self,
        inputs: bytes,
        *,
        max_price: int,
        max_proof_time: int,
        prefer: str = "cost",
        replicas: int = 1,
        ttl_ms: int = DEFAULT_TTL_MS,
        timeout: float = 120.0,
        discover_timeout: float = DEFAULT_DISCOVER_S,
        size: int | None = None,
    ) -> bytes:
        """Wait for a prover within the caps (`discover_timeout`), place the ask, and
        return a proof the node verified within `timeout` seconds of placing it."""
        await self.wait_for_provers(
            timeout=discover_timeout,
            max_price=max_price,
            max_proof_time=max_proof_time,
            size=size or 1,
        )
        ask = await self.place_ask(
            inputs,
            max_price=max_price,
            max_proof_time=max_proof_time,
            prefer=prefer,
            replicas=replicas,
            ttl_ms=ttl_ms,
            size=size,
        )
        return (await self.wait(ask, timeout=timeout)).proof

    async def cancel(self, ask: bytes) -> str:
        """Cancel one of the node's asks: "ok", or why the node refused."""
        done = _object(await self._request("POST", f"/v1/asks/{ask.hex()}/cancel", {}))
        if done.get("status") == "accept":
            return "ok"
        return f"{done.get('reason', '')} {done.get('detail', '')}".strip() or "refused"

    # -- bidding ----------------------------------------------------------------------
    async def place_bid(
        self, *, price: int, proof_time: int, capacity: int = 1, ttl_ms: int = 3_600_000
    ) -> bytes:
        """Have the node sign and publish a bid with its key; its id. BadRequest or
        ValueError if it is refused."""
        fields = {
            "market": self.market.hex(),
            "price": price,
            "proof_time": proof_time,
            "capacity": capacity,
            "ttl_ms": ttl_ms,
        }
        placed = _object(await self._request("POST", "/v1/bids", fields))
        if placed.get("status") != "accept":
            why = f"{placed.get('reason', '')} {placed.get('detail', '')}".strip()
            raise ValueError(f"bid refused: {why}")
        return bytes.fromhex(placed["id"])

    # -- the parts --------------------------------------------------------------------
    async def _until_final(self, ask: bytes) -> AskStatus:
        """The ask's view once it is in a final state: the event stream tells when
        (subscribed before the first read, so that nothing falls between them); a
        stream that ends or drops this client is opened again."""
        wanted = ask.hex()
        while True:
            async with self.events() as stream:
                view = await self.ask(ask)
                if view.state in TERMINAL:
                    return view
                async for event in stream:
                    if event.kind == "dropped":
                        break
                    if (
                        event.kind == "ask_state"
                        and str(event.data.get("ask", "")).lower() == wanted
                        and event.data.get("after") in TERMINAL
                    ):
                        return await self.ask(ask)

    async def _verified_proofs(self, ask: bytes, replicas: int) -> dict[bytes, bytes]:
        """The role's proofs of a proven ask (stored as it receipts them: a read at
        the very moment the state changes may find fewer)."""
        proofs: dict[bytes, bytes] = {}
        with anyio.move_on_after(PROOFS_WAIT_S):
            while len(proofs := await self.proofs(ask)) < replicas:
                await anyio.sleep(POLL_S)
        if len(proofs) < replicas:
            raise ApiError(200, f"the node holds {len(proofs)} of {replicas} verified proofs")
        return proofs

    async def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        try:
            response = await self._http.request(
                method, path, content=None if body is None else json.dumps(body).encode()
            )
        except httpx.TransportError as exc:
            raise _unreachable(exc, self.base_url) from None
        if not 200 <= response.status_code < 300:
            _raise_for(response, self.base_url)
        try:
            return response.json()
        except ValueError:
            raise ApiError(response.status_code, "the node's answer is not JSON") from None


@asynccontextmanager
async def connect(
    api: str,
    *,
    token: str | None = None,
    token_file: str | os.PathLike[str] | None = None,
    market: str | None = None,
    timeout: float = 10.0,
) -> AsyncIterator[NodeClient]:
    """A `NodeClient` of the node whose control API is at `api` (http://host:port).
    The token: `token`, else the file `token_file` (the node's `api.token`), else
    $P2P_MARKET_API_TOKEN, else none (reads only). `market`: a market id (hex) or
    name the node follows; None if it follows just one. `timeout`: seconds for each
    request. Checks on entry that the node answers (NodeUnreachable), that it
    takes the token (BadToken), follows the market (ValueError) and runs a requester
    role (else `place_ask` refuses: AskRefused)."""
    base = _base_url(api)
    secret = _token(token, token_file)
    headers = {"Accept": "application/json", "Content-Type": "application/json"}
    if secret is not None:
        headers["Authorization"] = f"Bearer {secret}"
    async with httpx.AsyncClient(
        base_url=base, headers=headers, timeout=timeout, trust_env=False
    ) as http:
        probe = NodeClient(http, base, b"")
        followed = _object(await probe._request("GET", "/v1/markets"))["markets"]
        chosen = _market(followed, market)
        role = None if secret is None else await _check_token(probe)
        yield NodeClient(http, base, chosen, requester_role=role)


async def _check_token(probe: NodeClient) -> bool:
    """A read that needs the token (the proofs of an ask nobody placed): 404 with a
    good token, 401 with a bad one. Whether the node runs a requester role: the 404
    says so (node/runtime.py `verified_proofs`)."""
    try:
        await probe._request("GET", f"/v1/asks/{_NO_ASK}/proofs")
    except ApiError as exc:
        if exc.status != 404:
            raise
        return "runs no requester role" not in exc.message
    return True


def _base_url(api: str) -> str:
    try:
        url = httpx.URL(api)
    except (httpx.InvalidURL, TypeError) as exc:
        raise ValueError(f"the API address must be http://host:port, not {api!r} ({exc})") from None
    if url.scheme != "http" or not url.host:
        raise ValueError(f"the API address must be http://host:port, not {api!r}")
    return str(url).rstrip("/")


def _token(token: str | None, token_file: str | os.PathLike[str] | None) -> str | None:
    """TokenError (a ValueError) names a token file that cannot be used."""
    if token is not None:
        return token.strip()
    if token_file is not None:
        return read_token(Path(token_file))
    from_env = os.environ.get(TOKEN_ENV, "").strip()
    return from_env or None


def _market(followed: list[dict[str, Any]], wanted: str | None) -> bytes:
    if wanted is None:
        if len(followed) != 1:
            names = ", ".join(f"{m.get('name')} ({m['id'][:16]}…)" for m in followed)
            raise ValueError(f"the node follows {len(followed)} markets ({names}): name one")
        return bytes.fromhex(followed[0]["id"])
    for m in followed:
        if wanted.lower() in (str(m["id"]).lower(), m.get("name")):
            return bytes.fromhex(m["id"])
    raise ValueError(f"the node does not follow market {wanted!r}")


def _raise_for(response: httpx.Response, base: str) -> None:
    status = response.status_code
    try:
        message = response.json()["error"]
    except (ValueError, KeyError, TypeError):
        message = f"HTTP {status} {response.reason_phrase}".strip()
    if status == 401:
        raise BadToken(f"the node at {base} refused the request: {message}")
    if status == 400:
        raise BadRequest(status, message)
    raise ApiError(status, str(message))


def _unreachable(exc: httpx.TransportError, base: str) -> NodeUnreachable:
    if isinstance(exc, httpx.TimeoutException):
        return NodeUnreachable(f"no answer from the node at {base} in time ({type(exc).__name__})")
    why = str(exc) or type(exc).__name__
    return NodeUnreachable(f"cannot reach the node at {base}: {why}")


async def _parse_events(response: httpx.Response) -> AsyncGenerator[Event, None]:
    """Server-sent events: `id:`, `event:` and `data:` lines, a blank line ends one;
    comment lines (`: keepalive`) are skipped."""
    seq, kind, data = 0, "message", ""
    async for line in response.aiter_lines():
        if not line:
            if data:
                yield Event(seq, kind, json.loads(data))
            seq, kind, data = 0, "message", ""
        elif line.startswith(":"):
            continue
        else:
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "id":
                seq = int(value)
            elif name == "event":
                kind = value
            elif name == "data":
                data = f"{data}\n{value}" if data else value


def _object(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ApiError(200, "the node's answer is not a JSON object")
    return value


def _bid(b: Mapping[str, Any]) -> Bid:
    return Bid(
        id=bytes.fromhex(b["id"]),
        prover=bytes.fromhex(b["prover"]),
        price=int(b["price"]),
        proof_time=int(b["proof_time"]),
        capacity=int(b["capacity"]),
        max_size=int(b["max_size"]),
        expires_at=int(b["expires_at"]),
    )


def _ask(a: dict[str, Any]) -> AskStatus:
    return AskStatus(
        id=bytes.fromhex(a["id"]),
        state=str(a["state"]),
        replicas=int(a["replicas"]),
        expires_at=int(a["expires_at"]),
        winners=tuple(bytes.fromhex(w) for w in a["winners"]),
        prices=tuple(int(p) for p in a["prices"]),
        slot_states=tuple(str(s) for s in a["slot_states"]),
        accepted=tuple(bytes.fromhex(w) for w in a["accepted"]),
        paid=int(a["paid"]),
        raw=a,
    )
