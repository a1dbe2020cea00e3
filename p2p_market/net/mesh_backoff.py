"""GossipSub's prune backoff kept by both ends, as the spec and go-libp2p-pubsub keep
it: a fix to py-libp2p 0.8.1 that stops a node from being shut out of a market's mesh.

The bug (docs/upstream/py-libp2p-prune-backoff.md). A PRUNE tells the pruned peer to
stay away for `prune_back_off` (60 s); the pruned peer records a backoff for the
pruner and, until it ends, answers the pruner's GRAFT with a penalty and a PRUNE of
its own ("GRAFT flood detected", "GRAFT: ignoring request ... back off"). py-libp2p
0.8.1 records nothing on the pruning side: `mesh_heartbeat` prunes a mesh above
D_high and may graft the same peer again a heartbeat later, when the mesh has
fallen below D_low, which the pruned peer takes for a violation. Then each end
holds a backoff for the other, and both end within the same second (integer
seconds), so the one that grafts first at expiry may still find the other's
backoff running: PRUNE, both back off another minute, and again. Backed-off peers
are also left out of the IHAVE gossip. Seen in `bench net`: the node all others
dialled first took a GRAFT storm at start-up, ended with every peer backed off,
and for the whole 3-minute run got no frame by gossip within 2 s (only by sync).
A node whose peers all pruned it at once (an over-full mesh at start-up, each end
trimming at the same heartbeat) had nothing at all for a minute: no mesh, no
graft allowed either way, and no IHAVE.

What changes, in a subclass (the library's code untouched):
- every PRUNE a node sends for a topic it is in, from the heartbeat or from
  `emit_prune`, records a backoff for the pruned peer (go: `addBackoff` in
  `prunePeer` and for a GRAFT refused in backoff);
- a node grafts a peer only once its backoff has been over for
  `BACKOFF_SLACK_S` (go keeps a backoff entry for two heartbeats past its end and
  clears entries every 15; libp2p/specs#289), while a GRAFT it receives is still
  judged against the exact end. So the one that grafts never does so while the
  other end can still count it as a violation;
- IHAVE gossip goes to backed-off peers too, as go's `emitGossip` does: a backoff
  bars a GRAFT, not news of messages, so a node pruned by every peer still pulls
  each message (IWANT) within a heartbeat instead of hearing nothing for a minute.
  The library picks gossip peers and graft peers with one method; the subclass
  tells the calls apart by running `gossip_heartbeat` under a flag.

Applied only to the library version it was written for and only if the methods it
extends are the code it was written against (`tests/net/test_mesh_backoff.py` pins
both); otherwise `router_class()` returns the library's GossipSub and logs why.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Iterable
from typing import Any, Final

from libp2p.peer.id import ID
from libp2p.pubsub.gossipsub import GossipSub

from p2p_market.net.pins import misfit, source_sha256

log = logging.getLogger(__name__)

PATCHED_VERSION: Final = "0.8.1"
"""The py-libp2p release the fix was written for (pyproject.toml pins it)."""

BACKOFF_SLACK_S: Final = 5.0
"""How long after a backoff's end a node still does not graft the peer itself."""

