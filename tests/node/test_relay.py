"""Nodes that take no inbound connection, reached through circuit relay v2 (issue 13,
net/relay.py, docs/reachability.md): whole nodes on real hosts on 127.0.0.1, real
SQLite logs, real signatures and pow proofs, one trio run.

The prover and the requester below listen on no address at all: each has one
outbound connection, to the relay, and a slot there. Gossip alone would carry the
bids, asks, commits and small proofs (the relay follows the market and forwards
them), but a confidential ask's inputs go point to point, requester to prover
(node/direct.py): without the relay's circuit the prover never gets them and the
ask is never proven."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import trio
from libp2p.connection_types import ConnectionType

from p2p_market.core.crypto import devnet_key
from p2p_market.net.host import connect_all, make_host, peer_id_of
from p2p_market.net.relay import Relaying
from p2p_market.node.config import NodeConfig
from p2p_market.node.peers import DialScopes
from p2p_market.node.runtime import Node
from p2p_market.proving.pow import PowBackend, pow_ok
from p2p_market.roles.inbox import Inbox
from p2p_market.roles.prover import ProverRole, ProverSettings
from p2p_market.roles.requester import RequesterRole
from tests.node.test_reach import free_port
from tests.roles.harness import MARKET, MID

if TYPE_CHECKING:
    from trio_typing import TaskStatus


def config(tmp: Path, name: str, **fields: object) -> NodeConfig:
    return NodeConfig(
        key_file=tmp / "unused.pem",
        data_dir=tmp / name,
        frames_per_second=50.0,
        markets=(MARKET,),
        **fields,  # type: ignore[arg-type]
    )


@dataclass
class Behind:
    relay: Node
    prover: ProverRole
    requester: RequesterRole


@asynccontextmanager
async def behind_relay(tmp: Path, *, relay_service: bool = True) -> AsyncIterator[Behind]:
    """A public relay node, and a prover and a requester that listen nowhere and
    keep a slot on it; every node has the prover's bid before the body runs."""
    async with trio.open_nursery() as nursery:
        relay = Node(config(tmp, "relay", relay_service=relay_service), devnet_key("nat-relay"))
        await nursery.start(relay.run)
        assert relay.gossip is not None
        private = {
            "listen": (),
            "reachability": "private",
            "relays": (relay.gossip.addr,),
            # peer exchange runs this often too: a bound on how long the requester
            # may go without the prover's address, whatever the order nodes start in
            "sync_every_s": 1.0,
        }
        p = Node(config(tmp, "prover", **private), devnet_key("nat-prover"), prover=True)
        await nursery.start(p.run)
        assert p.relaying is not None
        with trio.fail_after(10):  # the relay can tell the requester where the prover is
            await p.relaying.reserved.wait()
        settings = ProverSettings(market=MID, price=10, proof_time=10_000, max_size=1)
        prover = ProverRole(p, PowBackend(), settings, Inbox())
        await nursery.start(prover.run)
        q = Node(config(tmp, "requester", **private), devnet_key("nat-requester"))
        await nursery.start(q.run)
        requester = RequesterRole(q, {MID: PowBackend()}, Inbox())
        await nursery.start(requester.run)
        with trio.fail_after(20):
            while any(len(n.states[MID].book.current) < 1 for n in (relay, p, q)):
                await trio.sleep(0.05)
        yield Behind(relay, prover, requester)
        nursery.cancel_scope.cancel()


def listens_nowhere(node: Node) -> bool:
    assert node.host is not None
    return not node.host.get_network().listeners


