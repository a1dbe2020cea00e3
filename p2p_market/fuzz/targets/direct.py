"""Direct delivery's header (node/direct.py), the part a receiver parses and
checks before it lets a byte of the body come: `Header.decode` and `check_header`,
the module's public parsing functions (its crypto below them is not fuzzed here).

Contract: both return a Header or raise DirectError, which the server turns into
a refusal sent to the peer.

Input: the header bytes. The harness signs them as the sender's key would, so a
mutated header that still names that sender also passes the signature and reaches
the recipient and size checks."""

from __future__ import annotations

import contextlib

from p2p_market.core.crypto import devnet_key
from p2p_market.fuzz.target import Target
from p2p_market.node import wire
from p2p_market.node.direct import (
    DOMAIN,
    MAX_HEADER_FRAME,
    VERSION,
    DirectError,
    Header,
    check_header,
)

_FIELDS = {"v", "kind", "market", "ask", "sender", "recipient", "sha256", "size", "epk"}

_SENDER = devnet_key("prover-1")
_RECIPIENT = devnet_key("requester-1")
_EPHEMERAL = devnet_key("fuzz-ephemeral").public_key
"""32 bytes standing in for an X25519 key: the header only checks the length."""


def check(data: bytes) -> None:
    with contextlib.suppress(DirectError):
        Header.decode(data)
    for signature in (_SENDER.sign(DOMAIN + data), data[:64], None):
        with contextlib.suppress(DirectError):
            check_header(_RECIPIENT, data, signature, max_bytes=1 << 20)  # type: ignore[arg-type]


def open_kind_bug(data: bytes, exc: Exception) -> bool:
    """The open bug (tests/fuzz/test_crashes.py OPEN): `Header.decode` looks `kind` up
    in a frozenset before checking that it is a string, so a header of the right
    version and fields whose kind is a map (or an array holding one) raises
    TypeError. Not fixed here: direct.py is being rewritten on another branch."""
    if type(exc) is not TypeError:
        return False
    try:
        m = wire.decode(data, max_bytes=MAX_HEADER_FRAME)
    except wire.WireError:
        return False
    if type(m) is not dict or set(m) != _FIELDS or m["v"] != VERSION:
        return False
    try:
        hash(m["kind"])
    except TypeError:
        return True
    return False


def seeds() -> list[bytes]:
    out = []
    for kind, size in (("inputs", 6), ("proof", 3 << 20), ("proof", 0)):
        header = Header(
            kind=kind,
            market=bytes(range(32)),
            ask=bytes(32),
            sender=_SENDER.public_key,
            recipient=_RECIPIENT.public_key,
            sha256=bytes(range(32, 64)),
            size=size,
            ephemeral=_EPHEMERAL,
        )
        out.append(header.encode())
    return out


TARGET = Target(
    name="direct",
    about="node: direct delivery's header decoding and checks",
    check=check,
    seeds=seeds,
    mutation="msgpack",
    known_open=open_kind_bug,
)
