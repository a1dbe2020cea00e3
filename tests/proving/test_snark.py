"""The groth16 and plonk back-ends with real snarkjs (node_modules/, `npm ci`) on the
example circuits of protocols/circuits: no mocks."""

from __future__ import annotations

import json
import os
import shutil
import signal
from collections.abc import Callable
from pathlib import Path

import pytest
import trio
from typer.testing import CliRunner

from p2p_market.cli.app import app
from p2p_market.core.envelope import market_id
from p2p_market.core.messages import Market
from p2p_market.markets.descriptor import read_descriptor
from p2p_market.proving import ProvingError, backend_for
from p2p_market.proving.registry import close_at_exit
from p2p_market.proving.snark import (
    BN254_R,
    SHIPPED_ARTIFACTS,
    ArtifactError,
    SnarkBackend,
    canonical_inputs,
    encode_inputs,
    parse_verifier,
)
from tests.processes import Made

CIRCUITS = Path(__file__).resolve().parents[2] / "protocols" / "circuits"
SYSTEMS = ("groth16", "plonk")
GOOD = encode_inputs({"a": 3, "b": 11})


def market(circuit: str, system: str) -> Market:
    return read_descriptor(CIRCUITS / f"{circuit}-{system}-devnet-INSECURE.toml")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture(params=SYSTEMS)
async def snark(request: pytest.FixtureRequest):
    backend = SnarkBackend(request.param, dirs=[SHIPPED_ARTIFACTS])
    try:
        yield backend
    finally:
        await backend.aclose()


# -- round trips ---------------------------------------------------------------------


async def test_prove_then_verify_round_trip(snark: SnarkBackend) -> None:
    m = market("multiplier", snark.system)
    assert await snark.check_inputs(m, GOOD)
    proof = await snark.prove(m, GOOD, 60)
    body = json.loads(proof)
    assert body["proof"]["protocol"] == snark.system
    assert body["publicSignals"] == ["33"]  # c = a * b, the circuit's public output
    assert await snark.verify(m, GOOD, proof)
    assert snark.starts == 1  # one worker served all four calls


@pytest.mark.parametrize("workers", [1, 2])
async def test_a_back_end_runs_as_many_proofs_at_once_as_it_has_workers(workers: int) -> None:
    """A prover of capacity 2 proves its two slots side by side, on two workers (one
    worker would queue the second proof behind the first), and keeps both for the
    next proofs; capacity 1 keeps one worker."""
    m = market("multiplier", "groth16")
    b = SnarkBackend("groth16", dirs=[SHIPPED_ARTIFACTS], workers=workers)
    proofs: list[bytes] = []

    async def prove() -> None:
        proofs.append(await b.prove(m, GOOD, 60))

    try:
        for _ in range(2):  # the second pair reuses the first pair's workers
            async with trio.open_nursery() as nursery:
                nursery.start_soon(prove)
                nursery.start_soon(prove)
            assert b.starts == workers and len(set(b.worker_pids)) == workers
        assert len(proofs) == 4
        for proof in proofs:
            assert await b.verify(m, GOOD, proof)
        pids = b.worker_pids
    finally:
        await b.aclose()
    assert b.worker_pids == [] and not any(alive(pid) for pid in pids)


async def test_range_circuit_round_trip(snark: SnarkBackend) -> None:
    m = market("range32", snark.system)
    inputs = encode_inputs({"x": 4_000_000_000, "square": 4_000_000_000**2})
    proof = await snark.prove(m, inputs, 60)
    assert await snark.verify(m, inputs, proof)
    too_big = encode_inputs({"x": 2**32, "square": 2**64})  # x is not 32 bits
    assert not await snark.check_inputs(m, too_big)
    with pytest.raises(ProvingError, match="invalid inputs"):
        await snark.prove(m, too_big, 60)


async def test_backend_for_picks_the_snark_backend() -> None:
    for system in SYSTEMS:
        backend = backend_for(market("multiplier", system))
        assert isinstance(backend, SnarkBackend)
        assert backend.system == system


# -- invalid proofs ------------------------------------------------------------------


def _tamper(proof: bytes) -> bytes:
    body = json.loads(proof)
    key = "pi_a" if body["proof"]["protocol"] == "groth16" else "A"
    point = body["proof"][key]
    point[0] = str((int(point[0]) + 1) % BN254_R)
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


