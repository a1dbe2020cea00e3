"""Did an outcome that looked final change when a withheld commit came out?

A withholder (node.py) signs commits inside their windows and releases some of them
much later. The protocol promises (protocols/market-v1.md §12) that once the
requester has awarded an attempt, no commit published later changes its winners,
and that a PROVEN ask stays proven; the watch checks that promise.

Final on one honest node: the ask is PROVEN there (it was told so, by accepted
receipts about slots that awards decided in its fold), or an attempt's winners
were announced to its shell more than `commit_window + 2·skew` ms ago and the
attempt is decided by the requester's award in that node's fold (the outcome
recorded is the fold's). (Winners nobody awarded are the
ranking's, tentative by the protocol: a late commit may change them, and that is
not counted.) At every release of a
withheld commit, every honest node that is up records each ask outcome that is
final on it by then and not yet recorded (`released`); an outcome recorded is
*changed* if afterwards that node announces other winners for such an attempt (a
Reorg, or a restart's replay announcing others), or the ask leaves PROVEN there,
or the node ends the run with a different outcome. The count is per (node, ask).

What the watch sees are the effects the node's core tells its shell (`saw`), which
is what a node would act on. Tracking is per node and costs a few dict operations
per effect; it runs only in scenarios with withholders.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

from p2p_market.core import effects as fx
from p2p_market.core.lifecycle import AskState, SlotState
from p2p_market.dst.node import SimNode, World

AttemptKey = tuple[bytes, bytes, int]
"""(ask, round, attempt)."""


@dataclass(slots=True)
class Recorded:
    """The outcome of one ask that was final on one node at a release."""

    attempts: dict[tuple[bytes, int], tuple[bytes, ...]] = field(default_factory=dict)
    """(round, attempt) -> the winners announced, for attempts final then."""
    proven: bool = False


@dataclass(slots=True)
class _NodeView:
    """What one node has told its shell, as far as finality goes."""

    winners: dict[AttemptKey, tuple[tuple[bytes, ...], int]] = field(default_factory=dict)
    """Attempt -> (winners announced, when they were announced), the latest."""
    announced: list[tuple[int, AttemptKey]] = field(default_factory=list)
    """Heap of (announced at, attempt), stale entries included (checked on pop)."""
    proven: dict[bytes, int] = field(default_factory=dict)
    """Ask -> when it was told PROVEN, while it is."""
    proven_order: list[tuple[int, bytes]] = field(default_factory=list)


class FinalityWatch:
    def __init__(self, world: World, watched: list[SimNode]) -> None:
        self.world = world
        market = world.market
        self.lag = market.commit_window_ms + 2 * market.skew_ms
        self.watched: set[int] = {n.idx for n in watched}
        self.views: dict[int, _NodeView] = {i: _NodeView() for i in self.watched}
        self.recorded: dict[tuple[int, bytes], Recorded] = {}
        self.changed: set[tuple[int, bytes]] = set()
        self.releases = 0
        self.retired: set[bytes] = set()
        """Asks past their retention horizon (`retire`): no longer watched."""

    # -- what a node tells its shell ------------------------------------------------
    def saw(self, node: SimNode, e: fx.Effect) -> None:
        if getattr(e, "ask", None) in self.retired:
            return
        if isinstance(e, fx.AttemptSettled):
            self._winners(node, (e.ask, e.round, e.attempt), e.winners)
        elif isinstance(e, fx.Reorg):
            self._winners(node, (e.ask, e.round, e.attempt), e.after)
        elif isinstance(e, fx.AskStateChanged):
            view = self.views[node.idx]
            now = self.world.loop.now
            if e.after is AskState.PROVEN:
                if e.ask not in view.proven:
                    view.proven[e.ask] = now
                    heapq.heappush(view.proven_order, (now, e.ask))
            elif view.proven.pop(e.ask, None) is not None:  # (a replay tells before=None)
                rec = self.recorded.get((node.idx, e.ask))
                if rec is not None and rec.proven:
                    self.changed.add((node.idx, e.ask))

    def replayed(self, node: SimNode, effects: list[fx.Effect]) -> None:
        """A restarted node's replay of its log walks each ask through the states it
        passed (OPEN, ASSIGNED, ... PROVEN) in one go: that is not a change of what it
        knows, so only where the replay ends is seen (per ask its last state, per
        attempt its last winners)."""
        states: dict[bytes, fx.AskStateChanged] = {}
        winners: dict[AttemptKey, tuple[bytes, ...]] = {}
        for e in effects:
            if isinstance(e, fx.AskStateChanged):
                states[e.ask] = e
            elif isinstance(e, fx.AttemptSettled):
                winners[(e.ask, e.round, e.attempt)] = e.winners
            elif isinstance(e, fx.Reorg):
                winners[(e.ask, e.round, e.attempt)] = e.after
        for key, told in winners.items():
            self._winners(node, key, told)
        view = self.views[node.idx]
        for ask_id, e in states.items():
            if (e.after is AskState.PROVEN) != (ask_id in view.proven):
                self.saw(node, fx.AskStateChanged(ask=ask_id, before=None, after=e.after))

    def _winners(self, node: SimNode, key: AttemptKey, winners: tuple[bytes, ...]) -> None:
        if key[0] in self.retired:
            return
        view = self.views[node.idx]
        old = view.winners.get(key)
        if old is not None and old[0] == winners:
            return  # the same winners told again (a restart's replay): nothing changed
        now = self.world.loop.now
        view.winners[key] = (winners, now)
        heapq.heappush(view.announced, (now, key))
        if old is None:
            return
        rec = self.recorded.get((node.idx, key[0]))
        if rec is not None and rec.attempts.get(key[1:], winners) != winners:
            # (the recorded outcome is the fold's: a Reorg that only catches the
            # shell up with an award already folded is not a change)
            self.changed.add((node.idx, key[0]))

    # -- releases ---------------------------------------------------------------------
    def released(self, ask_id: bytes) -> None:
        """A withheld commit for `ask_id` is about to come out: record every outcome
        final by now on every watched node that is up."""
        self.releases += 1
        now = self.world.loop.now
        for idx in sorted(self.watched):
            if not self.world.nodes[idx].up:
                continue
            view = self.views[idx]
            heap = view.announced
            while heap and heap[0][0] < now - self.lag:  # more than the lag ago
                at, key = heapq.heappop(heap)
                current = view.winners.get(key)
                if current is None or current[1] != at:
                    continue  # changed since: its own entry comes later
                decided = _awarded(self.world.nodes[idx], key)
                if decided is None:
                    continue  # tentative: nobody promised it
                # what the award decided in the node's fold (an award that arrived
                # since the announcement is in it, its Reorg not yet told)
                rec = self.recorded.setdefault((idx, key[0]), Recorded())
                rec.attempts.setdefault(key[1:], decided)
            order = view.proven_order
            while order and order[0][0] <= now:
                at, ask_id = heapq.heappop(order)
                if view.proven.get(ask_id) == at and _proven_by_awards(
                    self.world.nodes[idx], ask_id
                ):
                    self.recorded.setdefault((idx, ask_id), Recorded()).proven = True

    def retire(self, ask_id: bytes) -> None:
        """The ask reached its retention horizon (checks.retire, just before any node
        may forget it): its outcomes are checked now as `finish` checks the rest, and
        it is no longer watched. From now on a node may forget it, and a restart's
        replay may not bring it back: that is retention (market-v1.md §15), not a
        change of its outcome."""
        self._check_held(ask_id)
        self.retired.add(ask_id)

    def finish(self) -> None:
        """At the end of the run: an outcome recorded that a node no longer has
        changed too (whether or not an effect told it)."""
        for ask_id in {a for _, a in self.recorded if a not in self.retired}:
            self._check_held(ask_id)

    def _check_held(self, ask_id: bytes) -> None:
        for idx in sorted(self.watched):
            rec = self.recorded.get((idx, ask_id))
            if rec is None:
                continue
            view = self.views[idx]
            if rec.proven and ask_id not in view.proven:
                self.changed.add((idx, ask_id))
            for (rnd, attempt), winners in rec.attempts.items():
                current = view.winners.get((ask_id, rnd, attempt))
                if current is None or current[0] != winners:
                    self.changed.add((idx, ask_id))

    @property
    def asks_changed(self) -> int:
        return len({ask_id for _, ask_id in self.changed})


def _proven_by_awards(node: SimNode, ask_id: bytes) -> bool:
    """PROVEN by accepted slots that awards decided, in the node's fold (a node that
    lacks the award sees tentative slots, which the protocol does not promise)."""
    state = node.state
    archived = state._archive.asks.get(ask_id)
    if archived is not None:
        run, attempts = archived.run, archived.attempts
    else:
        s = state.settlement()
        live = s.runs.get(ask_id)
        if live is None:
            return False
        run, attempts = live, s.attempts
    if run is None or run.state is not AskState.PROVEN:
        return False
    for slot in run.slots.values():
        if slot.state is SlotState.ACCEPTED:
            att = attempts.get((ask_id, slot.round, slot.attempt))
            if att is None or not att.awarded:
                return False
    return True


def _awarded(node: SimNode, key: AttemptKey) -> tuple[bytes, ...] | None:
    """The winners of this attempt if the requester's award decides it in the node's
    fold, else None."""
    state = node.state
    archived = state._archive.asks.get(key[0])
    if archived is not None:
        att = archived.attempts.get(key)
    else:
        att = state.settlement().attempts.get(key)
    return att.winners if att is not None and att.awarded else None


def watch_of(world: World) -> FinalityWatch | None:
    """The world's finality watch, as what it is (the node knows it only by the
    `OutcomeWatch` protocol it calls)."""
    watch = world.finality
    assert watch is None or isinstance(watch, FinalityWatch)
    return watch
