"""The ``groth16`` and ``plonk`` proof systems: circom circuits proved and verified
by snarkjs (pinned in the repository's package.json; `npm ci` installs it).

A market of these systems is one circuit with one trusted setup, pinned by content:
its `verifier` field is

    <system>;wasm=<sha256 hex>;zkey=<sha256 hex>;vkey=<sha256 hex>

(`parse_verifier`), the SHA-256 of the circuit's witness generator (circom's wasm),
of the proving key (snarkjs zkey) and of the verification key (snarkjs JSON). The
market id is the hash of the descriptor, so it commits to all three. The artifacts
are files named by their hash, ``<hex>.wasm``, ``<hex>.zkey``, ``<hex>.vkey.json``,
looked up in the directories of `artifact_dirs` (first match wins); a file whose
SHA-256 is not its name is refused (`ArtifactError`, "artifact hash mismatch").

Inputs (the ask's `inputs`, every input signal of the circuit, private and public)
are CANONICAL JSON (`canonical_inputs`): an object whose keys are the circuit's input
signal names (identifiers), sorted, each value a field element as a decimal string
(no sign, no leading zeros, below the BN254 scalar field's order) or an array of
such values (array signals, nested for more dimensions); no spaces, ASCII; i.e. the
bytes of ``json.dumps(obj, sort_keys=True, separators=(",", ":"))``. Anything
else, and inputs that name signals the circuit lacks, miss one, or fail its
constraints, are invalid (`check_inputs` False).

A proof is canonical JSON too: ``{"proof": <snarkjs proof>, "publicSignals": [...]}``
with sorted keys and no spaces. `verify` recomputes the public signals from the
inputs (the circuit's outputs and public inputs) and requires them to be the
proof's, so a valid proof of other inputs is invalid here.

The work is done by long-lived Node.js workers (snark_worker.js: one JSON request
per line on stdin, one reply per line on stdout), each of which loads snarkjs and
each artifact once. A worker serves one call at a time; a back-end keeps up to
`workers` of them (a prover's capacity: proofs of its slots run side by side, not in
a queue behind each other), started as calls need them and kept for the next. A
worker is killed (and another started by a later call) if it dies, times out or is
cancelled mid-call; `aclose` stops them all, and a worker exits by itself when its
stdin closes, so none outlives this process.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import shutil
import signal
import subprocess
import tempfile
import weakref
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Final

import trio

from p2p_market.proving.backend import DEFAULT_EXTERNAL_TIMEOUT_S, BackendOptions, ProvingError

if TYPE_CHECKING:
    from p2p_market.core.messages import Market

SYSTEMS: Final = ("groth16", "plonk")
BN254_R: Final = 21888242871839275222246405745257275088548364400416034343698204186575808495617
"""The order of BN254's scalar field: every signal value is below it."""
ARTIFACT_SUFFIXES: Final = {"wasm": ".wasm", "zkey": ".zkey", "vkey": ".vkey.json"}
VERIFIER_FORM: Final = re.compile(
    r"(groth16|plonk);wasm=([0-9a-f]{64});zkey=([0-9a-f]{64});vkey=([0-9a-f]{64})"
)
WORKER_JS: Final = Path(__file__).with_name("snark_worker.js")
ARTIFACTS_ENV: Final = "P2P_MARKET_ARTIFACTS"
NODE_MODULES_ENV: Final = "P2P_MARKET_NODE_MODULES"
NODE_ENV: Final = "P2P_MARKET_NODE"
REPO_ROOT: Final = Path(__file__).resolve().parents[2]
SHIPPED_ARTIFACTS: Final = REPO_ROOT / "protocols" / "circuits" / "artifacts"
MAX_REPLY_BYTES: Final = 16 * 1024 * 1024
_MAX_DEPTH: Final = 8
_SIGNAL_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_DECIMAL: Final = re.compile(r"0|[1-9][0-9]{0,77}")
_START_TIMEOUT_S: Final = 60.0
_STOP_GRACE_S: Final = 2.0
_TAIL_CHARS: Final = 400


class ArtifactError(ProvingError):
    """An artifact of the market is missing, or its SHA-256 is not the market's."""


@dataclass(frozen=True, slots=True)
class CircuitRef:
    """What a groth16 / plonk market's `verifier` field pins: the system and the
    SHA-256 (hex) of each artifact."""

    system: str
    wasm: str
    zkey: str
    vkey: str

    def verifier(self) -> str:
        return f"{self.system};wasm={self.wasm};zkey={self.zkey};vkey={self.vkey}"

    def digest(self, kind: str) -> str:
        digest: str = getattr(self, kind)
        return digest


