"""The control API only obeys its owner (node/api.py): a real node (runtime.Node with
its SQLite log and its token file) and its real HTTP server on 127.0.0.1, sent raw
HTTP requests as a web page in the operator's browser, or a stranger on the machine,
would send them. Every refusal is checked by its status and its message, and by the
node's state: no bid signed, no ask placed or cancelled, no envelope admitted, no
peer dialled. Then the owner's own requests do change it, so the checks can see a
change when there is one."""

from __future__ import annotations

import http.client
import json
from pathlib import Path
from typing import Any

import pytest
import trio

from p2p_market.core.envelope import message_id
from p2p_market.markets.devnet import Actor
from p2p_market.node.api import serve_api
from p2p_market.node.api_token import ensure_token, read_token
from p2p_market.node.runtime import Node
from tests.node.test_runtime import MARKET, MID, make_node, running

TIMEOUT = 15
WRONG = "0f" * 32


def send(
    port: int, method: str, path: str, headers: dict[str, str], body: bytes = b""
) -> tuple[int, dict[str, str], Any]:
    """One request with exactly these headers (Host too; and a Content-Length)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
    try:
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        for name, value in headers.items():
            conn.putheader(name, value)
        conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        response = conn.getresponse()
        data = response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, json.loads(data)
    finally:
        conn.close()


async def ask_node(
    port: int, method: str, path: str, headers: dict[str, str], body: bytes = b""
) -> tuple[int, dict[str, str], Any]:
    return await trio.to_thread.run_sync(send, port, method, path, headers, body)


def snapshot(node: Node) -> tuple[Any, ...]:
    """What a request could change: bids, asks and their states, peers to dial, and
    how many envelopes the node admitted."""
    state = node.states[MID]
    asks = {a.hex(): state.ask_state(a).value for a in state.asks}
    return sorted(state.book.current), asks, list(node.bootstrap), node.admitted


def owner(port: int, token: str) -> dict[str, str]:
    """The headers of the owner's own request (as ApiClient sends them)."""
    return {
        "Host": f"127.0.0.1:{port}",
        "Authorization": f"Bearer {token}",
        "Content-Type": "application/json",
    }


def refusals(port: int, token: str) -> list[tuple[str, dict[str, str], int, str]]:
    """(what, headers, status, part of the one-line error): each is the owner's
    request with one thing changed."""
    good = owner(port, token)
    anon = {k: v for k, v in good.items() if k != "Authorization"}
    return [
        ("no token", anon, 401, "missing API token: send Authorization: Bearer <token>"),
        ("wrong token", {**good, "Authorization": f"Bearer {WRONG}"}, 401, "wrong API token"),
        ("token, no scheme", {**good, "Authorization": token}, 401, "malformed Authorization"),
        ("basic auth", {**good, "Authorization": "Basic b3duZXI6cHc="}, 401, "malformed"),
        ("empty bearer", {**good, "Authorization": "Bearer "}, 401, "malformed Authorization"),
        (
            "the outsider's text/plain POST",
            {**anon, "Content-Type": "text/plain", "Origin": "http://evil.example"},
            403,
            "cross-origin request refused (Origin 'http://evil.example')",
        ),
        ("text/plain, no Origin", {**anon, "Content-Type": "text/plain"}, 401, "missing API"),
        (
            "text/plain with the token",
            {**good, "Content-Type": "text/plain"},
            415,
            "Content-Type must be application/json, not text/plain",
        ),
        (
            "a form",
            {**good, "Content-Type": "application/x-www-form-urlencoded"},
            415,
            "not application/x-www-form-urlencoded",
        ),
        (
            "no Content-Type",
            {k: v for k, v in good.items() if k != "Content-Type"},
            415,
            "not none",
        ),
        (
            "foreign Host (DNS rebinding)",
            {**good, "Host": f"evil.example:{port}"},
            421,
            f"Host 'evil.example:{port}' is not this API's: use 127.0.0.1:{port}",
        ),
        ("Host, another port", {**good, "Host": "127.0.0.1:1"}, 421, "is not this API's"),
        ("Host, no port", {**good, "Host": "localhost"}, 421, "is not this API's"),
        ("Host, odd form", {**good, "Host": f"x@127.0.0.1:{port}"}, 421, "is not this API's"),
        ("foreign Origin", {**good, "Origin": "http://evil.example"}, 403, "cross-origin"),
        (
            "Origin, another local port",
            {**good, "Origin": "http://localhost:3000"},
            403,
            "(Origin 'http://localhost:3000')",
        ),
        ("Origin null", {**good, "Origin": "null"}, 403, "cross-origin request refused"),
        (
            "Sec-Fetch-Site cross-site",
            {**good, "Sec-Fetch-Site": "cross-site"},
            403,
            "(Sec-Fetch-Site cross-site)",
        ),
    ]


