"""The cross-node checks and the report's arithmetic, on made-up final states."""

from __future__ import annotations

import functools
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import trio

from p2p_market.core.state import MarketState
from p2p_market.localnet.checks import NodeFinal, check_agreement, hashes_agree
from p2p_market.localnet.launcher import NodeProcess
from p2p_market.localnet.report import build_summary, quantile, reference
from p2p_market.localnet.rundata import RunData
from p2p_market.localnet.scenario_file import parse_scenario
from p2p_market.markets.devnet import Actor, default_market
from p2p_market.node.api import serve_api
from p2p_market.node.api_client import ApiClient, ApiError
from p2p_market.node.metrics import NodeMetrics
from tests.localnet.test_scenario import with_nodes


def ask(i: str, state: str = "proven", winners: tuple[str, ...] = ("p1",)) -> dict[str, Any]:
    return {"id": i, "state": state, "winners": list(winners), "accepted": list(winners)}


def final(
    name: str,
    h: str = "h",
    asks: list[dict[str, Any]] | None = None,
    violations: list[str] | None = None,
    honest: bool = True,
) -> NodeFinal:
    check = {"state_hash": h, "violations": violations or []}
    return NodeFinal(name, honest, check, {"asks": asks if asks is not None else [ask("a")]})


def test_agreeing_nodes_pass() -> None:
    finals = [final("n1"), final("n2"), final("n3")]
    out = check_agreement(finals)
    assert out.ok and hashes_agree(finals)
    assert (out.nodes_disagreeing, out.asks_compared, out.divergent_asks) == (0, 1, 0)


def test_a_node_with_another_hash_or_no_answer_disagrees() -> None:
    out = check_agreement([final("n1"), final("n2"), final("n3", h="x")])
    assert not out.ok and out.nodes_disagreeing == 1
    assert "n3" in out.failures[0]
    silent = NodeFinal("n4", True, None, None)
    out = check_agreement([final("n1"), final("n2"), silent])
    assert not out.ok and out.nodes_disagreeing == 1
    assert any("no final state from n4" in f for f in out.failures)


def test_different_winners_for_an_ask_fail() -> None:
    out = check_agreement([final("n1"), final("n2", asks=[ask("a", winners=("p2",))])])
    assert out.divergent_asks == 1 and not out.ok


def test_a_divergent_ask_says_whether_the_nodes_held_as_many_messages_about_it() -> None:
    """A node that still lacks some of an ask's messages (a lagging node) is told
    apart from nodes that hold as many and still differ."""
    lagging = final("n2", asks=[ask("a", winners=("p2",)), ask("b", winners=("p2",))])
    finals = [final("n1", asks=[ask("a"), ask("b")]), lagging]
    finals[0].check["ask_envelopes"] = {"a": 4, "b": 4}  # type: ignore[index]
    lagging.check["ask_envelopes"] = {"a": 3, "b": 4}  # type: ignore[index]
    out = check_agreement(finals)
    assert (out.divergent_asks, out.divergent_unequally_held) == (2, 1)
    assert out.failures[0] == (
        "2 ask(s) with different winners across nodes"
        " (1 of them held with different numbers of messages)"
    )
    assert "messages held [3, 4]" in out.examples[0]
    assert out.to_json()["divergent_unequally_held"] == 1


def test_an_ask_one_node_lacks_is_counted_not_compared() -> None:
    out = check_agreement([final("n1", asks=[ask("a"), ask("b")]), final("n2")])
    assert (out.asks_compared, out.asks_not_everywhere, out.divergent_asks) == (1, 1, 0)