def parse_verifier(verifier: str) -> CircuitRef:
    """The artifact hashes named by a groth16 / plonk market's verifier field;
    ValueError if it is not of the form in the module doc."""
    m = VERIFIER_FORM.fullmatch(verifier)
    if m is None:
        raise ValueError(
            f"verifier {verifier!r} is not <system>;wasm=<sha256>;zkey=<sha256>;vkey=<sha256>"
        )
    return CircuitRef(*m.groups())


def artifact_dirs(extra: Sequence[Path] = ()) -> list[Path]:
    """Where artifacts are looked up, in order: `extra`, the directories of
    $P2P_MARKET_ARTIFACTS (os.pathsep-separated), ./markets/artifacts (where
    `p2p-market market create` writes them by default), and the repository's
    protocols/circuits/artifacts (the example markets)."""
    dirs = list(extra)
    dirs += [Path(p) for p in os.environ.get(ARTIFACTS_ENV, "").split(os.pathsep) if p]
    dirs += [Path("markets") / "artifacts", SHIPPED_ARTIFACTS]
    return dirs


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def find_artifact(ref: CircuitRef, kind: str, dirs: Sequence[Path]) -> Path:
    """The file of artifact `kind` (wasm, zkey, vkey) of `ref`; ArtifactError if no
    directory holds it. Its content is checked where it is read (the worker)."""
    name = ref.digest(kind) + ARTIFACT_SUFFIXES[kind]
    for d in dirs:
        path = d / name
        if path.is_file():
            return path.resolve()
    raise ArtifactError(
        f"{ref.system}: {kind} artifact {name} not found in {', '.join(map(str, dirs))}"
        f" (set ${ARTIFACTS_ENV})"
    )


def check_artifact(path: Path, digest: str) -> None:
    """ArtifactError unless the file's SHA-256 is `digest`."""
    got = sha256_file(path)
    if got != digest:
        raise ArtifactError(
            f"artifact hash mismatch: {path} has SHA-256 {got}, the market names {digest}"
        )


# -- canonical JSON ------------------------------------------------------------------


def canonical_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise ValueError("duplicate key")
    return out


def _parse_canonical(data: bytes) -> Any:
    """The JSON value of `data`; ValueError unless `data` is its canonical form."""
    try:
        value = json.loads(data.decode("ascii"), object_pairs_hook=_no_duplicates)
    except (UnicodeDecodeError, RecursionError, ValueError) as e:
        raise ValueError(f"not JSON: {e}") from None
    if canonical_json(value) != data:
        raise ValueError("not canonical JSON (sorted keys, no spaces, ASCII)")
    return value


def _field_value(value: Any, depth: int = 0) -> bool:
    if isinstance(value, str):
        return _DECIMAL.fullmatch(value) is not None and int(value) < BN254_R
    if isinstance(value, list) and value and depth < _MAX_DEPTH:
        return all(_field_value(v, depth + 1) for v in value)
    return False


def canonical_inputs(inputs: bytes) -> dict[str, Any]:
    """The inputs as a JSON object; ValueError (one line) unless they are in the
    canonical form of the module doc. Whether the circuit has these signals is
    the worker's to say."""
    value = _parse_canonical(inputs)
    if not isinstance(value, dict) or not value:
        raise ValueError("inputs must be a non-empty JSON object of input signals")
    for key, v in value.items():
        if _SIGNAL_NAME.fullmatch(key) is None:
            raise ValueError(f"input {key!r} is not a signal name")
        if not _field_value(v):
            raise ValueError(
                f"input {key!r} is not a field element in decimal (a string) or an array of them"
            )
    return value


def encode_inputs(values: dict[str, Any]) -> bytes:
    """Canonical inputs from a dict whose values are ints, decimal strings, or
    (nested) lists of them."""

    def conv(v: Any) -> Any:
        if isinstance(v, list | tuple):
            return [conv(x) for x in v]
        if isinstance(v, bool):
            raise ValueError("a bool is not a field element")
        return str(int(v))

    data = canonical_json({k: conv(v) for k, v in values.items()})
    canonical_inputs(data)
    return data


