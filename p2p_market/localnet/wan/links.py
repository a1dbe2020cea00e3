"""What happens to one Ethernet frame on its way from one switch port to another:
dropped (loss, or a cut link) or delivered at a time. Pure: time is a parameter and
the randomness a seeded generator, so a unit test can check the figures without a
namespace, and one seed gives one sequence of decisions.

One-way delay is half the round trip; jitter is uniform in ±jitter around it, but
frames on one link never overtake each other (a link is FIFO, as a real path mostly
is: netem's reordering would punish TCP far more than WAN jitter does). Loss is per
frame and per direction. The host port (the launcher's control link) is neither
shaped nor ever cut: it watches the experiment, it is not part of it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Final

MAX_DELAY_US: Final = 10_000_000
PPM: Final = 1_000_000


class LinkError(ValueError):
    """A shape out of range; one line."""


@dataclass(frozen=True, slots=True)
class LinkShape:
    """One direction of every node-to-node link. Integer units: µs and parts per million."""

    delay_us: int = 0
    jitter_us: int = 0
    loss_ppm: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.delay_us <= MAX_DELAY_US:
            raise LinkError(f"delay must be 0..{MAX_DELAY_US} µs, not {self.delay_us}")
        if not 0 <= self.jitter_us <= MAX_DELAY_US:
            raise LinkError(f"jitter must be 0..{MAX_DELAY_US} µs, not {self.jitter_us}")
        if not 0 <= self.loss_ppm <= PPM // 2:
            raise LinkError(f"loss must be 0..{PPM // 2} ppm (50 %), not {self.loss_ppm}")

    @classmethod
    def from_rtt(cls, rtt_ms: float, jitter_ms: float = 0.0, loss: float = 0.0) -> LinkShape:
        """A round trip in ms (half of it each way), jitter in ms, loss as a fraction."""
        return cls(
            delay_us=round(rtt_ms * 500),
            jitter_us=round(jitter_ms * 1000),
            loss_ppm=round(loss * PPM),
        )


class Links:
    """Every port's links; ports are small integers, `host` (if any) the control port."""

    def __init__(self, shape: LinkShape, seed: int, host: int | None = None) -> None:
        self.shape = shape
        self.host = host
        self.cut: set[int] = set()
        self._rng = random.Random(seed)
        self._last: dict[tuple[int, int], int] = {}
        self.dropped_loss = 0
        self.dropped_cut = 0

    def route(self, src: int, dst: int, now_us: int) -> int | None:
        """When the frame from `src` reaches `dst` (µs, ≥ now_us), or None: dropped."""
        if self.host in (src, dst):
            return now_us
        if src in self.cut or dst in self.cut:
            self.dropped_cut += 1
            return None
        s = self.shape
        if s.loss_ppm and self._rng.randrange(PPM) < s.loss_ppm:
            self.dropped_loss += 1
            return None
        at = now_us + s.delay_us
        if s.jitter_us:
            at += self._rng.randint(-s.jitter_us, s.jitter_us)
        link = (src, dst)
        at = max(at, now_us, self._last.get(link, 0))
        self._last[link] = at
        return at