def test_expired_unassigned_asks_some_nodes_lack_explain_a_hash_difference() -> None:
    """An ask that reached a node only after it expired is refused there: the hashes
    differ, and that alone is not a disagreement."""
    late = ask("late", state="expired", winners=())
    both = [ask("a"), late]
    n1 = final("n1", h="x", asks=both)
    n2 = final("n2", h="y")
    for f in (n1, n2):
        assert f.check is not None
        f.check.update(bids=3, ask_envelopes={"a": 4, **({"late": 1} if f is n1 else {})})
    out = check_agreement([n1, n2])
    assert out.ok and out.disagreement_explained and out.nodes_disagreeing == 1
    assert out.asks_not_everywhere == 1 and "only by 1 expired" in out.examples[-1]
    # the same, but a message about a shared ask is missing on one node: a failure
    assert n2.check is not None
    n2.check["ask_envelopes"] = {"a": 3}
    out = check_agreement([n1, n2])
    assert not out.ok and not out.disagreement_explained
    # or the missing ask had a winner
    n2.check["ask_envelopes"] = {"a": 4}
    n1.book = {"asks": [ask("a"), ask("late", state="expired")]}
    assert not check_agreement([n1, n2]).ok


def test_invariant_violations_and_cancelled_winners_fail() -> None:
    out = check_agreement([final("n1", violations=["prover 12 over capacity (3 > 2)"])])
    assert out.invariant_violations == 1 and not out.ok
    out = check_agreement([final("n1", asks=[ask("a", state="cancelled")])])
    assert out.cancelled_with_winners == 1 and not out.ok


def test_byzantine_nodes_are_shown_not_judged() -> None:
    out = check_agreement([final("n1"), final("liar", h="zz", violations=["x"], honest=False)])
    assert out.ok and out.nodes == 1


def test_quantiles_are_nearest_rank() -> None:
    assert quantile([], 0.5) is None
    assert quantile([3.0], 0.99) == 3.0
    values = [float(i) for i in range(1, 101)]
    assert quantile(values, 0.5) == 50.0 and quantile(values, 0.99) == 99.0


async def test_the_control_api_reports_stats_and_checks(nursery: trio.Nursery) -> None:
    """/v1/stats and /v1/markets/{id}/check on a runtime-like node; 404 without one."""
    market = default_market()
    state = MarketState(market)
    bidder = Actor("prover-1", market)
    now = 1_767_225_601_000
    verdict, _ = state.apply(bidder.bid(now=now, price=5, proof_time=1000), now)
    assert verdict.accepted, verdict
    metrics = NodeMetrics([state.market_id])
    metrics.message_out(state.market_id, "bid")
    node = SimpleNamespace(
        states={state.market_id: state},
        gossip=None,
        metrics=metrics,
        clock=lambda: 42,
        admitted=1,
        status=lambda: {"peers": 3},
    )
    token = "ab" * 32

    async def client_of(facade: Any) -> ApiClient:
        port = await nursery.start(functools.partial(serve_api, facade, token=token))
        return ApiClient(f"http://127.0.0.1:{port}", token=token, timeout=10)

    client = await client_of(node)

    async def get(path: str) -> Any:
        return await trio.to_thread.run_sync(client.request, "GET", path)

    stats = await get("/v1/stats")
    assert stats == {
        "now": 42, "admitted": 1, "peers": 3, "gossip": {}, "published": {"bid": 1}, "reasons": {}
    }  # fmt: skip
    check = await get(f"/v1/markets/{state.market_id.hex()}/check")
    assert check["state_hash"] == state.state_hash() and check["violations"] == []
    assert check["bids"] == 1 and check["reorgs"] == 0 and check["ask_envelopes"] == {}
    assert check["fold"] == state.fold_stats() and "refolds" in check["fold"]
    with pytest.raises(ApiError) as unknown:
        await get(f"/v1/markets/{'0' * 64}/check")
    assert unknown.value.status == 404
    client = await client_of(SimpleNamespace())  # no core state: 404
    with pytest.raises(ApiError) as bare:
        await get("/v1/stats")
    assert bare.value.status == 404


