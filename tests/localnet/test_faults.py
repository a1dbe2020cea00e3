"""The launcher's faults on real node processes (127.0.0.1)."""

from __future__ import annotations

import io
from pathlib import Path

import trio
from rich.console import Console

from p2p_market.localnet.collect import fetch_stats
from p2p_market.localnet.launcher import NodeProcess
from p2p_market.localnet.run import Runner
from p2p_market.localnet.rundata import wall_ms
from p2p_market.localnet.scenario import Fault
from p2p_market.localnet.scenario_file import parse_scenario
from tests.localnet.test_scenario import with_nodes


def peers(node: NodeProcess) -> int:
    assert node.api is not None
    stats = fetch_stats(node.api)
    return -1 if stats is None else int(stats["peers"])


async def test_an_isolation_lasts_for_s_and_heals_the_running_process(tmp_path: Path) -> None:
    """The cut lasts `for_s` from its start, then the same process dials the others.
    It used to end with a stop and a start on the usual address after `for_s` of
    isolated running, so the node stayed away several seconds more than the scenario
    said (partition.toml: requester-2 came back 1 s before prover-4 was cut off, not
    6 s, too late for prover-4 to get the asks requester-2 placed while cut off)."""
    scenario = parse_scenario(with_nodes({"name": "relay-1", "role": "relay"}), tmp_path / "s.toml")
    runner = Runner(scenario, tmp_path / "run", Console(file=io.StringIO()))
    relay, prover = runner.by_name["relay-1"], runner.by_name["prover-1"]
    try:
        await relay.start([])
        await prover.start([relay.addr])
        while peers(relay) < 1:
            await trio.sleep(0.2)
        runner.data.start_ms = wall_ms()
        fault = Fault(at_s=0.0, node="prover-1", kind="isolate", for_s=6.0)
        began = trio.current_time()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(runner._fault, fault)
            while prover.status != "isolated":
                await trio.sleep(0.1)
            pid = prover.pid
            assert trio.current_time() - began < fault.for_s
            assert await trio.to_thread.run_sync(peers, prover) == 0
            assert await trio.to_thread.run_sync(peers, relay) == 0
        took = trio.current_time() - began
        assert fault.for_s <= took < fault.for_s + 2.0, took
        assert prover.status == "up" and prover.pid == pid  # healed, not restarted
        assert [f["event"] for f in runner.data.faults] == ["begin", "end"]
        with trio.fail_after(10):
            while await trio.to_thread.run_sync(peers, relay) < 1:
                await trio.sleep(0.2)
        # others that start later dial it where it listens now, not on its usual port
        assert prover.addr == prover.ready["addr"] and f"/tcp/{prover.port}/" not in prover.addr
        assert runner._others(relay) == [prover.addr]
    finally:
        await prover.stop()
        await relay.stop()
        for node in runner.nodes:
            node.force_stop()
