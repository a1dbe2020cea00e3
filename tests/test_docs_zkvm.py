"""docs/zkvm.md's worked template, followed as written: the `market create`
command (with a stand-in host program's path) and the `[prover]` section are
accepted by the real CLI and config loader, so the page cannot drift from them."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

from p2p_market.node.config import parse_config
from p2p_market.roles.wiring import plan_from_config

DOC = Path(__file__).resolve().parents[1] / "docs" / "zkvm.md"


def test_the_documented_market_and_prover_config_are_accepted(tmp_path: Path) -> None:
    text = DOC.read_text()
    command = re.search(r"\$ (p2p-market market create .*?)\n\s*```", text, re.S)
    assert command is not None
    argv = shlex.split(command.group(1).replace("\\\n", " "))
    argv = [a.replace("3f2a…9c", "3f2a9c") for a in argv]
    out = subprocess.run(
        [sys.executable, "-m", "p2p_market.cli", *argv[1:]],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    descriptor = tmp_path / "markets" / "fib-riscv.toml"
    assert "{inputs}" in descriptor.read_text()
    section = re.search(r"```toml\n(\s*\[node\].*?)```", text, re.S)
    assert section is not None
    data = tomllib.loads(textwrap.dedent(section.group(1)))
    config = parse_config(data, tmp_path)
    _, plan = plan_from_config(config, tmp_path)
    assert plan.prover is not None and plan.prover.market.proof_system == "external"
