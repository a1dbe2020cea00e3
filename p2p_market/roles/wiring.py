"""From settings to running roles, in one place: `node run` (a config's [prover] and
[requester] sections), `prover run` (flags or a config) and the SDK all go through
here, so a setting means the same wherever it is given.

    [prover]
    market = "devnet"                 # devnet, a descriptor file, or a market id
    price = 10                        # base units per proof
    proof_time = 5000                 # ms promised per proof (the deadline after a win)
    capacity = 1                      # proofs at once
    bid_ttl_ms = 600000               # the bid is renewed at half its life
    backend = "pow"                   # optional; must be the market's proof system
    prove_cmd = "zkvm prove --input {inputs} --out {proof}"   # external markets
    verify_cmd = ""                   # optional; default: the market's verifier
    check_cmd = ""                    # optional input check (exit 1 = invalid inputs)
    timeout_s = 600.0                 # longest an external command may run

    [requester]                       # verify and receipt this node's asks (API)
    verify_cmd = ""
    check_cmd = ""
    timeout_s = 600.0

    [workload]                        # asks at a seeded rate (roles/workload.py);
    rate = 0.5                        # needs [requester]

A role's market is followed by the node even if [[markets]] does not list it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import trio

from p2p_market.core import limits as L
from p2p_market.core.crypto import SigningKey
from p2p_market.core.envelope import market_id
from p2p_market.core.messages import Market
from p2p_market.markets.descriptor import MarketSpecError, resolve_market
from p2p_market.node.config import ConfigError, NodeConfig
from p2p_market.node.config_schema import (
    DEFAULT_BID_TTL_MS,
    CommandKeys,
    ProverSection,
    RequesterSection,
    validate,
)
from p2p_market.node.runtime import Node
from p2p_market.proving.backend import DEFAULT_EXTERNAL_TIMEOUT_S, ProofBackend
from p2p_market.proving.registry import backend_for, close_at_exit
from p2p_market.roles.inbox import Inbox
from p2p_market.roles.prover import ProverRole, ProverSettings
from p2p_market.roles.requester import DEFAULT_AWARD_LAG_MS, RequesterRole
from p2p_market.roles.workload import WorkloadPlan, WorkloadRole, workload_plan

PROVER_KEYS: Final = frozenset(ProverSection.model_fields)
REQUESTER_KEYS: Final = frozenset(RequesterSection.model_fields)


@dataclass(frozen=True, slots=True, kw_only=True)
class BackendOptions:
    """What `backend_for` needs beyond the market (external commands)."""

    prove_cmd: str | None = None
    verify_cmd: str | None = None
    check_cmd: str | None = None
    size_cmd: str | None = None
    timeout_s: float = DEFAULT_EXTERNAL_TIMEOUT_S

    def backend(self, market: Market, *, workers: int = 1) -> ProofBackend:
        """The back-end for `market` (for a prover: `workers` = its capacity, the
        proofs it may run at once); ValueError (one line) for a bad command."""
        if not (0 < self.timeout_s < math.inf):
            raise ValueError("timeout_s must be a positive number of seconds")
        return backend_for(
            market,
            prove_cmd=self.prove_cmd or None,
            verify_cmd=self.verify_cmd or None,
            check_cmd=self.check_cmd or None,
            size_cmd=self.size_cmd or None,
            timeout_s=self.timeout_s,
            workers=workers,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class ProverPlan:
    market: Market
    price: int
    proof_time: int
    capacity: int = 1
    max_size: int = 1
    bid_ttl_ms: int = DEFAULT_BID_TTL_MS
    options: BackendOptions = field(default_factory=BackendOptions)

    @property
    def settings(self) -> ProverSettings:
        return ProverSettings(
            market=market_id(self.market),
            price=self.price,
            proof_time=self.proof_time,
            capacity=self.capacity,
            max_size=self.max_size,
            bid_ttl_ms=self.bid_ttl_ms,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class RequesterPlan:
    options: BackendOptions = field(default_factory=BackendOptions)
    award_lag_ms: int = DEFAULT_AWARD_LAG_MS


@dataclass(frozen=True, slots=True)
class RolePlan:
    prover: ProverPlan | None = None
    requester: RequesterPlan | None = None
    workload: WorkloadPlan | None = None

    @property
    def names(self) -> list[str]:
        planned = (("prover", self.prover), ("requester", self.requester))
        return [n for n, p in (*planned, ("workload", self.workload)) if p]


def prover_plan(
    market: Market,
    *,
    price: int,
    proof_time: int,
    capacity: int = 1,
    max_size: int = 1,
    bid_ttl_ms: int | None = None,
    backend: str | None = None,
    options: BackendOptions | None = None,
) -> ProverPlan:
    """A checked prover plan; ValueError with one line naming the bad setting. The
    bid ttl defaults to DEFAULT_BID_TTL_MS or the market's max lifetime if shorter;
    a longer one is an error, as every node would refuse the bid (expiry_too_far)."""
    options = options or BackendOptions()
    if bid_ttl_ms is None:
        bid_ttl_ms = min(DEFAULT_BID_TTL_MS, market.max_lifetime_ms)
    if not 0 <= price <= L.MAX_UINT:
        raise ValueError(f"price must be a non-negative integer, not {price}")
    if not 1 <= proof_time <= L.MAX_UINT:
        raise ValueError(f"proof time must be at least 1 ms, not {proof_time}")
    if not 1 <= capacity <= L.MAX_CAPACITY:
        raise ValueError(f"capacity must be between 1 and {L.MAX_CAPACITY}, not {capacity}")
    if not 1 <= max_size <= L.MAX_SIZE:
        raise ValueError(f"max size must be between 1 and {L.MAX_SIZE}, not {max_size}")
    if not 1_000 <= bid_ttl_ms <= L.MAX_UINT:
        raise ValueError(f"bid ttl must be at least 1000 ms, not {bid_ttl_ms}")
    if bid_ttl_ms > market.max_lifetime_ms:
        raise ValueError(
            f"bid ttl {bid_ttl_ms} ms is above market {market.name}'s max lifetime"
            f" ({market.max_lifetime_ms} ms): every node would refuse the bid"
        )
    if backend is not None and backend != market.proof_system:
        raise ValueError(
            f"market {market.name} uses the {market.proof_system} proof system,"
            f" not {backend}: use --backend {market.proof_system}"
        )
    if market.proof_system == "external" and not options.prove_cmd:
        raise ValueError(f"market {market.name} is external: a prover needs a prove command")
    made = options.backend(market)  # checks the command templates
    check_ready = getattr(made, "check_ready", None)
    if check_ready is not None:  # groth16, plonk: Node.js, snarkjs, the artifacts
        check_ready(market)
    return ProverPlan(
        market=market,
        price=price,
        proof_time=proof_time,
        capacity=capacity,
        max_size=max_size,
        bid_ttl_ms=bid_ttl_ms,
        options=options,
    )


# -- from a node config --------------------------------------------------------------


def _options(section: CommandKeys | ProverSection) -> BackendOptions:
    return BackendOptions(
        prove_cmd=getattr(section, "prove_cmd", "") or None,
        verify_cmd=section.verify_cmd or None,
        check_cmd=section.check_cmd or None,
        size_cmd=getattr(section, "size_cmd", "") or None,
        timeout_s=section.timeout_s,
    )


def follow(config: NodeConfig, market: Market) -> NodeConfig:
    """`config`, following `market` too."""
    if market in config.markets:
        return config
    return dataclasses.replace(config, markets=(*config.markets, market))


def plan_from_config(config: NodeConfig, base: Path) -> tuple[NodeConfig, RolePlan]:
    """The roles a node config names ([prover], [requester]), checked, and the
    config following their markets. ConfigError with one line naming the setting;
    relative paths are relative to `base` (the config file's directory)."""
    prover: ProverPlan | None = None
    requester: RequesterPlan | None = None
    raw = config.roles.get("prover")
    if raw is not None:
        p = validate(ProverSection, raw, "prover")
        try:
            market = resolve_market(p.market, base=base, also=config.markets)
        except MarketSpecError as exc:
            raise ConfigError(f"prover.market: {exc}") from None
        try:
            prover = prover_plan(
                market,
                price=p.price,
                proof_time=p.proof_time,
                capacity=p.capacity,
                max_size=p.max_size,
                bid_ttl_ms=p.bid_ttl_ms,
                backend=p.backend,
                options=_options(p),
            )
        except ValueError as exc:
            raise ConfigError(f"[prover]: {exc}") from None
        config = follow(config, market)
    raw = config.roles.get("requester")
    if raw is not None:
        r = validate(RequesterSection, raw, "requester")
        options = _options(r)
        for market in config.markets:
            try:
                options.backend(market)
            except ValueError as exc:
                raise ConfigError(f"[requester]: {exc}") from None
        requester = RequesterPlan(options=options, award_lag_ms=r.award_lag_ms)
    workload: WorkloadPlan | None = None
    section = config.roles.get("workload")
    if section is not None:
        if requester is None:
            raise ConfigError("[workload] needs a [requester] section in the same config")
        workload = workload_plan(section, config, base)
        config = follow(config, workload.market)
        try:
            requester.options.backend(workload.market)  # a market only the workload names
        except ValueError as exc:
            raise ConfigError(f"[requester]: {exc}") from None
    return config, RolePlan(prover, requester, workload)


# -- running -------------------------------------------------------------------------


@dataclass
class Roles:
    prover: ProverRole | None = None
    requester: RequesterRole | None = None


async def start_roles(node: Node, plan: RolePlan, nursery: trio.Nursery) -> Roles:
    """Start the planned roles on a running node (created with `prover=True` if a
    prover is planned) in `nursery`; returns them once they run."""
    roles = Roles()
    if plan.prover is not None:
        if node.cores.states[market_id(plan.prover.market)].local_prover != node.key.public_key:
            raise ValueError("a prover role needs a node created with prover=True")
        p = plan.prover
        backend = p.options.backend(p.market, workers=p.capacity)
        await nursery.start(close_at_exit, [backend])
        roles.prover = ProverRole(node, backend, p.settings, Inbox())
        await nursery.start(roles.prover.run)
    if plan.requester is not None:
        opts = plan.requester.options
        backends = {mid: opts.backend(state.market) for mid, state in node.states.items()}
        await nursery.start(close_at_exit, backends.values())
        roles.requester = RequesterRole(
            node, backends, Inbox(), award_lag_ms=plan.requester.award_lag_ms
        )
        await nursery.start(roles.requester.run)
    if plan.workload is not None:
        assert roles.requester is not None
        await nursery.start(WorkloadRole(node, roles.requester, plan.workload).run)
    return roles


def ready_fields(plan: RolePlan) -> dict[str, Any]:
    """What the ready line says about the roles."""
    fields: dict[str, Any] = {"roles": plan.names}
    if plan.prover is not None:
        p = plan.prover
        fields["prover"] = {
            "market": market_id(p.market).hex(),
            "price": p.price,
            "proof_time": p.proof_time,
            "capacity": p.capacity,
        }
    return fields


async def serve(
    config: NodeConfig,
    key: SigningKey,
    plan: RolePlan,
    *,
    banner: Callable[[dict[str, Any]], None] | None = None,
) -> None:
    """Run a node with its roles until SIGINT / SIGTERM (service.serve_until_signal)."""
    from p2p_market.node.service import serve_until_signal

    async def starter(node: Node, nursery: trio.Nursery) -> dict[str, Any]:
        await start_roles(node, plan, nursery)
        return ready_fields(plan)

    await serve_until_signal(
        config, key, prover=plan.prover is not None, start_roles=starter, banner=banner
    )
