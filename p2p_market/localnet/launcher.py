"""Real node processes on 127.0.0.1: start one from its config and read its JSON ready
line, kill it, freeze it, cut it off and join it to the others again, stop it.

Processes are started with plain `subprocess.Popen` from the launcher's main thread
(not trio's `open_process`, which forks from a worker thread): each child gets
`PR_SET_PDEATHSIG = SIGKILL`, which the kernel ties to the thread that forked it,
so a launcher that dies in any way (even SIGKILL) takes its nodes with it. Each
child is in its own session, so a Ctrl-C in the terminal reaches the launcher
only, which then stops every node itself (SIGCONT, SIGTERM, SIGKILL after a grace).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any, Final

import trio

from p2p_market.core.crypto import devnet_key
from p2p_market.localnet.configs import node_config, to_toml
from p2p_market.localnet.scenario import NodeSpec, Scenario
from p2p_market.localnet.wan.netns import NODE_PORT, Place
from p2p_market.node.api_client import ApiClient, ApiError
from p2p_market.node.api_token import TokenError, read_token, token_path
from p2p_market.node.keyfile import write_key
from p2p_market.node.known_peers import FILE as KNOWN_PEERS_FILE

STARTUP_S: Final = 60.0
STOP_GRACE_S: Final = 10.0
_PR_SET_PDEATHSIG: Final = 1


class LaunchError(RuntimeError):
    """A node would not start; the message is one line."""


def _libc_prctl() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _libc_prctl()


def _die_with_parent() -> None:  # runs in the child, between fork and exec
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGKILL)


def free_port() -> int:
    """A TCP port nobody listens on now (fixed per node, so restarts keep the address)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class NodeProcess:
    """One scenario node: its directory, config, key, and its current process."""

    def __init__(
        self, scenario: Scenario, spec: NodeSpec, run_dir: Path, place: Place | None = None
    ) -> None:
        self.scenario = scenario
        self.place = place
        """None: on 127.0.0.1 in the launcher's namespace; else its own namespace."""
        self.spec = spec
        self.name = spec.name
        self.dir = run_dir / "nodes" / spec.name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.start_file = run_dir / "go"
        self.key = devnet_key(spec.name)
        write_key(self.dir / "key.pem", self.key, None, overwrite=True)
        self.port = NODE_PORT if place is not None else free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.ready: dict[str, Any] = {}
        self.api: ApiClient | None = None
        self.starts = 0
        self.status = (
            "new"  # new | starting | up | frozen | isolated | partitioned | down | stopped
        )
        self.faulted = False
        self._log: IO[bytes] | None = None

    @property
    def public_key(self) -> str:
        return self.key.public_key.hex()

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def data_dir(self) -> Path:
        """The node's data dir (as configs.node_config sets it): its log, its API token."""
        return self.dir / "data"

    @property
    def console_url(self) -> str | None:
        """The node's web console, served by its control API (reachable while the node
        runs; a restart may give the API another port). None before its first start."""
        port = self.ready.get("api_port")
        if not port:
            return None
        return f"http://{self.ip}:{port}/console"

    @property
    def events_file(self) -> Path:
        return self.dir / "workload.jsonl"

    @property
    def log_file(self) -> Path:
        return self.dir / "node.log"

    def write_config(self, bootstrap: list[str], *, isolated: bool = False) -> Path:
        data = node_config(
            self.scenario,
            self.spec,
            self.dir,
            bootstrap=[] if isolated else bootstrap,
            port=0 if isolated else self.port,  # cut off: an address nobody knows
            start_file=self.start_file,
            ip=self.ip,
        )
        if isolated:
            # Cut off means dialling nobody: not even the peers it remembers
            # (node/known_peers.py), which would join it to the network again.
            (self.dir / "data" / KNOWN_PEERS_FILE).unlink(missing_ok=True)
        path = self.dir / "node.toml"
        path.write_text(to_toml(data))
        return path

    @property
    def ip(self) -> str:
        return self.place.ip if self.place is not None else "127.0.0.1"

    def command(self, config: Path) -> list[str]:
        # `ip netns exec` execs the command in the namespace, no fork: the node is
        # still this Popen's child, and PR_SET_PDEATHSIG still applies.
        prefix = self.place.prefix if self.place is not None else []
        if self.spec.honest:
            base = [*prefix, sys.executable, "-m", "p2p_market.cli", "node", "run"]
            return [*base, "--config", str(config), "--log-level", "warning"]
        agent = [*prefix, sys.executable, "-m", "p2p_market.localnet.agent"]
        return [*agent, "--config", str(config), "--behaviour", self.spec.behaviour,
                "--log-level", "warning"]  # fmt: skip

    async def start(self, bootstrap: list[str], *, isolated: bool = False) -> None:
        """Start the process (from the same data dir as before) and wait for its ready
        line; LaunchError if it exits or says nothing within STARTUP_S."""
        # A run cancelled already (Ctrl-C, SIGTERM) starts no process: the fork
        # below comes before any other checkpoint.
        await trio.lowlevel.checkpoint_if_cancelled()
        if self.running:
            raise LaunchError(f"node {self.name} is running already")
        config = self.write_config(bootstrap, isolated=isolated)
        if self._log is None:
            self._log = self.log_file.open("ab")
        self._log.write(f"--- start {self.starts + 1} at {time.time():.3f}\n".encode())
        self._log.flush()
        self.status = "starting"
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            self.command(config),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._log,
            start_new_session=True,
            preexec_fn=_die_with_parent,
            env=env,
        )
        self.starts += 1
        stdout = self.proc.stdout
        assert stdout is not None
        line = b""
        with trio.move_on_after(STARTUP_S):
            line = await trio.to_thread.run_sync(  # type: ignore[call-arg]
                stdout.readline, abandon_on_cancel=True
            )
        try:
            ready = json.loads(line)
            assert ready.get("event") == "ready"
        except (ValueError, AssertionError, AttributeError):
            self.kill()
            raise LaunchError(
                f"node {self.name} did not start: {self.stderr_tail() or 'no ready line'}"
            ) from None
        self.ready = ready
        try:  # the token the node made at its first start, in its data dir
            token = read_token(token_path(self.data_dir))
        except TokenError as exc:
            self.kill()
            raise LaunchError(f"node {self.name}: {exc}") from None
        self.api = ApiClient(f"http://{self.ip}:{ready['api_port']}", token=token, timeout=5.0)
        self.status = "isolated" if isolated else "up"

    async def rejoin(self, addrs: list[str]) -> None:
        """End an isolation: the running process dials `addrs` (control API, POST
        /v1/peers) and keeps them as bootstrap peers. No restart: stopping and
        starting a node takes seconds (imports, a graceful close), which would stretch
        the cut well past the scenario's for_s. LaunchError if the node cannot be
        asked or dials none of them."""
        if self.api is None or not self.running:
            raise LaunchError(f"node {self.name} is not running: cannot rejoin")
        try:
            answer = await trio.to_thread.run_sync(self.api.connect_peers, addrs)
        except ApiError as exc:
            raise LaunchError(f"node {self.name} did not rejoin: {exc}") from None
        failed = answer.get("failed") or {}
        if addrs and len(failed) == len(addrs):
            raise LaunchError(f"node {self.name} reached none of its peers: {failed}")
        self.status = "up"

    @property
    def addr(self) -> str:
        """The node's full multiaddr: where its process listens, or, while it is down,
        its fixed port (where it will come back)."""
        ready = str(self.ready.get("addr", ""))
        peer = ready.rsplit("/p2p/", 1)[-1]
        if self.running and ready:
            return ready  # a node rejoined after an isolation keeps its fresh port
        return f"/ip4/{self.ip}/tcp/{self.port}/p2p/{peer}"

    def stderr_tail(self, lines: int = 3) -> str:
        try:
            text = self.log_file.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        tail = [t for t in text if t and not t.startswith("--- start")][-lines:]
        return " | ".join(t[-200:] for t in tail)

    def _signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)

    def kill(self) -> None:
        """SIGKILL, no goodbye (a crash); reaped at once."""
        self._signal(signal.SIGKILL)
        if self.proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=10)
            self._close_pipe()
        self.status = "down"

    def freeze(self) -> None:
        self._signal(signal.SIGSTOP)
        self.status = "frozen"

    def thaw(self) -> None:
        self._signal(signal.SIGCONT)
        self.status = "up"

    async def stop(self) -> None:
        """SIGTERM (after SIGCONT, should it be frozen); SIGKILL after STOP_GRACE_S."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self._signal(signal.SIGCONT)
            self._signal(signal.SIGTERM)
            deadline = trio.current_time() + STOP_GRACE_S
            while self.proc.poll() is None and trio.current_time() < deadline:
                await trio.sleep(0.05)
        if self.proc.poll() is None:
            self.kill()
        self._close_pipe()
        self.status = "stopped"

    def force_stop(self) -> None:
        """Synchronous last resort (failure paths, Ctrl-C): SIGKILL if still there."""
        if self.proc is not None and self.proc.poll() is None:
            self._signal(signal.SIGCONT)
            self.kill()
        self._close_pipe()
        if self._log is not None:
            self._log.close()
            self._log = None

    def _close_pipe(self) -> None:
        if self.proc is not None and self.proc.stdout is not None:
            with contextlib.suppress(OSError):
                self.proc.stdout.close()
