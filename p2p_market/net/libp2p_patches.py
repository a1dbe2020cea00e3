"""One fix to py-libp2p 0.8.1, applied at host creation: inbound slots are freed
when the connection closes, not when the swarm stops.

The bug (docs/upstream/py-libp2p-inbound-slot.md). `Swarm._handle_inbound_connection`
takes a slot of `_inbound_limiter` (max_connections - min_connections = 250 by
default) and gives it back when `_do_handle_inbound_connection` returns. That
function upgrades the connection and then waits on `self.manager.wait_finished()`,
which returns only when the whole swarm stops. The wait has a reason: the TCP
listener (trio.serve_listeners) closes the socket as soon as the handler returns,
so the handler must live as long as the connection. But it lives as long as the
swarm instead, so every inbound connection ever accepted keeps its slot after it
closed: after 250 short connections (churn, ephemeral `request` nodes, an attacker)
the node refuses every new inbound connection until it restarts.

The fix keeps the handler alive exactly as long as the connection: it waits for the
muxed connection's `event_closed` (set by yamux and mplex on a local or remote
close, and on a read error) or for the swarm to stop, whichever comes first.

Only the wait changes; the rest of `_do_handle_inbound_connection` is the library's
code, restated. The patch is applied only to the exact version it was written for
and only if that method's source is the one it was written against
(`tests/net/test_libp2p_patches.py` pins both); otherwise it logs a warning and
leaves the library alone. Remove this module when upstream fixes the bug.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Final

import trio
from libp2p.abc import IMuxedConn
from libp2p.network.connection.raw_connection import RawConnection
from libp2p.network.swarm import Swarm
from multiaddr import Multiaddr

from p2p_market.net.pins import misfit, source_sha256

log = logging.getLogger(__name__)

PATCHED_VERSION: Final = "0.8.1"
"""The py-libp2p release the patch was written for (pyproject.toml pins it)."""

ORIGINAL_SHA256: Final = "c22fdfd5289f671c6ca1d2141200153d74bd1b81c873259215d3f2f5b91bc782"
"""SHA-256 of the source of `Swarm._do_handle_inbound_connection` in that release."""

_original = Swarm._do_handle_inbound_connection


def original_source_sha256() -> str:
    """The SHA-256 of the installed library's own `_do_handle_inbound_connection`."""
    return source_sha256(_original)


def applicable() -> str | None:
    """None if the patch fits the installed library, else why not."""
    label = "Swarm._do_handle_inbound_connection"
    return misfit(PATCHED_VERSION, [(label, _original, ORIGINAL_SHA256)], "patch")


def is_applied() -> bool:
    return Swarm._do_handle_inbound_connection is _do_handle_inbound_connection


def apply() -> bool:
    """Install the fix (once; later calls do nothing). False, with a warning in the
    log, if the installed library is not the one the patch was written for, and
    inside `disabled()`."""
    if is_applied():
        return True
    if _disabled:
        return False
    problem = applicable()
    if problem is not None:
        log.warning("py-libp2p inbound-slot patch not applied: %s", problem)
        return False
    Swarm._do_handle_inbound_connection = _do_handle_inbound_connection  # type: ignore[method-assign]
    return True


_disabled = False


@contextmanager
def disabled() -> Iterator[None]:
    """The library's own method while inside (`apply` does nothing meanwhile), the
    patch again after: for the test that shows the library still has the bug."""
    global _disabled
    was = is_applied()
    Swarm._do_handle_inbound_connection = _original  # type: ignore[method-assign]
    _disabled = True
    try:
        yield
    finally:
        _disabled = False
        if was:
            apply()


async def until_closed(swarm: Swarm, muxed_conn: IMuxedConn) -> None:
    """Return when `muxed_conn` has closed or the swarm has stopped.

    A muxer without `event_closed` (none in 0.8.1) gets the library's own wait."""
    closed = getattr(muxed_conn, "event_closed", None)
    if not isinstance(closed, trio.Event):
        await swarm.manager.wait_finished()
        return
    async with trio.open_nursery() as nursery:

        async def first(wait: Any) -> None:
            await wait()
            nursery.cancel_scope.cancel()

        nursery.start_soon(first, closed.wait)
        nursery.start_soon(first, swarm.manager.wait_finished)


async def _refused(swarm: Swarm, failure_event: Any) -> None:
    """The library's failure metric event for an inbound connection."""
    failure_event.conn_incoming_error = True
    if swarm.metric_send_channel is not None:
        await swarm.metric_send_channel.send(failure_event)


async def _do_handle_inbound_connection(
    self: Swarm, read_write_closer: Any, maddr: Multiaddr, failure_event: Any
) -> None:
    """The library's method (swarm.py, 0.8.1), with `until_closed` in place of
    `self.manager.wait_finished()` after each successful upgrade."""
    remote_maddr = self._build_remote_multiaddr(read_write_closer)
    if remote_maddr is not None and not await self.connection_gate.is_allowed(remote_maddr):
        try:
            await read_write_closer.close()
            await _refused(self, failure_event)
        except Exception:
            pass
        return
    if isinstance(read_write_closer, IMuxedConn):
        try:
            await self.add_conn(read_write_closer, direction="inbound")
            await until_closed(self, read_write_closer)
        except Exception:
            await read_write_closer.close()
            await _refused(self, failure_event)
        return
    raw_conn = None
    try:
        raw_conn = RawConnection(read_write_closer, False)
        muxed = await self.upgrade_inbound_raw_conn(raw_conn, maddr)
        await until_closed(self, muxed)
    except Exception as exc:
        log.debug("error handling an incoming connection: %s", exc)
        try:
            if raw_conn is not None:
                await raw_conn.close()
            else:
                await read_write_closer.close()
                await _refused(self, failure_event)
        except Exception:
            pass
