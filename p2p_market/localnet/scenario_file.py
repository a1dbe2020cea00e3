"""Scenario files for `p2p-market simulate`: which real nodes to start, the workload
their requesters place, and the faults to inject (the model they fill is
scenario.py). Checked field by field: a bad file is one line naming the problem
(ScenarioError), never a traceback.

    [run]
    name = "local"
    seed = 7
    duration_s = 60          # the workload phase
    settle_s = 30            # at most this long after it for the asks to end
    frames_per_second = 2.0  # each node's gossip frame budget (node.frames_per_second)
    sync_every_s = 5.0       # each node's anti-entropy period (node.sync_every_s)
    report_dir = "reports"   # relative to the scenario file; a folder per run in it
    agree_within_s = 120     # most seconds the final comparison waits for agreement
                             # (default: sync_every_s + 15)
    strict_agreement = true  # every node the same state_hash, no difference explained

    [network]                # optional: every node in its own network namespace,
    rtt_ms = 100             # through a userspace switch (needs root; docs/wan.md)
    jitter_ms = 0            # ± per frame, frames on a link stay in order
    loss = 0.01              # per frame and direction, a fraction

    [market]                 # every node follows this market (Market descriptor fields)
    proof_system = "pow"     # pow (demo), or external, groth16, plonk (need verifier)
    difficulty = 14
    commit_window_ms = 1000
    stage_ms = 300
    skew_ms = 500

    [workload]               # defaults for every requester ([workload] of roles/workload.py)
    rate = 0.3
    max_price = [4, 12]

    [[nodes]]
    name = "relay-1"         # also its devnet key: PUBLIC, INSECURE
    role = "relay"           # relay | prover | requester

    [[nodes]]
    name = "prover-1"
    role = "prover"
    price = 5
    proof_time = 3000
    capacity = 2
    behaviour = "honest"     # honest | invalid-proofs | withhold (byzantine nodes)
    # prove_cmd / verify_cmd / check_cmd / timeout_s: external markets

    [[nodes]]
    name = "requester-1"
    role = "requester"
    rate = 0.4               # any [workload] key overrides the defaults

    [[faults]]
    at_s = 20                # seconds after the workload starts
    node = "prover-2"
    kind = "kill"            # kill | freeze | isolate | partition ([network] only)
    for_s = 10               # then restart / SIGCONT / rejoin / heal the links
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, TypeVar

from pydantic import ValidationError

from p2p_market.core.messages import Market, MessageError
from p2p_market.localnet.configs import node_config
from p2p_market.localnet.scenario import (
    BEHAVIOURS,
    FAULT_KEYS,
    FAULTS,
    MARKET_KEYS,
    MAX_NODES,
    NETNS_FAULTS,
    NODE_KEYS,
    PROVER_KEYS,
    ROLES,
    SECTIONS,
    WORKLOAD_KEYS,
    Fault,
    Network,
    NodeSpec,
    Scenario,
    ScenarioError,
)
from p2p_market.localnet.scenario_schema import NetworkSection, RunSection
from p2p_market.markets.devnet import GENESIS_MS
from p2p_market.markets.schema import Section, validate
from p2p_market.node.tomlfile import read_toml

S = TypeVar("S", bound=Section)


def _table(data: dict[str, Any], key: str) -> dict[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise ScenarioError(f"[{key}] must be a table")
    return value


def _unknown(table: dict[str, Any], known: frozenset[str], where: str) -> None:
    extra = sorted(set(table) - known)
    if extra:
        raise ScenarioError(f"unknown setting {where}.{extra[0]}")


def _num(
    table: dict[str, Any], key: str, where: str, default: float, low: float, high: float
) -> float:
    if key not in table:
        return default
    value = table[key]
    if type(value) not in (int, float) or math.isnan(value) or not low <= value <= high:
        raise ScenarioError(f"{where}.{key} must be a number between {low:g} and {high:g}")
    return float(value)


def _str(table: dict[str, Any], key: str, where: str, default: str) -> str:
    value = table.get(key, default)
    if type(value) is not str or not value:
        raise ScenarioError(f"{where}.{key} must be a non-empty string")
    return value


def _market(table: dict[str, Any], name: str) -> Market:
    _unknown(table, MARKET_KEYS, "market")
    fields: dict[str, Any] = {
        "name": f"sim-{name}"[:64],
        "proof_system": "pow",
        "difficulty": 14,
        "commit_window_ms": 1_000,
        "stage_ms": 300,
        "skew_ms": 500,
        "max_lifetime_ms": 3_600_000,
    }
    fields.update(table)
    if "verifier" not in fields:
        if fields["proof_system"] != "pow":
            system = fields["proof_system"]
            article = "an" if str(system)[:1] in ("a", "e", "i", "o", "u") else "a"
            raise ScenarioError(f"market.verifier is required for {article} {system} market")
        fields["verifier"] = "sha256-leading-zero-bits"
    fields["created_at"] = GENESIS_MS
    try:
        return Market(**fields)
    except MessageError as exc:
        raise ScenarioError(f"market: {exc}") from None
    except TypeError as exc:  # a value of the wrong type in a dataclass check
        raise ScenarioError(f"market: {exc}") from None


def _node(entry: Any, index: int, defaults: dict[str, Any]) -> NodeSpec:
    where = f"nodes[{index}]"
    if not isinstance(entry, dict):
        raise ScenarioError(f"{where} must be a table")
    name = _str(entry, "name", where, "")
    if not name.replace("-", "").replace("_", "").isalnum() or len(name) > 40:
        raise ScenarioError(f"{where}.name must be letters, digits, - or _ (at most 40)")
    where = f"node {name}"
    role = _str(entry, "role", where, "")
    if role not in ROLES:
        raise ScenarioError(f"{where}: role must be one of {', '.join(ROLES)}, not {role!r}")
    behaviour = _str(entry, "behaviour", where, "honest")
    if behaviour not in BEHAVIOURS:
        raise ScenarioError(
            f"{where}: behaviour must be one of {', '.join(BEHAVIOURS)}, not {behaviour!r}"
        )
    rest = {k: v for k, v in entry.items() if k not in NODE_KEYS}
    prover: dict[str, Any] = {}
    workload: dict[str, Any] = {}
    if role == "prover":
        _unknown(rest, PROVER_KEYS, where)
        for required in ("price", "proof_time"):
            if required not in rest:
                raise ScenarioError(f"{where}: missing {required}")
        prover = rest
    elif role == "requester":
        _unknown(rest, WORKLOAD_KEYS, where)
        if behaviour != "honest":
            raise ScenarioError(f"{where}: only provers have a byzantine behaviour")
        workload = {**defaults, **rest}
        if "rate" not in workload:
            raise ScenarioError(f"{where}: missing rate (here or in [workload])")
    else:
        if rest:
            raise ScenarioError(f"unknown setting {where}.{sorted(rest)[0]} (a relay has none)")
        if behaviour != "honest":
            raise ScenarioError(f"{where}: only provers have a byzantine behaviour")
    return NodeSpec(name, role, behaviour, prover, workload)


def _fault(entry: Any, index: int, names: set[str], duration: float) -> Fault:
    where = f"faults[{index}]"
    if not isinstance(entry, dict):
        raise ScenarioError(f"{where} must be a table")
    _unknown(entry, FAULT_KEYS, where)
    for required in ("at_s", "node", "kind", "for_s"):
        if required not in entry:
            raise ScenarioError(f"{where}: missing {required}")
    node = _str(entry, "node", where, "")
    if node not in names:
        raise ScenarioError(f"{where}.node: no node named {node!r}")
    kind = _str(entry, "kind", where, "")
    if kind not in FAULTS:
        raise ScenarioError(f"{where}.kind must be one of {', '.join(FAULTS)}, not {kind!r}")
    at_s = _num(entry, "at_s", where, 0, 0, duration)
    for_s = _num(entry, "for_s", where, 0, 0.5, 3600)
    return Fault(at_s, node, kind, for_s)


def _checked(model: type[S], table: dict[str, Any], where: str) -> S:
    """`table` checked by its schema (localnet/scenario_schema.py): ScenarioError."""
    return validate(model, table, where, ScenarioError)


def network_section(table: dict[str, Any]) -> Network:
    net = _checked(NetworkSection, table, "network")
    return Network(rtt_ms=net.rtt_ms, jitter_ms=net.jitter_ms, loss=net.loss)


def check_faults(scenario: Scenario) -> None:
    """A partition cuts links in the switch: only a run in namespaces has them."""
    if scenario.network is None:
        for f in scenario.faults:
            if f.kind in NETNS_FAULTS:
                raise ScenarioError(
                    f"a {f.kind} fault needs a [network] section or simulate --netns"
                )


def parse_scenario(data: dict[str, Any], source: Path) -> Scenario:
    unknown = sorted(set(data) - set(SECTIONS))
    if unknown:
        raise ScenarioError(f"unknown section [{unknown[0]}]")
    run = _checked(RunSection, _table(data, "run"), "run")
    name = run.name if run.name is not None else source.stem
    if run.name is None:
        try:  # the file's name: the same rules
            RunSection.model_validate({"name": name})
        except ValidationError:
            raise ScenarioError(
                f"run.name (the file's name, {name!r}) must be letters, digits, -, _ or ."
                " (at most 64, not starting with a dot): set run.name"
            ) from None
    seed = run.seed
    duration = run.duration_s
    settle = run.settle_s
    fps = run.frames_per_second
    sync_every = run.sync_every_s
    report_dir = source.parent / run.report_dir
    agree_within = run.agree_within_s
    network = network_section(_table(data, "network")) if "network" in data else None
    strict = run.strict_agreement
    market = _market(_table(data, "market"), name)
    defaults = _table(data, "workload")
    _unknown(defaults, WORKLOAD_KEYS, "workload")
    raw_nodes = data.get("nodes")
    if not isinstance(raw_nodes, list) or not raw_nodes:
        raise ScenarioError("no nodes: add [[nodes]] tables")
    if len(raw_nodes) > MAX_NODES:
        raise ScenarioError(f"at most {MAX_NODES} nodes, not {len(raw_nodes)}")
    nodes = tuple(_node(e, i, defaults) for i, e in enumerate(raw_nodes))
    names = [n.name for n in nodes]
    for n in names:
        if names.count(n) > 1:
            raise ScenarioError(f"two nodes are named {n!r}")
    if not any(n.role == "prover" for n in nodes):
        raise ScenarioError('no prover: add a node with role = "prover"')
    if not any(n.role == "requester" for n in nodes):
        raise ScenarioError('no requester: add a node with role = "requester"')
    raw_faults = data.get("faults", [])
    if not isinstance(raw_faults, list):
        raise ScenarioError("faults must be a list of tables ([[faults]])")
    faults = tuple(_fault(e, i, set(names), duration) for i, e in enumerate(raw_faults))
    scenario = Scenario(
        name=name,
        source=source,
        market=market,
        nodes=nodes,
        faults=faults,
        seed=seed,
        duration_s=duration,
        settle_s=settle,
        frames_per_second=fps,
        sync_every_s=sync_every,
        report_dir=report_dir,
        agree_within_s=agree_within,
        strict_agreement=strict,
        network=network,
    )
    check_faults(scenario)
    _check_roles(scenario)
    return scenario


def _check_roles(scenario: Scenario) -> None:
    """Each node's settings through the same checks `node run` applies (roles/wiring.py),
    so a bad price or workload is named here, before any process starts."""
    from p2p_market.node.config import ConfigError, parse_config
    from p2p_market.roles.wiring import plan_from_config

    for spec in scenario.nodes:
        data = node_config(scenario, spec, Path("/nonexistent"), bootstrap=[], port=0)
        try:
            plan_from_config(parse_config(data, Path("/nonexistent")), Path("/nonexistent"))
        except ConfigError as exc:
            raise ScenarioError(f"node {spec.name}: {exc}") from None


def load_scenario(path: Path) -> Scenario:
    data = read_toml(path, "scenario file", ScenarioError)
    return parse_scenario(data, path)
