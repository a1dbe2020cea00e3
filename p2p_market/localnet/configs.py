"""Node configs for a scenario's nodes: the same TOML a person writes for
`p2p-market node run --config`, so each simulated node is started the way a real
one is (and its settings are checked by the same code)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from p2p_market.core.envelope import market_id
from p2p_market.core.messages import Market
from p2p_market.core.work import pow_size
from p2p_market.localnet.scenario import NodeSpec, Scenario


def market_fields(market: Market) -> dict[str, Any]:
    return {f.name: getattr(market, f.name) for f in dataclasses.fields(market)}


def node_config(
    scenario: Scenario,
    spec: NodeSpec,
    node_dir: Path,
    *,
    bootstrap: list[str],
    port: int,
    start_file: Path | None = None,
    ip: str = "127.0.0.1",
) -> dict[str, Any]:
    """The parsed-TOML form of one node's config (absolute paths). `ip` other than
    loopback (a node in its own namespace): the node listens there, and so does its
    control API, which then takes the token on every call (the launcher has it)."""
    data: dict[str, Any] = {
        "node": {
            "key_file": str(node_dir / "key.pem"),
            "data_dir": str(node_dir / "data"),
            "listen": [f"/ip4/{ip}/tcp/{port}"],
            "bootstrap": list(bootstrap),
            "frames_per_second": scenario.frames_per_second,
            "sync_every_s": scenario.sync_every_s,
            **({} if ip == "127.0.0.1" else {"api_listen": ip, "api_token_everywhere": True}),
        },
        "markets": [market_fields(scenario.market)],
    }
    mid = market_id(scenario.market).hex()
    if spec.role == "prover":
        data["prover"] = {"market": mid, "max_size": largest_size(scenario), **spec.prover}
    elif spec.role == "requester":
        data["requester"] = {}
        index = [n.name for n in scenario.requesters].index(spec.name)
        workload: dict[str, Any] = {
            "market": mid,
            "seed": scenario.seed * 1000 + index,
            "duration_s": scenario.duration_s,
            "events_file": str(node_dir / "workload.jsonl"),
            **spec.workload,
        }
        if start_file is not None:
            workload["start_file"] = str(start_file)
        data["workload"] = workload
    return data


def largest_size(scenario: Scenario) -> int:
    """The largest ask size (core/work.py) the scenario's workloads place: the
    default `max_size` of its provers, which take all of them unless they say."""
    market = scenario.market
    if market.proof_system != "pow":
        return 1
    sizes = [1]
    for requester in scenario.requesters:
        work = requester.workload.get("work", market.difficulty)
        top = work[-1] if isinstance(work, list) else work
        sizes.append(pow_size(market.difficulty, int(top)))
    return max(sizes)


# -- a small TOML writer (the values node configs hold) ----------------------------------


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_key(k)} = {_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"no TOML form for {type(value).__name__}")


def _key(key: str) -> str:
    return key if key.replace("_", "").replace("-", "").isalnum() else json.dumps(key)


def to_toml(data: dict[str, Any]) -> str:
    """Tables and arrays of tables of plain values, in the order given."""
    lines: list[str] = []
    for name, section in data.items():
        tables = section if isinstance(section, list) else [section]
        for table in tables:
            lines.append(f"[[{name}]]" if isinstance(section, list) else f"[{name}]")
            lines.extend(f"{_key(k)} = {_value(v)}" for k, v in table.items())
            lines.append("")
    return "\n".join(lines)
