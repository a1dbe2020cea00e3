"""`p2p-market bench frames`: what one gossip frame costs each node, under several
transport variants in one run (issue 15).

Each variant starts its own N node processes (bench/net.py's network, batching off,
so that every order is one frame and frames are what is counted), measures their
idle CPU, then publishes a fixed rate of orders for a fixed time and reads every
node's CPU: `cpu_ms_per_frame_per_node` is the nodes' CPU over the step divided by
the frames published and by N, and `..._above_idle` the same less the idle cost.
The variants run one after the other on the same machine in the same invocation,
so their ratio is the figure to read; the first variant is the baseline of the
ratios.

A variant is a set of `[node]` config keys (mesh degree, muxer, gossip protocol)
and of py-libp2p patches left out (net/libp2p_patches.py): `before` is the
transport as it was before this work, `after` the node's defaults now.

With `--profile DIR`, py-spy samples one node that does not publish (a pure
receiver and forwarder: its CPU is the gossip path) through each variant's step,
and the top functions by own time and by time including callees are reported
(`py-spy` must be installed: it is a dev dependency). py-spy runs outside the
process, but its samples still cost the sampled node a little: the CPU figures of a
profiled run are for reading with its profile, not for comparing with another run.

Speed is reported, never asserted (the CI test runs a tiny size for the fields)."""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import trio

from p2p_market.bench.net import BenchFailed, Settings, cpu_count, network, run_step
from p2p_market.bench.net_agent import TRANSPORT_FILE
from p2p_market.localnet.collect import fetch_stats
from p2p_market.net.libp2p_speedups import SPEEDUPS

PROFILE_RATE_HZ: Final = 250
TOP: Final = 15


@dataclass(frozen=True)
class Variant:
    name: str
    node_keys: dict[str, Any] = field(default_factory=dict)
    """`[node]` keys on top of the defaults."""
    without_patches: tuple[str, ...] = ()
    """py-libp2p patches (net/libp2p_patches.py) the nodes run without."""
    why: str = ""

    def agent_args(self) -> tuple[str, ...]:
        return tuple(a for p in self.without_patches for a in ("--without-patch", p))


ALL_PATCHES: Final = tuple(SPEEDUPS)

VARIANTS: Final[dict[str, Variant]] = {
    v.name: v
    for v in (
        Variant(
            "before",
            {"mesh_degree": 6},
            without_patches=ALL_PATCHES,
            why="the transport before issue 15: mesh degree 6, py-libp2p unpatched",
        ),
        Variant("after", why="the node's defaults"),
        Variant(
            "unpatched",
            without_patches=ALL_PATCHES,
            why="the node's defaults without the py-libp2p patches",
        ),
        Variant("no-pubsub-read", without_patches=("pubsub-read",), why="all but pubsub-read"),
        Variant("no-yamux-window", without_patches=("yamux-window",), why="all but yamux-window"),
        Variant(
            "no-sender-record", without_patches=("sender-record",), why="all but sender-record"
        ),
        Variant("no-seen-first", without_patches=("seen-first",), why="all but seen-first"),
        Variant("d3", {"mesh_degree": 3}, why="mesh degree 3"),
        Variant("d4", {"mesh_degree": 4}, why="mesh degree 4"),
        Variant("d6", {"mesh_degree": 6}, why="mesh degree 6 (GossipSub's default)"),
        Variant("mplex", {"muxer": "mplex"}, why="mplex instead of yamux"),
        Variant("idontwant", {"gossip_idontwant": True}, why="GossipSub v1.2 IDONTWANT"),
    )
}


def variant(name: str) -> Variant:
    try:
        return VARIANTS[name]
    except KeyError:
        raise ValueError(f"unknown variant {name!r}; known: {', '.join(VARIANTS)}") from None


