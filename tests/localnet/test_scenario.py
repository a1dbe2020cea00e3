"""Scenario files: the shipped ones load, and every bad setting is one line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from p2p_market.cli.app import app
from p2p_market.core.envelope import market_id
from p2p_market.localnet.configs import node_config, to_toml
from p2p_market.localnet.scenario import ScenarioError
from p2p_market.localnet.scenario_file import load_scenario, parse_scenario
from p2p_market.node.config import parse_config
from p2p_market.roles.wiring import plan_from_config

SIMULATIONS = Path(__file__).parents[2] / "simulations"

MINIMAL: dict[str, Any] = {
    "nodes": [
        {"name": "prover-1", "role": "prover", "price": 5, "proof_time": 3000},
        {"name": "requester-1", "role": "requester", "rate": 0.5},
    ]
}


def with_nodes(*extra: dict[str, Any], **sections: Any) -> dict[str, Any]:
    return {**sections, "nodes": [*MINIMAL["nodes"], *extra]}


@pytest.mark.parametrize(
    "name", ["local", "churn", "partition", "byzantine", "zk", "local-zk", "wan"]
)
def test_the_shipped_scenarios_load(name: str) -> None:
    scenario = load_scenario(SIMULATIONS / f"{name}.toml")
    assert scenario.name == name
    assert scenario.provers and scenario.requesters
    assert scenario.report_dir == SIMULATIONS / "reports"


def test_the_default_is_about_eight_nodes_in_two_minutes_or_less() -> None:
    local = load_scenario(SIMULATIONS / "local.toml")
    assert 6 <= len(local.nodes) <= 10
    assert local.duration_s + local.settle_s <= 90  # plus start-up and the report
    assert not local.faults


def test_the_fault_scenarios_have_their_faults() -> None:
    kinds = {
        name: {f.kind for f in load_scenario(SIMULATIONS / f"{name}.toml").faults}
        for name in ("churn", "partition")
    }
    assert kinds == {"churn": {"kill"}, "partition": {"isolate", "freeze"}}
    byzantine = load_scenario(SIMULATIONS / "byzantine.toml")
    assert {n.behaviour for n in byzantine.nodes} == {"honest", "invalid-proofs", "withhold"}


def test_defaults_merge_into_each_requester_and_its_own_keys_win(tmp_path: Path) -> None:
    data = with_nodes(
        {"name": "requester-2", "role": "requester", "ttl_ms": 9000},
        workload={"rate": 0.2, "ttl_ms": 5000},
    )
    scenario = parse_scenario(data, tmp_path / "s.toml")
    r1, r2 = scenario.requesters
    assert r1.workload == {"rate": 0.5, "ttl_ms": 5000}
    assert r2.workload == {"rate": 0.2, "ttl_ms": 9000}


def test_node_configs_are_what_node_run_reads(tmp_path: Path) -> None:
    """The generated TOML parses back into the same roles `node run` starts."""
    import tomllib

    scenario = parse_scenario(
        with_nodes(workload={"replicas": {"1": 0.8, "2": 0.2}, "max_price": [3, 9]}),
        tmp_path / "s.toml",
    )
    for spec in scenario.nodes:
        data = node_config(scenario, spec, tmp_path / spec.name, bootstrap=[], port=4001)
        text = to_toml(data)
        assert tomllib.loads(text) == data
        cfg, plan = plan_from_config(parse_config(tomllib.loads(text), tmp_path), tmp_path)
        assert cfg.listen == ("/ip4/127.0.0.1/tcp/4001",)
        # anti-entropy well inside the asks' lifetime (not the node's default, 30 s)
        assert cfg.sync_every_s == scenario.sync_every_s == 5.0
        if spec.role == "prover":
            assert plan.prover is not None and plan.prover.price == 5
            assert plan.names == ["prover"]
        else:
            assert plan.workload is not None and plan.names == ["requester", "workload"]
            assert plan.workload.replicas == ((1, 0.8), (2, 0.2))
            assert plan.workload.max_price == (3, 9)
            assert market_id(plan.workload.market) == market_id(scenario.market)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({}, "no nodes: add [[nodes]] tables"),
        ({"extra": {}}, "unknown section [extra]"),
        ({"run": {"colour": 1}, **MINIMAL}, "unknown setting run.colour"),
        ({"run": {"duration_s": 0}, **MINIMAL}, "run.duration_s must be a number between 1"),
        ({"run": {"seed": "x"}, **MINIMAL}, "run.seed must be int, not str"),
        ({"run": {"name": "../x"}, **MINIMAL}, "run.name must be letters, digits"),
        ({"run": {"name": ".hidden"}, **MINIMAL}, "run.name must not start with a dot"),
        ({"run": {"sync_every_s": 0.1}, **MINIMAL}, "run.sync_every_s must be a number between"),
        ({"market": {"difficulty": 99}, **MINIMAL}, "market: difficulty"),
        ({"market": {"proof_system": "external"}, **MINIMAL}, "market.verifier is required"),
        ({"market": {"colour": 1}, **MINIMAL}, "unknown setting market.colour"),
        ({"workload": {"speed": 1}, **MINIMAL}, "unknown setting workload.speed"),
        (with_nodes({"name": "x", "role": "oracle"}), "node x: role must be one of"),
        (with_nodes({"name": "prover-1", "role": "relay"}), "two nodes are named 'prover-1'"),
        (with_nodes({"name": "a/b", "role": "relay"}), "nodes[2].name must be letters"),
        (with_nodes({"name": "r", "role": "relay", "price": 1}), "unknown setting node r.price"),
        (
            with_nodes({"name": "p", "role": "prover", "price": 1}),
            "node p: missing proof_time",
        ),
        (
            with_nodes({"name": "p", "role": "prover", "price": -1, "proof_time": 9}),
            "node p: prover.price must be an integer of at least 0",
        ),
        (
            with_nodes(
                {"name": "p", "role": "prover", "price": 1, "proof_time": 1, "behaviour": "evil"}
            ),
            "node p: behaviour must be one of",
        ),
        (
            with_nodes({"name": "q", "role": "requester"}),
            "node q: missing rate (here or in [workload])",
        ),
        (
            with_nodes({"name": "q", "role": "requester", "rate": 1, "replicas": {"0": 1}}),
            "node q: workload.replicas must be",
        ),
        (
            with_nodes({"name": "q", "role": "requester", "rate": 1, "max_price": [9, 3]}),
            "node q: workload.max_price must be an integer or [low, high]",
        ),
        ({"nodes": [MINIMAL["nodes"][1]]}, "no prover"),
        ({"nodes": [MINIMAL["nodes"][0]]}, "no requester"),
        (
            {**MINIMAL, "faults": [{"at_s": 1, "node": "zz", "kind": "kill", "for_s": 1}]},
            "faults[0].node: no node named 'zz'",
        ),
        (
            {**MINIMAL, "faults": [{"at_s": 1, "node": "prover-1", "kind": "nuke", "for_s": 1}]},
            "faults[0].kind must be one of kill, freeze, isolate",
        ),
        (
            {**MINIMAL, "faults": [{"at_s": 999, "node": "prover-1", "kind": "kill", "for_s": 1}]},
            "faults[0].at_s must be a number between 0 and 60",
        ),
        ({**MINIMAL, "faults": [{"node": "prover-1"}]}, "faults[0]: missing at_s"),
    ],
)
def test_bad_settings_name_the_problem(tmp_path: Path, data: dict[str, Any], message: str) -> None:
    with pytest.raises(ScenarioError) as info:
        parse_scenario(data, tmp_path / "s.toml")
    text = str(info.value)
    assert text.startswith(message), text
    assert "\n" not in text


def test_bad_files_and_arguments_are_one_line_and_exit_2(tmp_path: Path) -> None:
    runner = CliRunner()
    bad = tmp_path / "bad.toml"
    bad.write_text("[run\n")
    latin = tmp_path / "latin.toml"
    latin.write_bytes(b'[run]\nname = "caf\xe9"\n')
    good = tmp_path / "good.toml"
    good.write_text(
        to_toml({"run": {"name": "t"}})
        + "".join(f"[[nodes]]\n{to_toml({'x': n}).split(chr(10), 1)[1]}" for n in MINIMAL["nodes"])
    )
    assert load_scenario(good).name == "t"
    cases = [
        ([str(tmp_path / "missing.toml")], "error: scenario file not found"),
        ([str(tmp_path)], "error: scenario file is a directory"),
        ([str(bad)], "error: " + str(bad) + ": not valid TOML"),
        ([str(latin)], "error: " + str(latin) + ": not UTF-8 text"),
        ([str(good), "--duration", "0"], "error: --duration must be between 1 and 3600"),
        ([str(good), "--settle", "-1"], "error: --settle must be between 0 and 3600"),
    ]
    for args, message in cases:
        result = runner.invoke(app, ["simulate", *args])
        assert result.exit_code == 2, (args, result.output)
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(message), (args, result.output)
    assert not list(tmp_path.glob("t-*")), "nothing may start on bad input"


def test_report_folders_are_absolute_and_new(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Node configs hold absolute paths: a relative --out (or report_dir) must not be
    read relative to each node's folder."""
    from p2p_market.localnet.run import run_dir_for

    monkeypatch.chdir(tmp_path)
    scenario = parse_scenario(with_nodes(), Path("sims/s.toml"))
    first = run_dir_for(scenario, None)
    second = run_dir_for(scenario, None)
    assert first.is_absolute() and first.parent == tmp_path / "sims" / "reports"
    assert first != second and first.is_dir() and second.is_dir()
    assert run_dir_for(scenario, Path("elsewhere")).parent == tmp_path / "elsewhere"


