"""The sync server's request parser (node/sync.py `SyncServer.answer`), fed the way
its stream handler feeds it: one frame body, decoded by node/wire.py.

Contract: `wire.decode` returns a value or raises WireError; `answer` returns a
reply map or raises SyncError (which ends the conversation with an error reply);
the reply is then framed like the handler does, which may only fail as WireError.

The server answers from a snapshot of real envelopes of the devnet market. Its
snapshots read trio's clock, so the target runs inside `trio.run`."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import trio

from p2p_market.core.crypto import devnet_key
from p2p_market.core.envelope import Envelope, message_id
from p2p_market.core.validation import check_envelope
from p2p_market.fuzz import samples
from p2p_market.fuzz.target import ContractBroken, Target
from p2p_market.net.host import peer_id_of
from p2p_market.node import wire
from p2p_market.node.sync import (
    MAX_REPLY_BYTES,
    MAX_REQUEST_BYTES,
    SyncError,
    SyncServer,
)

_MARKET = samples.market_id()
_PEER = peer_id_of(devnet_key("fuzz-sync-peer").public_key)


def _stored() -> list[Envelope]:
    out = []
    for raw in samples.envelopes():
        _, env = check_envelope(raw)
        assert env is not None
        out.append(env)
    return out


_ENVELOPES = _stored()
_SERVER = SyncServer(lambda m: _ENVELOPES if m == _MARKET else None, cache_s=float("inf"))


def check(data: bytes) -> None:
    try:
        request = wire.decode(data, max_bytes=MAX_REQUEST_BYTES)
    except wire.WireError:
        return
    try:
        reply = _SERVER.answer(request, {}, _PEER)
    except SyncError:
        return
    if type(reply) is not dict or type(reply.get("ok")) is not bool:
        raise ContractBroken(f"a reply that is not a map with ok: {reply!r:.80}")
    with contextlib.suppress(wire.WireError):
        wire.frame(reply, max_bytes=MAX_REPLY_BYTES)


def in_trio(run: Callable[[], None]) -> None:
    async def main() -> None:
        run()

    trio.run(main)


def seeds() -> list[bytes]:
    ids = sorted(message_id(raw) for raw in samples.envelopes())
    requests: list[dict[str, object]] = [
        {"op": "digest", "market": _MARKET},
        {"op": "digest", "market": bytes(32)},
        {"op": "ids", "market": _MARKET, "after": b"", "limit": 100},
        {"op": "ids", "market": _MARKET, "after": ids[3], "limit": 2},
        {"op": "bodies", "market": _MARKET, "ids": [ids[0], ids[5], bytes(32)]},
        {"op": "bodies", "market": _MARKET, "ids": []},
    ]
    return [wire.encode(r) for r in requests]


TARGET = Target(
    name="sync",
    about="node: the sync server's request parser (digest, ids, bodies)",
    check=check,
    seeds=seeds,
    mutation="msgpack",
    session=in_trio,
)
