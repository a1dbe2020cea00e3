"""When winners are told: at the skew after the window, at once when an award decides
the attempt, and after the award lag on the requester's own node.

The timing is node-local (what the shell is told, and when), never state: every test
also checks that the node's state hash equals that of a node fed the same messages
with no requester of its own."""

from __future__ import annotations

from p2p_market.core import effects as fx
from p2p_market.core.envelope import message_id
from p2p_market.core.state import MarketState
from p2p_market.core.verdict import Status
from p2p_market.markets.devnet import Actor

from .world import SKEW, T0, WINDOW, make_market

M = make_market()  # window 1 000 ms, skew 500 ms
REQ = Actor("lag-requester", M)
PROVER = Actor("lag-prover", M)
END = T0 + 100 + WINDOW  # the window of attempt 0 of an ask signed at T0 + 100


class Node:
    """One node: what it was given and every effect it told."""

    def __init__(self, *, requester: bytes | None = None, lag: int | None = None) -> None:
        self.state = MarketState(M)
        self.plain = MarketState(M)  # the same messages, no local requester
        if requester is not None:
            self.state.local_requester = requester
        if lag is not None:
            self.state.award_lag_ms = lag
        self.told: list[tuple[int, fx.Effect]] = []

    def send(self, raw: bytes, at: int) -> Status:
        verdict, effects = self.state.apply(raw, at)
        self.plain.apply(raw, at)
        self.told += [(at, e) for e in effects]
        return verdict.status

    def tick(self, at: int) -> None:
        self.told += [(at, e) for e in self.state.tick(at)]
        self.plain.tick(at)
        assert self.state.state_hash() == self.plain.state_hash()

    def settled_at(self) -> list[tuple[int, bool]]:
        return [(at, e.final) for at, e in self.told if isinstance(e, fx.AttemptSettled)]

    def assigned_at(self) -> list[tuple[int, int]]:
        return [
            (at, e.deadline)
            for at, e in self.told
            if isinstance(e, fx.Assigned) and e.prover == PROVER.public_key
        ]


def a_won_ask(node: Node) -> tuple[bytes, bytes]:
    """PROVER bids and commits to REQ's ask; returns (ask id, commit id)."""
    bid = PROVER.bid(now=T0, price=5, proof_time=1_000)
    ask = REQ.ask(now=T0 + 100, max_price=10, max_proof_time=5_000, ttl=60_000)
    commit = PROVER.commit(
        now=T0 + 200, ask=message_id(ask), bid=message_id(bid), price=5, proof_time=1_000
    )
    for raw in (bid, ask, commit):
        assert node.send(raw, T0 + 210) is Status.ACCEPT
    return message_id(ask), message_id(commit)


def walk(node: Node, until: int, step: int = 10) -> None:
    for at in range(END - 50, until, step):
        node.tick(at)


def test_without_an_award_winners_are_told_at_the_skew() -> None:
    node = Node()
    a_won_ask(node)
    walk(node, END + SKEW + 50)
    assert node.settled_at() == [(END + SKEW, False)]
    assert node.assigned_at() == [(END + SKEW, END + SKEW + 1_000)]


def test_an_award_tells_the_winners_at_once_and_final() -> None:
    """The award arrives 60 ms after the window: the prover is told then, not at the
    skew (the attempt is final), with the same deadline as ever."""
    node = Node()
    ask_id, commit_id = a_won_ask(node)
    walk(node, END + 60)
    assert node.settled_at() == []
    award = REQ.award(now=END + 40, ask=ask_id, commits=[commit_id])
    assert node.send(award, END + 60) is Status.ACCEPT
    walk(node, END + SKEW + 50)
    assert node.settled_at() == [(END + 60, True)]
    assert node.assigned_at() == [(END + 60, END + SKEW + 1_000)]


def test_the_requesters_node_settles_its_own_asks_after_the_award_lag() -> None:
    node = Node(requester=REQ.public_key, lag=120)
    a_won_ask(node)
    walk(node, END + SKEW + 50)
    assert node.settled_at() == [(END + 120, False)]


def test_an_award_lag_longer_than_the_skew_is_the_skew() -> None:
    node = Node(requester=REQ.public_key, lag=SKEW * 3)
    a_won_ask(node)
    walk(node, END + SKEW + 50)
    assert node.settled_at() == [(END + SKEW, False)]


def test_the_award_lag_is_only_for_the_requesters_own_asks() -> None:
    node = Node(requester=PROVER.public_key, lag=0)
    a_won_ask(node)
    walk(node, END + SKEW + 50)
    assert node.settled_at() == [(END + SKEW, False)]
