"""The core must stay pure: no I/O, no clock, no randomness, no concurrency runtime,
and nothing from the rest of the package (the shell depends on the core, never the
reverse). Checked on the source's import statements, so it cannot be fooled by
lazy imports inside functions."""

from __future__ import annotations

import ast
from pathlib import Path

import p2p_market.core

CORE = Path(p2p_market.core.__file__).parent
FORBIDDEN = {
    "trio",
    "libp2p",
    "socket",
    "time",
    "random",
    "asyncio",
    "threading",
    "subprocess",
    "sqlite3",
    "os",
    "multiprocessing",
    "datetime",
    "secrets",
    "select",
    "selectors",
    "urllib",
    "http",
    "io",
    "pathlib",
    "shutil",
    "signal",
    "uuid",
    "tempfile",
    "logging",
}


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                found.add("p2p_market.core")  # relative import stays inside core
            elif node.module:
                found.add(node.module)
    return found


def test_core_sources_exist() -> None:
    assert len(list(CORE.glob("*.py"))) >= 8


def test_core_imports_no_io_clock_randomness_or_shell() -> None:
    offenders = []
    for path in sorted(CORE.glob("*.py")):
        for module in imported_modules(path):
            top = module.split(".")[0]
            outside_core = top == "p2p_market" and not module.startswith("p2p_market.core")
            if top in FORBIDDEN or outside_core:
                offenders.append(f"{path.name}: {module}")
    assert offenders == []


def test_the_checker_catches_a_forbidden_import(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import time\nfrom trio import sleep\nfrom p2p_market.node import x\n")
    assert imported_modules(bad) == {"time", "trio", "p2p_market.node"}
