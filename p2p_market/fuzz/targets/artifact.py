"""Artifact fetch (node/artifacts.py): what a server reads (the request) and what a
fetcher reads (the first reply, each chunk frame), parsed as the protocol parses
them.

Contract: `wire.decode` returns a value or raises WireError; `parse_request`,
`_size_of` and `_chunk_of` return a value of their type or raise FetchError, a
named rejection, and nothing else. A chunk never runs past what is left."""

from __future__ import annotations

import contextlib
import hashlib

from p2p_market.fuzz.target import ContractBroken, Target
from p2p_market.node import wire
from p2p_market.node.artifacts import (
    CHUNK_BYTES,
    MAX_CHUNK_FRAME,
    MAX_REQUEST_BYTES,
    FetchError,
    _chunk_of,
    _size_of,
    parse_request,
)

_LEFT = 3 * CHUNK_BYTES // 2


def check(data: bytes) -> None:
    for cap in (MAX_REQUEST_BYTES, MAX_CHUNK_FRAME):
        try:
            value = wire.decode(data, max_bytes=cap)
        except wire.WireError:
            continue
        for parse in (parse_request, _size_of):
            with contextlib.suppress(FetchError):
                parse(value)
        try:
            chunk = _chunk_of(value, _LEFT)
        except FetchError:
            continue
        if type(chunk) is not bytes or not 0 < len(chunk) <= min(CHUNK_BYTES, _LEFT):
            raise ContractBroken(f"_chunk_of gave {len(chunk)} bytes")


def seeds() -> list[bytes]:
    h = hashlib.sha256(b"x").digest()
    return [
        wire.encode({"market": h, "sha256": h, "offset": 0}),
        wire.encode({"market": h, "sha256": h, "offset": 12_345}),
        wire.encode({"ok": True, "size": 41_712}),
        wire.encode({"ok": False, "error": "not pinned"}),
        wire.encode({"data": b"\x00" * 1000}),
    ]


TARGET = Target(
    name="artifact",
    about="node: the artifact-fetch request, reply and chunk parsers",
    check=check,
    seeds=seeds,
    mutation="msgpack",
)
