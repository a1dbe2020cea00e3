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
from p2p_market.node.direct import (
    DOMAIN,
    SEALED_KEY_BYTES,
    STREAM_HEADER_BYTES,
    DirectError,
    Header,
    check_header,
)

_SENDER = devnet_key("prover-1")
_RECIPIENT = devnet_key("requester-1")


def check(data: bytes) -> None:
    with contextlib.suppress(DirectError):
        Header.decode(data)
    for signature in (_SENDER.sign(DOMAIN + data), data[:64], None):
        with contextlib.suppress(DirectError):
            check_header(_RECIPIENT, data, signature, max_bytes=1 << 20)  # type: ignore[arg-type]


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
            sealed_key=bytes(SEALED_KEY_BYTES),  # the header only checks their lengths
            stream_header=bytes(STREAM_HEADER_BYTES),
        )
        out.append(header.encode())
    return out


TARGET = Target(
    name="direct",
    about="node: direct delivery's header decoding and checks",
    check=check,
    seeds=seeds,
    mutation="msgpack",
)
