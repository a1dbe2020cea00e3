"""Making a groth16 / plonk market from a circom circuit (`p2p-market market create
--proof-system groth16|plonk --circuit FILE`): compile it with circom2 (the circom
compiler as wasm), run the setup with snarkjs, export the verification key, and
store the three artifacts by hash (snark.py's `ARTIFACT_SUFFIXES`).

Without a powers-of-tau file a small one is generated here, by one local
contribution: whoever ran it knows (or could have kept) its toxic waste and can forge
proofs. Such a market is a devnet market, INSECURE, and is named so. With a real
ceremony's ptau (--ptau), plonk needs no other secret; groth16 still adds one local
phase-2 contribution, which is just as forgeable by whoever made it: a real groth16
market needs a phase-2 ceremony of its own, whose final zkey is given with --zkey
(and the ptau it started from, --ptau: `snarkjs zkey verify` checks that the zkey
belongs to this circuit and that ptau before anything is pinned).

Blocking (subprocesses): for the CLI, not for a running node.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from p2p_market.proving.backend import ProvingError
from p2p_market.proving.snark import (
    ARTIFACT_SUFFIXES,
    SYSTEMS,
    CircuitRef,
    node_binary,
    node_modules,
    sha256_file,
)

MIN_POWER: Final = 8
MAX_POWER: Final = 18
"""The largest powers of tau generated locally (2^18 constraints; larger circuits
bring a ceremony's file with --ptau)."""
STEP_TIMEOUT_S: Final = 1800.0
_ANSI: Final = re.compile(r"\x1b\[[0-9;]*m")


@dataclass(slots=True)
class CircuitMarket:
    """What `setup_circuit` made: the pinned hashes, the stored artifacts, whether
    the setup is a local (INSECURE) one, the circuit's size, and the time of each step
    in seconds."""

    ref: CircuitRef
    paths: dict[str, Path]
    insecure: bool
    constraints: int
    power: int | None
    timings: dict[str, float] = field(default_factory=dict)


def _run(argv: list[str], what: str, cwd: Path) -> str:
    try:
        done = subprocess.run(
            argv,
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=STEP_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise ProvingError(f"{what}: {e}") from None
    out = _ANSI.sub("", done.stdout + done.stderr)
    # snarkjs's CLI reports some failures on stdout with exit status 0 or 1.
    if done.returncode != 0 or "[ERROR]" in out:
        lines = [ln.strip() for ln in out.splitlines() if ln.strip()]
        lines = [ln for ln in lines if "[ERROR]" in ln] or lines
        raise ProvingError(f"{what} failed (exit {done.returncode}): {' | '.join(lines[-4:])}")
    return out


class _Tools:
    def __init__(self) -> None:
        self.node = node_binary()
        modules = node_modules()
        self.snarkjs = modules / "snarkjs" / "build" / "cli.cjs"
        self.circom = modules / "circom2" / "cli.js"
        for tool in (self.snarkjs, self.circom):
            if not tool.is_file():
                raise ProvingError(f"{tool} is missing: run `npm ci` at the repository's root")

    def snark(self, cwd: Path, what: str, *args: str) -> str:
        return _run([self.node, str(self.snarkjs), *args], what, cwd)


def _info(text: str, label: str) -> int:
    m = re.search(rf"# of {label}: (\d+)", text)
    if m is None:
        raise ProvingError(f"snarkjs r1cs info: no '# of {label}'")
    return int(m.group(1))


def _store(path: Path, kind: str, into: Path) -> tuple[str, Path]:
    digest = sha256_file(path)
    dest = into / (digest + ARTIFACT_SUFFIXES[kind])
    if not dest.exists():
        tmp = dest.with_name(dest.name + ".tmp")
        shutil.copyfile(path, tmp)
        os.replace(tmp, dest)
    return digest, dest


def setup_circuit(
    system: str,
    circuit: Path,
    artifacts: Path,
    *,
    ptau: Path | None = None,
    zkey_in: Path | None = None,
    include: tuple[Path, ...] = (),
) -> CircuitMarket:
    """Compile `circuit`, set up `system` for it (or take a phase-2 ceremony's
    `zkey_in`, groth16, checked against the circuit and `ptau`), and store the
    artifacts in `artifacts` (created if need be). ProvingError (one line) if a step
    fails."""
    if system not in SYSTEMS:
        raise ValueError(f"not a snark proof system: {system!r}")
    if zkey_in is not None and (system != "groth16" or ptau is None):
        raise ValueError("a ceremony's zkey is for groth16, with the --ptau it started from")
    circuit = circuit.resolve()
    if not circuit.is_file():
        raise ProvingError(f"circuit not found: {circuit}")
    tools = _Tools()
    timings: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="p2p-market-setup-") as tmp_name:
        tmp = Path(tmp_name)
        stem = circuit.stem
        t = time.perf_counter()
        libs = [a for d in (*include, circuit.parent) for a in ("-l", str(d.resolve()))]
        _run(
            [
                tools.node,
                str(tools.circom),
                str(circuit),
                "--r1cs",
                "--wasm",
                "-o",
                str(tmp),
                *libs,
            ],
            "circom2 (compile)",
            tmp,
        )
        timings["compile"] = time.perf_counter() - t
        r1cs = tmp / f"{stem}.r1cs"
        wasm = tmp / f"{stem}_js" / f"{stem}.wasm"
        if not (r1cs.is_file() and wasm.is_file()):
            raise ProvingError(f"circom2 wrote no {r1cs.name} or {wasm.name}")
        info = tools.snark(tmp, "snarkjs r1cs info", "r1cs", "info", str(r1cs))
        constraints = _info(info, "Constraints")
        wires = _info(info, "Wires")
        power: int | None = None
        zkey = tmp / "circuit.zkey"
        if ptau is None:
            # Enough for groth16 (constraints + public) and plonk (its gates, at most
            # a few per constraint, plus the wires): too small is retried one bigger.
            power = max(MIN_POWER, math.ceil(math.log2(2 * (constraints + wires) + 2)))
        while zkey_in is None:
            if power is not None:
                t = time.perf_counter()
                ptau = tmp / f"pot{power}.ptau"
                _local_ptau(tools, tmp, power, ptau)
                timings["ptau"] = time.perf_counter() - t
            assert ptau is not None
            t = time.perf_counter()
            try:
                _setup(tools, tmp, system, r1cs, ptau.resolve(), zkey)
            except ProvingError as e:
                if power is not None and "too big" in str(e).lower() and power < MAX_POWER:
                    power += 1
                    continue
                raise
            timings["setup"] = time.perf_counter() - t
            break
        if zkey_in is not None:
            assert ptau is not None
            t = time.perf_counter()
            shutil.copyfile(zkey_in, zkey)
            verdict = tools.snark(
                tmp, "snarkjs zkey verify", "zkey", "verify", str(r1cs), str(ptau.resolve()),
                str(zkey),
            )  # fmt: skip
            if "ZKey Ok" not in verdict:
                raise ProvingError(f"{zkey_in} is not a zkey of this circuit and --ptau")
            timings["verify zkey"] = time.perf_counter() - t
        vkey = tmp / "verification_key.json"
        tools.snark(
            tmp, "snarkjs zkey export", "zkey", "export", "verificationkey", str(zkey), str(vkey)
        )
        artifacts.mkdir(parents=True, exist_ok=True)
        digests: dict[str, str] = {}
        paths: dict[str, Path] = {}
        for kind, path in (("wasm", wasm), ("zkey", zkey), ("vkey", vkey)):
            digests[kind], paths[kind] = _store(path, kind, artifacts)
    ref = CircuitRef(system, digests["wasm"], digests["zkey"], digests["vkey"])
    return CircuitMarket(
        ref=ref,
        paths=paths,
        insecure=power is not None or (system == "groth16" and zkey_in is None),
        constraints=constraints,
        power=power,
        timings=timings,
    )


def _local_ptau(tools: _Tools, cwd: Path, power: int, out: Path) -> None:
    p0, p1 = cwd / "pot_0.ptau", cwd / "pot_1.ptau"
    tools.snark(cwd, "snarkjs powersoftau new", "powersoftau", "new", "bn128", str(power), str(p0))
    tools.snark(
        cwd,
        "snarkjs powersoftau contribute",
        "powersoftau",
        "contribute",
        str(p0),
        str(p1),
        "--name=p2p-market devnet, INSECURE",
        f"-e={os.urandom(32).hex()}",
    )
    tools.snark(
        cwd, "snarkjs powersoftau prepare", "powersoftau", "prepare", "phase2", str(p1), str(out)
    )
    p0.unlink()
    p1.unlink()


def _setup(tools: _Tools, cwd: Path, system: str, r1cs: Path, ptau: Path, zkey: Path) -> None:
    if system == "plonk":
        zkey.unlink(missing_ok=True)
        tools.snark(cwd, "snarkjs plonk setup", "plonk", "setup", str(r1cs), str(ptau), str(zkey))
        return
    z0 = cwd / "circuit_0.zkey"
    tools.snark(cwd, "snarkjs groth16 setup", "groth16", "setup", str(r1cs), str(ptau), str(z0))
    tools.snark(
        cwd,
        "snarkjs zkey contribute",
        "zkey",
        "contribute",
        str(z0),
        str(zkey),
        "--name=p2p-market local phase 2, INSECURE",
        f"-e={os.urandom(32).hex()}",
    )
    z0.unlink()
