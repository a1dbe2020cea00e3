"""`GET /v1/asks` over real TCP, in front of the in-memory FakeNode (a real core
MarketState): the node's own asks apart from others', the filters, and bad
filters as one-line 400s."""

from __future__ import annotations

import trio

from p2p_market.markets.devnet import Actor
from p2p_market.node.api_client import ApiClient
from tests.node.test_http_api import FakeNode, api_error, in_thread, start_api


async def test_asks_lists_the_nodes_own_apart_from_others() -> None:
    node = FakeNode()
    other = Actor("requester-2", node.state.market)
    mid = node.state.market_id.hex()
    async with trio.open_nursery() as nursery:
        _, client = await start_api(nursery, node)
        own = await node.place_ask({"market": mid, "max_price": 9, "max_proof_time": 5000})
        theirs = await node.submit(
            other.ask(now=node.now + 1, max_price=5, max_proof_time=5000, inputs=b"x")
        )
        assert own.status == theirs.status == "accept"
        every = await in_thread(lambda: client.asks())
        assert [a["id"] for a in every] == [own.id, theirs.id]  # oldest first
        mine = await in_thread(lambda: client.asks(mine=True))
        assert [(a["id"], a["requester"]) for a in mine] == [(own.id, node.me.public_key.hex())]
        anonymous = ApiClient(client.base_url, timeout=client.timeout)  # a public read
        assert await in_thread(lambda: anonymous.asks(mine=True, market=mid)) == mine
        assert await in_thread(lambda: client.asks(state="proven")) == []
        assert len(await in_thread(lambda: client.asks(state="open"))) == 2
        for path, status, words in (
            ("/v1/asks?mine=maybe", 400, "mine must be true or false"),
            ("/v1/asks?state=done", 400, "state must be one of open"),
            ("/v1/asks?market=xyz", 400, "market id must be 64 hex characters"),
            (f"/v1/asks?market={'ab' * 32}", 404, "unknown market"),
        ):
            error = await api_error(client.request, "GET", path)
            assert error.status == status and words in error.message, (path, error)
        nursery.cancel_scope.cancel()