@dataclass(frozen=True)
class FrameSettings:
    nodes: int = 10
    publishers: int = 3
    rate: float = 8.0
    """Orders (= frames) a second in all: well inside what every variant carries."""
    seconds: float = 15.0
    variants: tuple[str, ...] = ("after",)
    profile_dir: Path | None = None

    def check(self) -> None:
        if not 2 <= self.nodes <= 32:
            raise ValueError("--nodes must be between 2 and 32")
        if not 1 <= self.publishers < self.nodes:
            raise ValueError("--publishers must be between 1 and --nodes - 1")
        if not 0.5 <= self.rate <= 200:
            raise ValueError("--rate must be between 0.5 and 200")
        if not 2 <= self.seconds <= 300:
            raise ValueError("--seconds must be between 2 and 300")
        if not self.variants:
            raise ValueError("--variants names none")
        for name in self.variants:
            variant(name)
        if self.profile_dir is not None and py_spy() is None:
            raise ValueError("--profile needs py-spy on PATH (pip install py-spy)")


def py_spy() -> str | None:
    """py-spy on PATH, or beside this Python (a virtualenv not on PATH)."""
    beside = Path(sys.executable).parent / "py-spy"
    return shutil.which("py-spy") or (str(beside) if beside.exists() else None)


def _net_settings(s: FrameSettings) -> Settings:
    return Settings(nodes=s.nodes, publishers=s.publishers, step_s=s.seconds)


