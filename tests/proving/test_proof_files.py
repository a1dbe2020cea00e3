"""`request --proof-out`'s files (proving/proof_files.py): a groth16 / plonk proof as
snarkjs's proof.json and public.json with the market's verification key beside
them; any other proof as its bytes. The snarkjs command line itself reading them is
tests/e2e/test_zk_e2e.py and tests/test_docs_circuits.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from p2p_market.markets.descriptor import read_descriptor
from p2p_market.markets.devnet import default_market
from p2p_market.proving.proof_files import write_proof_files
from p2p_market.proving.snark import SHIPPED_ARTIFACTS, SnarkBackend, encode_inputs, parse_verifier

CIRCUITS = Path(__file__).resolve().parents[2] / "protocols" / "circuits"


@pytest.mark.parametrize("system", ["groth16", "plonk"])
async def test_a_snark_proof_becomes_snarkjs_files(tmp_path: Path, system: str) -> None:
    market = read_descriptor(CIRCUITS / f"multiplier-{system}-devnet-INSECURE.toml")
    inputs = encode_inputs({"a": 3, "b": 11})
    async with SnarkBackend(system, dirs=[SHIPPED_ARTIFACTS]) as backend:
        proof = await backend.prove(market, inputs, 60)
    out = tmp_path / "new" / "dir"
    written = write_proof_files(market, proof, out, dirs=[SHIPPED_ARTIFACTS])
    assert [p.name for p in written] == ["proof.json", "public.json", "verification_key.json"]
    body = json.loads(proof)
    assert json.loads((out / "proof.json").read_text()) == body["proof"]
    assert json.loads((out / "public.json").read_text()) == ["33"]
    vkey = SHIPPED_ARTIFACTS / f"{parse_verifier(market.verifier).vkey}.vkey.json"
    assert (out / "verification_key.json").read_bytes() == vkey.read_bytes()
    # Without the key at hand (it is looked up, never made up): the two proof files.
    elsewhere = tmp_path / "elsewhere"
    assert [p.name for p in write_proof_files(market, proof, elsewhere, dirs=[])] == [
        "proof.json",
        "public.json",
    ]


def test_another_proof_system_gets_the_proofs_bytes(tmp_path: Path) -> None:
    (path,) = write_proof_files(default_market(), b"\x00pow proof\xff", tmp_path)
    assert path == tmp_path / "proof.bin" and path.read_bytes() == b"\x00pow proof\xff"
    assert [p.name for p in tmp_path.iterdir()] == ["proof.bin"]  # no temporary left