def test_local_zk_is_local_on_the_zk_market() -> None:
    """The main job (`make demo`): local.toml's nodes and asks, zk.toml's market
    and inputs, so that a comparison of the two measures the proof system alone."""
    local = load_scenario(SIMULATIONS / "local.toml")
    zk = load_scenario(SIMULATIONS / "zk.toml")
    candidate = load_scenario(SIMULATIONS / "local-zk.toml")
    assert candidate.faults == local.faults
    for mine, theirs in zip(candidate.nodes, local.nodes, strict=True):
        assert (mine.name, mine.role, mine.prover) == (theirs.name, theirs.role, theirs.prover)
        pow_only = {k: v for k, v in theirs.workload.items() if k != "work"}
        assert {k: v for k, v in mine.workload.items() if k != "inputs"} == pow_only
    inputs = zk.requesters[0].workload["inputs"]
    assert all(r.workload["inputs"] == inputs for r in candidate.requesters)
    assert (candidate.duration_s, candidate.settle_s) == (local.duration_s, local.settle_s)
    assert candidate.market == zk.market


def test_wan_partitions_a_node_for_longer_than_an_ask_lives_over_a_slow_lossy_network() -> None:
    wan = load_scenario(SIMULATIONS / "wan.toml")
    assert wan.network is not None
    assert (wan.network.rtt_ms, wan.network.loss) == (100, 0.01)
    (cut,) = wan.faults
    ttl_s = max(int(n.workload["ttl_ms"]) for n in wan.requesters) / 1000
    assert cut.kind == "partition" and cut.for_s == 60 > ttl_s
    assert cut.at_s + cut.for_s < wan.duration_s  # healed while the workload runs
    assert wan.agree_within_s is not None and wan.agree_within_s >= 60
    assert wan.strict_agreement  # no difference explained away: every node the same state


