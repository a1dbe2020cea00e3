"""One `p2p-market simulate` run: start the scenario's nodes as real processes,
bootstrap them into one network, let the requesters' workloads run, inject the
faults, let the market settle, compare every node's final state, stop everything,
and write the report.

Every task (progress, sampling, event tailing, faults, the phases) runs in one trio
nursery; whatever ends the run (the end, a failure, Ctrl-C or SIGTERM), the `finally`
stops every node process (SIGTERM, then SIGKILL), and the synchronous guard in
`simulate` kills any that would still be there.
"""

from __future__ import annotations

import contextlib
import json
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any, Final

import trio
from rich.console import Console

from p2p_market.localnet.catchup import caught_up, lacking
from p2p_market.localnet.checks import NodeFinal, check_agreement, hashes_agree
from p2p_market.localnet.collect import (
    Counters,
    EventTail,
    ProcessStats,
    Sample,
    fetch_book,
    fetch_check,
    fetch_stats,
    fetch_status,
)
from p2p_market.localnet.launcher import LaunchError, NodeProcess
from p2p_market.localnet.progress import Progress
from p2p_market.localnet.report import write_live_index
from p2p_market.localnet.rundata import RunData, wall_ms
from p2p_market.localnet.scenario import Fault, Scenario
from p2p_market.localnet.wan.links import LinkShape
from p2p_market.localnet.wan.netns import NetnsError, WanNetwork

FORM_TIMEOUT_S: Final = 60.0
SAMPLE_EVERY_S: Final = 2.0
TAIL_EVERY_S: Final = 0.5
AGREE_MARGIN_S: Final = 15.0
"""A node that missed gossip (frozen, cut off, a dropped frame) catches up at its next
periodic sync at the latest: the final comparison waits for one round of it
(the scenario's sync_every_s) and this much more."""
CATCH_UP_EVERY_S: Final = 2.0
MESH_S: Final = 1.5
"""One gossip heartbeat after the bids are seen: new peers join the mesh."""


class RunFailed(RuntimeError):
    """The network could not be set up; one line."""


class Interrupts:
    """SIGINT (Ctrl-C) and SIGTERM while `simulate` runs, from before the network is
    made until it is removed. The handler only notes the signal and wakes the run,
    which acts on it in trio's thread (Runner.run): the first ends the run (every node
    stopped, the report says interrupted), another one kills the nodes still stopping.

    The handler raises nothing, on purpose. Trio's own Ctrl-C handling (and Python's
    default) raises KeyboardInterrupt wherever the main thread happens to be, and
    where that is a fork handler (`subprocess.Popen` with a `preexec_fn`, as every
    node and the switch are started, runs the `os.register_at_fork` hooks, e.g.
    logging's) Python prints the exception and drops it ("Exception ignored in:
    <function _releaseLock>"): the signal was lost and the run went on to its end.
    Raised while the network is being removed, it would leave namespaces behind."""

    def __init__(self) -> None:
        self.signals: list[int] = []
        self.wake: Callable[[], None] | None = None
        """Set by Runner.run while trio runs: schedules its look at `signals`."""

    def handler(self, signum: int, frame: FrameType | None) -> None:
        self.signals.append(signum)
        if self.wake is not None:
            self.wake()

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        """Handle SIGINT and SIGTERM here (main thread), the previous handlers after."""
        previous = {s: signal.signal(s, self.handler) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)


