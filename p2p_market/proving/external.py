"""External proof systems: prove / verify / check commands, e.g. a zkVM's CLIs.

Each command is a template, split like a POSIX shell would (`shlex.split`) but run
WITHOUT a shell: no pipes, redirections, globbing or variable expansion. Within each
argument these placeholders are replaced by absolute paths:

    {inputs}   a file holding the ask's inputs
    {proof}    prove: where the command must write the proof; verify: the proof
    {workdir}  a private scratch directory (mode 0700), also the command's cwd

Example: ``prove_cmd="zkvm prove --input {inputs} --out {proof}"``. Use an absolute
path or a name on PATH for the program (the cwd is the scratch directory).

Every call gets its own temporary directory, removed afterwards whatever happens.
The command starts in a new session (its own process group); on timeout or
cancellation, and after it exits (to reap stragglers), the whole group is killed
with SIGKILL. A descendant that starts its own session escapes that; proving tools
rarely do.

Outcomes, never a crash or a hang:
- prove: exit 0 and a non-empty proof file -> the proof; anything else (non-zero
  exit, timeout, missing/empty/oversized output, a program that cannot start) ->
  ProvingError naming the exit status and the last lines of stderr.
- verify / check: exit 0 -> True (valid), exit 1 -> False (invalid); any other exit
  status, a timeout, or a program that cannot start -> ProvingError.
- size (optional): exit 0 with a decimal integer on stdout -> the work the inputs
  need, in the market's units (core/work.py: a winner compares it with the ask's
  declared size); anything else -> ProvingError.

SECURITY: `backend_for` takes an external market's verify command from the market
descriptor's `verifier` field unless the node's config names one. Whoever created
the market chose that command, and a requester that verifies in the market runs it.
Follow external markets whose verifier you have read, or configure `verify_cmd`.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
import stat
import subprocess
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final, TypeVar

import trio

from p2p_market.core.limits import MAX_SIZE
from p2p_market.proving.backend import DEFAULT_EXTERNAL_TIMEOUT_S, BackendOptions, ProvingError

if TYPE_CHECKING:
    from p2p_market.core.messages import Market

PLACEHOLDER: Final = re.compile(r"\{(inputs|proof|workdir)\}")
_ANY_PLACEHOLDER: Final = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
DEFAULT_MAX_PROOF_BYTES: Final = 64 * 1024 * 1024
STDERR_TAIL_LINES: Final = 5
_TAIL_READ_BYTES: Final = 8 * 1024
_TAIL_MAX_CHARS: Final = 600
_REAP_TIMEOUT_S: Final = 5.0
"""How long to wait for a SIGKILLed process to be reaped before giving up on it."""

_PREFIX: Final = "p2p-market-proving-"
T = TypeVar("T")


def parse_template(template: str, what: str) -> tuple[str, ...]:
    """Split a command template into argv; ValueError if it is empty, has unbalanced
    quotes, or names a placeholder other than {inputs}, {proof}, {workdir}."""
    try:
        argv = tuple(shlex.split(template))
    except ValueError as e:
        raise ValueError(f"{what} command {template!r}: {e}") from None
    if not argv:
        raise ValueError(f"{what} command is empty")
    for arg in argv:
        for name in _ANY_PLACEHOLDER.findall(arg):
            if name not in ("inputs", "proof", "workdir"):
                raise ValueError(
                    f"{what} command: unknown placeholder {{{name}}}"
                    " (known: {inputs}, {proof}, {workdir})"
                )
    return argv


def substitute(argv: tuple[str, ...], paths: dict[str, str]) -> list[str]:
    """argv with each placeholder replaced by its path, in one pass per argument."""
    return [PLACEHOLDER.sub(lambda m: paths[m.group(1)], arg) for arg in argv]


@dataclass(frozen=True, slots=True)
class _Scratch:
    """One call's files: `root` (removed afterwards) holds the captured output and
    `work`, the command's {workdir}, which holds {inputs} and {proof}."""

    root: Path

    @property
    def work(self) -> Path:
        return self.root / "work"

    @property
    def inputs(self) -> Path:
        return self.work / "inputs"

    @property
    def proof(self) -> Path:
        return self.work / "proof"

    @property
    def stdout(self) -> Path:
        return self.root / "stdout"

    @property
    def stderr(self) -> Path:
        return self.root / "stderr"

    def paths(self) -> dict[str, str]:
        return {"inputs": str(self.inputs), "proof": str(self.proof), "workdir": str(self.work)}

    def prepare(self, inputs: bytes, proof: bytes | None) -> None:
        self.work.mkdir(mode=0o700)
        self.work.chmod(0o700)  # whatever the umask
        _write_private(self.inputs, inputs)
        if proof is not None:
            _write_private(self.proof, proof)


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


