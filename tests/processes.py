"""`p2p-market` as real processes, for tests: one-shot commands and long-running
nodes with their JSON ready line. Every process has a timeout and is stopped after."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

CLI = [sys.executable, "-m", "p2p_market.cli"]
CIRCUITS = Path(__file__).resolve().parents[1] / "protocols" / "circuits"
STARTUP_S = 60
ANY_PORT = 'listen = ["/ip4/127.0.0.1/tcp/0"]\n'
"""A config line for any free port: not the default 4701, since tests run nodes side
by side (one per test, several per test)."""
ANY_LISTEN = ("--listen", "/ip4/127.0.0.1/tcp/0")


def cli(
    *args: str, timeout: float = 120, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """One `p2p-market` command, to completion (killed after `timeout` seconds), in
    this process's environment without any API token of the caller's, plus `env`."""
    environ = {k: v for k, v in os.environ.items() if k != "P2P_MARKET_API_TOKEN"}
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, timeout=timeout, env=environ | (env or {})
    )


Running = tuple[subprocess.Popen[str], dict[str, Any]]


def readline(proc: subprocess.Popen[str], timeout: float) -> str:
    """The process's next stdout line, or AssertionError after `timeout` seconds."""
    assert proc.stdout is not None
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(proc.stdout.readline)
        try:
            return future.result(timeout=timeout)
        except FutureTimeout:
            proc.kill()  # unblocks the reader
            raise AssertionError(f"no line from {proc.args!r} in {timeout} s") from None


@contextmanager
def process(
    *args: str, prefix: tuple[str, ...] = (), env: dict[str, str] | None = None
) -> Iterator[Running]:
    """A long-running `p2p-market` process and its JSON ready line; stopped after
    (SIGTERM, then SIGKILL). Its stderr goes to a file: a full pipe would block it.
    `prefix` runs it under another command (`ip netns exec NS`); `env`: variables
    added to this process's environment."""
    with tempfile.TemporaryFile() as logs:
        proc = subprocess.Popen(
            [*prefix, *CLI, *args],
            stdout=subprocess.PIPE,
            stderr=logs,
            text=True,
            env=None if env is None else os.environ | env,
        )
        try:
            line = readline(proc, STARTUP_S)
            if not line:
                proc.wait(timeout=10)
                logs.seek(0)
                raise AssertionError(f"no ready line; stderr: {logs.read().decode()}")
            ready = json.loads(line)
            assert ready["event"] == "ready"
            yield proc, ready
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=10)
            if proc.stdout is not None:
                proc.stdout.close()


class Made(NamedTuple):
    """A market `market create` made (conftest.made_market)."""

    output: str
    """What the command printed (stdout and stderr)."""
    out: Path
    """Its --out folder: the descriptor (*.toml) and artifacts/."""
