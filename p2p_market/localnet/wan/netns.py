"""The namespaces and the switch of one `simulate --netns` run: a namespace per
node, one TAP device from the switch in each (its own address on one /24), and a
control TAP in the launcher's namespace so that the launcher reaches every node's
control API (through the switch, on a port that is never shaped nor cut).

Clean-up, whatever ends the run: `close()` (called from the runner's `finally`)
ends the switch, which takes every TAP device with it, and deletes the namespaces;
the switch also dies with the launcher (PR_SET_PDEATHSIG), and a later run deletes
the namespaces a dead launcher left (`sweep_stale`, by the pid in their name).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from typing import IO, Final

from p2p_market.localnet.wan.links import LinkShape

PREFIX: Final = "p2pw"
SUBNET_BASE: Final = "10.233"
NODE_PORT: Final = 4701
"""Every node has its own address, so all can listen on the default port."""
_NS_RE: Final = re.compile(rf"^{PREFIX}(\d+)-")
_PR_SET_PDEATHSIG: Final = 1


class NetnsError(RuntimeError):
    """Namespaces cannot be made or driven here; one line."""


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=20)


def _must(*args: str) -> None:
    done = _ip(*args)
    if done.returncode != 0:
        raise NetnsError(f"ip {' '.join(args)}: {done.stderr.strip() or 'failed'}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def namespaces() -> list[str]:
    done = _ip("netns", "list")
    return [line.split()[0] for line in done.stdout.splitlines() if line.strip()]


def sweep_stale() -> list[str]:
    """Delete the namespaces of runs whose launcher is gone (killed with SIGKILL)."""
    gone = []
    for ns in namespaces():
        m = _NS_RE.match(ns)
        if m and not _alive(int(m.group(1))):
            _ip("netns", "del", ns)
            gone.append(ns)
    return gone


def preflight() -> None:
    """NetnsError (one line) unless this process can make namespaces and TAP devices."""
    if not sys.platform.startswith("linux"):
        raise NetnsError("--netns needs Linux network namespaces")
    if os.geteuid() != 0:
        raise NetnsError("--netns needs root (network namespaces and TAP devices)")
    if shutil.which("ip") is None:
        raise NetnsError("--netns needs iproute2's `ip` command, not found on PATH")
    try:
        os.close(os.open("/dev/net/tun", os.O_RDWR))
    except OSError as exc:
        raise NetnsError(f"--netns needs /dev/net/tun: {exc.strerror}") from None
    probe = f"{PREFIX}{os.getpid()}-probe"
    made = _ip("netns", "add", probe)
    if made.returncode != 0:
        raise NetnsError(f"cannot create a network namespace: {made.stderr.strip()}")
    _ip("netns", "del", probe)


def _free_subnet() -> int:
    used = _ip("-4", "-o", "addr").stdout + _ip("-4", "route").stdout
    start = os.getpid() % 250
    for k in range(250):
        third = (start + k) % 250 + 1
        if f"{SUBNET_BASE}.{third}." not in used:
            return third
    raise NetnsError(f"no free /24 in {SUBNET_BASE}.0.0/16")


def _die_with_parent() -> None:  # in the child, between fork and exec
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


@dataclass(frozen=True, slots=True)
class Place:
    """Where a node lives: its namespace, its address."""

    netns: str
    ip: str

    @property
    def prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.netns]


class WanNetwork:
    """The namespaces, TAP devices and switch for the given node names."""

    def __init__(self, names: list[str], shape: LinkShape, seed: int) -> None:
        self.names = list(names)
        self.shape = shape
        self.seed = seed
        self.pid = os.getpid()
        self.subnet = 0
        self.places: dict[str, Place] = {}
        self.host_ip = ""
        self._taps: dict[str, str] = {}
        self._made: list[str] = []
        self._switch: subprocess.Popen[str] | None = None
        self._out: IO[str] | None = None
        tag = self.pid % 100_000
        self._host_tap = f"pw{tag}h"
        for i, name in enumerate(self.names):
            self._taps[name] = f"pw{tag}n{i}"

    def open(self) -> None:
        """Make everything; NetnsError (after undoing what was made) if a step fails."""
        try:
            self._open()
        except BaseException:
            self.close()
            raise

    def _open(self) -> None:
        sweep_stale()
        self.subnet = _free_subnet()
        net = f"{SUBNET_BASE}.{self.subnet}"
        self.host_ip = f"{net}.254"
        for i, name in enumerate(self.names):
            ns = f"{PREFIX}{self.pid}-{i}"
            _must("netns", "add", ns)
            self._made.append(ns)
            self.places[name] = Place(ns, f"{net}.{i + 1}")
        s = self.shape
        cmd = [sys.executable, "-m", "p2p_market.localnet.wan.switch", "--host", self._host_tap,
               "--delay-us", str(s.delay_us), "--jitter-us", str(s.jitter_us),
               "--loss-ppm", str(s.loss_ppm), "--seed", str(self.seed)]  # fmt: skip
        for name in self.names:
            cmd += ["--port", self._taps[name]]
        self._switch = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,  # a Ctrl-C reaches the launcher, which ends it
            preexec_fn=_die_with_parent,
        )
        assert self._switch.stdout is not None
        self._out = self._switch.stdout
        ready = self._read()
        if ready.get("event") != "ready":
            raise NetnsError(f"the switch did not start: {ready.get('error', ready)}")
        _must("addr", "add", f"{self.host_ip}/24", "dev", self._host_tap)
        _must("link", "set", self._host_tap, "up")
        for name in self.names:
            tap, place = self._taps[name], self.places[name]
            _must("link", "set", tap, "netns", place.netns)
            _must("-n", place.netns, "addr", "add", f"{place.ip}/24", "dev", tap)
            _must("-n", place.netns, "link", "set", tap, "up")
            _must("-n", place.netns, "link", "set", "lo", "up")

    def _read(self) -> dict[str, object]:
        assert self._out is not None
        line = self._out.readline()
        if not line:
            raise NetnsError("the switch process ended")
        try:
            answer = json.loads(line)
        except ValueError:
            raise NetnsError(f"the switch said {line.strip()[:200]!r}") from None
        if not isinstance(answer, dict):
            raise NetnsError(f"the switch said {line.strip()[:200]!r}")
        return answer

    def command(self, cmd: str, names: list[str] | None = None) -> dict[str, object]:
        """Send one command to the switch and wait for its answer (a few ms)."""
        if self._switch is None or self._switch.stdin is None or self._switch.poll() is not None:
            raise NetnsError("the switch is not running")
        ports = [self._taps[n] for n in names or []]
        try:
            self._switch.stdin.write(json.dumps({"cmd": cmd, "ports": ports}) + "\n")
            self._switch.stdin.flush()
        except OSError as exc:
            raise NetnsError(f"the switch is not listening: {exc}") from None
        answer = self._read()
        if not answer.get("ok"):
            raise NetnsError(f"the switch refused {cmd}: {answer.get('error')}")
        return answer

    def cut(self, name: str) -> None:
        self.command("cut", [name])

    def heal(self, name: str) -> None:
        self.command("heal", [name])

    def stats(self) -> dict[str, object]:
        return {k: v for k, v in self.command("stats").items() if k != "ok"}

    def close(self) -> None:
        """Idempotent: end the switch (its TAP devices go with it), delete the namespaces."""
        sw, self._switch = self._switch, None
        if sw is not None:
            with contextlib.suppress(OSError):
                if sw.stdin is not None:
                    sw.stdin.close()
            try:
                sw.wait(timeout=5)
            except subprocess.TimeoutExpired:
                sw.kill()
                sw.wait(timeout=5)
            if sw.stdout is not None:
                sw.stdout.close()
        for ns in self._made:
            _ip("netns", "del", ns)
        self._made = []

    def __enter__(self) -> WanNetwork:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