class ExternalBackend:
    """`ProofBackend` that runs external commands (see the module doc).

    `prove_cmd` may be None on a node that only requests (then `prove` raises
    ProvingError), `verify_cmd` on one that only proves, `check_cmd` when the system
    has no input check (then `check_inputs` says True). `timeout_s` bounds each
    command; `prove` also stops at its deadline, whichever is first.
    """

    def __init__(
        self,
        prove_cmd: str | None,
        verify_cmd: str | None,
        check_cmd: str | None = None,
        *,
        size_cmd: str | None = None,
        timeout_s: float = DEFAULT_EXTERNAL_TIMEOUT_S,
        max_proof_bytes: int = DEFAULT_MAX_PROOF_BYTES,
    ) -> None:
        if not timeout_s > 0:
            raise ValueError("timeout_s must be positive")
        self.prove_argv = None if prove_cmd is None else parse_template(prove_cmd, "prove")
        if self.prove_argv is not None and not any(
            "{proof}" in a or "{workdir}" in a for a in self.prove_argv
        ):
            raise ValueError("prove command must name {proof} (or {workdir}) to write to")
        self.verify_argv = None if verify_cmd is None else parse_template(verify_cmd, "verify")
        self.check_argv = None if check_cmd is None else parse_template(check_cmd, "check")
        self.size_argv = None if size_cmd is None else parse_template(size_cmd, "size")
        self.timeout_s = timeout_s
        self.max_proof_bytes = max_proof_bytes

    async def prove(self, market: Market, inputs: bytes, deadline_s: float) -> bytes:
        if self.prove_argv is None:
            raise ProvingError("external: no prove command configured")
        end = trio.current_time() + min(deadline_s, self.timeout_s)
        if deadline_s <= 0:
            raise ProvingError("external: deadline reached before the prove command started")
        argv = self.prove_argv

        async def run(s: _Scratch) -> bytes:
            code, tail = await _run("prove", argv, s, end)
            if code != 0:
                raise ProvingError(f"{_name('prove', argv)} failed: {_status(code)}; {tail}")
            try:
                st = s.proof.lstat()  # the command's group is dead: nothing changes it now
            except OSError:
                raise ProvingError(
                    f"{_name('prove', argv)} exited 0 but wrote no proof file; {tail}"
                ) from None
            if not stat.S_ISREG(st.st_mode):  # a directory, symlink or FIFO: never read
                raise ProvingError(f"{_name('prove', argv)}: {{proof}} is not a regular file")
            size = st.st_size
            if size == 0:
                raise ProvingError(
                    f"{_name('prove', argv)} exited 0 but the proof file is empty; {tail}"
                )
            if size > self.max_proof_bytes:
                raise ProvingError(
                    f"{_name('prove', argv)} wrote a proof of {size} bytes,"
                    f" over the limit of {self.max_proof_bytes}"
                )
            try:
                return await trio.to_thread.run_sync(s.proof.read_bytes)
            except OSError as e:
                raise ProvingError(f"{_name('prove', argv)}: cannot read the proof: {e}") from None

        return await _in_scratch(inputs, None, run)

    async def verify(self, market: Market, inputs: bytes, proof: bytes) -> bool:
        if self.verify_argv is None:
            raise ProvingError("external: no verify command (market verifier or config)")
        return await self._judge("verify", self.verify_argv, inputs, proof)

    async def check_inputs(self, market: Market, inputs: bytes) -> bool:
        if self.check_argv is None:
            return True
        return await self._judge("check", self.check_argv, inputs, None)

    async def work_size(self, market: Market, inputs: bytes) -> int | None:
        """The work these inputs need, in the market's units, by the size command;
        None without one (then nobody checks the ask's declared size)."""
        argv = self.size_argv
        if argv is None:
            return None
        end = trio.current_time() + self.timeout_s

        async def run(s: _Scratch) -> int:
            code, tail = await _run("size", argv, s, end)
            if code != 0:
                raise ProvingError(f"{_name('size', argv)} failed: {_status(code)}; {tail}")
            text = (await trio.to_thread.run_sync(s.stdout.read_bytes))[:64].strip()
            if not text.isdigit() or not 1 <= int(text) <= MAX_SIZE + 1:
                shown = text[:20].decode("ascii", "replace")
                raise ProvingError(
                    f"{_name('size', argv)} printed {shown!r}, not a size of 1..{MAX_SIZE}"
                )
            return int(text)

        return await _in_scratch(inputs, None, run)

    async def _judge(
        self, what: str, argv: tuple[str, ...], inputs: bytes, proof: bytes | None
    ) -> bool:
        end = trio.current_time() + self.timeout_s

        async def run(s: _Scratch) -> bool:
            code, tail = await _run(what, argv, s, end)
            if code in (0, 1):
                return code == 0
            raise ProvingError(
                f"{_name(what, argv)} failed: {_status(code)} (want 0 = valid, 1 = invalid); {tail}"
            )

        return await _in_scratch(inputs, proof, run)