def parse_proof(proof: bytes) -> tuple[dict[str, Any], list[str]]:
    """(snarkjs proof, public signals); ValueError unless `proof` is canonical JSON
    ``{"proof": {...}, "publicSignals": ["<decimal>", ...]}``."""
    value = _parse_canonical(proof)
    if not isinstance(value, dict) or set(value) != {"proof", "publicSignals"}:
        raise ValueError('a proof is {"proof": ..., "publicSignals": [...]}')
    body, signals = value["proof"], value["publicSignals"]
    if not isinstance(body, dict):
        raise ValueError("proof.proof is not an object")
    if not isinstance(signals, list) or not all(
        isinstance(s, str) and _DECIMAL.fullmatch(s) and int(s) < BN254_R for s in signals
    ):
        raise ValueError("publicSignals are not field elements in decimal")
    return body, signals


# -- the worker ----------------------------------------------------------------------


def node_modules() -> Path:
    """The node_modules directory that holds snarkjs: $P2P_MARKET_NODE_MODULES, else
    the nearest one above this package or the working directory."""
    env = os.environ.get(NODE_MODULES_ENV)
    if env:
        return Path(env)
    for start in (Path(__file__).resolve().parent, Path.cwd().resolve()):
        for d in (start, *start.parents):
            if (d / "node_modules" / "snarkjs").is_dir():
                return d / "node_modules"
    raise ProvingError(
        "snarkjs is not installed: run `npm ci` at the repository's root"
        f" (or set ${NODE_MODULES_ENV})"
    )


def node_binary() -> str:
    found = os.environ.get(NODE_ENV) or shutil.which("node")
    if not found:
        raise ProvingError(f"node (Node.js) not found on PATH (or set ${NODE_ENV})")
    return found


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def _one_line(text: str) -> str:
    text = " | ".join(ln.strip() for ln in text.splitlines() if ln.strip())
    text = "".join(c if c.isprintable() else "?" for c in text)
    return text if len(text) <= _TAIL_CHARS else "..." + text[-_TAIL_CHARS:]


class _Worker:
    """One running snark_worker.js."""

    def __init__(self, proc: trio.Process, stderr: IO[bytes]) -> None:
        self.proc = proc
        self.stderr = stderr
        self.buffer = bytearray()
        self.next_id = 0
        self.served = 0
        # A backend dropped without aclose: its worker dies with it (and when this
        # process exits, as its stdin closes).
        self._finalizer = weakref.finalize(self, _kill_group, proc.pid)

    @classmethod
    async def start(cls) -> _Worker:
        argv = [node_binary(), str(WORKER_JS)]
        env = {**os.environ, "NODE_PATH": str(node_modules())}
        stderr = tempfile.TemporaryFile()  # noqa: SIM115 - closed by stop()
        try:
            proc = await trio.lowlevel.open_process(
                argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                env=env,
                start_new_session=True,
            )
        except OSError as e:
            stderr.close()
            raise ProvingError(f"snark worker cannot start: {e}") from None
        return cls(proc, stderr)

    def stderr_tail(self) -> str:
        try:
            self.stderr.seek(0, os.SEEK_END)
            self.stderr.seek(max(0, self.stderr.tell() - 4096))
            return _one_line(self.stderr.read().decode("utf-8", "replace")) or "no output"
        except (OSError, ValueError):
            return "no output"

    async def request(self, req: dict[str, Any]) -> dict[str, Any]:
        """Send one request, read its reply. EOFError if the worker is gone."""
        self.next_id += 1
        req = {**req, "id": self.next_id}
        assert self.proc.stdin is not None and self.proc.stdout is not None
        try:
            await self.proc.stdin.send_all(json.dumps(req).encode() + b"\n")
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            raise EOFError from None
        while b"\n" not in self.buffer:
            if len(self.buffer) > MAX_REPLY_BYTES:
                raise ProvingError("snark worker: reply over the size limit")
            chunk = await self.proc.stdout.receive_some(1 << 16)
            if not chunk:
                raise EOFError
            self.buffer += chunk
        line, _, rest = bytes(self.buffer).partition(b"\n")
        self.buffer = bytearray(rest)
        try:
            reply = json.loads(line)
        except ValueError:
            raise ProvingError(f"snark worker: a reply is not JSON: {line[:80]!r}") from None
        if not isinstance(reply, dict) or reply.get("id") != self.next_id:
            raise ProvingError("snark worker: a reply out of order")
        self.served += 1
        return reply

    def kill_now(self) -> None:
        """Kill and reap it without trio: for a worker started by another trio run
        (one process may call `trio.run` more than once with the same back-end)."""
        _kill_group(self.proc.pid)
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(self.proc.pid, 0)
        self._finalizer.detach()
        self.stderr.close()

    async def stop(self) -> None:
        """Close stdin (the worker exits), then SIGKILL the group after a grace."""
        with trio.CancelScope(shield=True):
            if self.proc.stdin is not None:
                with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                    await self.proc.stdin.aclose()
            with trio.move_on_after(_STOP_GRACE_S):
                await self.proc.wait()
            _kill_group(self.proc.pid)
            with trio.move_on_after(_STOP_GRACE_S):
                await self.proc.wait()
            self._finalizer.detach()
            self.stderr.close()