async def test_tampered_or_foreign_proofs_are_false(snark: SnarkBackend) -> None:
    m = market("multiplier", snark.system)
    proof = await snark.prove(m, GOOD, 60)
    assert not await snark.verify(m, GOOD, _tamper(proof))
    # A valid proof of other inputs (c = 35) is not a proof of these (c = 33) ...
    other = encode_inputs({"a": 5, "b": 7})
    assert not await snark.verify(m, GOOD, await snark.prove(m, other, 60))
    # ... nor with its public signals swapped for ours.
    body = json.loads(await snark.prove(m, other, 60))
    body["publicSignals"] = ["33"]
    swapped = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    assert not await snark.verify(m, GOOD, swapped)
    # Not canonical, not JSON, not a proof: False, not an error.
    assert not await snark.verify(m, GOOD, json.dumps(json.loads(proof), indent=1).encode())
    assert not await snark.verify(m, GOOD, b"\xff garbage")
    assert not await snark.verify(m, GOOD, b'{"proof":{},"publicSignals":["33"]}')
    # The other system's proof.
    other_system = "plonk" if snark.system == "groth16" else "groth16"
    async with SnarkBackend(other_system, dirs=[SHIPPED_ARTIFACTS]) as b:
        foreign = await b.prove(market("multiplier", other_system), GOOD, 60)
    assert not await snark.verify(m, GOOD, foreign)
    assert await snark.verify(m, GOOD, proof)  # and the worker is still fine


# -- inputs --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "inputs",
    [
        b'{"a": "3", "b": "11"}',  # spaces
        b'{"b":"11","a":"3"}',  # keys not sorted
        b'{"a":3,"b":11}',  # numbers, not decimal strings
        b'{"a":"03","b":"11"}',  # leading zero
        b'{"a":"-3","b":"11"}',
        b'{"a":"3","a":"3","b":"11"}',  # duplicate key
        b'["3","11"]',
        b"{}",
        b"",
        b"not json",
        b'{"a":"3"}',  # a signal missing
        b'{"a":"3","b":"11","c":"33"}',  # c is an output, not an input
        b'{"a":"3","b":"11","d":"1"}',  # no such signal
        b'{"a":"1","b":"33"}',  # fails the circuit's constraint a != 1
        b'{"a":"3","b":["11"]}',  # an array for a scalar signal
        b'{"a":"3","b":"' + str(BN254_R).encode() + b'"}',  # not a field element
    ],
)
async def test_check_inputs_refuses(inputs: bytes) -> None:
    async with SnarkBackend("groth16", dirs=[SHIPPED_ARTIFACTS]) as b:
        m = market("multiplier", "groth16")
        assert not await b.check_inputs(m, inputs)
        assert not await b.verify(m, inputs, await b.prove(m, GOOD, 60))


def test_canonical_inputs_form() -> None:
    assert canonical_inputs(b'{"a":"3","b":["1","2"]}') == {"a": "3", "b": ["1", "2"]}
    assert encode_inputs({"b": 11, "a": 3}) == b'{"a":"3","b":"11"}'
    with pytest.raises(ValueError, match="canonical"):
        canonical_inputs(b'{"b":"11","a":"3"}')


# -- artifacts -----------------------------------------------------------------------


async def test_an_artifact_with_a_wrong_hash_is_refused(tmp_path: Path) -> None:
    m = market("multiplier", "groth16")
    ref = parse_verifier(m.verifier)
    shutil.copytree(SHIPPED_ARTIFACTS, tmp_path, dirs_exist_ok=True)
    zkey = tmp_path / f"{ref.zkey}.zkey"
    data = bytearray(zkey.read_bytes())
    data[-1] ^= 1
    zkey.write_bytes(bytes(data))
    async with SnarkBackend("groth16", dirs=[tmp_path]) as b:
        with pytest.raises(ArtifactError, match="artifact hash mismatch"):
            await b.prove(m, GOOD, 60)
        vkey = tmp_path / f"{ref.vkey}.vkey.json"
        vkey.write_text(vkey.read_text() + " ")
        with pytest.raises(ArtifactError, match="artifact hash mismatch"):
            await b.verify(m, GOOD, b'{"proof":{"protocol":"groth16"},"publicSignals":["33"]}')
    async with SnarkBackend("groth16", dirs=[tmp_path / "nowhere"]) as b:
        with pytest.raises(ArtifactError, match="not found"):
            await b.check_inputs(m, GOOD)


def test_a_prover_plan_needs_the_artifacts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from p2p_market.roles.wiring import prover_plan

    m = market("multiplier", "groth16")
    prover_plan(m, price=1, proof_time=5000)  # the shipped artifacts are found
    monkeypatch.setattr("p2p_market.proving.snark.SHIPPED_ARTIFACTS", tmp_path)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=r"wasm artifact .* not found"):
        prover_plan(m, price=1, proof_time=5000)