async def _in_scratch(
    inputs: bytes, proof: bytes | None, body: Callable[[_Scratch], Awaitable[T]]
) -> T:
    """Run `body` with a fresh scratch directory, removed afterwards (also on error
    or cancellation)."""
    try:
        tmp = await trio.to_thread.run_sync(
            lambda: tempfile.TemporaryDirectory(prefix=_PREFIX, ignore_cleanup_errors=True)
        )
    except OSError as e:
        raise ProvingError(f"external: cannot create a work directory: {e}") from None
    try:
        scratch = _Scratch(Path(tmp.name))
        try:
            await trio.to_thread.run_sync(scratch.prepare, inputs, proof)
        except OSError as e:
            raise ProvingError(f"external: cannot prepare the work directory: {e}") from None
        return await body(scratch)
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(tmp.cleanup)


async def _run(what: str, argv: tuple[str, ...], s: _Scratch, end: float) -> tuple[int, str]:
    """Run one command until it exits or `end` (trio clock); kill its process group
    afterwards either way. Returns (exit status, one-line output tail); ProvingError
    on timeout or if it cannot start."""
    started = trio.current_time()
    with contextlib.ExitStack() as files:
        try:
            out = files.enter_context(open(s.stdout, "wb"))
            err = files.enter_context(open(s.stderr, "wb"))
            proc = await trio.lowlevel.open_process(
                substitute(argv, s.paths()),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                cwd=str(s.work),
                start_new_session=True,
            )
        except OSError as e:
            raise ProvingError(f"{_name(what, argv)} cannot start: {e}") from None
        try:
            with trio.move_on_at(end) as scope:
                await proc.wait()
        finally:
            # On timeout, on cancellation, and after a normal exit (stragglers).
            _kill_group(proc.pid)
            with trio.CancelScope(shield=True, deadline=trio.current_time() + _REAP_TIMEOUT_S):
                await proc.wait()
    tail = _output_tail(s)
    if scope.cancelled_caught:
        elapsed = trio.current_time() - started
        status = "not reaped" if proc.returncode is None else _status(proc.returncode)
        raise ProvingError(
            f"{_name(what, argv)} timed out after {elapsed:.1f}s and was killed"
            f" with its process group ({status}); {tail}"
        )
    if proc.returncode is None:  # pragma: no cover - exited, so reaped
        raise ProvingError(f"{_name(what, argv)} could not be reaped; {tail}")
    return proc.returncode, tail


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):  # gone, or not ours
        os.killpg(pgid, signal.SIGKILL)


def _name(what: str, argv: tuple[str, ...]) -> str:
    return f"{what} command {os.path.basename(argv[0])!r}"


def _status(code: int) -> str:
    if code < 0:
        try:
            return f"killed by signal {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"


def _output_tail(s: _Scratch) -> str:
    """The last lines of stderr (of stdout if stderr is empty), on one line."""
    for label, path in (("stderr", s.stderr), ("stdout", s.stdout)):
        text = _tail(path)
        if text:
            return f"{label}: {text}"
    return "no output"


def _tail(path: Path) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - _TAIL_READ_BYTES))
            data = f.read()
    except OSError:
        return ""
    lines = [ln.strip() for ln in data.decode("utf-8", "replace").splitlines()]
    lines = [ln for ln in lines if ln][-STDERR_TAIL_LINES:]
    text = " | ".join("".join(c if c.isprintable() else "?" for c in ln) for ln in lines)
    return text if len(text) <= _TAIL_MAX_CHARS else "..." + text[-_TAIL_MAX_CHARS:]


def from_options(market: Market, options: BackendOptions) -> ExternalBackend:
    """The registry's constructor (registry.py): the verify command is the config's
    if it names one, else the market's `verifier` field."""
    verify = options.verify_cmd if options.verify_cmd is not None else (market.verifier or None)
    return ExternalBackend(
        options.prove_cmd,
        verify,
        options.check_cmd,
        size_cmd=options.size_cmd,
        timeout_s=options.timeout_s,
    )
