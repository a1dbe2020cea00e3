"""A groth16 prover readies its snarkjs worker before it bids, so that its first
proof does not spend its deadline starting Node.js (measured in a simulation: a
prover that bid 2 s timed out on every slot, each timeout killing the worker and
the next proof starting it cold again). Real nodes, real snarkjs."""

from __future__ import annotations

from pathlib import Path

import trio

from p2p_market.markets.descriptor import read_descriptor
from p2p_market.proving.snark import SHIPPED_ARTIFACTS, SnarkBackend, encode_inputs
from tests.roles.harness import market

CIRCUITS = Path(__file__).resolve().parents[2] / "protocols" / "circuits"
GROTH16 = read_descriptor(CIRCUITS / "multiplier-groth16-devnet-INSECURE.toml")


async def test_the_worker_runs_before_the_bid_and_proves_the_first_ask(tmp_path: Path) -> None:
    prover = SnarkBackend("groth16", dirs=[SHIPPED_ARTIFACTS])
    requester = SnarkBackend("groth16", dirs=[SHIPPED_ARTIFACTS])
    try:
        async with market(
            tmp_path,
            {"p": (5, 10_000)},
            {"p": prover},
            descriptor=GROTH16,
            requester_backend=requester,
        ) as m:
            # Every node holds the bid: the worker was started before it was signed.
            warmed = prover.worker_pid
            assert warmed is not None and prover.starts == 1
            fields = {"market": m.mid.hex(), "max_price": 10, "max_proof_time": 10_000}
            ask = await m.requester.request(fields, encode_inputs({"a": 3, "b": 11}))
            with trio.fail_after(60):
                done = await m.requester.wait(ask)
            assert list(done.proofs) == [m.provers["p"].me]
            assert prover.starts == 1 and prover.worker_pid == warmed  # the same worker
    finally:
        await prover.aclose()
        await requester.aclose()
