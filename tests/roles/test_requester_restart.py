"""A requester that dies and comes back from its own data directory (the SQLite log
and the role store, node/role_store.py) with the same key: it still sends the
inputs of its confidential ask to a winner assigned after the restart, verifies
and receipts the proof, and serves the proofs it verified before or after."""

from __future__ import annotations

from pathlib import Path

import trio

from p2p_market.core.envelope import market_id
from p2p_market.core.lifecycle import AskState, SlotState
from p2p_market.markets.devnet import default_market
from p2p_market.node.api_client import ApiClient
from p2p_market.node.api_token import read_token
from p2p_market.node.runtime import Node
from p2p_market.proving.pow import pow_ok
from tests.roles.harness import MARKET, MID, market, wait_everywhere

SECRET = b"confidential: the launch code is 0451"

SLOW_WINDOW = default_market(commit_window_ms=5_000, stage_ms=200, skew_ms=300, difficulty=10)
"""A commit window far longer than a restart takes, so the requester is back before
anyone is assigned (checked, not assumed: see the test)."""


async def served_proofs(node: Node, ask: bytes) -> dict[bytes, bytes]:
    """GET /v1/asks/<id>/proofs on the node's control API, with its token."""
    client = ApiClient(f"http://127.0.0.1:{node.api_port}", token=read_token(node.api_token_file))
    return await trio.to_thread.run_sync(client.proofs, ask.hex())


def files_hold(directory: Path, needle: bytes) -> bool:
    return any(needle in f.read_bytes() for f in directory.rglob("*") if f.is_file())


async def test_a_requester_restarted_before_the_assignment_sends_the_inputs_and_verifies(
    tmp_path: Path,
) -> None:
    mid = market_id(SLOW_WINDOW)
    async with market(tmp_path, {"worker": (10, 20_000)}, descriptor=SLOW_WINDOW) as m:
        fields = {
            "market": mid.hex(),
            "max_price": 100,
            "max_proof_time": 30_000,
            "confidential": True,
        }
        ask = await m.requester.request(fields, SECRET)
        with trio.fail_after(10):  # published: the relay holds it
            while ask not in m.relay.states[mid].asks:
                await trio.sleep(0.05)
        role = await m.restart_requester()
        # Back inside the commit window: nobody was assigned while it was down, so
        # only the restarted role can send the inputs.
        assert role.node.states[mid].view(ask).winners == ()
        assert m.relay.states[mid].view(ask).winners == ()
        with trio.fail_after(40):
            done = await role.wait(ask)
        worker = m.provers["worker"].me
        assert list(done.proofs) == [worker]
        assert pow_ok(SECRET, SLOW_WINDOW.difficulty, done.proofs[worker])
        await wait_everywhere(m, ask, AskState.PROVEN)
        assert m.relay.states[mid].view(ask).slot_states == (SlotState.ACCEPTED,)
        assert await served_proofs(role.node, ask) == {worker: done.proofs[worker]}
        # Kept for the restart, and never in the clear.
        assert not files_hold(tmp_path / "requester", SECRET)


async def test_a_requester_restarted_after_verifying_still_serves_the_proof(
    tmp_path: Path,
) -> None:
    async with market(tmp_path, {"worker": (10, 20_000)}) as m:
        fields = {"market": MID.hex(), "max_price": 100, "max_proof_time": 30_000}
        ask = await m.requester.request(fields, b"verified before the restart")
        with trio.fail_after(30):
            done = await m.requester.wait(ask)
        worker = m.provers["worker"].me
        proof = done.proofs[worker]
        assert pow_ok(b"verified before the restart", MARKET.difficulty, proof)
        role = await m.restart_requester()
        assert await served_proofs(role.node, ask) == {worker: proof}
        with trio.fail_after(5):  # and it knows the ask is over
            await role.wait(ask)
