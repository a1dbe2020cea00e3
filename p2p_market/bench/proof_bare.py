"""The proof system alone, the two baselines of `bench proofs`.

- Through the worker: `SnarkBackend.prove` and `.verify`, the very calls the prover
  and the requester roles make, on a long-lived snark_worker.js (the first call,
  which starts it and loads snarkjs and the artifacts, is reported apart).
- Through the plain snarkjs command line: `npx snarkjs <system> fullprove` and
  `... verify`, one Node.js process per call, as a person would run it by hand.
  Slow (Node.js start-up each time), so few samples.

Every proof made is verified, and a proof that does not verify stops the bench
(BareBenchError): a timing of something broken would mean nothing.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import trio

from p2p_market.core.messages import Market
from p2p_market.proving.snark import (
    SHIPPED_ARTIFACTS,
    SnarkBackend,
    canonical_inputs,
    find_artifact,
    node_binary,
    node_modules,
    parse_verifier,
)

CLI_TIMEOUT_S: Final = 120.0


class BareBenchError(RuntimeError):
    """A proof made by the bench did not verify, or a snarkjs command failed."""


@dataclass(frozen=True, slots=True)
class BareTimes:
    first_prove_ms: int
    """The first prove call: the worker's start-up included."""
    prove_ms: list[int]
    verify_ms: list[int]


def _ms(seconds: float) -> int:
    return round(seconds * 1000)


async def worker_times(market: Market, inputs: Sequence[bytes], samples: int) -> BareTimes:
    """`samples` prove and verify calls through one worker (inputs taken in turn),
    after a first prove that starts it."""
    async with SnarkBackend(market.proof_system, dirs=[SHIPPED_ARTIFACTS]) as backend:
        t0 = trio.current_time()
        await backend.prove(market, inputs[0], math.inf)
        first = _ms(trio.current_time() - t0)
        proves, verifies = [], []
        for i in range(1, samples + 1):
            chosen = inputs[i % len(inputs)]
            t0 = trio.current_time()
            proof = await backend.prove(market, chosen, math.inf)
            t1 = trio.current_time()
            valid = await backend.verify(market, chosen, proof)
            t2 = trio.current_time()
            if not valid:
                raise BareBenchError(f"{market.name}: a proof made by the worker did not verify")
            proves.append(_ms(t1 - t0))
            verifies.append(_ms(t2 - t1))
    return BareTimes(first, proves, verifies)


def npx_binary() -> str | None:
    """npx: on PATH, else beside the node binary."""
    found = shutil.which("npx")
    if found:
        return found
    beside = Path(node_binary()).with_name("npx")
    return str(beside) if beside.is_file() else None


async def _timed(argv: list[str], cwd: Path) -> tuple[int, str]:
    t0 = trio.current_time()
    with trio.fail_after(CLI_TIMEOUT_S):
        done = await trio.run_process(
            argv, cwd=cwd, capture_stdout=True, capture_stderr=True, check=False
        )
    took = _ms(trio.current_time() - t0)
    out = (done.stdout + done.stderr).decode("utf-8", "replace")
    if done.returncode != 0:
        tail = " | ".join(out.strip().splitlines()[-3:])
        raise BareBenchError(f"{' '.join(argv[:4])} failed (exit {done.returncode}): {tail}")
    return took, out


async def cli_times(
    market: Market, inputs: Sequence[bytes], samples: int
) -> tuple[list[int], list[int]]:
    """(fullprove ms, verify ms) of `samples` runs of the plain snarkjs command line,
    each a new Node.js process, from the repository's node_modules."""
    npx = npx_binary()
    if npx is None:
        raise BareBenchError("npx not found (it comes with Node.js's npm)")
    ref = parse_verifier(market.verifier)
    dirs = [SHIPPED_ARTIFACTS]
    wasm, zkey, vkey = (str(find_artifact(ref, k, dirs)) for k in ("wasm", "zkey", "vkey"))
    root = node_modules().parent
    system = market.proof_system
    proves, verifies = [], []
    with tempfile.TemporaryDirectory(prefix="p2p-market-bench-cli-") as tmp:
        work = Path(tmp)
        for i in range(samples):
            inp, proof, public = work / "input.json", work / "proof.json", work / "public.json"
            inp.write_text(json.dumps(canonical_inputs(inputs[i % len(inputs)])))
            cmd = [npx, "--no-install", "snarkjs", system]
            took, _ = await _timed(
                [*cmd, "fullprove", str(inp), wasm, zkey, str(proof), str(public)], root
            )
            proves.append(took)
            took, out = await _timed([*cmd, "verify", vkey, str(public), str(proof)], root)
            if "OK" not in out:
                raise BareBenchError(f"{market.name}: snarkjs {system} verify did not say OK")
            verifies.append(took)
    return proves, verifies
