"""Peer exchange (node/peers.py): the answer a peer sends to "who do you know?",
parsed as `ask_peers` parses it, and the request the serving side reads.

Contract: `wire.decode` returns a value or raises WireError; every listed entry
goes through `_dialable` (the module's parser of one entry; `ask_peers` itself
needs a live host), which never raises and gives one address string or None. A
malformed answer is no addresses, never an exception."""

from __future__ import annotations

import contextlib
from typing import Any

from libp2p.peer.id import ID

from p2p_market.core.crypto import devnet_key
from p2p_market.fuzz.target import ContractBroken, Target
from p2p_market.net.host import peer_id_of
from p2p_market.node import wire
from p2p_market.node.peers import MAX_PEERS_LISTED, DialScopes, Exchanged, Scope, _dialable

_OWN = peer_id_of(devnet_key("relay-1").public_key)
_SCOPES = DialScopes(frozenset(Scope))
"""Every scope allowed: the parser goes as far as it can."""


def check(data: bytes) -> None:
    with contextlib.suppress(wire.WireError):  # the serving side reads, and ignores, a request
        wire.decode(data, max_bytes=1024)
    try:
        answer: Any = wire.decode(data)
    except wire.WireError:
        return
    listed = answer.get("peers") if isinstance(answer, dict) else None
    if not isinstance(listed, list | tuple):
        return
    for entry in listed[:MAX_PEERS_LISTED]:
        addr = _dialable(entry, _OWN, _SCOPES, Exchanged())
        if addr is not None and type(addr) is not str:
            raise ContractBroken(f"_dialable gave {addr!r:.80}")
        if addr is not None:
            ID.from_base58(entry["id"])  # as ask_peers does next


def seeds() -> list[bytes]:
    def peer(name: str) -> str:
        return str(peer_id_of(devnet_key(name).public_key).to_base58())

    answer = {
        "peers": [
            {"id": peer("prover-1"), "addrs": ["/ip4/127.0.0.1/tcp/4001"]},
            {"id": peer("prover-2"), "addrs": ["/ip4/10.0.0.2/tcp/4002", "/ip6/::1/tcp/4003"]},
            {"id": peer("relay-1"), "addrs": ["/ip4/127.0.0.1/tcp/4000"]},
            {"id": peer("prover-3"), "addrs": [f"/dns4/example.org/tcp/1/p2p/{peer('prover-3')}"]},
            {"id": peer("prover-4"), "addrs": ["/ip4/203.0.113.9/tcp/4004"]},
        ]
    }
    return [wire.encode(answer), wire.encode({}), wire.encode({"peers": []})]


TARGET = Target(
    name="peers",
    about="node: the peer-exchange answer and request parsers",
    check=check,
    seeds=seeds,
    mutation="msgpack",
)