PINS: Final[dict[str, str]] = {
    "GossipSub.mesh_heartbeat": "57f36f0ee54dd461a780c5c46176e6405f64bd8a27d6accc365485e13d05b04c",
    "GossipSub.emit_prune": "9f01c4c85e82adff76ae6337b794d81e73997e93cec9c2659dea30602adbfa9f",
    "GossipSub.handle_graft": "12206b0c497aaccd69874e1424b7cee69249a00551e4cdf4936e5c59a2001c2f",
    "GossipSub.handle_prune": "c61235b1862b7fab9e6dd16604fe827703b4d37274b853d89f46d01a6f6a31bd",
    "GossipSub._add_back_off": "72076b56bb3004a0acebd55ded0caca199b76167832b0129bb84c75ada0ed658",
    "GossipSub._check_back_off": "aab720b22c2eb65125848f13e12f4dce04268729b8af57067bbdc632974e0826",
    "GossipSub._get_in_topic_gossipsub_peers_from_minus": (
        "f9835d207efc4550488844d59b5ee5be88cf47cbd1909a750b9c3bba62604287"
    ),
    "GossipSub.gossip_heartbeat": (
        "ee20b04ca5bda2c187ac8fb33d1b1bfb2d4d4a090f7dca08865578f5661c95fb"
    ),
    "GossipSub._handle_topic_heartbeat": (
        "855f5c363146b724363b392f484ec27ab20dfa4586d83ef5e77ecb872b63b0f8"
    ),
}
"""What the subclass extends or relies on: label -> SHA-256 of its 0.8.1 source."""


def _pinned() -> list[tuple[str, object, str]]:
    return [(label, getattr(GossipSub, label.split(".")[1]), PINS[label]) for label in PINS]


def source_hashes() -> dict[str, str]:
    """The SHA-256 of the installed library's source of each pinned method."""
    return {label: source_sha256(obj) for label, obj, _ in _pinned()}


@functools.cache
def applicable() -> str | None:
    """None if the fix fits the installed library, else why not (once a process:
    the library does not change while it runs)."""
    return misfit(PATCHED_VERSION, _pinned(), "fix")


class BackoffKeepingGossipSub(GossipSub):
    """GossipSub whose prunes bind the pruner too, with slack before re-grafting,
    and whose IHAVE gossip reaches backed-off peers."""

    _gossiping = False
    """True while `gossip_heartbeat` picks the peers to send IHAVE to."""

    def gossip_heartbeat(self) -> Any:
        # The library's gossip heartbeat calls the peer picker with backoff_check=True
        # for the IHAVE targets and for a top-up whose result it throws away; under
        # this flag neither leaves backed-off peers out.
        self._gossiping = True
        try:
            return super().gossip_heartbeat()
        finally:
            self._gossiping = False

    def mesh_heartbeat(self) -> Any:
        to_graft, to_prune = super().mesh_heartbeat()
        for peer, topics in to_prune.items():
            for topic in topics:
                self._add_back_off(peer, topic, False)
        return to_graft, to_prune

    async def emit_prune(self, topic: str, to_peer: ID, do_px: bool, is_unsubscribe: bool) -> None:
        if not is_unsubscribe and topic in self.mesh:
            self._add_back_off(to_peer, topic, False)
        await super().emit_prune(topic, to_peer, do_px, is_unsubscribe)

    def backing_off(self, topic: str, now: float | None = None) -> set[ID]:
        """Peers this node holds a backoff for in `topic`, or held one for until
        less than `BACKOFF_SLACK_S` ago."""
        now = time.time() if now is None else now
        return {
            peer
            for peer, until in self.back_off.get(topic, {}).items()
            if until + BACKOFF_SLACK_S > now
        }

    def _get_in_topic_gossipsub_peers_from_minus(
        self,
        topic: str,
        num_to_select: int,
        minus: Iterable[ID],
        backoff_check: bool = False,
    ) -> list[ID]:
        if not backoff_check or self._gossiping:
            return super()._get_in_topic_gossipsub_peers_from_minus(topic, num_to_select, minus)
        # The library's own check would delete an entry at its exact end, and the
        # slack with it: leave it out and exclude the slack set instead.
        excluded = set(minus) | self.backing_off(topic)
        return super()._get_in_topic_gossipsub_peers_from_minus(topic, num_to_select, excluded)


def router_class() -> type[GossipSub]:
    """The fixed router if it fits the installed library, else the library's own."""
    problem = applicable()
    if problem is None:
        return BackoffKeepingGossipSub
    log.warning("py-libp2p mesh backoff fix not applied: %s", problem)
    return GossipSub