def test_ask_counts_nest_when_the_reference_node_lacks_asks(tmp_path: Path) -> None:
    """'assigned' is every ask that ever had a winner, so it includes every proven
    ask, whichever view (the reference node's book or the requester's own log) an
    ask's numbers come from. Before, an ask the reference node lacked counted as
    proven (from its requester's log) and not as assigned: '39 assigned, 43 proven'."""
    scenario = parse_scenario(with_nodes({"name": "relay-1", "role": "relay"}), tmp_path / "s.toml")
    nodes = [NodeProcess(scenario, spec, tmp_path / "run") for spec in scenario.nodes]
    data = RunData(scenario, tmp_path / "run", nodes, t0_ms=1_000)
    t = 2_000

    def placed(ask_id: str) -> dict[str, Any]:
        return {"t": t, "ask": ask_id, "kind": "placed", "ts": t, "ttl_ms": 20_000}

    def slot(ask_id: str, kind: str) -> dict[str, Any]:
        return {"t": t + 500, "ask": ask_id, "kind": kind, "prover": "p1", "price": 5}

    def state(ask_id: str, value: str) -> dict[str, Any]:
        return {"t": t + 600, "ask": ask_id, "kind": "state", "state": value}

    data.asks.feed(
        "requester-1",
        [
            *(placed(a) for a in "abcd"),
            slot("a", "assigned"), slot("a", "verified"), state("a", "proven"),
            slot("b", "assigned"), slot("b", "verified"), state("b", "proven"),
            state("c", "expired"),
            state("d", "proven"),  # its requester was down when the assignment came
        ],
    )  # fmt: skip

    def view(ask_id: str, state: str, winners: list[str]) -> dict[str, Any]:
        return {
            "id": ask_id,
            "state": state,
            "replicas": 1,
            "winners": winners,
            "prices": [5] * len(winners),
            "slot_states": ["accepted"] * len(winners),
            "accepted": winners,
        }

    book = {"asks": [view("a", "proven", ["p1"]), view("c", "expired", [])]}  # no b, no d
    data.finals = [
        NodeFinal(n.name, True, {"state_hash": "h"}, book if n.name == "relay-1" else None)
        for n in nodes
    ]
    assert reference(data) == "relay-1"
    data.settled_ms, data.agreed_ms = 9_000, 10_500
    summary = build_summary(data)
    assert summary["checks"]["agreed_after_s"] == 1.5
    assert summary["timeline_s"]["agreed"] == 9.5
    asks = summary["asks"]
    assert asks["missing_at_reference"] == 2
    assert (asks["placed"], asks["assigned"], asks["proven"]) == (4, 3, 3)


def test_a_disagreement_names_the_asks_each_node_lacks() -> None:
    """What the failing partition runs needed to say: which node lacks which asks,
    and what became of them elsewhere (there, proven: not a harmless difference);
    and how far apart in time the nodes computed their hashes."""
    everything = [ask("a"), ask("b"), ask("c", state="expired", winners=())]
    n1, n2 = final("n1", asks=everything), final("n2", asks=everything)
    n3 = final("n3", h="x", asks=[ask("a")])
    for f, now in ((n1, 1_000), (n2, 1_004), (n3, 1_002)):
        assert f.check is not None
        f.check["now"] = now
    out = check_agreement([n1, n2, n3])
    assert not out.ok and out.now_spread_ms == 4
    assert out.lacking == {"n3": {"expired": 1, "proven": 1}}
    assert "n3 lacks 2 ask(s) other nodes hold (expired 1, proven 1)" in out.examples
    assert out.to_json()["lacking"] == out.lacking


def test_strict_agreement_explains_nothing_away() -> None:
    """run.strict_agreement (simulations/wan.toml): the same expired asks missing on
    one node fail the run: they are what a node that never caught up lacks."""
    late = ask("late", state="expired", winners=())
    n1 = final("n1", h="x", asks=[ask("a"), late])
    n2 = final("n2", h="y")
    for f in (n1, n2):
        assert f.check is not None
        f.check.update(bids=3, ask_envelopes={"a": 4, **({"late": 1} if f is n1 else {})})
    assert check_agreement([n1, n2]).ok
    out = check_agreement([n1, n2], strict=True)
    assert not out.ok and not out.disagreement_explained
    assert "not explained away" in out.failures[-1]
    assert check_agreement([final("n1"), final("n2")], strict=True).ok