def test_the_verifier_field_form() -> None:
    m = market("multiplier", "plonk")
    ref = parse_verifier(m.verifier)
    assert ref.system == "plonk" and ref.verifier() == m.verifier
    for bad in ("", "plonk", m.verifier.upper(), m.verifier + ";", "groth17" + m.verifier[5:]):
        with pytest.raises(ValueError):
            parse_verifier(bad)


async def test_a_market_of_the_other_system_is_refused() -> None:
    async with SnarkBackend("plonk", dirs=[SHIPPED_ARTIFACTS]) as b:
        with pytest.raises(ProvingError, match="groth16"):
            await b.prove(market("multiplier", "groth16"), GOOD, 60)


# -- the worker ----------------------------------------------------------------------


async def test_the_worker_restarts_after_being_killed() -> None:
    m = market("multiplier", "groth16")
    async with SnarkBackend("groth16", dirs=[SHIPPED_ARTIFACTS]) as b:
        proof = await b.prove(m, GOOD, 60)
        first = b.worker_pid
        assert first is not None and alive(first)
        os.kill(first, signal.SIGKILL)
        await trio.sleep(0.2)
        assert await b.verify(m, GOOD, proof)  # a new worker, transparently
        assert b.starts == 2 and b.worker_pid not in (None, first)
        second = b.worker_pid
        assert second is not None
    assert b.worker_pid is None and not alive(second)  # closed with the back-end


async def test_warm_up_starts_the_worker_the_first_proof_then_uses() -> None:
    m = market("multiplier", "groth16")
    async with SnarkBackend("groth16", dirs=[SHIPPED_ARTIFACTS]) as b:
        assert b.worker_pid is None
        await b.warm_up(m)
        pid = b.worker_pid
        assert pid is not None and alive(pid) and b.starts == 1
        assert await b.check_inputs(m, GOOD)
        assert await b.verify(m, GOOD, await b.prove(m, GOOD, 60))
        assert b.starts == 1 and b.worker_pid == pid


async def test_a_timeout_kills_the_worker_and_the_next_call_starts_another() -> None:
    m = market("range32", "plonk")
    inputs = encode_inputs({"x": 7, "square": 49})
    async with SnarkBackend("plonk", dirs=[SHIPPED_ARTIFACTS]) as b:
        assert await b.check_inputs(m, inputs)
        pid = b.worker_pid
        assert pid is not None
        with pytest.raises(ProvingError, match="timed out"):
            await b.prove(m, inputs, 0.001)
        assert b.worker_pid is None and not alive(pid)
        with pytest.raises(ProvingError, match="deadline"):
            await b.prove(m, inputs, 0)
        assert await b.verify(m, inputs, await b.prove(m, inputs, 60))


async def test_cancellation_leaves_no_worker_behind() -> None:
    m = market("multiplier", "plonk")
    b = SnarkBackend("plonk", dirs=[SHIPPED_ARTIFACTS])
    with trio.move_on_after(0.05):
        await b.prove(m, GOOD, 60)
    assert b.worker_pid is None  # killed mid-call
    await b.check_inputs(m, GOOD)
    pid = b.worker_pid
    assert pid is not None
    await b.aclose()
    assert not alive(pid)


def test_a_worker_of_an_earlier_trio_run_is_replaced() -> None:
    # The CLI checks inputs in one trio.run and verifies in another.
    m = market("multiplier", "groth16")
    b = SnarkBackend("groth16", dirs=[SHIPPED_ARTIFACTS])
    proof = trio.run(b.prove, m, GOOD, 60)
    first = b.worker_pid
    assert first is not None
    assert trio.run(b.verify, m, GOOD, proof)
    assert b.starts == 2 and not alive(first)
    trio.run(b.aclose)


async def test_close_at_exit_closes_the_workers_when_the_nursery_ends() -> None:
    m = market("multiplier", "groth16")
    b = SnarkBackend("groth16", dirs=[SHIPPED_ARTIFACTS])
    async with trio.open_nursery() as nursery:
        await nursery.start(close_at_exit, [b, object()])
        assert await b.check_inputs(m, GOOD)
        pid = b.worker_pid
        assert pid is not None
        nursery.cancel_scope.cancel()
    assert b.worker_pid is None and not alive(pid)


