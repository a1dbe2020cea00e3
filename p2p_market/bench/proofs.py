"""`p2p-market bench proofs`: what the market adds to a real proof.

For each proof system (groth16, plonk) and example circuit (multiplier, range32) of
the repository's devnet markets (protocols/circuits/*-devnet-INSECURE.toml):

- the proof system alone, through the worker the market uses and through the plain
  snarkjs command line (proof_bare.py);
- the same proofs bought through a market of two real nodes, ask placed → verified
  proof at the requester (proof_market.py);
- `market_overhead_ms` = market p50 - (bare prove p50 + bare verify p50) (and the
  same with p99s), beside the market's commit window: the target is an overhead at
  p50 of at most `commit_window_ms + 500`. It is reported (`overhead_within_target`),
  never asserted: a shared machine's timing is no test.

Where the overhead goes is measured per ask from the nodes' events, not guessed: the
commit window (the protocol waits it out for competing commits), settling (the
requester waits its award lag for commits signed in the window and still on their
way, then awards; the award starts the winner), the prover's work before proving (the
input check), delivery (signing and gossiping the proof notice), and what the
market's prove and verify calls took beyond the bare ones. The first two are
`commit_window_ms` + the requester's award lag (`protocol_wait_ms`): the rest is the
implementation's.
"""

from __future__ import annotations

import platform
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import trio

from p2p_market.bench.proof_bare import BareTimes, cli_times, npx_binary, worker_times
from p2p_market.bench.proof_market import SPLIT, MarketSample, market_samples
from p2p_market.core.envelope import market_id
from p2p_market.core.messages import Market
from p2p_market.localnet.report import quantile
from p2p_market.markets.descriptor import read_descriptor
from p2p_market.proving.backend import ProvingError
from p2p_market.proving.snark import REPO_ROOT, encode_inputs, node_binary, node_modules
from p2p_market.roles.requester import DEFAULT_AWARD_LAG_MS

SYSTEMS: Final = ("groth16", "plonk")
CIRCUITS: Final = ("multiplier", "range32")
CIRCUITS_DIR: Final = REPO_ROOT / "protocols" / "circuits"
TARGET_SLACK_MS: Final = 500
"""The target: overhead at p50 ≤ the market's commit window + this."""
DEFAULT_SAMPLES: Final = 5
DEFAULT_BARE_SAMPLES: Final = 20
DEFAULT_CLI_SAMPLES: Final = 2

_SQUARES = (5, 65_537, 4_294_967_295)
INPUTS: Final[dict[str, tuple[dict[str, int], ...]]] = {
    "multiplier": ({"a": 3, "b": 11}, {"a": 7, "b": 13}, {"a": 123_456_789, "b": 987_654_321}),
    "range32": tuple({"x": x, "square": x * x} for x in _SQUARES),
}
"""Valid inputs of each example circuit, taken in turn by the samples."""


class BenchSetupError(ValueError):
    """The bench cannot run here (no Node.js, no snarkjs, no npx, bad arguments):
    one line, for the CLI's exit status 2."""


@dataclass(frozen=True, slots=True)
class Case:
    system: str
    circuit: str

    @property
    def descriptor(self) -> Path:
        return CIRCUITS_DIR / f"{self.circuit}-{self.system}-devnet-INSECURE.toml"

    def market(self) -> Market:
        return read_descriptor(self.descriptor)

    def inputs(self) -> list[bytes]:
        return [encode_inputs(dict(v)) for v in INPUTS[self.circuit]]


def cases(systems: Sequence[str] = SYSTEMS, circuits: Sequence[str] = CIRCUITS) -> list[Case]:
    """Every (system, circuit) asked for; BenchSetupError for an unknown one."""
    for name, given, known in (("system", systems, SYSTEMS), ("circuit", circuits, CIRCUITS)):
        for value in given:
            if value not in known:
                raise BenchSetupError(f"unknown {name} {value!r}: use one of {', '.join(known)}")
    return [Case(s, c) for s in systems for c in circuits]


def check_setup(cli_samples: int) -> str:
    """The Node.js version; BenchSetupError if node, snarkjs (or npx, when the
    command-line baseline is asked for) is missing."""
    try:
        node = node_binary()
        node_modules()
    except ProvingError as exc:
        raise BenchSetupError(str(exc)) from None
    if cli_samples and npx_binary() is None:
        raise BenchSetupError("npx not found (it comes with npm): install it, or --cli-samples 0")
    try:
        done = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BenchSetupError(f"node cannot run: {exc}") from None
    return done.stdout.strip()


def stats(values: Sequence[int]) -> dict[str, Any]:
    """p50 and p99 (nearest rank: each is one of the values), and the values."""
    return {
        "p50": quantile(list(values), 0.5),
        "p99": quantile(list(values), 0.99),
        "n": len(values),
        "samples": list(values),
    }


def _ratio(a: float, b: float) -> float | None:
    return round(a / b, 3) if b else None


