"""Peers a node knew, kept in its data dir, and bootstrap names resolved at dial time.

Measured across network namespaces (issue 13): a bootstrap node restarted on a new
port stayed at 0 peers. It had no bootstrap list of its own, and the others only
redialled its old address. So every node remembers the addresses of the peers it
was connected to (what they told it by identify, which peer exchange also hands
out), in `<data_dir>/peers.json`, at most MAX_KNOWN, the most recently seen first,
and dials them when it is below its target of connections, like its bootstrap
peers: a restarted node finds its old peers again, whatever its own address now.

The file is a hint, never trusted: an entry is dialled only if it is a full /ip4 or
/ip6 TCP multiaddr with /p2p/ inside the node's dial scopes (node/peers.py), and the
dial authenticates the peer. A file that cannot be read or parsed is ignored (and
rewritten), with one warning.

Bootstrap entries may also name a host (`/dns4/NAME/…`): net/addrs.py `resolve`,
at each dial, so a bootstrap node whose address changed is found again by its name.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Final

log = logging.getLogger(__name__)

FILE: Final = "peers.json"
MAX_KNOWN: Final = 64
"""Bound on the addresses remembered: enough to find the network again, small
enough that a flood of peers cannot grow the file."""
SAVE_EVERY_S: Final = 10.0


class KnownPeers:
    """The addresses of peers the node was connected to, most recent first."""

    def __init__(self, data_dir: Path, *, limit: int = MAX_KNOWN) -> None:
        self.path = data_dir / FILE
        self.limit = limit
        self.addrs: list[str] = self._load()
        self._dirty = False
        self._saved_at = float("-inf")

    def _load(self) -> list[str]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as exc:
            log.warning("ignoring the known peers file %s: %s", self.path, exc)
            return []
        if not isinstance(data, list):
            log.warning("ignoring the known peers file %s: not a list", self.path)
            return []
        return [a for a in data if isinstance(a, str) and "/p2p/" in a][: self.limit]

    def note(self, addrs: Iterable[str]) -> None:
        """Put `addrs` (full multiaddrs, seen connected just now) first."""
        fresh = list(dict.fromkeys(addrs))
        if not fresh:
            return
        merged = list(dict.fromkeys([*fresh, *self.addrs]))[: self.limit]
        if merged != self.addrs:
            self.addrs = merged
            self._dirty = True

    def save_if_due(self, now: float, *, force: bool = False) -> None:
        """Write the file if it changed, at most every SAVE_EVERY_S (unless `force`).
        Best effort: a node that cannot write it only forgets its peers on restart."""
        if not self._dirty or (not force and now - self._saved_at < SAVE_EVERY_S):
            return
        temp = self.path.with_name(f".{FILE}.{os.getpid()}")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            temp.write_text(json.dumps(self.addrs, indent=0), encoding="utf-8")
            os.replace(temp, self.path)
        except OSError as exc:
            log.debug("cannot write %s: %s", self.path, exc)
            with contextlib.suppress(OSError):
                temp.unlink()
        self._dirty = False
        self._saved_at = now
