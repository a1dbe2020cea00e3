"""docs/circuits.md followed as written: every `$ ` command of its console blocks,
in order, as its own process through bash, in a directory laid out like the
repository's root (.venv, node_modules, protocols, keys linked in), so the page
cannot drift from the CLI. Only what a reader substitutes is substituted: the
market id and the first node's address the earlier commands printed (MARKET_ID,
FIRST_ADDR), and the two ports, for free ones (tests run side by side). The two
`run` commands keep running (a terminal each in the document) until the end."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path

import pytest

from tests.processes import readline

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "circuits.md"
LINKED = (".venv", "node_modules", "package.json", "package-lock.json", "protocols", "keys")
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def commands(text: str) -> list[tuple[str, list[str]]]:
    """(command, the output lines the document shows for it), from every ```console
    block, a here-document's lines being part of its command."""
    found: list[tuple[str, list[str]]] = []
    for block in re.findall(r"```console\n(.*?)```", text, re.S):
        lines = block.splitlines()
        i = 0
        while i < len(lines):
            line = lines[i]
            i += 1
            if not line.startswith("$ "):
                found[-1][1].append(line)
                continue
            command = line[2:]
            heredoc = re.search(r"<<'(\w+)'", command)
            if heredoc:
                end = lines.index(heredoc.group(1), i)
                command = "\n".join([command, *lines[i : end + 1]])
                i = end + 1
            found.append((command, []))
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


@contextmanager
def running(command: str, cwd: Path) -> Iterator[dict[str, object]]:
    """A command that keeps running (a node): its JSON ready line; stopped after."""
    with open(cwd / f"stderr-{free_port()}.log", "w+") as logs:
        proc = subprocess.Popen(
            ["bash", "-c", command], cwd=cwd, stdout=subprocess.PIPE, stderr=logs, text=True,
            start_new_session=True,
        )  # fmt: skip
        try:
            line = readline(proc, 120)
            if not line:
                logs.seek(0)
                raise AssertionError(f"{command}: no ready line; stderr: {logs.read()}")
            ready: dict[str, object] = json.loads(line)
            assert ready["event"] == "ready"
            logs.seek(0)
            ready["stderr"] = logs.read()
            yield ready
        finally:
            with_group(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                with_group(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
            assert proc.stdout is not None
            proc.stdout.close()


def with_group(pid: int, sig: int) -> None:
    with suppress(ProcessLookupError):
        os.killpg(pid, sig)


@pytest.mark.slow
def test_the_walkthrough_as_written(tmp_path: Path) -> None:
    for name in LINKED:
        (tmp_path / name).symlink_to(REPO / name)
    steps = commands(DOC.read_text())
    assert len(steps) == 10, [c for c, _ in steps]
    ports = {"4001": str(free_port()), "4002": str(free_port())}
    values: dict[str, str] = {}
    printed: list[str] = []
    with ExitStack() as stack:
        for command, shown in steps:
            for name, value in values.items():
                command = command.replace(name, value)
            for port, free in ports.items():
                # the documented port only: an address printed earlier may already
                # hold a free port that starts with the same digits (40011 once)
                command = re.sub(rf"/tcp/{port}(?!\d)", f"/tcp/{free}", command)
            assert "MARKET_ID" not in command and "FIRST_ADDR" not in command, command
            if " run " in command.split("\n")[0]:
                ready = stack.enter_context(running(command, tmp_path))
                if "FIRST_ADDR" not in values:
                    values["FIRST_ADDR"] = str(ready["addr"])
                else:  # the prover: it fetched the market before it started
                    assert "fetched market" in str(ready["stderr"]), ready["stderr"]
                continue
            done = subprocess.run(
                ["bash", "-c", command], cwd=tmp_path, capture_output=True, text=True,
                timeout=300,
            )  # fmt: skip
            out = ANSI.sub("", done.stdout + done.stderr)
            assert done.returncode == 0, f"{command}\n{out}"
            printed.append(out)
            m = re.search(r"^market id:\s+([0-9a-f]{64})$", out, re.M)
            if m:
                values["MARKET_ID"] = m.group(1)
            # Lines the document shows that do not depend on the run are printed.
            for line in shown:
                if not re.search(r"[0-9a-f]{16}|…|\d\.\ds| bytes", line):
                    assert line in out.splitlines(), (command, line, out)
    bought, verified = printed[-5], printed[-1]
    assert "fetched market multiplier-groth16-devnet-INSECURE" in bought
    prover_line = next(ln for ln in bought.splitlines() if ln.startswith("prover:"))
    assert "prover-2" in prover_line  # the prover that joined by id proved it
    digest = printed[-4].split()[0]
    assert f"vkey={digest}" in printed[-3]  # the key is the one the market pins
    assert "snarkJS: OK!" in verified