def row(
    case: Case,
    market: Market,
    bare: BareTimes,
    cli: tuple[list[int], list[int]] | None,
    first_ask_ms: int,
    asks: Sequence[MarketSample],
) -> dict[str, Any]:
    """One (system, circuit)'s figures, from its measurements (no clock here)."""
    window = market.commit_window_ms
    prove, verify = stats(bare.prove_ms), stats(bare.verify_ms)
    total = stats([a.total_ms for a in asks])
    overhead = {
        "p50": total["p50"] - (prove["p50"] + verify["p50"]),
        "p99": total["p99"] - (prove["p99"] + verify["p99"]),
    }
    parts = {name: quantile([a.part(name) for a in asks], 0.5) for name in SPLIT}
    protocol_wait = window + min(DEFAULT_AWARD_LAG_MS, market.skew_ms)
    out: dict[str, Any] = {
        "system": case.system,
        "circuit": case.circuit,
        "market": market.name,
        "market_id": market_id(market).hex(),
        "commit_window_ms": window,
        "skew_ms": market.skew_ms,
        "award_lag_ms": min(DEFAULT_AWARD_LAG_MS, market.skew_ms),
        "stage_ms": market.stage_ms,
        "bare": {"first_prove_ms": bare.first_prove_ms, "prove_ms": prove, "verify_ms": verify},
        "cli": None,
        "market_latency": {
            "first_ask_ms": first_ask_ms,
            "total_ms": total,
            "split_p50_ms": parts,
        },
        "market_overhead_ms": overhead,
        "overhead_vs_commit_window": {k: _ratio(v, window) for k, v in overhead.items()},
        "target_overhead_p50_ms": window + TARGET_SLACK_MS,
        "overhead_within_target": overhead["p50"] <= window + TARGET_SLACK_MS,
        "protocol_wait_ms": protocol_wait,
        "overhead_beyond_protocol_wait_ms": {k: v - protocol_wait for k, v in overhead.items()},
        "overhead_split_p50_ms": {
            "commit_window": parts["commit_window_ms"],
            "settle": parts["settle_ms"],
            "before_prove": parts["before_prove_ms"],
            "prove_beyond_bare": parts["prove_ms"] - prove["p50"],
            "delivery": parts["delivery_ms"],
            "verify_beyond_bare": parts["verify_ms"] - verify["p50"],
            "other": parts["other_ms"],
        },
    }
    if cli is not None:
        cli_prove, cli_verify = stats(cli[0]), stats(cli[1])
        out["cli"] = {"prove_ms": cli_prove, "verify_ms": cli_verify}
        out["cli_vs_worker"] = {
            "prove": _ratio(cli_prove["p50"], prove["p50"]),
            "verify": _ratio(cli_verify["p50"], verify["p50"]),
        }
    return out


async def _bench(
    chosen: Sequence[Case], samples: int, bare_samples: int, cli_samples: int
) -> list[dict[str, Any]]:
    rows = []
    for case in chosen:  # one after the other: each measurement has the CPU to itself
        market, inputs = case.market(), case.inputs()
        bare = await worker_times(market, inputs, bare_samples)
        cli = await cli_times(market, inputs, cli_samples) if cli_samples else None
        first, asks = await market_samples(market, inputs, samples)
        rows.append(row(case, market, bare, cli, first, asks))
    return rows


def proofs_bench(
    systems: Sequence[str] = SYSTEMS,
    circuits: Sequence[str] = CIRCUITS,
    *,
    samples: int = DEFAULT_SAMPLES,
    bare_samples: int = DEFAULT_BARE_SAMPLES,
    cli_samples: int = DEFAULT_CLI_SAMPLES,
) -> dict[str, Any]:
    """Measure every chosen case (module doc). BenchSetupError before anything runs
    if the arguments or the machine do not allow it; BareBenchError,
    MarketBenchError or the SDK's RequestFailed if a proof is not had or verified."""
    if samples < 1 or bare_samples < 1:
        raise BenchSetupError("--samples and --bare-samples must be at least 1")
    if cli_samples < 0:
        raise BenchSetupError("--cli-samples must be 0 or more")
    chosen = cases(systems, circuits)
    node = check_setup(cli_samples)
    rows = trio.run(_bench, chosen, samples, bare_samples, cli_samples)
    return {
        "bench": "proofs",
        "samples": samples,
        "bare_samples": bare_samples,
        "cli_samples": cli_samples,
        "node": node,
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "rows": rows,
        "note": (
            "ms; p50/p99 nearest rank. bare = SnarkBackend prove/verify through the worker"
            " the market uses; cli = npx snarkjs <system> fullprove / verify, a process"
            " per call; market = ask placed -> verified proof at the requester, two real"
            " nodes, asks one at a time. market_overhead_ms = market - (bare prove + bare"
            f" verify); target: p50 <= commit_window_ms + {TARGET_SLACK_MS} (reported,"
            " not asserted). protocol_wait_ms = commit_window_ms + award_lag_ms: the"
            " requester awards then, and the award starts the winner. split parts are"
            " p50s of each part, which need not add up to the p50 of the total."
        ),
    }