# -- market create -------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("system", SYSTEMS)
async def test_market_create_end_to_end(made_market: Callable[[str], Made], system: str) -> None:
    output, made = await trio.to_thread.run_sync(made_market, system)  # conftest.py
    assert "INSECURE" in output
    (descriptor,) = made.glob("*.toml")
    m = read_descriptor(descriptor)
    assert m.name == f"multiplier-{system}-devnet-INSECURE"
    assert market_id(m).hex() in output
    ref = parse_verifier(m.verifier)
    assert ref.system == system
    names = {p.name for p in (made / "artifacts").iterdir()}
    assert names == {f"{ref.wasm}.wasm", f"{ref.zkey}.zkey", f"{ref.vkey}.vkey.json"}
    # The compile is deterministic: the same witness generator as the shipped one.
    assert ref.wasm == parse_verifier(market("multiplier", system).verifier).wasm
    async with SnarkBackend(system, dirs=[made / "artifacts"]) as b:
        proof = await b.prove(m, GOOD, 60)
        assert await b.verify(m, GOOD, proof)
    # A proof of the shipped market's setup does not verify in this one.
    async with SnarkBackend(system, dirs=[SHIPPED_ARTIFACTS]) as b:
        shipped = await b.prove(market("multiplier", system), GOOD, 60)
    async with SnarkBackend(system, dirs=[made / "artifacts"]) as b:
        assert not await b.verify(m, GOOD, shipped)


def test_market_create_needs_a_circuit(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["market", "create", "--proof-system", "groth16", "--out", str(tmp_path)]
    )
    assert result.exit_code == 2
    assert "needs --circuit" in result.stderr
    result = CliRunner().invoke(app, ["market", "create", "--proof-system", "pow", "--name", "x"])
    assert result.exit_code == 2
    assert "--out is required" in result.stderr


def test_market_create_with_a_too_small_ptau_says_so(tmp_path: Path) -> None:
    ptau = tmp_path / "tiny.ptau"
    ptau.write_bytes(b"not a ptau")
    result = CliRunner().invoke(
        app,
        [
            "market", "create", "--proof-system", "plonk",
            "--circuit", str(CIRCUITS / "multiplier.circom"),
            "--ptau", str(ptau), "--out", str(tmp_path / "out"),
        ],
    )  # fmt: skip
    assert result.exit_code == 2
    (line,) = result.stderr.splitlines()
    assert line.startswith("error: snarkjs plonk setup failed")
    assert not (tmp_path / "out" / "artifacts").exists() or not any(
        (tmp_path / "out" / "artifacts").iterdir()
    )


@pytest.mark.slow
def test_market_create_with_a_ceremony_zkey_pins_it_and_is_not_insecure(tmp_path: Path) -> None:
    """A real groth16 market comes from a phase-2 ceremony: its final zkey (here one
    made by a local setup, standing in for the ceremony's) and the ptau it started
    from. The zkey is verified against the circuit and pinned as given; a zkey of
    another circuit is refused in one line."""
    from p2p_market.proving.snark_setup import _local_ptau, _Tools, setup_circuit

    ptau = tmp_path / "ceremony.ptau"
    _local_ptau(_Tools(), tmp_path, 8, ptau)
    ceremony = setup_circuit("groth16", CIRCUITS / "multiplier.circom", tmp_path / "c", ptau=ptau)
    zkey = ceremony.paths["zkey"]
    out = tmp_path / "market"
    circuit = str(CIRCUITS / "multiplier.circom")
    args = ["market", "create", "--proof-system", "groth16", "--circuit", circuit,
            "--ptau", str(ptau), "--out", str(out)]  # fmt: skip
    result = CliRunner().invoke(app, [*args, "--zkey", str(zkey)])
    assert result.exit_code == 0, result.output
    assert "INSECURE" not in result.output
    (descriptor,) = out.glob("*.toml")
    m = read_descriptor(descriptor)
    assert m.name == "multiplier-groth16"
    assert parse_verifier(m.verifier).zkey == ceremony.ref.zkey  # pinned as given
    other = setup_circuit("groth16", CIRCUITS / "range32.circom", tmp_path / "r", ptau=ptau)
    refused = CliRunner().invoke(app, [*args, "--zkey", str(other.paths["zkey"])])
    assert refused.exit_code == 2, refused.output
    assert len(refused.stderr.splitlines()) == 1 and "zkey" in refused.stderr, refused.stderr
    no_ptau = CliRunner().invoke(app, [*args[:-4], "--out", str(out), "--zkey", str(zkey)])
    assert no_ptau.exit_code == 2 and "needs the --ptau" in no_ptau.stderr
