"""A groth16 market end to end, every node its own `p2p-market` process: a prover
(`prover run`) on the shipped example market protocols/circuits/multiplier-groth16,
and a requester (`p2p-market request`) that buys a proof of a·b = 33 and verifies
it, with real snarkjs on both sides (their Node.js workers)."""

from __future__ import annotations

import json
from contextlib import ExitStack
from pathlib import Path

from p2p_market.markets.descriptor import read_descriptor
from p2p_market.proving.snark import SHIPPED_ARTIFACTS, SnarkBackend
from tests.processes import ANY_LISTEN, cli, process

CIRCUITS = Path(__file__).resolve().parents[2] / "protocols" / "circuits"


async def test_a_requester_buys_a_groth16_proof_and_verifies_it(tmp_path: Path) -> None:
    descriptor = CIRCUITS / "multiplier-groth16-devnet-INSECURE.toml"
    market = read_descriptor(descriptor)
    inputs = tmp_path / "inputs.json"
    inputs.write_bytes(b'{"a":"3","b":"11"}')
    out = tmp_path / "proof.json"
    with ExitStack() as stack:
        _, prover = stack.enter_context(
            process(
                "prover", "run", "--market", str(descriptor), "--price", "5",
                "--proof-time", "5000", "--devnet-key", "prover-1",
                "--data-dir", str(tmp_path / "prover-1"), *ANY_LISTEN,
            )
        )  # fmt: skip
        done = cli(
            "request", "--market", str(descriptor), "--input", str(inputs),
            "--max-price", "10", "--max-proof-time", "10000",
            "--bootstrap", prover["addr"], "--out", str(out), "--timeout", "60",
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        # Inputs that fail the circuit are refused before anything is published.
        bad = tmp_path / "bad.json"
        bad.write_bytes(b'{"a":"1","b":"33"}')
        refused = cli(
            "request", "--market", str(descriptor), "--input", str(bad),
            "--max-price", "10", "--max-proof-time", "10000",
            "--bootstrap", prover["addr"], "--out", str(tmp_path / "x"),
        )  # fmt: skip
        assert refused.returncode == 2, refused.stdout + refused.stderr
        assert "not valid for market" in refused.stderr
    lines = dict(line.split(":", 1) for line in done.stdout.splitlines() if ":" in line)
    assert "prover-1" in lines["prover"]
    assert "verified" in lines["proof"]
    proof = out.read_bytes()
    assert json.loads(proof)["publicSignals"] == ["33"]
    async with SnarkBackend("groth16", dirs=[SHIPPED_ARTIFACTS]) as backend:
        assert await backend.verify(market, inputs.read_bytes(), proof)
