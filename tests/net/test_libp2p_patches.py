"""The py-libp2p inbound-slot fix (net/libp2p_patches.py): pinned to the library
version it was written for, and a node that took 1,000 short connections still
takes a new one."""

from __future__ import annotations

import re
import tomllib
from importlib.metadata import version
from pathlib import Path

import trio
from libp2p.network.swarm import Swarm

from p2p_market.bench.churn import churn
from p2p_market.core.crypto import devnet_key
from p2p_market.net import libp2p_patches
from p2p_market.net.gossip import Gossip
from p2p_market.net.host import connect_all, dial_addr, make_host
from p2p_market.node.peers import watch_connections
from tests.net.cluster import MID, bid, receive

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"
RECHECK = (
    "py-libp2p is no longer the version p2p_market/net/libp2p_patches.py was written"
    " for: re-check the patch against the new network/swarm.py"
    " (`_do_handle_inbound_connection`, docs/upstream/py-libp2p-inbound-slot.md), then"
    " update PATCHED_VERSION and ORIGINAL_SHA256, or delete the patch if upstream"
    " fixed the bug"
)


def pinned_libp2p() -> str:
    deps = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    pins = [m.group(1) for d in deps if (m := re.fullmatch(r"libp2p==(\S+)", d.strip()))]
    assert len(pins) == 1, f"libp2p must be pinned exactly (libp2p==X) in pyproject: {deps}"
    return pins[0]


def test_the_patch_is_for_the_pinned_and_installed_libp2p() -> None:
    assert pinned_libp2p() == libp2p_patches.PATCHED_VERSION, RECHECK
    assert version("libp2p") == libp2p_patches.PATCHED_VERSION, RECHECK
    assert libp2p_patches.original_source_sha256() == libp2p_patches.ORIGINAL_SHA256, RECHECK
    assert libp2p_patches.applicable() is None


def test_the_patch_is_applied_once_by_make_host() -> None:
    make_host(devnet_key("patch-a"))
    assert libp2p_patches.is_applied()
    patched = Swarm._do_handle_inbound_connection
    assert libp2p_patches.apply() and libp2p_patches.apply()
    assert Swarm._do_handle_inbound_connection is patched


async def _churn_then_join(connections: int) -> tuple[int, float | None]:
    """A bootstrap node takes `connections` short connections, then a new node
    dials it. Returns how many churn connections the bootstrap node accepted, and
    how long the new node took to get the peer and a gossiped envelope (None: it
    did not, within 10 s)."""
    async with trio.open_nursery() as nursery:
        boot_host, boot_listen = make_host(devnet_key("churn-boot"))
        accepted = 0

        def count(_peer: object) -> None:
            nonlocal accepted
            accepted += 1

        watch_connections(boot_host, count)
        boot = Gossip(boot_host, boot_listen, markets=[MID])
        await nursery.start(boot.run)
        churned = await churn(dial_addr(boot_host), connections)
        print(f"churn: {churned.ok} ok, {churned.failed} refused, {churned.elapsed_s:.1f} s")
        took_in = accepted
        host, listen = make_host(devnet_key("churn-newcomer"))
        newcomer = Gossip(host, listen, markets=[MID])
        await nursery.start(newcomer.run)
        started = trio.current_time()
        joined: float | None = None
        with trio.move_on_after(10):
            while await connect_all(newcomer.host, [boot.addr], timeout=2):
                await trio.sleep(0.2)
            await newcomer.wait_for_mesh(MID, boot.peer_id, timeout=10)
            raw = bid("after-churn")
            assert (await boot.publish(MID, raw)).accepted
            assert (await receive(newcomer, timeout=10)).raw == raw
            joined = trio.current_time() - started
        nursery.cancel_scope.cancel()
    return took_in, joined


async def test_a_new_node_joins_after_1000_short_connections() -> None:
    with trio.fail_after(120):
        accepted, joined = await _churn_then_join(1_000)
    print(f"new node got a peer and an envelope {joined} s after the churn")
    assert accepted >= 1_000  # every churn connection took (and gave back) a slot
    assert joined is not None and joined < 5.0


async def test_the_unpatched_library_still_leaks_inbound_slots() -> None:
    """If this fails, upstream fixed the bug: delete net/libp2p_patches.py."""
    with libp2p_patches.disabled(), trio.fail_after(120):
        accepted, joined = await _churn_then_join(300)
    assert accepted == 250  # max_connections - min_connections: then every inbound refused
    assert joined is None
