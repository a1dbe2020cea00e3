"""The gossip frame (net/frame.py): the bytes a pubsub message carries, and the
verdict the topic validator gives them.

Contract: `decode_frame` returns the envelopes or raises FrameError; a frame it
accepts is canonical (`encode_frame` of its items gives the same bytes back).
`judge_frame` never raises, with or without the node's extra check, and delivers
envelopes only under ACCEPT, or IGNORE for a frame holding unknown kinds."""

from __future__ import annotations

from p2p_market.core.crypto import devnet_key
from p2p_market.core.envelope import Envelope
from p2p_market.core.verdict import ACCEPTED, Reason, Status, Verdict, ignore
from p2p_market.fuzz import samples
from p2p_market.fuzz.target import ContractBroken, Target
from p2p_market.net.frame import FrameError, decode_frame, encode_frame, judge_frame

_MARKET = samples.market_id()


def _every_other(env: Envelope) -> Verdict:
    """A stand-in for the node's stateful check: ignores half the envelopes (by
    id), so the frame's IGNORE and partial-delivery paths are reached too."""
    return ACCEPTED if env.id[0] % 2 else ignore(Reason.DUPLICATE)


def check(data: bytes) -> None:
    try:
        items = decode_frame(data)
    except FrameError:
        pass
    else:
        if encode_frame(items) != data:
            raise ContractBroken("a decoded frame re-encodes to other bytes")
    for extra in (None, _every_other):
        verdict, delivered = judge_frame(data, _MARKET, extra)
        if delivered and verdict.status is Status.REJECT:
            raise ContractBroken(f"{verdict} yet {len(delivered)} envelopes delivered")


def seeds() -> list[bytes]:
    envs = samples.envelopes()
    return [
        encode_frame(envs[:1]),
        encode_frame(envs[1:4]),
        encode_frame(envs),
        encode_frame([envs[2], samples.unknown_kind(devnet_key("relay-2"))]),
    ]


TARGET = Target(
    name="frame",
    about="net: gossip frame decoding and the topic validator's verdict",
    check=check,
    seeds=seeds,
    mutation="msgpack",
)
