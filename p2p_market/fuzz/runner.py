"""Runs fuzz targets, each in a subprocess (worker.py), for a fixed number of inputs,
and reads libFuzzer's figures from its output: inputs executed, coverage (`cov`,
the edges seen; `ft`, the finer features), corpus size, time, and any input that
broke the contract, which is saved as `<target>-<sha1>.bin`."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

TIMEOUT_S: Final = 10
"""An input that takes longer is a hang, saved like a crash (libFuzzer's -timeout)."""

_STATUS = re.compile(r"^#(\d+)\s+\w+\s+cov: (\d+) ft: (\d+) corp: (\d+)", re.M)
_DONE = re.compile(r"^Done (\d+) runs in", re.M)
_EXECUTED = re.compile(r"^stat::number_of_executed_units: (\d+)", re.M)


@dataclass(frozen=True, slots=True)
class Crash:
    kind: str
    """libFuzzer's name for it: crash, timeout, oom, leak."""
    path: str
    """Where the input was saved."""
    error: str
    """The exception's last line, or libFuzzer's summary."""


@dataclass(slots=True)
class TargetRun:
    target: str
    requested: int
    inputs: int = 0
    cov: int = 0
    ft: int = 0
    corpus: int = 0
    seconds: float = 0.0
    exit_code: int = 0
    crashes: list[Crash] = field(default_factory=list)
    failure: str = ""
    """The worker failed without a crash to show for it (e.g. it did not start)."""

    @property
    def ok(self) -> bool:
        return not self.crashes and not self.failure

    @property
    def per_second(self) -> float:
        return self.inputs / self.seconds if self.seconds else 0.0


def _error_of(log: str) -> str:
    """The exception atheris prints for a broken contract: the line after its
    `=== Uncaught Python exception: ===` banner (`TypeError: ...`)."""
    lines = log.splitlines()
    for i, line in enumerate(lines):
        if "Uncaught Python exception" in line:
            after = [rest.strip() for rest in lines[i + 1 :] if rest.strip()]
            return after[0] if after else "uncaught Python exception"
    summary = [line for line in lines if line.startswith("SUMMARY: ")]
    return summary[0].removeprefix("SUMMARY: ") if summary else "see the worker's output"


def parse_output(run: TargetRun, log: str) -> None:
    """Fill `run`'s figures from libFuzzer's output."""
    statuses = _STATUS.findall(log)
    if statuses:
        n, cov, ft, corp = statuses[-1]
        run.inputs, run.cov, run.ft, run.corpus = int(n), int(cov), int(ft), int(corp)
    for pattern in (_DONE, _EXECUTED):
        found = pattern.findall(log)
        if found:
            run.inputs = int(found[-1])
            break


def saved_name(target: str, data: bytes) -> str:
    """`<target>-<sha1>.bin`: what replay.py reads back. A target given as
    `module:attribute` is named by its attribute."""
    return f"{target.rpartition(':')[2]}-{hashlib.sha1(data).hexdigest()}.bin"


def run_target(
    name: str,
    runs: int,
    *,
    seed: int = 1,
    crashes_dir: Path,
    start_from: Sequence[Path] = (),
    timeout_s: int = TIMEOUT_S,
) -> TargetRun:
    """Fuzz one target for `runs` inputs. `start_from`: directories of saved inputs
    (`<target>-*.bin`, say tests/fuzz/crashes) whose inputs for this target are run
    first, along with its seeds."""
    run = TargetRun(target=name, requested=runs)
    with tempfile.TemporaryDirectory(prefix="p2p-market-fuzz-") as tmp:
        artifacts = Path(tmp, "artifacts")
        artifacts.mkdir()
        saved = Path(tmp, "saved")
        saved.mkdir()
        prefix = name.rpartition(":")[2] + "-"
        for directory in start_from:
            for path in sorted(directory.glob(f"{prefix}*.bin")):
                shutil.copyfile(path, saved / path.name)
        command = [
            sys.executable, "-m", "p2p_market.fuzz.worker", name, str(Path(tmp, "corpus")),
            f"-runs={runs}", f"-seed={seed}", f"-timeout={timeout_s}",
            f"-artifact_prefix={artifacts}/", "-print_final_stats=1", str(saved),
        ]  # fmt: skip
        env = os.environ | {"PYTHONHASHSEED": "0"}
        started = time.monotonic()
        done = subprocess.run(
            command, stdin=subprocess.DEVNULL, capture_output=True, env=env, check=False
        )
        run.seconds = time.monotonic() - started
        run.exit_code = done.returncode
        log = (done.stdout + done.stderr).decode(errors="replace")
        parse_output(run, log)
        for artifact in sorted(artifacts.iterdir()):
            data = artifact.read_bytes()
            kind = artifact.name.split("-", 1)[0]
            crashes_dir.mkdir(parents=True, exist_ok=True)
            keep = crashes_dir / saved_name(name, data)
            shutil.copyfile(artifact, keep)
            error = _error_of(log) if kind == "crash" else f"{kind} (over {timeout_s} s?)"
            run.crashes.append(Crash(kind, str(keep), error))
        if done.returncode != 0 and not run.crashes:
            tail = " | ".join(log.strip().splitlines()[-3:])
            run.failure = f"worker exited with status {done.returncode}: {tail}"
    return run
