"""Per-key token buckets: our own spam limits, per signer and per forwarding peer,
in place of py-libp2p's (10 messages/s per topic per peer, own publishes included,
silently dropped), which is far below order traffic. Over the limit is IGNORE, never
blame: a busy honest peer is not a misbehaving one."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable

from p2p_market.net.batcher import FrameBudget


class KeyedRateLimiter:
    """`allow(key, now)` spends one token from `key`'s bucket. Remembers at most
    `max_keys` buckets (least recently used forgotten: a forgotten key starts full)."""

    def __init__(self, per_second: float, burst: int, max_keys: int = 10_000) -> None:
        self.per_second = per_second
        self.burst = burst
        self.max_keys = max_keys
        self._buckets: OrderedDict[Hashable, FrameBudget] = OrderedDict()
        self.limited = 0

    def allow(self, key: Hashable, now: float, cost: float = 1.0) -> bool:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = FrameBudget(self.per_second, self.burst)
            self._buckets[key] = bucket
            if len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
        if bucket.try_spend(now, cost):
            return True
        self.limited += 1
        return False
