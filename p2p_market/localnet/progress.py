"""Live progress in the terminal (rich): phase, nodes up, asks by state, proofs/s,
gossip frames/s and CPU. Not a terminal (CI, a pipe): one plain line every few
seconds instead."""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

import trio
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:
    from p2p_market.localnet.rundata import RunData

STATES: Final = ("open", "assigned", "proven", "expired", "cancelled", "invalid_inputs")
PLAIN_EVERY_S: Final = 5.0
RATE_WINDOW_S: Final = 10.0


class Progress:
    def __init__(self, data: RunData, console: Console) -> None:
        self.data = data
        self.console = console

    # -- figures ----------------------------------------------------------------------
    def nodes_up(self) -> tuple[int, int]:
        nodes = self.data.nodes
        return sum(1 for n in nodes if n.running and n.status == "up"), len(nodes)

    def proofs_per_s(self) -> float:
        now = self.data.t0_ms + self.data.elapsed() * 1000
        recent = [t for t in self.data.asks.verified if now - t <= RATE_WINDOW_S * 1000]
        return len(recent) / RATE_WINDOW_S

    def frames_and_cpu(self) -> tuple[float, float]:
        """Network-wide gossip frames/s and CPU (% of one core) over the last samples."""
        samples = self.data.samples
        if not samples:
            return 0.0, 0.0
        last_t = samples[-1].t
        by_node: dict[str, list[tuple[float, int, float]]] = {}
        for s in samples:
            if last_t - s.t <= RATE_WINDOW_S:
                by_node.setdefault(s.node, []).append((s.t, s.frames, s.cpu))
        frames = cpu = 0.0
        for points in by_node.values():
            if len(points) >= 2 and points[-1][0] > points[0][0]:
                frames += max(0, points[-1][1] - points[0][1]) / (points[-1][0] - points[0][0])
            cpu += points[-1][2]
        return frames, cpu

    def consoles(self) -> list[tuple[str, str]]:
        """(node, console URL) of every running node."""
        nodes = [n for n in self.data.nodes if n.running]
        return [(n.name, url) for n in nodes if (url := n.console_url) is not None]

    def consoles_line(self) -> str:
        return "consoles: " + "  ".join(f"{name} {url}" for name, url in self.consoles())

    def line(self) -> str:
        up, total = self.nodes_up()
        states = self.data.asks.by_state()
        asks = " ".join(f"{s} {states[s]}" for s in STATES if states.get(s))
        frames, cpu = self.frames_and_cpu()
        return (
            f"{self.data.elapsed():6.1f}s {self.data.phase:<9} nodes {up}/{total}"
            f"  asks: {asks or 'none yet'}  proofs/s {self.proofs_per_s():.2f}"
            f"  frames/s {frames:.1f}  cpu {cpu:.0f}%"
        )

    def render(self) -> Group:
        d = self.data
        up, total = self.nodes_up()
        head = Text.assemble(
            ("simulate ", "bold"),
            (d.scenario.name, "bold cyan"),
            f"  {d.elapsed():.0f} s  phase ",
            (d.phase, "bold"),
            f"  nodes up {up}/{total}",
        )
        states = d.asks.by_state()
        asks = Table.grid(padding=(0, 2))
        for s in ("placed", *STATES):
            asks.add_column(s, justify="right")
        asks.add_row(*(Text(s, style="dim") for s in ("placed", *STATES)))
        asks.add_row(str(len(d.asks.asks)), *(str(states.get(s, 0)) for s in STATES))
        frames, cpu = self.frames_and_cpu()
        rates = Text(
            f"proofs/s {self.proofs_per_s():.2f}   gossip frames/s {frames:.1f}"
            f"   cpu {cpu:.0f}% (of one core, all nodes)"
        )
        nodes = Table.grid(padding=(0, 1))
        cells = []
        for n in d.nodes:
            style = {
                "up": "green",
                "starting": "yellow",
                "isolated": "magenta",
                "partitioned": "magenta",
            }.get(n.status, "red")
            cells.append(Text(f"{n.name}:{n.status}", style=style))
        for _ in range(min(6, len(cells))):
            nodes.add_column()
        for i in range(0, len(cells), 6):
            nodes.add_row(*cells[i : i + 6])
        faults = [
            Text(f"  {f['t_s']:.0f}s {f['kind']} {f['node']}: {f['event']}", style="magenta")
            for f in d.faults[-3:]
        ]
        links = Table.grid(padding=(0, 1))
        shown = self.consoles()
        for _ in range(min(2, len(shown))):
            links.add_column(style="dim")
            links.add_column()
        for i in range(0, len(shown), 2):
            links.add_row(*(cell for name, url in shown[i : i + 2] for cell in (name, url)))
        title = [Text("consoles (open in a browser while the run goes on):", style="dim")]
        return Group(head, asks, rates, nodes, *(title if shown else []), links, *faults)

    # -- the task ---------------------------------------------------------------------
    async def run(self) -> None:
        if not self.console.is_terminal:
            told = ""
            while True:
                await trio.sleep(PLAIN_EVERY_S)
                links = self.consoles_line()
                up, total = self.nodes_up()
                formed = up == total or self.data.phase != "starting"
                if links != told and formed:  # once all are up; again after a restart
                    self.console.print(links, markup=False, highlight=False)
                    told = links
                self.console.print(self.line(), markup=False, highlight=False)
        with Live(self.render(), console=self.console, refresh_per_second=2) as live:
            while True:
                await trio.sleep(0.5)
                live.update(self.render())