@pytest.mark.parametrize(
    ("network", "message"),
    [
        ({"rtt_ms": -1}, "network.rtt_ms must be a number between 0 and 10000, not -1"),
        ({"loss": 0.6}, "network.loss must be a number between 0 and 0.5, not 0.6"),
        ({"jitter_ms": "5"}, "network.jitter_ms must be float, not str"),
        ({"bandwidth": 5}, "unknown setting network.bandwidth"),
    ],
)
def test_a_bad_network_section_is_one_line(network: dict[str, Any], message: str) -> None:
    with pytest.raises(ScenarioError) as err:
        parse_scenario(with_nodes(network=network), Path("s.toml"))
    assert str(err.value) == message


def test_a_partition_needs_a_network_and_the_network_keeps_its_values() -> None:
    fault = {"at_s": 1, "node": "prover-1", "kind": "partition", "for_s": 5}
    with pytest.raises(ScenarioError, match="a partition fault needs a \\[network\\] section"):
        parse_scenario(with_nodes(faults=[fault]), Path("s.toml"))
    sc = parse_scenario(
        with_nodes(faults=[fault], network={"rtt_ms": 50, "loss": 0.02}), Path("s.toml")
    )
    assert sc.network is not None and (sc.network.rtt_ms, sc.network.loss) == (50, 0.02)
    assert sc.faults[0].kind == "partition"


def test_a_node_in_a_namespace_listens_and_answers_on_its_own_address(tmp_path: Path) -> None:
    sc = parse_scenario(with_nodes(network={"rtt_ms": 50}), Path("s.toml"))
    data = node_config(sc, sc.nodes[0], tmp_path, bootstrap=[], port=4701, ip="10.233.7.1")
    assert data["node"]["listen"] == ["/ip4/10.233.7.1/tcp/4701"]
    assert data["node"]["api_listen"] == "10.233.7.1" and data["node"]["api_token_everywhere"]
    parse_config(data, tmp_path)  # the node itself takes it
