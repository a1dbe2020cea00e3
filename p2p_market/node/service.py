"""Running a node as a process: logs, signals, a ready line for launchers.

The ready line names the control API's port and its token file (`api_token_file`,
an absolute path): whoever starts a node learns there how to act through its API."""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from p2p_market.core.crypto import SigningKey
from p2p_market.node import heap
from p2p_market.node.config import NodeConfig
from p2p_market.node.runtime import Node

LOG_FORMAT = "ts=%(asctime)s level=%(levelname)s logger=%(name)s msg=%(message)s"


def configure_logging(level: str) -> None:
    """key=value lines on stderr: greppable, and one event per line."""
    logging.basicConfig(level=level.upper(), stream=sys.stderr, format=LOG_FORMAT)
    # py-libp2p is chatty at INFO about every stream; keep its warnings only.
    libp2p = logging.getLogger("libp2p")
    libp2p.setLevel(max(logging.WARNING, logging.getLogger().level))
    # Unless LIBP2P_DEBUG is set, importing libp2p cuts its loggers off from the root
    # (libp2p/utils/logging.py, `setup_logging`), so its warnings went to Python's
    # last-resort handler: bare lines among ours. A handler of our format takes them,
    # at the same level for every libp2p logger (some set their own, to INFO).
    if not libp2p.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        handler.setLevel(libp2p.level)
        libp2p.addHandler(handler)


RoleStarter = Callable[[Node, trio.Nursery], Awaitable[dict[str, Any]]]
"""Starts roles on the running node, in the given nursery; returns extra fields for
the ready line (see roles/wiring.py)."""


def api_url(listen: str, port: int | None) -> str:
    """Where a client on this machine finds the control API: its bound address, or
    127.0.0.1 when it is bound to every address (0.0.0.0, ::)."""
    host = "127.0.0.1" if listen in ("0.0.0.0", "::") else listen
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


async def serve_until_signal(
    config: NodeConfig,
    key: SigningKey,
    *,
    prover: bool = False,
    start_roles: RoleStarter | None = None,
    banner: Callable[[dict[str, Any]], None] | None = None,
) -> None:
    """Run the node (and its roles) until SIGINT or SIGTERM, then stop every service
    cleanly. The ready line (JSON, one line on stdout) is printed once everything
    runs; `banner` may then print more for people."""
    node = Node(config, key, prover=prover)
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            await nursery.start(node.run)
            assert node.gossip is not None
            extra = await start_roles(node, nursery) if start_roles is not None else {}
            heap.settle()
            node.status_sources["heap"] = heap.status
            ready = {
                "event": "ready",
                "public_key": key.public_key.hex(),
                "addr": node.gossip.addr,
                "api_port": node.api_port,
                "api_url": api_url(config.api_listen, node.api_port),
                "api_token_file": os.path.abspath(node.api_token_file),
                "metrics_port": node.metrics_port,
                "metrics_url": None
                if node.metrics_port is None
                else api_url(config.metrics_listen, node.metrics_port) + "/metrics",
                **extra,
            }
            print(json.dumps(ready), flush=True)
            if banner is not None:
                banner(ready)
                sys.stdout.flush()
            async for signum in signals:
                logging.getLogger("p2p_market.node").info(
                    "signal %s: shutting down", signal.Signals(signum).name
                )
                nursery.cancel_scope.cancel()
                break
