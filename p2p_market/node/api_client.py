"""A small synchronous client of the control API (stdlib only), for the CLI.

    client = ApiClient("http://127.0.0.1:8080", token=read_token(Path("data/api.token")))
    client.status()
    client.place_bid({"market": mid, "price": 10, "proof_time": 2_000})

Every request carries the node's API token (`Authorization: Bearer`, see
node/api_token.py) when the client has one; the node refuses whatever changes its
state without it (and reading the proofs of its asks), and answers the public reads
(status, markets, book, asks) either way. `ApiClient.for_node(ready)` is the client
of a node started by a launcher: its port and token file are in its ready line.

Every failure is an `ApiError` with one line to show: the server's own message for
an HTTP error, or what went wrong on the way (status 0: no HTTP answer at all).
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from p2p_market.node.api_token import read_token
from p2p_market.node.facade import Submitted


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}" if status else message)
        self.status = status
        self.message = message


class ApiAddressError(ApiError):
    """The API address itself is malformed: bad input, before anything is sent."""


class ApiUnreachable(ApiError):
    """No HTTP answer from the address (refused, timed out, cut): a runtime failure,
    not bad input, since a node that is down or slow may be there later."""


class ApiClient:
    def __init__(self, base_url: str, *, token: str | None = None, timeout: float = 10.0) -> None:
        split = urlsplit(base_url)
        if split.scheme != "http" or not split.hostname:
            raise ApiAddressError(0, f"the API address must be http://host:port, not {base_url!r}")
        try:
            port = split.port or 80
        except ValueError:
            raise ApiAddressError(0, f"bad port in the API address {base_url!r}") from None
        self.host = split.hostname
        self.port = port
        self.prefix = split.path.rstrip("/")
        self.timeout = timeout
        self.token = token
        self.base_url = f"http://{self.host}:{self.port}{self.prefix}"

    @classmethod
    def for_node(cls, ready: Mapping[str, Any], *, timeout: float = 10.0) -> ApiClient:
        """The client of a node on this machine, from its JSON ready line: its API
        port, and the token in its `api_token_file` (TokenError if unreadable)."""
        return cls(
            ready.get("api_url") or f"http://127.0.0.1:{ready['api_port']}",
            token=read_token(Path(ready["api_token_file"])),
            timeout=timeout,
        )

    # -- the routes -------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        return self._object(self.request("GET", "/v1/status"))

    def markets(self) -> list[dict[str, Any]]:
        markets = self._object(self.request("GET", "/v1/markets")).get("markets")
        if not isinstance(markets, list):
            raise ApiError(0, "the node's answer has no market list")
        return markets

    def known_markets(self) -> list[dict[str, Any]]:
        """The markets the node's peers announce (GET /v1/markets/known)."""
        markets = self._object(self.request("GET", "/v1/markets/known")).get("markets")
        if not isinstance(markets, list):
            raise ApiError(0, "the node's answer has no market list")
        return markets

    def book(self, market: str) -> dict[str, Any]:
        return self._object(self.request("GET", f"/v1/markets/{_seg(market)}/book"))

    def ask(self, ask_id: str) -> dict[str, Any]:
        return self._object(self.request("GET", f"/v1/asks/{_seg(ask_id)}"))

    def asks(
        self, *, mine: bool = False, market: str | None = None, state: str | None = None
    ) -> list[dict[str, Any]]:
        """The asks the node holds (GET /v1/asks): with `mine`, those of its key."""
        query = {"mine": "true"} if mine else {}
        query |= {k: v for k, v in (("market", market), ("state", state)) if v is not None}
        path = "/v1/asks" + (f"?{urlencode(query)}" if query else "")
        asks = self._object(self.request("GET", path)).get("asks")
        if not isinstance(asks, list):
            raise ApiError(0, "the node's answer has no ask list")
        return asks

    def proofs(self, ask_id: str) -> dict[bytes, bytes]:
        """The proofs of an ask of the node's key that its requester role verified."""
        found = self._object(self.request("GET", f"/v1/asks/{_seg(ask_id)}/proofs")).get("proofs")
        if not isinstance(found, dict):
            raise ApiError(0, "the node's answer has no proofs")
        try:
            return {bytes.fromhex(k): bytes.fromhex(v) for k, v in found.items()}
        except (TypeError, ValueError):
            raise ApiError(0, "the node's proofs are not hex") from None

    def submit(self, raw: bytes) -> Submitted:
        """Submit an already signed envelope (sent as JSON `{"hex": ...}`)."""
        return _submitted(self.request("POST", "/v1/envelopes", _json({"hex": raw.hex()})))

    def place_bid(self, fields: dict[str, Any]) -> Submitted:
        return _submitted(self.request("POST", "/v1/bids", _json(fields)))

    def place_ask(self, fields: dict[str, Any]) -> Submitted:
        return _submitted(self.request("POST", "/v1/asks", _json(fields)))

    def cancel(self, ask_id: str) -> Submitted:
        return _submitted(self.request("POST", f"/v1/asks/{_seg(ask_id)}/cancel", b"{}"))

    def connect_peers(self, addrs: list[str]) -> dict[str, Any]:
        """Have the node dial these full multiaddrs now and keep them as bootstrap
        peers; its answer says which dials failed."""
        return self._object(self.request("POST", "/v1/peers", _json({"addrs": addrs})))

    # the prover role's operator commands (`p2p-market prover bid|jobs|earnings`)
    def prover_bid(self) -> dict[str, Any]:
        return self._object(self.request("GET", "/v1/prover/bid"))

    def update_bid(self, changes: dict[str, int]) -> dict[str, Any]:
        """New terms for the prover's bid (any of price, proof_time, capacity,
        max_size, bid_ttl_ms)."""
        return self._object(self.request("POST", "/v1/prover/bid", _json(changes)))

    def bid_action(self, action: str) -> dict[str, Any]:
        """pause, resume or withdraw the prover's bid."""
        return self._object(self.request("POST", f"/v1/prover/bid/{_seg(action)}", b"{}"))

    def prover_jobs(self) -> dict[str, Any]:
        return self._object(self.request("GET", "/v1/prover/jobs"))

    def prover_earnings(self) -> dict[str, Any]:
        return self._object(self.request("GET", "/v1/prover/earnings"))

    # -- the transport ----------------------------------------------------------------
    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        *,
        content_type: str = "application/json",
    ) -> Any:
        """One request on a fresh connection; the decoded JSON answer of a 2xx."""
        conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type
        if self.token is not None:
            headers["Authorization"] = f"Bearer {self.token}"
        try:
            conn.request(method, self.prefix + path, body=body, headers=headers)
            response = conn.getresponse()
            status, data = response.status, response.read()
        except TimeoutError:
            raise ApiUnreachable(
                0, f"no answer from {self.base_url} in {self.timeout:g} s"
            ) from None
        except (OSError, http.client.HTTPException) as exc:
            raise ApiUnreachable(
                0, f"cannot reach the node at {self.base_url}: {_why(exc)}"
            ) from None
        finally:
            conn.close()
        try:
            decoded = json.loads(data)
        except ValueError:
            decoded = None
        if 200 <= status < 300:
            if decoded is None:
                raise ApiError(status, "the node's answer is not JSON")
            return decoded
        if isinstance(decoded, dict) and isinstance(decoded.get("error"), str):
            raise ApiError(status, decoded["error"])
        raise ApiError(status, f"HTTP {status} {http.client.responses.get(status, '')}".strip())

    @staticmethod
    def _object(value: Any) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise ApiError(0, "the node's answer is not a JSON object")
        return value


def _seg(value: str) -> str:
    return quote(value, safe="")


def _json(fields: dict[str, Any]) -> bytes:
    return json.dumps(fields).encode()


def _why(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


def _submitted(value: Any) -> Submitted:
    if not isinstance(value, dict):
        raise ApiError(0, "the node's answer is not a JSON object")
    try:
        return Submitted(
            id=str(value["id"]),
            status=str(value["status"]),
            reason=str(value["reason"]),
            detail=str(value.get("detail", "")),
        )
    except KeyError as exc:
        raise ApiError(0, f"the node's answer lacks {exc.args[0]}") from None