async def test_a_prover_with_no_listen_address_sells_a_confidential_proof_through_a_relay(
    tmp_path: Path,
) -> None:
    secret = b"inputs only the winner may read"
    async with behind_relay(tmp_path) as m:
        prover, requester = m.prover.node, m.requester.node
        assert listens_nowhere(prover) and listens_nowhere(requester)
        assert prover.gossip is not None and "/p2p-circuit/p2p/" in prover.gossip.addr
        fields = {
            "market": MID.hex(),
            "max_price": 100,
            "max_proof_time": 30_000,
            "confidential": True,
        }
        ask = await m.requester.request(fields, secret)
        with trio.fail_after(40):
            done = await m.requester.wait(ask)
        assert list(done.proofs) == [m.prover.me]
        assert pow_ok(secret, MARKET.difficulty, done.proofs[m.prover.me])
        assert ("inputs", ask) in m.prover.inbox.received
        # the inputs came over a relayed connection: the two never dialled each other
        assert requester.host is not None
        conns = requester.host.get_network().connections.get(peer_id_of(m.prover.me), [])
        kinds = {c.get_connection_type() for c in (conns if isinstance(conns, list) else [conns])}
        assert kinds == {ConnectionType.RELAYED}
        status = prover.status()["reachability"]
        assert status["mode"] == "private"
        assert all(r["reserved"] for r in status["relays"].values())
        for n in (m.relay, prover, requester):  # the secret is in no log
            assert (
                secret not in (tmp_path / n.config.data_dir.name / "envelopes.sqlite").read_bytes()
            )


@pytest.mark.parametrize(
    ("addr", "allowed"),
    [
        ("/ip4/127.0.0.1/tcp/4001/p2p/R/p2p-circuit/p2p/D", True),
        ("/ip4/10.0.0.1/tcp/4001/p2p/R/p2p-circuit/p2p/D", False),  # relay outside
        ("/ip4/127.0.0.1/tcp/4001/p2p/R/p2p-circuit", False),  # names no peer
        ("/dns4/relay.example/tcp/4001/p2p/R/p2p-circuit/p2p/D", False),
        ("/ip4/127.0.0.1/tcp/4001/p2p/R/p2p-circuit/p2p/D/p2p-circuit/p2p/E", False),
    ],
)
def test_a_circuit_address_from_peer_exchange_is_judged_by_its_relay(
    addr: str, allowed: bool
) -> None:
    scopes = DialScopes.for_node(["/ip4/127.0.0.1/tcp/0"], [])
    assert scopes.allows(addr) is allowed


async def test_a_private_node_takes_its_slot_again_when_its_relay_restarts(
    tmp_path: Path,
) -> None:
    """A restarted relay has forgotten every reservation: the private node takes its
    slot again on the new connection (whoever dialled it), and is reachable through
    the relay again; a peer that dials it there gets a relayed connection."""
    port = free_port()
    relay_cfg = config(
        tmp_path, "relay", relay_service=True, listen=(f"/ip4/127.0.0.1/tcp/{port}",)
    )
    async with trio.open_nursery() as nursery:
        first = trio.CancelScope()

        async def run_relay(scope: trio.CancelScope, task_status: TaskStatus[Node]) -> None:
            with scope:
                relay = Node(relay_cfg, devnet_key("nat-relay"))
                async with trio.open_nursery() as inner:
                    await inner.start(relay.run)
                    task_status.started(relay)

        relay: Node = await nursery.start(run_relay, first)
        assert relay.gossip is not None
        relay_addr = relay.gossip.addr
        private = {"listen": (), "reachability": "private", "relays": (relay_addr,)}
        p = Node(config(tmp_path, "prover", **private), devnet_key("nat-prover"))
        await nursery.start(p.run)
        assert p.relaying is not None and p.gossip is not None
        with trio.fail_after(10):
            await p.relaying.reserved.wait()
        circuit = p.gossip.addr
        first.cancel()
        restarted = trio.current_time()
        await nursery.start(run_relay, trio.CancelScope())
        slot = p.relaying.reservations[relay_addr]
        with trio.fail_after(30):  # redialled after 1, 2, 4 ... s, then reserved
            while slot.renewed_at < restarted:
                await trio.sleep(0.05)
        host, _ = make_host(devnet_key("nat-dialler"), listen=())
        async with host.run([]):
            dialler = Relaying(host)
            await nursery.start(dialler.run)
            assert await connect_all(host, [circuit]) == {}
            conns = host.get_network().connections.get(peer_id_of(p.key.public_key), [])
            assert [c.get_connection_type() for c in conns] == [ConnectionType.RELAYED]
            await host.close()
        nursery.cancel_scope.cancel()
