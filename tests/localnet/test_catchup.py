"""The catch-up watch's test of "holds the history": every node, every ask placed
before the heal, the same number of envelopes."""

from __future__ import annotations

from typing import Any

from p2p_market.localnet.catchup import caught_up, lacking


def check(**asks: int) -> dict[str, Any] | None:
    return {"ask_envelopes": asks}


def test_caught_up_when_every_node_holds_every_ask_with_the_same_history() -> None:
    assert caught_up([check(a=5, b=3), check(a=5, b=3, c=1)], {"a", "b"})


def test_not_caught_up_while_a_node_lacks_an_ask_or_part_of_its_history() -> None:
    nodes = ["n1", "n2", "n3"]
    missing = [check(a=5, b=3), check(a=5), check(a=5, b=3)]
    assert not caught_up(missing, {"a", "b"})
    assert lacking(missing, nodes, {"a", "b"}) == {"n2": 1}
    short = [check(a=5, b=3), check(a=4, b=3), check(a=5, b=3)]  # a proof not yet there
    assert not caught_up(short, {"a", "b"})
    assert lacking(short, nodes, {"a", "b"}) == {"n2": 1}


def test_a_node_that_does_not_answer_is_not_caught_up() -> None:
    assert not caught_up([check(a=1), None], {"a"})
    assert not caught_up([check(a=1)], set())
