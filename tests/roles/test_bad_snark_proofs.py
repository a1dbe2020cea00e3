"""Bad groth16 proofs in a circuit market, on whole nodes on 127.0.0.1 with real
snarkjs (each node's own Node.js worker): the cheaper prover wins first and
delivers a proof that is not a proof of the ask; the requester's role verifies it
against the market's pinned verification key, signs an INVALID receipt, the round
reopens, and the dearer, honest prover wins and delivers a proof that verifies.

Three ways to be wrong, each a proof that the back-end would otherwise accept
somewhere: (a) a real proof of the ask with one coordinate altered; (b) a valid
proof of this circuit for other inputs (a·b = 35, the ask says 33); (c) a valid
proof of another circuit (range32's market, same system)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Final

import pytest
import trio

from p2p_market.core.lifecycle import AskState
from p2p_market.core.messages import Market, Outcome, Receipt
from p2p_market.markets.descriptor import read_descriptor
from p2p_market.proving.backend import ProofBackend
from p2p_market.proving.snark import BN254_R, SHIPPED_ARTIFACTS, SnarkBackend, encode_inputs
from tests.roles.harness import market, wait_state

CIRCUITS: Final = Path(__file__).resolve().parents[2] / "protocols" / "circuits"
MULTIPLIER: Final = read_descriptor(CIRCUITS / "multiplier-groth16-devnet-INSECURE.toml")
RANGE32: Final = read_descriptor(CIRCUITS / "range32-groth16-devnet-INSECURE.toml")
INPUTS: Final = encode_inputs({"a": 3, "b": 11})


class WrongProofs(SnarkBackend):
    """A groth16 prover that proves, then delivers something else (`how`)."""

    def __init__(self, how: str) -> None:
        super().__init__("groth16", dirs=[SHIPPED_ARTIFACTS])
        self.how = how
        self.delivered: list[bytes] = []

    async def prove(self, market: Market, inputs: bytes, deadline_s: float) -> bytes:
        if self.how == "tampered":
            body = json.loads(await super().prove(market, inputs, deadline_s))
            point = body["proof"]["pi_a"]
            point[0] = str((int(point[0]) + 1) % BN254_R)
            proof = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
        elif self.how == "other inputs":
            proof = await super().prove(market, encode_inputs({"a": 5, "b": 7}), deadline_s)
        else:  # "other circuit"
            other = encode_inputs({"square": 49, "x": 7})
            proof = await super().prove(RANGE32, other, deadline_s)
        self.delivered.append(proof)
        return proof


@pytest.mark.parametrize("how", ["tampered", "other inputs", "other circuit"])
async def test_a_bad_proof_is_rejected_and_the_ask_goes_to_the_honest_prover(
    tmp_path: Path, how: str
) -> None:
    liar_backend = WrongProofs(how)
    async with (
        liar_backend,
        SnarkBackend("groth16", dirs=[SHIPPED_ARTIFACTS]) as honest_backend,
        SnarkBackend("groth16", dirs=[SHIPPED_ARTIFACTS]) as judge,
    ):
        offers = {"liar": (10, 8_000), "honest": (40, 8_000)}
        backends: dict[str, ProofBackend] = {"liar": liar_backend, "honest": honest_backend}
        async with market(
            tmp_path, offers, backends, descriptor=MULTIPLIER, requester_backend=judge
        ) as m:
            liar, honest = m.provers["liar"].me, m.provers["honest"].me
            fields = {"market": m.mid.hex(), "max_price": 100, "max_proof_time": 10_000}
            ask = await m.requester.request(fields, INPUTS)
            with trio.fail_after(90):
                done = await m.requester.wait(ask)
            await wait_state(m, ask, AskState.PROVEN, timeout=60)
            view = m.relay.states[m.mid].view(ask)
            assert view.winners == (liar, honest)  # the liar first, then the next round
            assert [s.value for s in view.slot_states] == ["invalid", "accepted"]
            # The requester signed a failure receipt naming the liar, seen by the relay.
            receipts = [
                e.message
                for e in m.relay.states[m.mid].events.get(ask, {}).values()
                if isinstance(e.message, Receipt)
            ]
            outcomes = {(r.prover, r.outcome) for r in receipts}
            assert outcomes == {(liar, Outcome.INVALID.value), (honest, Outcome.ACCEPTED.value)}
            assert list(done.proofs) == [honest]
    # What the liar delivered is not a proof of the ask, and what the honest one
    # delivered is (checked again by a back-end of no node's).
    (bad,) = liar_backend.delivered
    proof = done.proofs[honest]
    async with SnarkBackend("groth16", dirs=[SHIPPED_ARTIFACTS]) as outsider:
        assert not await outsider.verify(MULTIPLIER, INPUTS, bad)
        assert await outsider.verify(MULTIPLIER, INPUTS, proof)
    assert json.loads(proof)["publicSignals"] == ["33"]
