"""Retention: what a node may set aside or forget, and when.

A terminal ask whose activity ended well before `now` goes to the archive
(archive.py), out of the fold; a message past its horizon (protocols/market-v1.md
§15) is forgotten, and its id stays in the seen cache until then so that a replay
is still a duplicate.
"""

from __future__ import annotations

import heapq

from p2p_market.core.archive import Archived
from p2p_market.core.holdings import Holdings, _id_int
from p2p_market.core.lifecycle import TERMINAL
from p2p_market.core.messages import (
    Ask,
    Bid,
)
from p2p_market.core.settlement import last_activity


class Retention(Holdings):
    def _archive_finished(self, now: int) -> None:
        """Set aside terminal asks whose activity ended well before `now` (see
        archive.py): a message that could still change them would have to arrive
        later than the settle lag, and it would thaw them."""
        s = self._settle(now)
        fold = self._fold
        assert fold is not None
        line = now - self.market.commit_window_ms - 2 * self.market.skew_ms
        # Only terminal asks can go; an ask joins or leaves that set when it changes.
        for ask_id in sorted(fold.archive_touched):
            run = s.runs.get(ask_id)
            if run is not None and run.state in TERMINAL:
                self._terminal[ask_id] = None
            else:
                self._terminal.pop(ask_id, None)
        fold.archive_touched.clear()
        for ask_id in list(self._terminal):
            run = s.runs.get(ask_id)
            if run is None or run.state not in TERMINAL or ask_id in self._archive:
                del self._terminal[ask_id]
                continue
            version = fold.version.get(ask_id, 0)
            cached = self._last_activity.get(ask_id)
            keys = fold.attempts_by_ask.get(ask_id, [])
            if cached is None or cached[0] != version:
                events = list(self.events.get(ask_id, {}).values())
                last = last_activity(run, [s.attempts[k] for k in keys], events)
                self._last_activity[ask_id] = cached = (version, last)
            last = cached[1]
            if last >= line:
                continue
            del self._terminal[ask_id]
            ids = set(self.events.get(ask_id, {}))
            occupancy = [fold.interval[cid] for cid in sorted(ids) if cid in fold.interval]
            self._archive.put(
                ask_id,
                Archived(
                    run=run,
                    attempts={k: s.attempts[k] for k in keys},
                    notes={mid: s.notes[mid] for mid in ids if mid in s.notes},
                    occupancy=occupancy,
                    last=last,
                    announced=self._announced.pop(ask_id, {}),
                ),
                watched=True,  # this fold holds its capacity checks (archive.py)
            )
            self._live.discard(ask_id)
            self._last_activity.pop(ask_id, None)
            fold.drop(ask_id, ids)
            self._settlement = fold.settlement()  # its next wakeup may have been the ask's
        if now < self._next_forget:
            return
        self._next_forget = now + 10 * self.market.commit_window_ms
        live = [
            e.message.timestamp  # type: ignore[union-attr]
            for a in s.runs
            for e in self.events.get(a, {}).values()
        ]
        fold.forget_before(min([line, *live]))

    def _prune(self, now: int) -> None:
        """Forget what can no longer matter: expired bids leave the index at once,
        and every message is dropped once no valid message could refer to it. Due
        items come off a queue ordered by when they may go, so a prune costs what
        it removes, not what the node holds."""
        self.book.expire(now)
        current = self.book.current
        for bid_id in [b for b in self.no_shows if b not in self.book.by_id]:
            del self.no_shows[bid_id]
        for bid_id in list(self.no_shows):
            stored = self.book.by_id[bid_id]
            if current.get(stored.prover) is not stored:
                del self.no_shows[bid_id]  # its prover signed a new offer, or it expired
        queue = self._forget_queue
        while queue and queue[0][0] < now:
            until, mid = heapq.heappop(queue)
            if self.seen.get(mid) != until:
                continue  # forgotten already, or stored again since
            env = self.keyed_by_id(mid)
            if env is None:
                del self.seen[mid]
                self._digest_seen ^= _id_int(mid)
            elif isinstance(env.message, Ask | Bid):
                self._unstore(env, forget=False)  # the ids stay seen until their horizon
                heapq.heappush(queue, (until, mid))
            else:
                # an ask-scoped message leaves with its ask; look again after that
                home = self.asks.get(self._home.get(mid, b""))
                later = now + self.lifetime
                if home is not None:
                    later = max(later, self._forget_after(home) + 1)
                self.seen[mid] = later
                heapq.heappush(queue, (later, mid))
        dropped = False
        for mid, env in list(self.evidence.items()):
            if self._evidence_horizon(env) < now:
                del self.evidence[mid]
                self.invalid_proofs.discard(mid)
                self._digest_evidence ^= _id_int(mid)
                dropped = True
        if dropped:
            self._update_penalties()
        for parent, children in list(self.pending.items()):
            for cid, child in list(children.items()):
                if self._forget_after(child) < now:
                    del children[cid]
                    self._pending_bytes -= len(child.raw)
            if not children:
                del self.pending[parent]
