"""A node process for `p2p-market bench net`: `node run`, plus a publisher of bids
the benchmark drives step by step.

    python -m p2p_market.bench.net_agent --config node.toml --steps DIR

The node is the real one (gossip, core, log, API), started from its config as
`p2p-market node run` starts it, and prints the same ready line. Besides, it
watches DIR for `step-<k>.json` (k = 1, 2, ... in order), each saying: publish
`count` bids at `rate` a second from `start_ms` (wall clock) on. The bids are
signed before `start_ms`, so signing is not part of the measured path; each goes
into the node as a local submission (`Node.submit`, the API's path without HTTP:
the benchmark measures the network, not a web server) at its due time, without
waiting for the one before to be answered (as an API serves requests in flight
together; at most MAX_IN_FLIGHT at once): the owner's envelopes are fsynced before
they are published, and submissions in flight together share an fsync
(node/group_sync.py). Bids are the
cheapest valid orders: no role does any work on them. They come from a pool of
`signers` keys in turn, each key's seq counting up, so that every bid replaces its
signer's last one and no signer exceeds the nodes' per-signer gossip rate.

What the publisher writes, `sent-<k>.json` once the step is over: the id and the
wall-clock send time (ms) of every bid, and how many the node refused. Arrival times
need no report: every node logs each envelope with its `received_at`
(node/storage.py), on the same machine's clock.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import trio

from p2p_market.core.crypto import devnet_key
from p2p_market.core.envelope import market_id, message_id, seal
from p2p_market.core.messages import Bid

if TYPE_CHECKING:
    from p2p_market.core.messages import Market
    from p2p_market.node.runtime import Node

POLL_S: Final = 0.05
MAX_IN_FLIGHT: Final = 256
"""Submissions a publisher has in flight at once; beyond, it falls behind its
schedule (and the step says `publisher`)."""
TRANSPORT_FILE: Final = "transport.json"
"""What the node runs: py-libp2p patches installed, muxer (`bench frames` reports it)."""
BID_TTL_MS: Final = 3_600_000


def signer_name(node: str, index: int) -> str:
    """The devnet key name of a publisher's `index`-th signer."""
    return f"benchnet-{node}-{index}"


def step_file(steps: Path, k: int) -> Path:
    return steps / f"step-{k}.json"


def sent_file(steps: Path, k: int) -> Path:
    return steps / f"sent-{k}.json"


def write_json(path: Path, data: Any) -> None:
    """Whole or not at all: the reader polls for the file."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    tmp.replace(path)


class Publisher:
    """Publishes the steps the benchmark writes, one after the other, forever."""

    def __init__(self, node: Node, market: Market, steps: Path, name: str) -> None:
        self.node = node
        self.market = market
        self.mid = market_id(market)
        self.steps = steps
        self.name = name
        self._keys: dict[int, Any] = {}
        self._seq: dict[int, int] = {}

    def _key(self, index: int) -> Any:
        if index not in self._keys:
            self._keys[index] = devnet_key(signer_name(self.name, index))
        return self._keys[index]

    def sign(self, count: int, signers: int, start_ms: int, rate: float) -> list[bytes]:
        """`count` bids, signer after signer, each stamped with its due time."""
        bids = []
        for i in range(count):
            index = i % signers
            self._seq[index] = seq = self._seq.get(index, 0) + 1
            due = start_ms + int(i * 1000 / rate)
            bid = Bid(
                market=self.mid,
                timestamp=due,
                price=10 + i % 50,
                proof_time=5_000,
                capacity=1,
                expires_at=due + BID_TTL_MS,
                seq=seq,
            )
            bids.append(seal(bid, self._key(index)))
        return bids

    async def run(self) -> None:
        k = 1
        while True:
            path = step_file(self.steps, k)
            if not path.exists():
                await trio.sleep(POLL_S)
                continue
            step = json.loads(path.read_text())
            write_json(sent_file(self.steps, k), await self.publish(step))
            k += 1

    async def publish(self, step: dict[str, Any]) -> dict[str, Any]:
        rate = float(step["rate"])
        start_ms = int(step["start_ms"])
        bids = self.sign(int(step["count"]), int(step["signers"]), start_ms, rate)
        # the wall clock's start_ms on trio's clock
        t0 = trio.current_time() + (start_ms - time.time() * 1000) / 1000
        sent: list[tuple[str, int]] = []
        refused: dict[str, int] = {}
        late_ms = 0
        in_flight = trio.Semaphore(MAX_IN_FLIGHT)

        async def submit(raw: bytes, now_ms: int) -> None:
            try:
                result = await self.node.submit(raw)
            finally:
                in_flight.release()
            if result.status == "accept":
                sent.append((message_id(raw).hex(), now_ms))
            else:
                refused[result.reason] = refused.get(result.reason, 0) + 1

        async with trio.open_nursery() as nursery:
            for i, raw in enumerate(bids):
                await trio.sleep_until(t0 + i / rate)
                await in_flight.acquire()
                now_ms = int(time.time() * 1000)
                late_ms = max(late_ms, now_ms - (start_ms + int(i * 1000 / rate)))
                nursery.start_soon(submit, raw, now_ms)
        return {"sent": sent, "refused": refused, "late_ms_max": late_ms}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="p2p_market.bench.net_agent")
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--steps", type=Path, required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--log-level", default="warning")
    parser.add_argument(
        "--without-patch",
        action="append",
        default=[],
        help="run without this py-libp2p patch (net/libp2p_speedups.py): a baseline",
    )
    args = parser.parse_args(argv)
    if args.without_patch:
        from p2p_market.net import libp2p_speedups

        try:
            libp2p_speedups.leave_out(*args.without_patch)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2

    from p2p_market.node.config import ConfigError, load_config
    from p2p_market.node.keyfile import KeyFileError, read_key
    from p2p_market.node.service import configure_logging, serve_until_signal

    try:
        cfg = load_config(args.config)
        key = read_key(cfg.key_file, None)
    except (ConfigError, KeyFileError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    configure_logging(args.log_level)
    args.steps.mkdir(parents=True, exist_ok=True)

    async def start(node: Any, nursery: trio.Nursery) -> dict[str, Any]:
        from p2p_market.net import libp2p_speedups

        transport = {"patches": libp2p_speedups.installed(), "muxer": cfg.muxer}
        write_json(args.steps / TRANSPORT_FILE, transport)
        publisher = Publisher(node, cfg.markets[0], args.steps, args.name)
        nursery.start_soon(publisher.run)
        return {"roles": ["bench-publisher"]}

    trio.run(lambda: serve_until_signal(cfg, key, start_roles=start))
    return 0


if __name__ == "__main__":
    sys.exit(main())
