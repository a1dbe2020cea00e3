"""The package's shape, checked on the source's import statements (lazy imports
inside functions and `if TYPE_CHECKING:` blocks included, so neither can hide a
dependency): no module imports, directly or through others, a module that imports
it back, and each package imports only from the layers below it (ARCHITECTURE.md).
The core's own purity is tests/core/test_layering.py."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import p2p_market

ROOT = Path(p2p_market.__file__).parent

LAYERS: list[set[str]] = [
    {"core"},
    {"markets", "net", "proving"},
    {"node"},
    {"roles"},
    {"sdk", "sdk_http", "dst", "localnet", "fuzz"},
    {"bench"},
    {"cli"},
]
"""Bottom first. A package may import its own modules and those of lower layers."""

LAYER_OF = {pkg: i for i, layer in enumerate(LAYERS) for pkg in layer}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in ROOT.rglob("*.py")}


def imports_of(path: Path, known: set[str]) -> set[str]:
    """The package's modules `path` imports (`from a.b import c` counts as a.b.c when
    that is a module, else as a.b)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names = [
                f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in known else node.module
                for a in node.names
            ]
        found.update(n for n in names if n in known)
    return found


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {name: imports_of(path, known) - {name} for name, path in mods.items()}


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(g[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def package_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_no_module_imports_itself_through_others() -> None:
    assert cycles(graph()) == []


def test_the_cycle_check_sees_a_circle() -> None:
    g = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(g) == [["a", "b", "c"]]


def test_every_package_has_a_layer() -> None:
    packages = {p.name for p in ROOT.iterdir() if (p / "__init__.py").exists()}
    top_modules = {p.stem for p in ROOT.glob("*.py") if p.stem != "__init__"}
    assert packages | top_modules == set(LAYER_OF)


def upward_imports(g: dict[str, set[str]]) -> list[str]:
    upward = []
    for module, deps in sorted(g.items()):
        here = package_of(module)
        if here not in LAYER_OF:
            continue  # p2p_market/__init__.py: the public names, imported lazily
        for dep in sorted(deps):
            there = package_of(dep)
            if there != here and LAYER_OF.get(there, len(LAYERS)) >= LAYER_OF[here]:
                upward.append(f"{module} imports {dep}")
    return upward


def test_packages_import_only_from_below() -> None:
    assert upward_imports(graph()) == []


def test_the_layer_check_sees_an_upward_import() -> None:
    g = {
        "p2p_market.core.state": {"p2p_market.core.book"},
        "p2p_market.node.runtime": {"p2p_market.core.state", "p2p_market.roles.prover"},
        "p2p_market.roles.prover": {"p2p_market.node.runtime", "p2p_market.dst.run"},
    }
    assert upward_imports(g) == [
        "p2p_market.node.runtime imports p2p_market.roles.prover",
        "p2p_market.roles.prover imports p2p_market.dst.run",
    ]


def test_choosing_a_proof_backend_imports_none_until_a_market_needs_it() -> None:
    code = (
        "import sys\n"
        "from p2p_market.proving import backend_for\n"
        "from p2p_market.markets.devnet import default_market\n"
        "loaded = lambda: sorted(m for m in sys.modules if m.startswith('p2p_market.proving.'))\n"
        "print(loaded())\n"
        "backend_for(default_market())\n"
        "print(loaded())\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert out[0] == "['p2p_market.proving.backend', 'p2p_market.proving.registry']"
    assert "'p2p_market.proving.pow'" in out[1]
    assert "'p2p_market.proving.external'" not in out[1]
