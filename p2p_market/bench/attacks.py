"""`p2p-market bench attacks`: each attack against real node processes, beside the
same run without it.

Why a benchmark and not only tests: an attack's cost shows in the honest market
(do asks still get proven, how much later) and in the victim's CPU and memory, and
those figures mean something only next to the quiet run on the same machine, in the
same session. Every row runs the embedded scenario below (a relay, two provers and a
requester on 127.0.0.1; a quick proof-of-work market) once quiet and once with one
attacker, an in-process py-libp2p peer (attackers.py), started when the workload
starts and stopped when it ends.

Figures per run: asks placed, proven and expired; placed-to-proven latency p50 and
p99 (ms); the victim's mean CPU (% of one core) and peak RSS over the workload; and
what the attack itself reports (frames sent, identities used, bans). Each row names
its target and whether it held (`ok`).
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final

import trio
from rich.console import Console

from p2p_market.localnet.report import quantile
from p2p_market.localnet.run import Runner
from p2p_market.localnet.rundata import RunData, wall_ms
from p2p_market.localnet.scenario import Scenario
from p2p_market.localnet.scenario_file import parse_scenario

VICTIM: Final = "prover-1"
"""The node the attacker connects to: a prover, whose commits the market needs."""


def scenario(seconds: float) -> Scenario:
    """The embedded scenario: the issue's setting (1 s commit window, 300 ms stages,
    500 ms skew, an ask every 2 s), small enough for two cores."""
    data: dict[str, Any] = {
        "run": {
            "name": "attacks",
            "seed": 11,
            "duration_s": seconds,
            "settle_s": 15,
            "frames_per_second": 20.0,
            "sync_every_s": 5.0,
        },
        "market": {
            "proof_system": "pow",
            "difficulty": 10,
            "commit_window_ms": 1000,
            "stage_ms": 300,
            "skew_ms": 500,
        },
        "workload": {
            "rate": 0.5,
            "max_price": [50, 50],
            "max_proof_time": [8000, 8000],
            "time_share": 0.0,
            "replicas": {"1": 1.0},
            "confidential_share": 0.0,
            "ttl_ms": 20000,
            "work": [10, 12],
        },
        "nodes": [
            {"name": "relay-1", "role": "relay"},
            {"name": "prover-1", "role": "prover", "price": 4, "proof_time": 3000, "capacity": 4},
            {"name": "prover-2", "role": "prover", "price": 7, "proof_time": 3000, "capacity": 4},
            {"name": "requester-1", "role": "requester"},
        ],
    }
    return parse_scenario(data, Path(tempfile.gettempdir()) / "attacks.toml")


@dataclass
class Figures:
    placed: int = 0
    proven: int = 0
    expired: int = 0
    p50_ms: float | None = None
    p99_ms: float | None = None
    victim_cpu: float | None = None
    victim_rss_mb: float | None = None
    victim_rss_late_mb: float | None = None
    """How far the victim's peak RSS in the workload's second half exceeds its peak
    in the first half: a bounded state stops growing once full."""
    victim_data_mb: float | None = None
    """The victim's data dir (its log) at the end of the run."""
    agreed: bool | None = None
    error: str | None = None
    seconds: float = 0.0
    """The workload's length."""

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def figures(data: RunData) -> Figures:
    asks = [a for a in data.asks.asks.values()]
    latencies = [float(a.proven_t - a.placed_t) for a in asks if a.proven_t is not None]
    states = data.asks.by_state()
    lo = (data.start_ms or 0) - data.t0_ms
    hi = (data.end_ms or 0) - data.t0_ms
    during = [s for s in data.samples if s.node == VICTIM and lo / 1000 <= s.t <= hi / 1000]
    cpu = [s.cpu for s in during if s.up]
    rss = [s.rss for s in during if s.up]
    mid = (lo + hi) / 2000
    early = [s.rss for s in during if s.up and s.t < mid]
    late = [s.rss for s in during if s.up and s.t >= mid]
    p50, p99 = quantile(latencies, 0.5), quantile(latencies, 0.99)
    return Figures(
        placed=len(asks),
        proven=len(latencies),
        expired=states.get("expired", 0),
        p50_ms=None if p50 is None else round(p50),
        p99_ms=None if p99 is None else round(p99),
        victim_cpu=round(sum(cpu) / len(cpu), 1) if cpu else None,
        victim_rss_mb=round(max(rss) / 2**20, 1) if rss else None,
        victim_rss_late_mb=round((max(late) - max(early)) / 2**20, 1) if early and late else None,
        agreed=None if data.agreement is None else data.agreement.ok,
        error=data.error,
        seconds=data.scenario.duration_s,
    )


@dataclass
class Target:
    """What an attacker is given: where the victim and the others listen, the market,
    and until when to attack (wall-clock ms)."""

    scenario: Scenario
    victim: Any
    """The victim's NodeProcess (its `addr`, `api`, `pid`)."""
    others: list[Any]
    market_id: bytes
    end_ms: int
    report: dict[str, Any] = field(default_factory=dict)
    """The attack's own figures, filled in by the attack."""


Attack = Callable[[Target], Awaitable[None]]
"""An async function attacking `target` until `target.end_ms`."""

Judge = Callable[["Figures", "Figures", dict[str, Any]], tuple[bool, str]]
"""(quiet, attacked, the attack's report) -> (target met, why)."""


@dataclass(frozen=True)
class AttackSpec:
    attack: Attack
    target: str
    """The target it must meet, in words."""
    judge: Judge
    behaviours: tuple[tuple[str, str], ...] = ()
    """(node, behaviour) of scenario nodes that misbehave in the attacked run (the
    localnet agent's behaviours), for attacks made by a market participant."""