class Runner:
    def __init__(
        self,
        scenario: Scenario,
        run_dir: Path,
        console: Console,
        network: WanNetwork | None = None,
        interrupts: Interrupts | None = None,
    ) -> None:
        self.scenario = scenario
        self.console = console
        self.network = network
        """Open already (simulate() opens and closes it), or None: all on 127.0.0.1."""
        places = network.places if network is not None else {}
        nodes = [
            NodeProcess(scenario, spec, run_dir, places.get(spec.name)) for spec in scenario.nodes
        ]
        self.data = RunData(scenario, run_dir, nodes, wall_ms())
        self.by_name = {n.name: n for n in nodes}
        self.tails = {n.name: EventTail(n.events_file) for n in nodes if n.spec.role == "requester"}
        self.counters = {n.name: Counters() for n in nodes}
        self.pstats = ProcessStats()
        self.progress = Progress(self.data, console)
        self._faults_left = len(scenario.faults)
        self._watches = 0  # catch-up watches begun; a newer one supersedes the others
        self.interrupts = interrupts
        """None: Ctrl-C is trio's KeyboardInterrupt (Runner.run in a caller's trio.run)."""
        self._scope = trio.CancelScope()
        self._acted = 0  # signals of `interrupts` acted on

    @property
    def nodes(self) -> list[NodeProcess]:
        return self.data.nodes

    # -- the run ----------------------------------------------------------------
    async def run(self) -> RunData:
        d = self.data
        if self.interrupts is not None:
            token = trio.lowlevel.current_trio_token()
            act = self._on_interrupt

            def wake() -> None:  # in the signal handler: no more than a wake-up
                with contextlib.suppress(trio.RunFinishedError):
                    token.run_sync_soon(act, idempotent=True)

            self.interrupts.wake = wake
            act()  # a signal before the run began
        try:
            with self._scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self.progress.run)
                    nursery.start_soon(self._tail_loop)
                    nursery.start_soon(self._sample_loop)
                    try:
                        await self._phases(nursery)
                    finally:
                        with trio.CancelScope(shield=True):
                            await self._stop_all()
                        nursery.cancel_scope.cancel()
        except BaseException as exc:
            if not _is_interrupt(exc):
                raise
            self._interrupted("Ctrl-C")
        finally:
            if self.interrupts is not None:
                self.interrupts.wake = None
            for n in self.nodes:  # whatever happened above: no process outlives the run
                n.force_stop()
            self._tail_once()
        return d

    def _interrupted(self, by: str) -> None:
        self.data.interrupted = True
        self.data.error = f"interrupted ({by}): every node was stopped"

    def _on_interrupt(self) -> None:
        """In trio's thread, after Interrupts.handler: the first signal cancels the run
        (its `finally` stops every node: SIGTERM, SIGKILL after the grace); one more
        while they stop kills them now."""
        assert self.interrupts is not None
        seen = self.interrupts.signals
        if len(seen) == self._acted:
            return
        if self._acted == 0:
            self._interrupted("Ctrl-C" if seen[0] == signal.SIGINT else "SIGTERM")
            self._scope.cancel()
        else:
            for n in self.nodes:
                if n.running:
                    n.kill()
        self._acted = len(seen)

    async def _phases(self, nursery: trio.Nursery) -> None:
        d = self.data
        s = self.scenario
        try:
            await self._start_network()
            await self._wait_formed()
        except (LaunchError, RunFailed) as exc:
            d.error = str(exc)
            return
        d.formed_ms = wall_ms()
        write_live_index(d)
        d.start_ms = wall_ms() + 500
        d.end_ms = d.start_ms + int(s.duration_s * 1000)
        d.phase = "workload"
        (d.run_dir / "go").write_text(json.dumps({"start_ms": d.start_ms}))
        for fault in s.faults:
            nursery.start_soon(self._fault, fault)
        await trio.sleep(max(0.0, (d.end_ms - wall_ms()) / 1000))
        d.phase = "settle"
        settle_end = wall_ms() + int(s.settle_s * 1000)
        while wall_ms() < settle_end and (self._faults_left or d.asks.unfinished(wall_ms())):
            await trio.sleep(0.5)
        while self._faults_left:  # every fault healed before the final comparison
            await trio.sleep(0.5)
        m = s.market
        await trio.sleep((m.commit_window_ms + 2 * m.skew_ms) / 1000 + 1.0)
        d.settled_ms = wall_ms()
        d.phase = "checking"
        await self._final_states()

    async def _start_network(self) -> None:
        relays = [n for n in self.nodes if n.spec.role == "relay"] or self.nodes[:1]
        errors: list[str] = []

        async def start(n: NodeProcess, boot: list[str]) -> None:
            try:
                await n.start(boot)
            except LaunchError as exc:
                errors.append(str(exc))

        first = relays[0]
        await start(first, [])  # knows nobody; every other node dials it first,
        if not errors:  # then finds the rest by peer exchange
            async with trio.open_nursery() as nursery:
                for n in self.nodes:
                    if n is not first:
                        nursery.start_soon(start, n, [first.addr])
        if errors:
            raise LaunchError(errors[0])

    async def _wait_formed(self) -> None:
        """Every node has a peer and every requester sees every prover's bid."""
        self.data.phase = "forming"
        provers = len(self.scenario.provers)
        deadline = trio.current_time() + FORM_TIMEOUT_S
        while True:
            ok = True
            for n in self.nodes:
                assert n.api is not None
                stats = await trio.to_thread.run_sync(fetch_stats, n.api)
                if stats is None or not stats.get("peers"):
                    ok = False
                    break
                if n.spec.role == "requester":
                    book = await trio.to_thread.run_sync(fetch_book, n.api, self.data.market)
                    if book is None or len(book["bids"]) < provers:
                        ok = False
                        break
            if ok:
                await trio.sleep(MESH_S)
                return
            if trio.current_time() > deadline:
                raise RunFailed(f"the network did not form in {FORM_TIMEOUT_S:g} s")
            await trio.sleep(0.5)

    def _others(self, node: NodeProcess) -> list[str]:
        """Where the other nodes can be reached (an isolated one cannot)."""
        return [n.addr for n in self.nodes if n is not node and n.ready and n.status != "isolated"]

    async def _fault(self, fault: Fault) -> None:
        d = self.data
        node = self.by_name[fault.node]
        assert d.start_ms is not None
        await trio.sleep(max(0.0, (d.start_ms + fault.at_s * 1000 - wall_ms()) / 1000))
        node.faulted = True
        self._note_fault(fault, "begin")
        try:
            if fault.kind == "kill":
                node.kill()
                await trio.sleep(fault.for_s)
                await node.start(self._others(node))
            elif fault.kind == "freeze":
                node.freeze()
                await trio.sleep(fault.for_s)
                node.thaw()
            elif fault.kind == "partition":  # the switch drops its frames; nothing restarts
                assert self.network is not None  # scenario_file.check_faults
                cut = trio.current_time()
                await trio.to_thread.run_sync(self.network.cut, node.name)
                node.status = "partitioned"
                await trio.sleep_until(cut + fault.for_s)
                await trio.to_thread.run_sync(self.network.heal, node.name)
                node.status = "up" if node.running else node.status
            else:  # isolate: running, but on an address nobody knows and dialling nobody
                # The cut lasts for_s from its start, and heals without a restart: a
                # stop and a start take seconds each, and a cut that overruns the
                # scenario's timing eats the gap before its next fault (partition.toml:
                # requester-2 came back 1 s before prover-4 was cut off, instead of 6 s).
                cut = trio.current_time()
                await node.stop()
                await node.start([], isolated=True)
                await trio.sleep_until(cut + fault.for_s)
                await node.rejoin(self._others(node))
            self._note_fault(fault, "end")
            d.healed_ms = wall_ms()
        except (LaunchError, NetnsError) as exc:
            self._note_fault(fault, f"failed: {exc}")
            d.error = d.error or str(exc)
        finally:
            self._faults_left -= 1
        if fault.kind in ("partition", "isolate") and d.healed_ms is not None:
            await self._watch_catch_up(d.healed_ms)  # not a fault any more: the run goes on

    async def _watch_catch_up(self, healed_ms: int) -> None:
        """Every CATCH_UP_EVERY_S from the heal until every node holds the history of
        every ask whose lifetime ended before it (catchup.py), or the final comparison
        begins, or a later partition or isolation heals (whose watch is then the one
        reported). Those asks are over, their histories complete: a count that
        differs is a node missing part of it, not an envelope still on its way (an ask
        still live at the heal changes under the watch, and would time gossip, not
        catch-up)."""
        d = self.data
        self._watches += 1
        mine = self._watches
        self._tail_once()
        asks = {a.id for a in d.asks.asks.values() if a.expires_t <= healed_ms}
        names = [n.name for n in self.nodes]
        trace: list[tuple[float, int]] = []  # (s after the heal, asks lacking in all)
        if not asks:  # nothing had ended yet: no history to get back
            d.catch_up = {"asks": 0, "after_heal_s": 0.0, "lacking_over_time": trace}
            return
        while d.phase in ("workload", "settle") and self._watches == mine:
            checks = await self._checks()
            after = round((wall_ms() - healed_ms) / 1000, 1)
            if caught_up(checks, asks):
                d.caught_up_ms = wall_ms()
                d.catch_up = {
                    "asks": len(asks),
                    "after_heal_s": (d.caught_up_ms - healed_ms) / 1000,
                    "lacking_over_time": trace,
                }
                return
            short = lacking(checks, names, asks)
            trace.append((after, sum(short.values())))
            d.catch_up = {"asks": len(asks), "lacking": short, "lacking_over_time": trace}
            await trio.sleep(CATCH_UP_EVERY_S)

    async def _checks(self) -> list[dict[str, Any] | None]:
        results: dict[str, dict[str, Any] | None] = {}

        async def one(n: NodeProcess) -> None:
            results[n.name] = None
            if n.api is not None and n.running:
                results[n.name] = await trio.to_thread.run_sync(
                    fetch_check, n.api, self.data.market
                )

        async with trio.open_nursery() as nursery:
            for n in self.nodes:
                nursery.start_soon(one, n)
        return [results[n.name] for n in self.nodes]

    def _note_fault(self, fault: Fault, what: str) -> None:
        self.data.faults.append(
            {
                "t_s": round(self.data.elapsed(), 2),
                "node": fault.node,
                "kind": fault.kind,
                "for_s": fault.for_s,
                "event": what,
            }
        )

    async def _final_states(self) -> None:
        """Every node's check and book, asked again until the state hashes agree
        (time-dependent state) or one anti-entropy period and AGREE_MARGIN_S pass."""
        d = self.data
        within = self.scenario.agree_within_s
        if within is None:
            within = self.scenario.sync_every_s + AGREE_MARGIN_S
        deadline = trio.current_time() + within
        before: dict[str, int] | None = None
        while True:
            d.agree_attempts += 1
            finals = await self._collect_finals()
            if hashes_agree(finals):
                d.agreed_ms = wall_ms()
                break
            if trio.current_time() > deadline:
                break
            agreement = check_agreement(finals, strict=self.scenario.strict_agreement)
            if agreement.ok and agreement.state_hashes == before:
                d.agreed_ms = wall_ms()
                break  # explained differences only, and stable: nothing more to wait for
            before = agreement.state_hashes
            await trio.sleep(1.0)
        d.finals = finals
        d.agreement = check_agreement(finals, strict=self.scenario.strict_agreement)
        await self._sample_once()
        d.final_stats = {name: c.total() for name, c in self.counters.items()}
        if self.network is not None:
            try:
                d.switch = await trio.to_thread.run_sync(self.network.stats)
            except NetnsError as exc:
                d.error = d.error or str(exc)

    async def _collect_finals(self) -> list[NodeFinal]:
        results: dict[str, NodeFinal] = {}

        async def one(n: NodeProcess) -> None:
            check = book = None
            if n.api is not None and n.running:
                check = await trio.to_thread.run_sync(fetch_check, n.api, self.data.market)
                book = await trio.to_thread.run_sync(fetch_book, n.api, self.data.market)
            results[n.name] = NodeFinal(n.name, n.spec.honest, check, book)

        async with trio.open_nursery() as nursery:
            for n in self.nodes:
                nursery.start_soon(one, n)
        return [results[n.name] for n in self.nodes]

    async def _stop_all(self) -> None:
        self.data.phase = "stopping"
        async with trio.open_nursery() as nursery:
            for n in self.nodes:
                nursery.start_soon(n.stop)
        self.data.stopped_ms = wall_ms()
        self.data.phase = "done"

    # -- background ---------------------------------------------------------------
    def _tail_once(self) -> None:
        for name, tail in self.tails.items():
            self.data.asks.feed(name, tail.read())

    async def _tail_loop(self) -> None:
        while True:
            self._tail_once()
            await trio.sleep(TAIL_EVERY_S)

    async def _sample_loop(self) -> None:
        while True:
            await self._sample_once()
            await trio.sleep(SAMPLE_EVERY_S)

    async def _sample_once(self) -> None:
        t = round(self.data.elapsed(), 3)

        async def one(n: NodeProcess) -> None:
            up = n.running and n.status in ("up", "isolated", "partitioned")
            cpu, rss = self.pstats.measure(n.pid if n.running else None)
            stats = None
            if up and n.api is not None:
                stats = await trio.to_thread.run_sync(fetch_stats, n.api)
                if n.spec.role == "prover":
                    status = await trio.to_thread.run_sync(fetch_status, n.api)
                    self.data.prove_times.feed(n.name, status)
                    prover = (status or {}).get("prover")
                    waits = prover.get("slot_waits") if isinstance(prover, dict) else None
                    if isinstance(waits, int) and n.pid is not None:
                        self.counters[n.name].update(n.pid, {"slot_waits": waits})
            sample = Sample(t=t, node=n.name, up=up, cpu=cpu, rss=rss)
            if stats is not None and n.pid is not None:
                g = stats.get("gossip", {})
                published = stats.get("published", {})
                totals = self.counters[n.name].update(
                    n.pid,
                    {
                        "frames": int(g.get("frames_published", 0)),
                        "envelopes": int(g.get("envelopes_published", 0)),
                        "outbound_waits": int(g.get("outbound_waits", 0)),
                        **{f"published_{k}": int(v) for k, v in published.items()},
                    },
                )
                sample.frames = totals.get("frames", 0)
                sample.envelopes = totals.get("envelopes", 0)
                sample.outbound_waits = totals.get("outbound_waits", 0)
                sample.peers = int(stats.get("peers", 0))
            else:
                totals = self.counters[n.name].total()
                sample.frames = totals.get("frames", 0)
                sample.envelopes = totals.get("envelopes", 0)
                sample.outbound_waits = totals.get("outbound_waits", 0)
            self.data.samples.append(sample)

        async with trio.open_nursery() as nursery:
            for n in self.nodes:
                if n.status != "new":
                    nursery.start_soon(one, n)


