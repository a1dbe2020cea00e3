"""Peer penalties that decay: what a forwarding peer did wrong lately, not ever.

Why our own and not py-libp2p's gossipsub v1.1 scorer (pubsub/score.py, 0.8.1): the
library's topic validator returns a bool, so its scorer cannot tell a REJECT (a
frame the forwarder could have checked and should not have sent) from an IGNORE (a
duplicate, a rate limit, a message that is not yet applicable); counting both would
blame honest peers for our own limits. Its counters also decay only on heartbeats,
and nothing in it expires a blacklist. The model is the same: weighted counters
that decay exponentially, a graylist threshold below which a peer's frames are
dropped unread, and a ban threshold at which it is disconnected, here for a stated
time. A penalty holds in full for a short while after the latest offence, so a
burst adds up exactly; then it decays.

What counts, each something the forwarder could have checked itself:
- a REJECTed frame (malformed, non-canonical, badly signed, provable misbehaviour):
  `invalid_weight` each;
- a **stale** frame, every envelope of which this node already held, beyond a free
  allowance per peer (`stale_per_second`, `stale_burst`): `stale_weight` each. An
  honest peer forwards each frame once (frames are content-addressed) and rarely
  composes new frames of old envelopes; a flood of them costs this node a hash per
  envelope and costs the sender nothing;
- a frame from a graylisted peer, dropped unread: `stale_weight` too.
"""

from __future__ import annotations

import math
from collections.abc import Hashable
from dataclasses import dataclass

from p2p_market.net.batcher import FrameBudget


@dataclass(frozen=True)
class ScoreConfig:
    hold_s: float = 10.0
    """A penalty holds in full until the peer has been this long without a new one
    (so a burst of offences adds up exactly)..."""
    half_life_s: float = 60.0
    """...then halves every this many seconds."""
    invalid_weight: float = 1.0
    stale_weight: float = 0.125
    """(A power of two, so that penalties add up exactly.)"""
    stale_per_second: float = 2.0
    stale_burst: int = 50
    graylist_at: float = 4.0
    """From this penalty on, the peer's frames are dropped before any check."""
    ban_at: float = 5.0
    """From this penalty on, the peer is disconnected and blacklisted..."""
    ban_s: float = 600.0
    """...for this long; then it may connect again, its penalty forgotten."""


class PeerScores:
    """Decaying penalties per peer; `now` is in seconds (trio's clock in the node)."""

    def __init__(self, config: ScoreConfig | None = None) -> None:
        self.config = config or ScoreConfig()
        self._penalty: dict[Hashable, tuple[float, float]] = {}
        """peer -> (penalty, when it was last updated)."""
        self._stale_allowance: dict[Hashable, FrameBudget] = {}
        self._banned_until: dict[Hashable, float] = {}
        self.bans = 0

    def penalty(self, peer: Hashable, now: float) -> float:
        value, at = self._penalty.get(peer, (0.0, now))
        quiet = now - at - self.config.hold_s
        if quiet <= 0:
            return value
        return value * math.pow(0.5, quiet / self.config.half_life_s)

    def _add(self, peer: Hashable, amount: float, now: float) -> bool:
        """Add a penalty; True the moment it reaches the ban threshold."""
        before = self.penalty(peer, now)
        after = before + amount
        self._penalty[peer] = (after, now)
        if before < self.config.ban_at <= after and peer not in self._banned_until:
            self._banned_until[peer] = now + self.config.ban_s
            self.bans += 1
            return True
        return False

    def invalid(self, peer: Hashable, now: float) -> bool:
        """A REJECTed frame from `peer`; True if it is now to be banned."""
        return self._add(peer, self.config.invalid_weight, now)

    def stale(self, peer: Hashable, now: float) -> bool:
        """A frame of envelopes all held already; True if the peer is now to be banned."""
        allowance = self._stale_allowance.get(peer)
        if allowance is None:
            allowance = FrameBudget(self.config.stale_per_second, self.config.stale_burst)
            self._stale_allowance[peer] = allowance
        if allowance.try_spend(now):
            return False
        return self._add(peer, self.config.stale_weight, now)

    def unread(self, peer: Hashable, now: float) -> bool:
        """A frame dropped unread because the peer is graylisted: `stale_weight`, as
        for a stale frame (a peer that keeps flooding while ignored is banned; one
        that stops recovers). True if it is now to be banned."""
        if peer in self._banned_until:
            return False
        return self._add(peer, self.config.stale_weight, now)

    def graylisted(self, peer: Hashable, now: float) -> bool:
        return peer in self._banned_until or self.penalty(peer, now) >= self.config.graylist_at

    def banned(self, peer: Hashable) -> bool:
        return peer in self._banned_until

    def expired_bans(self, now: float) -> list[Hashable]:
        """Peers whose ban has run out: forgotten (penalty and allowance) and returned."""
        done = [p for p, until in self._banned_until.items() if until <= now]
        for peer in done:
            del self._banned_until[peer]
            self._penalty.pop(peer, None)
            self._stale_allowance.pop(peer, None)
        return done

    def forget_quiet(self, now: float, below: float = 0.01) -> None:
        """Drop the records of peers whose penalty decayed to nothing (bounded memory)."""
        for peer in [p for p in self._penalty if p not in self._banned_until]:
            if self.penalty(peer, now) < below:
                del self._penalty[peer]
        for peer, allowance in list(self._stale_allowance.items()):
            if peer not in self._penalty and allowance.tokens(now) >= allowance.burst:
                del self._stale_allowance[peer]

    def snapshot(self, now: float) -> dict[Hashable, float]:
        return {peer: round(self.penalty(peer, now), 3) for peer in self._penalty}
