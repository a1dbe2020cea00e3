"""The control API's OpenAPI document, and schemathesis running it against a real
node (runtime.Node: its py-libp2p host on 127.0.0.1, its SQLite log, its token).

Schemathesis generates requests from the document (positive data: what the schema
says the node takes) and checks each answer: no 5xx, a status the document lists,
a body of the documented schema and content type. It runs in a worker thread (its
client is synchronous) while the node serves from the test's trio loop. The example
count is bounded (EXAMPLES per operation, derandomized) so that it takes seconds.

Left out of the generated calls: the event stream (it never ends) and POST /v1/peers
(it dials whatever address it is given, and generated addresses may name hosts that
are not this machine's).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

import pytest
import schemathesis
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.core.result import Err

from p2p_market.node.api import serve_api
from p2p_market.node.api_client import ApiClient, ApiError
from p2p_market.node.api_token import read_token
from p2p_market.node.runtime import Node
from p2p_market.proving.pow import PowBackend
from p2p_market.roles.inbox import Inbox
from p2p_market.roles.prover import ProverRole, ProverSettings
from tests.node.test_http_api import FakeNode
from tests.node.test_runtime import MID, make_node, running

TIMEOUT = 120
EXAMPLES = int(os.environ.get("API_SCHEMA_EXAMPLES", "20"))
MODES = (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE)
ROUTES = {
    "/v1/status": {"get"},
    "/v1/markets": {"get"},
    "/v1/markets/known": {"get"},
    "/v1/markets/{market}/book": {"get"},
    "/v1/markets/{market}/check": {"get"},
    "/v1/markets/{market}/asks": {"get"},
    "/v1/markets/{market}/provers": {"get"},
    "/v1/asks": {"get", "post"},
    "/v1/asks/{ask_id}": {"get"},
    "/v1/asks/{ask_id}/proofs": {"get"},
    "/v1/asks/{ask_id}/cancel": {"post"},
    "/v1/bids": {"post"},
    "/v1/envelopes": {"post"},
    "/v1/stats": {"get"},
    "/v1/peers": {"get", "post"},
    "/v1/events": {"get"},
    "/v1/prover/bid": {"get", "post"},
    "/v1/prover/bid/pause": {"post"},
    "/v1/prover/bid/resume": {"post"},
    "/v1/prover/bid/withdraw": {"post"},
    "/v1/prover/jobs": {"get"},
    "/v1/prover/earnings": {"get"},
}


def _operations(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (path, method, op)
        for path, item in doc["paths"].items()
        for method, op in item.items()
        if method in ("get", "post")
    ]


async def test_the_openapi_document_describes_every_route(tmp_path: Path) -> None:
    node = make_node(tmp_path, "a")
    async with running(node):
        port = node.api_port
        anonymous = ApiClient(f"http://127.0.0.1:{port}", timeout=10)
        with trio.fail_after(TIMEOUT):
            doc = await trio.to_thread.run_sync(anonymous.request, "GET", "/openapi.json")
    assert doc["openapi"].startswith("3.")
    assert {path: set(item) for path, item in doc["paths"].items()} == ROUTES
    for path, method, op in _operations(doc):
        answers = op["responses"]
        assert "200" in answers, (path, method)
        assert "application/json" in answers["200"]["content"] or path == "/v1/events"
        for status in ("400", "403", "421", "500"):
            assert answers[status]["content"]["application/json"]["schema"], (path, status)
        if method == "post":
            body = op["requestBody"]["content"]["application/json"]["schema"]
            assert body, path
            assert {"401", "415"} <= set(answers), path
    schemas = doc["components"]["schemas"]
    bid = schemas["BidFields"]
    assert bid["required"] == ["market", "price", "proof_time"]
    assert bid["additionalProperties"] is False
    assert schemas["AskFields"]["properties"]["prefer"]["enum"] == ["cost", "time"]
    events = doc["paths"]["/v1/events"]["get"]["responses"]
    assert "text/event-stream" in events["200"]["content"] and "401" in events


async def test_the_document_is_read_like_the_other_public_reads(tmp_path: Path) -> None:
    """No token needed, but a foreign Host or Origin is refused as everywhere."""
    node = make_node(tmp_path, "a")
    async with running(node):
        port = node.api_port
        assert port is not None

        def ask(headers: dict[str, str]) -> int:
            import http.client

            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            try:
                conn.putrequest("GET", "/openapi.json", skip_host=True)
                for name, value in headers.items():
                    conn.putheader(name, value)
                conn.endheaders()
                return conn.getresponse().status
            finally:
                conn.close()

        local = {"Host": f"127.0.0.1:{port}"}
        with trio.fail_after(TIMEOUT):
            assert await trio.to_thread.run_sync(ask, local) == 200
            assert await trio.to_thread.run_sync(ask, {"Host": f"evil.example:{port}"}) == 421
            foreign = {**local, "Origin": "http://evil.example"}
            assert await trio.to_thread.run_sync(ask, foreign) == 403


def run_schemathesis(doc: dict[str, Any], base_url: str, token: str) -> list[str]:
    """Every generated case of every operation but the stream and the dialler; the
    failures found, as lines (none expected)."""
    schema = (
        schemathesis.openapi.from_dict(doc)
        .exclude(path="/v1/events")
        .exclude(method="POST", path="/v1/peers")
    )
    headers = {"Authorization": f"Bearer {token}"}
    failures: list[str] = []
    ran: list[str] = []
    for result in schema.get_all_operations():
        if isinstance(result, Err):
            failures.append(f"the document does not load: {result.err()}")
            continue
        failures += _run_operation(result.ok(), base_url, headers, ran)
    assert len(set(ran)) == sum(len(methods) for methods in ROUTES.values()) - 2
    print(f"schemathesis: {len(ran)} cases on {len(set(ran))} operations")
    return failures


def _run_operation(
    operation: Any, base_url: str, headers: dict[str, str], ran: list[str]
) -> list[str]:
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=st.one_of(*(operation.as_strategy(mode) for mode in MODES)))
    def check(case: Any) -> None:
        ran.append(operation.label)
        case.call_and_validate(base_url=base_url, headers=headers)

    try:
        check()
    except Exception as exc:  # one line per failing operation, then the details
        return [f"{operation.label}: {exc}"]
    return []


async def test_schemathesis_finds_no_failure_on_a_real_node(tmp_path: Path) -> None:
    """On a prover node (its role running), so that the prover's routes answer too."""
    plain = make_node(tmp_path, "a")
    node = Node(plain.config, plain.key, prover=True)
    settings = ProverSettings(market=MID, price=3, proof_time=900)
    role = ProverRole(node, PowBackend(), settings, Inbox())
    async with running(node) as nursery:
        await nursery.start(role.run)
        assert node.api_port is not None
        token = read_token(node.api_token_file)
        client = ApiClient(f"http://127.0.0.1:{node.api_port}", token=token, timeout=10)
        # Something for the reads to find: a bid and an ask of the node's own key.
        bid = {"market": MID.hex(), "price": 3, "proof_time": 900}
        ask = {"market": MID.hex(), "max_price": 9, "max_proof_time": 900}
        with trio.fail_after(TIMEOUT):
            assert (await trio.to_thread.run_sync(client.place_bid, bid)).status == "accept"
            assert (await trio.to_thread.run_sync(client.place_ask, ask)).status == "accept"
            doc = await trio.to_thread.run_sync(client.request, "GET", "/openapi.json")
            failures = await trio.to_thread.run_sync(run_schemathesis, doc, client.base_url, token)
        assert failures == [], "\n\n".join(failures)
        # The node is still whole: its state checks out, and it still answers.
        check = await trio.to_thread.run_sync(
            client.request, "GET", f"/v1/markets/{MID.hex()}/check"
        )
        assert check["violations"] == []
        with pytest.raises(ApiError) as unknown:
            await trio.to_thread.run_sync(client.ask, "00" * 32)
        assert unknown.value.status == 404


async def test_with_the_token_everywhere_the_document_needs_it_too(nursery: trio.Nursery) -> None:
    token = "5e" * 32
    port = await nursery.start(
        functools.partial(serve_api, FakeNode(), token=token, token_everywhere=True)
    )
    anonymous = ApiClient(f"http://127.0.0.1:{port}", timeout=10)
    owner = ApiClient(f"http://127.0.0.1:{port}", token=token, timeout=10)
    with trio.fail_after(TIMEOUT):
        with pytest.raises(ApiError) as refused:
            await trio.to_thread.run_sync(anonymous.request, "GET", "/openapi.json")
        assert refused.value.status == 401
        doc = await trio.to_thread.run_sync(owner.request, "GET", "/openapi.json")
    assert "/v1/events" in doc["paths"]
