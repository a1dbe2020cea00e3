"""What a `p2p-market simulate` scenario is: its nodes, their roles and behaviours,
the market they follow and the faults to inject. The file format and its checks
are scenario_file.py's; the node configs a scenario implies, configs.py's."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from p2p_market.core.messages import Market
from p2p_market.localnet.scenario_schema import NetworkSection, RunSection
from p2p_market.markets.descriptor import MARKET_FIELDS

SECTIONS: Final = ("run", "market", "workload", "nodes", "faults", "network")
ROLES: Final = ("relay", "prover", "requester")
BEHAVIOURS: Final = ("honest", "invalid-proofs", "withhold")
FAULTS: Final = ("kill", "freeze", "isolate", "partition")
NETNS_FAULTS: Final = frozenset({"partition"})
"""Faults that only a run in namespaces can make (the switch cuts the links)."""
RUN_KEYS: Final = frozenset(RunSection.model_fields)
MARKET_KEYS: Final = frozenset(MARKET_FIELDS) - {"created_at"}  # the run sets it
PROVER_KEYS: Final = frozenset(
    {
        "price",
        "proof_time",
        "capacity",
        "max_size",
        "prove_cmd",
        "verify_cmd",
        "check_cmd",
        "size_cmd",
        "timeout_s",
    }
)
WORKLOAD_KEYS: Final = frozenset(
    {
        "rate",
        "max_price",
        "max_proof_time",
        "time_share",
        "replicas",
        "confidential_share",
        "ttl_ms",
        "work",
        "input_bytes",
        "inputs",
    }
)
"""The [workload] keys a scenario may set; the launcher sets market, seed, duration_s,
start_file and events_file itself."""
NETWORK_KEYS: Final = frozenset(NetworkSection.model_fields)
FAULT_KEYS: Final = frozenset({"at_s", "node", "kind", "for_s"})
NODE_KEYS: Final = ("name", "role", "behaviour")
"""The keys of every [[nodes]] entry; the rest depend on its role (PROVER_KEYS, WORKLOAD_KEYS)."""
MAX_NODES: Final = 32


class ScenarioError(ValueError):
    """One line that names the bad setting."""


@dataclass(frozen=True, slots=True)
class NodeSpec:
    name: str
    role: str
    behaviour: str = "honest"
    prover: dict[str, Any] = field(default_factory=dict)
    """[prover] keys (price, proof_time, capacity, external commands)."""
    workload: dict[str, Any] = field(default_factory=dict)
    """[workload] keys, defaults merged in."""

    @property
    def honest(self) -> bool:
        return self.behaviour == "honest"


@dataclass(frozen=True, slots=True)
class Fault:
    at_s: float
    node: str
    kind: str
    for_s: float


@dataclass(frozen=True, slots=True)
class Network:
    """A [network] section (or `simulate --netns`): every node in its own namespace,
    every link shaped by the switch (localnet/wan). Floats as a person writes them;
    the switch works in integer µs and ppm (LinkShape.from_rtt)."""

    rtt_ms: float = 0.0
    jitter_ms: float = 0.0
    loss: float = 0.0
    """Per frame and per direction, as a fraction (0.01 is 1 %)."""


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    source: Path
    market: Market
    nodes: tuple[NodeSpec, ...]
    faults: tuple[Fault, ...] = ()
    seed: int = 0
    duration_s: float = 60.0
    settle_s: float = 30.0
    frames_per_second: float = 2.0
    sync_every_s: float = 5.0
    """Every node's anti-entropy period. A node's default (30 s, for asks that live
    minutes or more) is longer than the scenarios' 20 s asks: an ask that gossip did
    not bring a node (a frame lost to a frozen or restarted peer) would expire there
    before the next sync, and a node that never holds an ask disagrees for good with
    those that do. 5 s keeps the ratio of the deterministic simulator's presets
    (dst/scenarios.py, sync_ms)."""
    report_dir: Path = Path("reports")
    agree_within_s: float | None = None
    """How long the final comparison waits for every node to agree; None: one sync
    period and run.AGREE_MARGIN_S. A WAN scenario with a long partition sets more,
    to measure how long agreement takes after the heal rather than to give up."""
    strict_agreement: bool = False
    """Every honest node's state_hash must be the same: a difference by asks that
    reached some nodes only after they expired fails the run instead of being
    explained (checks.py)."""
    network: Network | None = None
    """None: every node on 127.0.0.1, as before."""

    def node(self, name: str) -> NodeSpec:
        return next(n for n in self.nodes if n.name == name)

    @property
    def provers(self) -> list[NodeSpec]:
        return [n for n in self.nodes if n.role == "prover"]

    @property
    def requesters(self) -> list[NodeSpec]:
        return [n for n in self.nodes if n.role == "requester"]
