"""Market announcements (node/discovery.py): one pubsub message of the markets
topic, judged by `KnownMarkets.offer_message` as the topic validator does.

Contract: a Verdict, never an exception; only an announcement the store took is
ACCEPTed, and the store's count of bytes is what its entries hold."""

from __future__ import annotations

from libp2p.peer.id import ID

from p2p_market.core.crypto import devnet_key
from p2p_market.core.envelope import seal
from p2p_market.core.verdict import Verdict
from p2p_market.fuzz import samples
from p2p_market.fuzz.target import ContractBroken, Target
from p2p_market.markets.devnet import default_market
from p2p_market.node.discovery import KnownMarkets, encode_announcement

_PEER = ID(b"\x00\x25" + bytes(37))


def check(data: bytes) -> None:
    known = KnownMarkets()
    verdict = known.offer_message(data, _PEER, 0.0)
    if not isinstance(verdict, Verdict):
        raise ContractBroken(f"offer_message gave {verdict!r:.80}")
    if verdict.accepted != (len(known.entries) == 1):
        raise ContractBroken(f"{verdict} with {len(known.entries)} entries kept")
    if known.bytes != sum(e.size for e in known.entries.values()):
        raise ContractBroken("the store's byte count is off")


def seeds() -> list[bytes]:
    raw = seal(default_market(), devnet_key("relay-1"))
    others = samples.envelopes()[:2]  # envelopes of other kinds, wrapped
    return [
        encode_announcement(raw, 1_767_225_600_000),
        encode_announcement(raw, 0),
        *(encode_announcement(other, 5) for other in others),
    ]


TARGET = Target(
    name="announce",
    about="node: the market-announcement judge (the markets topic)",
    check=check,
    seeds=seeds,
    mutation="msgpack",
)
