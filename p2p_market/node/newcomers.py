"""What signers without history may hold in a node's log, in total and each.

The newcomers' rate budget (runtime.py) bounds how fast fresh keys get messages in,
not how much they hold: at 128 KiB/s, asks kept until two lifetimes after their
expiry would pile up for days (the review: 2,793 keys x 32 KiB asks took every data
dir from 6.9 to 94 MB). So the bytes a newcomer's gossiped message adds to the log
are counted until the message's retention horizon, per signer and per market, and
a message beyond either cap is refused from gossip. Honest newcomers are not shut
out for good: a signer gains history (a live bid, a commit, an ask someone committed
to) and stops paying, and sync, which is not limited, still brings what peers hold.
Local policy: it decides only what this node takes from gossip, never the state.
"""

from __future__ import annotations

import heapq
from typing import Final

MARKET_BYTES: Final = 256 * 1024 * 1024
"""The most a market's newcomers may hold in this node's log at once."""
SIGNER_BYTES: Final = 1024 * 1024
"""The most one newcomer may hold: a handful of asks with inline inputs, a bid."""


class NewcomerHoldings:
    def __init__(self, *, market_bytes: int = MARKET_BYTES, signer_bytes: int = SIGNER_BYTES):
        self.market_bytes = market_bytes
        self.signer_bytes = signer_bytes
        self._market: dict[bytes, int] = {}
        self._signer: dict[tuple[bytes, bytes], int] = {}
        self._until: list[tuple[int, bytes, bytes, int]] = []
        """(horizon ms, market, signer, bytes): released at the horizon."""

    def fits(self, market: bytes, signer: bytes, size: int, now_ms: int) -> str | None:
        """None if `size` more bytes fit both caps, else which cap is full."""
        self._release(now_ms)
        if self._signer.get((market, signer), 0) + size > self.signer_bytes:
            return "this newcomer holds its share of the log already"
        if self._market.get(market, 0) + size > self.market_bytes:
            return "the newcomers' share of the log is full"
        return None

    def add(self, market: bytes, signer: bytes, size: int, horizon_ms: int) -> None:
        """Count a stored message until its retention horizon."""
        self._market[market] = self._market.get(market, 0) + size
        self._signer[(market, signer)] = self._signer.get((market, signer), 0) + size
        heapq.heappush(self._until, (horizon_ms, market, signer, size))

    def held(self, market: bytes) -> int:
        return self._market.get(market, 0)

    def _release(self, now_ms: int) -> None:
        while self._until and self._until[0][0] <= now_ms:
            _, market, signer, size = heapq.heappop(self._until)
            self._market[market] -= size
            if not self._market[market]:
                del self._market[market]
            left = self._signer[(market, signer)] - size
            if left:
                self._signer[(market, signer)] = left
            else:
                del self._signer[(market, signer)]
