"""Running a node as a process: logs, signals, a ready line for launchers."""

from __future__ import annotations

import json
import logging
import signal
import sys

import trio

from p2p_market.core.crypto import SigningKey
from p2p_market.node.config import NodeConfig
from p2p_market.node.runtime import Node


def configure_logging(level: str) -> None:
    """key=value lines on stderr: greppable, and one event per line."""
    logging.basicConfig(
        level=level.upper(),
        stream=sys.stderr,
        format="ts=%(asctime)s level=%(levelname)s logger=%(name)s msg=%(message)s",
    )
    # py-libp2p is chatty at INFO about every stream; keep its warnings only.
    logging.getLogger("libp2p").setLevel(max(logging.WARNING, logging.getLogger().level))


async def serve_until_signal(config: NodeConfig, key: SigningKey) -> None:
    """Run the node until SIGINT or SIGTERM, then stop every service cleanly."""
    node = Node(config, key)
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            await nursery.start(node.run)
            assert node.gossip is not None
            ready = {
                "event": "ready",
                "public_key": key.public_key.hex(),
                "addr": node.gossip.addr,
                "api_port": node.api_port,
                "metrics_port": node.metrics_port,
            }
            print(json.dumps(ready), flush=True)
            async for signum in signals:
                logging.getLogger("p2p_market.node").info(
                    "signal %s: shutting down", signal.Signals(signum).name
                )
                nursery.cancel_scope.cancel()
                break