def _is_interrupt(exc: BaseException) -> bool:
    """KeyboardInterrupt, alone or in (nested) exception groups of nothing else."""
    if isinstance(exc, BaseExceptionGroup):
        return all(_is_interrupt(e) for e in exc.exceptions)
    return isinstance(exc, KeyboardInterrupt)


def simulate(scenario: Scenario, run_dir: Path, console: Console) -> RunData:
    """Run the scenario; the report is written by the caller (report.write_report).
    With a [network], the namespaces and the switch are made first (NetnsError, one
    line, if they cannot be) and removed last, whatever ended the run."""
    network = None
    if scenario.network is not None:
        n = scenario.network
        shape = LinkShape.from_rtt(n.rtt_ms, n.jitter_ms, n.loss)
        network = WanNetwork([spec.name for spec in scenario.nodes], shape, scenario.seed)
    # SIGTERM (a `kill`, a CI timeout) ends the run as Ctrl-C does, so the `finally`s
    # below run: Python's default would exit at once and leave the namespaces behind.
    # A signal while the network is made is acted on when the run begins (at once);
    # one while it is removed does not cut that short.
    interrupts = Interrupts()
    with interrupts.installed():
        try:
            if network is not None:
                network.open()
            runner = Runner(scenario, run_dir, console, network, interrupts)
            try:
                return trio.run(runner.run)
            finally:
                for node in runner.nodes:
                    node.force_stop()
        finally:
            if network is not None:
                network.close()


def run_dir_for(scenario: Scenario, out: Path | None) -> Path:
    base = (out if out is not None else scenario.report_dir).resolve()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = base / f"{scenario.name}-{stamp}"
    n = 1
    while path.exists():
        n += 1
        path = base / f"{scenario.name}-{stamp}-{n}"
    path.mkdir(parents=True)
    return path