async def _profiled_step(
    net: Any, s: FrameSettings, out: Path | None, progress: Callable[[str], None]
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The measured step; with `out`, py-spy samples the first non-publisher."""
    if out is None:
        return await run_step(net, s.rate, s.seconds, _net_settings(s)), None
    target = net.nodes[0]
    assert target not in net.publishers
    seconds = int(s.seconds + 1)
    cmd = [str(py_spy()), "record", "--pid", str(target.pid), "--duration", str(seconds),
           "--rate", str(PROFILE_RATE_HZ), "--format", "raw", "--gil",
           "--output", str(out)]  # fmt: skip
    row: dict[str, Any] = {}

    async def step() -> None:
        row.update(await run_step(net, s.rate, s.seconds, _net_settings(s)))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(step)
        # run_step drains and announces the step LEAD_MS ahead: start sampling then
        await trio.sleep(1.0)
        result = await trio.run_process(cmd, capture_stdout=True, capture_stderr=True, check=False)
    if result.returncode != 0 or not out.exists():
        progress(f"py-spy failed: {result.stderr.decode(errors='replace').strip()[:200]}")
        return row, None
    return row, summarize_profile(out.read_text())


def _frame_label(frame: str) -> str:
    """`fn (path/to/site-packages/libp2p/x.py:12)` -> `fn (libp2p/x.py)`."""
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    path = where.rsplit(":", 1)[0]
    for marker in ("site-packages/", "lib/python3.11/", "/p2p_market/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            if marker == "/p2p_market/":
                path = "p2p_market/" + path
            break
    return f"{name} ({path})"


def summarize_profile(raw: str, top: int = TOP) -> dict[str, Any]:
    """py-spy's collapsed stacks -> the functions with the most samples, on their
    own (the function was running) and with callees (it was on the stack)."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    by_package: Counter[str] = Counter()
    samples = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [
            _frame_label(f)
            for f in stack.split(";")
            if f and not f.startswith(("process ", "thread ("))
        ]
        if not frames:
            continue
        samples += count
        own[frames[-1]] += count
        for label in set(frames):
            total[label] += count
        by_package[_package(frames[-1])] += count

    def pct(c: Counter[str]) -> list[str]:
        return [f"{100 * n / samples:5.1f}% {label}" for label, n in c.most_common(top)]

    return {
        "samples": samples,
        "own": pct(own),
        "with_callees": pct(total),
        "own_by_package": pct(by_package),
    }


def _package(label: str) -> str:
    """The top-level package (or stdlib module) a frame's code is in."""
    where = label.rpartition(" (")[2].rstrip(")")
    head = where.split("/", 1)[0]
    return head.removesuffix(".py") or where


async def _run_variant(
    v: Variant, s: FrameSettings, run_dir: Path, say: Callable[[str], None]
) -> dict[str, Any]:
    async with network(
        _net_settings(s),
        run_dir,
        False,
        say,
        name=f"{len(list(run_dir.iterdir()))}-{v.name}",
        node_keys=v.node_keys,
        agent_args=v.agent_args(),
    ) as net:
        out = None if s.profile_dir is None else s.profile_dir / f"{v.name}.raw"
        row, profile = await _profiled_step(net, s, out, say)
        first = net.nodes[0]
        transport_file = first.steps / TRANSPORT_FILE
        transport = json.loads(transport_file.read_text()) if transport_file.exists() else {}
        stats = await trio.to_thread.run_sync(fetch_stats, first.api) if first.api else None
    entry = {
        "variant": v.name,
        "why": v.why,
        "node_keys": v.node_keys,
        "without_patches": list(v.without_patches),
        "patches_installed": transport.get("patches"),
        "muxer": transport.get("muxer"),
        "mesh_degree": ((stats or {}).get("gossip") or {}).get("mesh_degree"),
        "idle_cpu_ms_per_s_per_node": round(net.idle_ms_per_s, 1),
        **{k: row.get(k) for k in _ROW_KEYS},
    }
    if profile is not None:
        entry["profile"] = profile
    say(
        f"variant {v.name}: {row.get('cpu_ms_per_frame_per_node')} ms/frame/node "
        f"({row.get('cpu_ms_per_frame_per_node_above_idle')} above idle), "
        f"delivered {row.get('delivered')}, p99 {row.get('p99_ms')} ms"
    )
    return entry


async def frames_bench(
    s: FrameSettings, progress: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """Each variant's network in turn; one row per variant (with `error` instead
    of figures for a variant whose network could not be run)."""
    s.check()
    say = progress or (lambda _s: None)
    started = time.time()
    load_before = os.getloadavg()
    run_dir = Path(tempfile.mkdtemp(prefix="bench-frames-"))
    rows: list[dict[str, Any]] = []
    try:
        for name in s.variants:
            v = variant(name)
            say(f"variant {name}: {v.why}")
            try:
                rows.append(await _run_variant(v, s, run_dir, say))
            except BenchFailed as exc:  # one variant's network failed: say so, go on
                say(f"variant {name}: failed: {exc}")
                rows.append({"variant": name, "why": v.why, "error": str(exc)})
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    base = rows[0] if rows else {}  # the baseline, even if it failed (then no ratios)
    for row in rows:
        for key in ("cpu_ms_per_frame_per_node", "cpu_ms_per_frame_per_node_above_idle"):
            b, x = base.get(key), row.get(key)
            row[key.replace("cpu_ms", "ratio_cpu", 1)] = (
                round(x / b, 3) if isinstance(b, int | float) and b and x is not None else None
            )
    return {
        "bench": "frames",
        "nodes": s.nodes,
        "publishers": s.publishers,
        "rate": s.rate,
        "seconds": s.seconds,
        "baseline": rows[0]["variant"] if rows else None,
        "variants": rows,
        "cpus": cpu_count(),
        "load_avg_before": [round(x, 2) for x in load_before],
        "load_avg_after": [round(x, 2) for x in os.getloadavg()],
        "wall_s": round(time.time() - started, 1),
    }


_ROW_KEYS: Final = (
    "cpu_ms_per_frame_per_node",
    "cpu_ms_per_frame_per_node_above_idle",
    "frames_per_s",
    "delivered",
    "passed",
    "p50_ms",
    "p99_ms",
    "nodes_cpu_pct_of_machine",
    "machine_busy_pct",
)

__all__ = ["BenchFailed", "FrameSettings", "Variant", "frames_bench", "summarize_profile"]