async def test_state_changing_calls_obey_the_owner_only(tmp_path: Path) -> None:
    a, b = make_node(tmp_path, "a"), make_node(tmp_path, "b")
    async with running(a, b):
        assert a.api_port is not None and b.gossip is not None
        port, token = a.api_port, read_token(a.api_token_file)
        mine = await a.place_ask({"market": MID.hex(), "max_price": 9, "max_proof_time": 900})
        assert mine.status == "accept"
        foreign = Actor("someone-else", MARKET).bid(now=a.clock(), price=3, proof_time=900)
        # Each route that changes the node, with a body it would act upon: the bid of
        # the outsider's report (price 1, all the capacity there is).
        bid = {"market": MID.hex(), "price": 1, "proof_time": 1000, "capacity": 1024}
        ask = {"market": MID.hex(), "max_price": 5, "max_proof_time": 900}
        writes = [
            ("/v1/bids", bid),
            ("/v1/asks", ask),
            (f"/v1/asks/{mine.id}/cancel", {}),
            ("/v1/envelopes", {"hex": foreign.hex()}),
            ("/v1/peers", {"addrs": [b.gossip.addr]}),
            ("/v1/nowhere", {}),  # an unknown route tells a stranger nothing either
        ]
        before = snapshot(a)
        assert before == ([], {mine.id: "open"}, [], 1)
        for path, fields in writes:
            body = json.dumps(fields).encode()
            for what, headers, status, needle in refusals(port, token):
                if path == "/v1/nowhere" and status == 415:  # the owner may learn that
                    status, needle = 404, "no such route: POST /v1/nowhere"
                got, head, answer = await ask_node(port, "POST", path, headers, body)
                assert (got, list(answer)) == (status, ["error"]), (path, what, answer)
                assert needle in answer["error"], (path, what, answer)
                if status == 401:
                    assert head["www-authenticate"] == "Bearer"
                assert snapshot(a) == before, (path, what)
            for method in ("PUT", "DELETE"):
                got, _, answer = await ask_node(port, method, path, refusals(port, token)[0][1])
                assert got == 401 and "missing API token" in answer["error"], (path, method)
            assert snapshot(a) == before, path

        # The owner, as ApiClient sends it and in the other forms the checks allow.
        variants = [
            owner(port, token),
            {
                **owner(port, token),
                "Host": f"localhost:{port}",
                "Origin": f"http://localhost:{port}",
            },
            {**owner(port, token), "Host": f"[::1]:{port}", "Authorization": f"bearer {token}"},
            {**owner(port, token), "Content-Type": "application/json; charset=utf-8"},
        ]
        for (path, fields), headers in zip(writes, [*variants, *variants], strict=False):
            got, _, answer = await ask_node(
                port, "POST", path, headers, json.dumps(fields).encode()
            )
            expected = 404 if path == "/v1/nowhere" else 200
            assert got == expected, (path, answer)
        state = a.states[MID]
        someone = Actor("someone-else", MARKET).public_key
        assert sorted(state.book.current) == sorted([a.key.public_key, someone])
        assert state.book.current[a.key.public_key].bid.capacity == 1024
        assert state.book.current[someone].id == message_id(foreign)
        assert state.ask_state(bytes.fromhex(mine.id)).value == "cancelled"
        assert len(state.asks) == 2
        assert a.bootstrap == [b.gossip.addr]


async def test_reads_of_public_data_need_no_token_but_a_local_host(tmp_path: Path) -> None:
    a = make_node(tmp_path, "a")
    async with running(a):
        assert a.api_port is not None
        port, token = a.api_port, read_token(a.api_token_file)
        mine = await a.place_ask({"market": MID.hex(), "max_price": 9, "max_proof_time": 900})
        public = ["/v1/status", "/v1/markets", f"/v1/markets/{MID.hex()}/book",
                  f"/v1/asks/{mine.id}", "/v1/stats", f"/v1/markets/{MID.hex()}/check"]  # fmt: skip
        local = {"Host": f"127.0.0.1:{port}"}
        for path in public:
            got, _, answer = await ask_node(port, "GET", path, local)
            assert got == 200, (path, answer)
            # What a DNS-rebound page (its own name in Host) or a cross-site one reads: nothing.
            rebound = {"Host": f"attacker.example:{port}"}
            got, _, answer = await ask_node(port, "GET", path, rebound)
            assert (got, list(answer)) == (421, ["error"]), path
            got, _, answer = await ask_node(
                port, "GET", path, {**local, "Origin": "http://x.example"}
            )
            assert (got, list(answer)) == (403, ["error"]), path

        # The proofs of the node's asks are its owner's alone.
        proofs = f"/v1/asks/{mine.id}/proofs"
        a.proof_sources.append(
            lambda ask: {b"\x01" * 32: b"proof"} if ask.hex() == mine.id else None
        )
        for headers, status in (
            (local, 401),
            ({**local, "Authorization": f"Bearer {WRONG}"}, 401),
            ({**local, "Authorization": f"Bearer {token}", "Host": f"evil.example:{port}"}, 421),
        ):
            got, _, answer = await ask_node(port, "GET", proofs, headers)
            assert (got, list(answer)) == (status, ["error"]), headers
        got, _, answer = await ask_node(port, "GET", proofs, owner(port, token))
        assert (got, answer) == (200, {"proofs": {"01" * 32: b"proof".hex()}})


async def test_the_token_survives_a_restart_and_only_it_is_accepted(tmp_path: Path) -> None:
    a = make_node(tmp_path, "a")
    async with running(a):
        token = read_token(a.api_token_file)
    bid = json.dumps({"market": MID.hex(), "price": 4, "proof_time": 900}).encode()
    again = make_node(tmp_path, "a")
    async with running(again):
        assert again.api_port is not None
        port = again.api_port
        other = ensure_token(tmp_path / "b")  # a real token, of another node
        got, _, _ = await ask_node(port, "POST", "/v1/bids", owner(port, other), bid)
        assert got == 401 and len(again.states[MID].book.current) == 0
        got, _, answer = await ask_node(port, "POST", "/v1/bids", owner(port, token), bid)
        assert (got, answer["status"]) == (200, "accept")
        assert len(again.states[MID].book.current) == 1


async def test_the_api_binds_loopback_addresses_only(tmp_path: Path) -> None:
    node = make_node(tmp_path, "a")
    for host in ("0.0.0.0", "::", "192.0.2.1", "example.com"):
        message = f"binds a loopback address only, not '{host}'"
        with trio.fail_after(5), pytest.raises(ValueError, match=message):  # not served
            await serve_api(node, token=WRONG, host=host)