@dataclass
class Row:
    name: str
    target: str
    quiet: Figures
    attacked: Figures
    attack: dict[str, Any]
    ok: bool
    why: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "attack": self.name,
            "target": self.target,
            "quiet": self.quiet.as_dict(),
            "attacked": self.attacked.as_dict(),
            "figures": self.attack,
            "ok": self.ok,
            "why": self.why,
        }


async def _run(
    sc: Scenario, run_dir: Path, attack: Attack | None, report: dict[str, Any]
) -> RunData:
    runner = Runner(sc, run_dir, Console(quiet=True))

    async def attacker() -> None:
        d = runner.data
        while d.start_ms is None or wall_ms() < d.start_ms:
            if d.phase in ("checking",) or d.error:
                return
            await trio.sleep(0.05)
        assert d.end_ms is not None and attack is not None
        victim = next(n for n in runner.nodes if n.name == VICTIM)
        target = Target(
            scenario=sc,
            victim=victim,
            others=[n for n in runner.nodes if n is not victim],
            market_id=bytes.fromhex(d.market),
            end_ms=d.end_ms,
            report=report,
        )
        try:
            # the attack stops by itself at the end of the workload; this bounds one
            # that overstays (a sleep across the end, a stuck dial)
            # (its last figures may take a few seconds: the run settles for longer)
            with trio.move_on_at(trio.current_time() + (d.end_ms - wall_ms()) / 1000 + 12):
                await attack(target)
        except Exception as exc:  # the attacker's own failure is a figure, not a crash
            while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
                exc = exc.exceptions[0]  # type: ignore[assignment]
            report["attacker_error"] = f"{type(exc).__name__}: {exc}"

    async with trio.open_nursery() as nursery:
        if attack is not None:
            nursery.start_soon(attacker)
        data = await runner.run()
        nursery.cancel_scope.cancel()
    return data


def run_once(
    seconds: float,
    attack: Attack | None,
    workdir: Path,
    behaviours: tuple[tuple[str, str], ...] = (),
) -> tuple[Figures, dict[str, Any]]:
    report: dict[str, Any] = {}
    sc = scenario(seconds)
    if behaviours:
        changed = dict(behaviours)
        nodes = tuple(
            replace(n, behaviour=changed[n.name]) if n.name in changed else n for n in sc.nodes
        )
        sc = replace(sc, nodes=nodes)
    run_dir = workdir / ("quiet" if attack is None else attack.__name__)
    run_dir.mkdir(parents=True, exist_ok=True)
    holder: list[RunData] = []

    async def main() -> None:
        holder.append(await _run(sc, run_dir, attack, report))

    trio.run(main)
    data = holder[0]
    if behaviours:
        report.update(_misbehaviour_figures(data, dict(behaviours)))
    out = figures(data)
    out.victim_data_mb = dir_mb(run_dir / "nodes" / VICTIM / "data")
    return out, report


def dir_mb(path: Path) -> float:
    """The size of the files under `path`, in MB (0 if it does not exist)."""
    total = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return round(total / 2**20, 1)


def run_attacks(
    attacks: Mapping[str, AttackSpec],
    names: Sequence[str],
    seconds: float,
    workdir: Path | None = None,
    keep: bool = False,
) -> dict[str, Any]:
    unknown = [n for n in names if n not in attacks]
    if unknown:
        raise ValueError(f"unknown attack {unknown[0]!r} (known: {', '.join(attacks)})")
    # the attackers are in-process py-libp2p peers: the library's complaints about
    # their own floods (full queues) are not the benchmark's output
    logging.getLogger("libp2p").setLevel(logging.ERROR)
    logging.getLogger("p2p_market.net").setLevel(logging.ERROR)
    base = Path(tempfile.mkdtemp(prefix="p2p-attacks-")) if workdir is None else workdir
    try:
        quiet, _ = run_once(seconds, None, base)
        rows = []
        for name in names:
            spec = attacks[name]
            attacked, report = run_once(seconds, spec.attack, base, spec.behaviours)
            ok, why = spec.judge(quiet, attacked, report)
            if "attacker_error" in report:  # an attack that did not run proves nothing
                ok, why = False, f"the attack failed: {report['attacker_error']}"
            rows.append(Row(name, spec.target, quiet, attacked, report, ok, why))
    finally:
        if workdir is None and not keep:
            shutil.rmtree(base, ignore_errors=True)
    return {
        "seconds": seconds,
        "victim": VICTIM,
        "quiet": quiet.as_dict(),
        "rows": [r.as_dict() for r in rows],
        "ok": all(r.ok for r in rows),
    }


def _misbehaviour_figures(data: RunData, behaviours: dict[str, str]) -> dict[str, Any]:
    """What became of the asks a misbehaving prover won: its slots' outcomes, how
    many of those asks were proven by another, and when it won last."""
    keys = {n.name: n.public_key for n in data.nodes}
    out: dict[str, Any] = {}
    for name in behaviours:
        key = keys.get(name, "")
        won = [a for a in data.asks.asks.values() if key in a.slots]
        last_win = max((w.placed_t for w in won), default=0)
        outcomes: dict[str, int] = {}
        for a in won:
            slot = a.slots[key]
            outcomes[slot.outcome] = outcomes.get(slot.outcome, 0) + 1
        out[name] = {
            "asks_won": len(won),
            "its_slots": outcomes,
            "proven_by_another": sum(1 for a in won if a.proven_t is not None),
            "asks_after_its_last_win": sum(
                1 for a in data.asks.asks.values() if won and a.placed_t > last_win
            ),
        }
    return out


def to_json(result: dict[str, Any]) -> str:
    return json.dumps(result, indent=2, sort_keys=True)
