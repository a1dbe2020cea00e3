"""`GET /v1/asks`: the asks a node holds, in every market it follows (or one), for
`p2p-market asks` (cli/asks.py). With `mine=true` only the asks signed with the
node's own key: what its requester placed, with state, winners and prices, so
that a requester can find an ask again (and fetch its proof, `proof fetch`) without
having kept its id.

A public read, like the book it is made of: every ask and its state is gossiped to
everyone. Its own module, a router the app includes (node/api.py), so that it
needs nothing of the facade but `status`, `markets` and `book`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Final

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel

from p2p_market.core.lifecycle import AskState
from p2p_market.node import api_models as m
from p2p_market.node.facade import NodeFacade

STATES: Final = tuple(s.value for s in AskState)
_ID: Final = re.compile(m.ID_PATTERN)
_TRUE: Final = frozenset({"true", "1", "yes"})
_FALSE: Final = frozenset({"false", "0", "no"})


class AsksBody(BaseModel):
    """Asks, oldest first (by their signed timestamp, then id)."""

    asks: list[m.AskView]


def _flag(value: str | None) -> bool:
    if value is None or value.lower() in _FALSE:
        return False
    if value.lower() in _TRUE:
        return True
    raise ValueError(f"mine must be true or false, not {value!r}")


def list_asks(
    node: NodeFacade, *, mine: bool = False, market: str | None = None, state: str | None = None
) -> list[dict[str, Any]]:
    """The asks of the node's book views, filtered; ValueError names a bad filter,
    KeyError an unknown market."""
    if market is not None and _ID.fullmatch(market) is None:
        raise ValueError("market id must be 64 hex characters")
    if state is not None and state not in STATES:
        raise ValueError(f"state must be one of {', '.join(STATES)}, not {state!r}")
    followed = [str(f["id"]) for f in node.markets()]
    if market is not None:
        if market.lower() not in followed:
            raise KeyError(f"unknown market {market.lower()}")
        followed = [market.lower()]
    me = str(node.status()["public_key"]) if mine else None
    found = [
        a
        for mid in followed
        for a in node.book(mid)["asks"]
        if (me is None or a["requester"] == me) and (state is None or a["state"] == state)
    ]
    return sorted(found, key=lambda a: (a["timestamp"], a["id"]))


def router(node: NodeFacade, respond: Callable[[Any], Response]) -> APIRouter:
    """The routes, answering through `respond` (node/api.py's NodeJSON: the API's
    one JSON rendering, passed in so that this module does not import the app)."""
    routes = APIRouter()

    @routes.get("/v1/asks", response_model=AsksBody)
    async def asks(
        mine: str | None = Query(
            None,
            description="true: only the asks signed with the node's key (its requester's)",
            json_schema_extra={"enum": ["true", "false"]},
        ),
        market: str | None = Query(
            None, description="only this market's asks", json_schema_extra={"pattern": m.ID_PATTERN}
        ),
        state: str | None = Query(
            None, description="only asks in this state", json_schema_extra={"enum": list(STATES)}
        ),
    ) -> Any:
        """The asks the node holds (every market it follows, or `market`), oldest first."""
        return respond({"asks": list_asks(node, mine=_flag(mine), market=market, state=state)})

    return routes