class SnarkBackend:
    """`ProofBackend` of the groth16 and plonk systems (see the module doc)."""

    def __init__(
        self,
        system: str,
        *,
        timeout_s: float = DEFAULT_EXTERNAL_TIMEOUT_S,
        dirs: Sequence[Path] | None = None,
        workers: int = 1,
    ) -> None:
        if system not in SYSTEMS:
            raise ValueError(f"not a snark proof system: {system!r}")
        if not timeout_s > 0:
            raise ValueError("timeout_s must be positive")
        if workers < 1:
            raise ValueError("workers must be at least 1")
        self.system = system
        self.timeout_s = timeout_s
        self.dirs = artifact_dirs() if dirs is None else list(dirs)
        self.workers = workers
        self._idle: list[_Worker] = []
        """Running workers that no call holds, the most recently used last."""
        self._running: list[_Worker] = []
        self._slots = trio.Semaphore(workers)
        self._slots_run: object = None
        self.starts = 0
        """How many workers this back-end started (a restart is one more)."""

    # -- lifecycle

    @property
    def worker_pid(self) -> int | None:
        """The pid of the worker started first of those running (None if none runs)."""
        return self._running[0].proc.pid if self._running else None

    @property
    def worker_pids(self) -> list[int]:
        return [w.proc.pid for w in self._running]

    async def aclose(self) -> None:
        """Stop every worker; the back-end may still be used (a later call starts
        another)."""
        running, self._running, self._idle = self._running, [], []
        for worker in running:
            await worker.stop()

    async def __aenter__(self) -> SnarkBackend:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _call(self, req: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        """One request's reply (with ok true); ProvingError otherwise. Started at
        most twice: once more if the worker turns out to have died in between."""
        if timeout_s <= 0:
            raise ProvingError(f"{self.system}: deadline reached before the request")
        async with self._call_slot():
            end = trio.current_time() + timeout_s
            for attempt in (1, 2):
                worker = self._idle.pop() if self._idle else None
                if worker is None:
                    worker = await _Worker.start()
                    self._running.append(worker)
                    self.starts += 1
                fresh = worker.served == 0
                done = False
                try:
                    with trio.move_on_at(end) as scope:
                        reply = await worker.request(req)
                        done = True
                except EOFError:
                    done = True  # dropped here
                    tail = worker.stderr_tail()
                    await self._drop(worker)
                    if fresh or attempt == 2:
                        raise ProvingError(f"{self.system}: snark worker died; {tail}") from None
                    continue  # it died between calls: once more, with a new one
                finally:
                    if not done:  # timed out, cancelled, or a protocol error
                        await self._drop(worker)
                if scope.cancelled_caught:
                    raise ProvingError(
                        f"{self.system}: {req['op']} timed out after {timeout_s:.1f}s"
                        " (the worker was killed)"
                    )
                if worker in self._running:
                    self._idle.append(worker)  # alive: the next call takes it
                if not reply.get("ok"):
                    error = reply.get("error") or "unknown error"
                    cls = ArtifactError if "artifact hash mismatch" in error else ProvingError
                    raise cls(f"{self.system}: {_one_line(str(error))}")
                return reply
        raise AssertionError("unreachable")  # pragma: no cover

    @contextlib.asynccontextmanager
    async def _call_slot(self) -> AsyncIterator[None]:
        """One of `workers` call slots. Workers (and the semaphore) belong to one
        trio run: a back-end used again by a later `trio.run` (the CLI may run twice
        in one process) kills the old run's workers, which it cannot talk to."""
        run = trio.lowlevel.current_trio_token()
        if self._slots_run is not run:
            for worker in self._running:
                worker.kill_now()
            self._running, self._idle = [], []
            self._slots, self._slots_run = trio.Semaphore(self.workers), run
        async with self._slots:
            yield

    async def _drop(self, worker: _Worker) -> None:
        if worker in self._idle:
            self._idle.remove(worker)
        if worker in self._running:
            self._running.remove(worker)
        await worker.stop()

    def check_ready(self, market: Market, kinds: Sequence[str] = ("wasm", "zkey", "vkey")) -> None:
        """ValueError (one line) unless `market` is of this system and Node.js, snarkjs
        and the market's artifacts of `kinds` are all found (their hashes are
        checked at first use): for a prover, before it bids."""
        try:
            ref = self._ref(market)
            node_binary()
            node_modules()
            for kind in kinds:
                check_artifact(find_artifact(ref, kind, self.dirs), ref.digest(kind))
        except ProvingError as e:
            raise ValueError(str(e)) from None

    # -- artifacts

    def _ref(self, market: Market) -> CircuitRef:
        try:
            ref = parse_verifier(market.verifier)
        except ValueError as e:
            raise ProvingError(f"{self.system}: market {market.name}: {e}") from None
        if ref.system != self.system or market.proof_system != self.system:
            raise ProvingError(
                f"{self.system}: market {market.name} names {ref.system} artifacts"
                f" for proof system {market.proof_system}"
            )
        return ref

    async def _artifact(self, ref: CircuitRef, kind: str) -> list[str]:
        path = await trio.to_thread.run_sync(find_artifact, ref, kind, self.dirs)
        return [str(path), ref.digest(kind)]

    # -- ProofBackend

    async def prove(self, market: Market, inputs: bytes, deadline_s: float) -> bytes:
        ref = self._ref(market)
        try:
            values = canonical_inputs(inputs)
        except ValueError as e:
            raise ProvingError(f"{self.system}: invalid inputs: {e}") from None
        req = {
            "op": "prove",
            "system": self.system,
            "input": values,
            "wasm": await self._artifact(ref, "wasm"),
            "zkey": await self._artifact(ref, "zkey"),
        }
        reply = await self._call(req, min(deadline_s, self.timeout_s))
        if reply.get("invalid"):
            raise ProvingError(f"{self.system}: invalid inputs: {_one_line(reply['invalid'])}")
        return canonical_json({"proof": reply["proof"], "publicSignals": reply["publicSignals"]})

    async def verify(self, market: Market, inputs: bytes, proof: bytes) -> bool:
        ref = self._ref(market)
        try:
            values = canonical_inputs(inputs)
            body, signals = parse_proof(proof)
        except ValueError:
            return False
        req = {
            "op": "verify",
            "system": self.system,
            "input": values,
            "proof": body,
            "publicSignals": signals,
            "wasm": await self._artifact(ref, "wasm"),
            "vkey": await self._artifact(ref, "vkey"),
        }
        reply = await self._call(req, self.timeout_s)
        return reply.get("valid") is True

    async def warm_up(self, market: Market) -> None:
        """Start the worker (Node.js and snarkjs) and load the market's witness
        generator now, not at the first proof: a cold start takes a second or more,
        which a prover that bid a short proof time cannot spend inside a deadline
        (its first check and prove would time out, and each timeout kills the worker,
        so the next proof would start cold again). ProvingError if it cannot."""
        ref = self._ref(market)
        # Inputs of no signal: the witness generator is compiled, then refuses them.
        req = {"op": "check", "input": {}, "wasm": await self._artifact(ref, "wasm")}
        await self._call(req, self.timeout_s)

    async def check_inputs(self, market: Market, inputs: bytes) -> bool:
        ref = self._ref(market)
        try:
            values = canonical_inputs(inputs)
        except ValueError:
            return False
        req = {"op": "check", "input": values, "wasm": await self._artifact(ref, "wasm")}
        reply = await self._call(req, self.timeout_s)
        return reply.get("invalid") is None


def from_options(market: Market, options: BackendOptions) -> SnarkBackend:
    """The registry's constructor (registry.py): `timeout_s` bounds each request,
    `workers` how many run at once."""
    timeout = options.timeout_s if math.isfinite(options.timeout_s) else DEFAULT_EXTERNAL_TIMEOUT_S
    return SnarkBackend(market.proof_system, timeout_s=timeout, workers=options.workers)
