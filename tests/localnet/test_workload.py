"""The [workload] role's plan and schedule (roles/workload.py)."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest

from p2p_market.markets.devnet import default_market
from p2p_market.node.config import ConfigError, parse_config
from p2p_market.roles.wiring import plan_from_config
from p2p_market.roles.workload import WorkloadPlan, schedule, workload_plan

BASE: dict[str, Any] = {"node": {"key_file": "k.pem", "data_dir": "d"}}


def plan(**fields: Any) -> WorkloadPlan:
    return WorkloadPlan(market=default_market(), rate=fields.pop("rate", 2.0), **fields)


def test_the_schedule_is_a_function_of_the_seed() -> None:
    a = list(itertools.islice(schedule(plan(seed=3)), 50))
    b = list(itertools.islice(schedule(plan(seed=3)), 50))
    c = list(itertools.islice(schedule(plan(seed=4)), 50))
    assert a == b
    assert [x.at_ms for x in a] != [x.at_ms for x in c]
    assert [x.at_ms for x in a] == sorted(x.at_ms for x in a)
    assert len({x.inputs for x in a}) == 50


def test_rate_duration_and_mix() -> None:
    p = plan(
        rate=5.0,
        seed=1,
        duration_s=200.0,
        max_price=(3, 9),
        max_proof_time=(1000, 2000),
        time_share=0.25,
        replicas=((1, 0.75), (3, 0.25)),
        confidential_share=0.5,
        work=(10, 12),
    )
    arrivals = list(schedule(p))
    assert 900 <= len(arrivals) <= 1100  # Poisson, 5/s for 200 s
    assert arrivals[-1].at_ms <= 200_000
    assert {a.max_price for a in arrivals} == set(range(3, 10))
    assert all(1000 <= a.max_proof_time <= 2000 for a in arrivals)
    share = sum(a.prefer == "time" for a in arrivals) / len(arrivals)
    assert 0.2 < share < 0.3
    assert {a.replicas for a in arrivals} == {1, 3}
    assert 0.2 < sum(a.replicas == 3 for a in arrivals) / len(arrivals) < 0.3
    assert 0.45 < sum(a.confidential for a in arrivals) / len(arrivals) < 0.55
    assert {a.inputs.split(b"\n")[0] for a in arrivals} == {
        b"difficulty=10",
        b"difficulty=11",
        b"difficulty=12",
    }


def test_inputs_drawn_from_a_list() -> None:
    choices = (b'{"a":"3","b":"11"}', b'{"a":"5","b":"7"}')
    arrivals = list(itertools.islice(schedule(plan(seed=2, inputs=choices)), 40))
    assert {a.inputs for a in arrivals} == set(choices)
    cfg = parse_config({**BASE, "requester": {}}, Path("."))
    section = {"rate": 1, "inputs": [c.decode() for c in choices]}
    assert workload_plan(section, cfg, Path(".")).inputs == choices


def test_a_config_with_a_workload(tmp_path: Path) -> None:
    data = {**BASE, "requester": {}, "workload": {"rate": 1, "replicas": 2, "seed": 9}}
    _, roles = plan_from_config(parse_config(data, tmp_path), tmp_path)
    assert roles.workload is not None
    assert roles.workload.replicas == ((2, 1.0),)
    assert roles.workload.events_file == tmp_path / "d" / "workload.jsonl"
    assert roles.names == ["requester", "workload"]


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({}, "missing workload.rate"),
        ({"rate": 0}, "workload.rate must be a number above 0"),
        ({"rate": 1, "colour": 1}, "unknown setting workload.colour"),
        ({"rate": 1, "seed": 1.5}, "workload.seed must be int"),
        ({"rate": 1, "time_share": 2}, "workload.time_share must be a number between 0 and 1"),
        ({"rate": 1, "replicas": {"x": 1}}, "workload.replicas must be"),
        ({"rate": 1, "replicas": {"1": 0}}, "workload.replicas must be"),
        ({"rate": 1, "max_price": [1, 2, 3]}, "workload.max_price must be an integer or"),
        ({"rate": 1, "ttl_ms": 10}, "workload.ttl_ms must be"),
        ({"rate": 1, "work": [1, 99]}, "workload.work must be"),
        ({"rate": 1, "market": "nowhere.toml"}, "workload.market: unknown market"),
        ({"rate": 1, "start_file": 3}, "workload.start_file must be a file path"),
        ({"rate": 1, "inputs": "x"}, "workload.inputs must be a list"),
        ({"rate": 1, "inputs": []}, "workload.inputs must be a list"),
        ({"rate": 1, "inputs": ["a", ""]}, "workload.inputs must be a list"),
        ({"rate": 1, "inputs": [1]}, "workload.inputs must be a list"),
    ],
)
def test_bad_workload_settings_name_the_problem(
    tmp_path: Path, section: dict[str, Any], message: str
) -> None:
    cfg = parse_config({**BASE, "requester": {}, "workload": section}, tmp_path)
    with pytest.raises(ConfigError) as info:
        workload_plan(section, cfg, tmp_path)
    assert str(info.value).startswith(message), str(info.value)


def test_a_workload_needs_a_requester(tmp_path: Path) -> None:
    cfg = parse_config({**BASE, "workload": {"rate": 1}}, tmp_path)
    with pytest.raises(ConfigError, match=r"\[workload\] needs a \[requester\]"):
        plan_from_config(cfg, tmp_path)
