"""The demo proof of work: round trips, wrong proofs, difficulty lines, and that the
search neither blocks the event loop nor outlives its deadline or cancellation."""

from __future__ import annotations

import hashlib
import itertools
import math

import pytest
import trio

from p2p_market.core.messages import Market
from p2p_market.proving import ProvingError, backend_for
from p2p_market.proving.external import ExternalBackend
from p2p_market.proving.pow import (
    MAX_POW_INPUT_BYTES,
    POW_DOMAIN,
    PowBackend,
    effective_difficulty,
    pow_ok,
    solve_pow,
)

HARD = b"difficulty=40\nnobody finds this in a test run"


def market(difficulty: int = 10, **kw: object) -> Market:
    fields: dict[str, object] = {
        "name": "test-pow",
        "proof_system": "pow",
        "verifier": "sha256-leading-zero-bits",
        "difficulty": difficulty,
        "created_at": 1,
    }
    fields.update(kw)
    return Market(**fields)  # type: ignore[arg-type]


def leading_zero_bits(digest: bytes) -> int:
    n = int.from_bytes(digest, "big")
    return 256 - n.bit_length()


@pytest.mark.parametrize("difficulty", [8, 10, 12])
async def test_prove_verify_round_trip(difficulty: int) -> None:
    backend = PowBackend()
    m = market(difficulty)
    inputs = b"round trip at %d" % difficulty
    with trio.fail_after(10):
        proof = await backend.prove(m, inputs, 10)
    assert len(proof) == 8
    assert leading_zero_bits(hashlib.sha256(POW_DOMAIN + inputs + proof).digest()) >= difficulty
    assert await backend.verify(m, inputs, proof)
    assert pow_ok(inputs, difficulty, proof)
    # The search starts at nonce 0, so the proof is the first nonce that works.
    assert solve_pow(inputs, difficulty, 0, int.from_bytes(proof, "big") + 1) == proof
    assert solve_pow(inputs, difficulty, 0, int.from_bytes(proof, "big")) is None


async def test_wrong_proofs_fail() -> None:
    backend = PowBackend()
    m = market(12)
    inputs = b"the real inputs"
    proof = await backend.prove(m, inputs, math.inf)
    wrong = next(
        n.to_bytes(8, "big") for n in range(1 << 16) if not pow_ok(inputs, 12, n.to_bytes(8, "big"))
    )
    assert not await backend.verify(m, inputs, wrong)
    other = b"other inputs"
    other_bits = leading_zero_bits(hashlib.sha256(POW_DOMAIN + other + proof).digest())
    assert await backend.verify(m, other, proof) == (other_bits >= 12)
    assert not await backend.verify(m, inputs, proof + b"\x00")  # wrong length
    assert not await backend.verify(m, inputs, proof[:7])
    assert not await backend.verify(m, inputs, b"")
    # A proof is checked against the market's difficulty, not the one it happened to meet.
    bits = leading_zero_bits(hashlib.sha256(POW_DOMAIN + inputs + proof).digest())
    assert not await backend.verify(market(bits + 1), inputs, proof)


async def test_difficulty_line_overrides_market() -> None:
    backend = PowBackend()
    m = market(40)  # far too hard for a test, unless the inputs say otherwise
    easy = b"difficulty=0\nanything"
    assert await backend.prove(m, easy, 5) == bytes(8)
    with trio.fail_after(5):
        proof = await backend.prove(m, b"difficulty=9\npayload", 5)
    assert await backend.verify(m, b"difficulty=9\npayload", proof)
    assert effective_difficulty(7, b"no line here") == 7
    assert effective_difficulty(7, b"difficulty=40") == 40


@pytest.mark.parametrize(
    "inputs",
    [
        b"difficulty=41\n",
        b"difficulty=07\n",
        b"difficulty=\n",
        b"difficulty=-1\n",
        b"difficulty= 5\n",
        b"difficulty=5 \n",
        b"difficulty=5\r\n",
        b"difficulty=99999999999999999999\n",
        b"x" * (MAX_POW_INPUT_BYTES + 1),
    ],
)
async def test_invalid_inputs(inputs: bytes) -> None:
    backend = PowBackend()
    m = market(4)
    assert not await backend.check_inputs(m, inputs)
    assert not await backend.verify(m, inputs, bytes(8))
    with pytest.raises(ProvingError, match="invalid inputs"):
        await backend.prove(m, inputs, math.inf)


@pytest.mark.parametrize(
    "inputs",
    [b"", b"plain", b"difficulty=0", b"difficulty=40\nrest", b"x\ndifficulty=99", bytes(1024)],
)
async def test_valid_inputs(inputs: bytes) -> None:
    assert await PowBackend().check_inputs(market(4), inputs)


def test_solve_pow_range() -> None:
    top = (1 << 64) - 1
    assert solve_pow(b"x", 0, top, 10) == top.to_bytes(8, "big")
    assert solve_pow(b"x", 0, 1 << 64, 10) is None  # past the nonce space
    assert solve_pow(b"x", 0, 5, 0) is None
    assert solve_pow(b"x", 64, 0, 1000) is None  # 2**64 work: not in 1000 tries
    assert pow_ok(b"x", 0, bytes(8))
    assert not pow_ok(b"x", 1, b"short")


async def test_deadline_reached_quickly() -> None:
    backend = PowBackend()
    start = trio.current_time()
    with trio.fail_after(3), pytest.raises(ProvingError, match="deadline reached"):
        await backend.prove(market(), HARD, 0.2)
    assert trio.current_time() - start < 1.0
    with pytest.raises(ProvingError, match="deadline reached after 0 hashes"):
        await backend.prove(market(), HARD, -1)  # already late


async def test_event_loop_keeps_ticking() -> None:
    backend = PowBackend()
    ticks: list[float] = []

    async def ticker() -> None:
        while True:
            ticks.append(trio.current_time())
            await trio.sleep(0.01)

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ticker)
            with pytest.raises(ProvingError, match="deadline reached"):
                await backend.prove(market(), HARD, 0.6)
            nursery.cancel_scope.cancel()
    gaps = [b - a for a, b in itertools.pairwise(ticks)]
    assert len(ticks) >= 15, ticks
    assert max(gaps) < 0.3, max(gaps)


async def test_cancellation_stops_proving() -> None:
    backend = PowBackend()
    start = trio.current_time()
    with trio.fail_after(3), trio.move_on_after(0.3) as scope:
        await backend.prove(market(), HARD, math.inf)
    assert scope.cancelled_caught
    assert trio.current_time() - start < 1.0
    # No worker thread is left hashing: a fresh search runs at once.
    with trio.fail_after(3):
        assert await backend.prove(market(0), b"easy", math.inf) == bytes(8)


def test_backend_for_picks_by_proof_system() -> None:
    pow_backend = backend_for(market(), prove_cmd="ignored {proof}", chunk=1000)
    assert isinstance(pow_backend, PowBackend)
    assert pow_backend.chunk == 1000

    external = market(0, proof_system="external", verifier="check-proof {inputs} {proof}")
    requester = backend_for(external)
    assert isinstance(requester, ExternalBackend)
    assert requester.prove_argv is None
    assert requester.verify_argv == ("check-proof", "{inputs}", "{proof}")
    prover = backend_for(external, prove_cmd="zkvm prove {inputs} -o {proof}", verify_cmd="v")
    assert isinstance(prover, ExternalBackend)
    assert prover.prove_argv == ("zkvm", "prove", "{inputs}", "-o", "{proof}")
    assert prover.verify_argv == ("v",)
    assert backend_for(market(0, proof_system="external", verifier="")).verify_argv is None  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="unknown placeholder"):
        backend_for(external, prove_cmd="zkvm {input} {proof}")
    with pytest.raises(ValueError):
        PowBackend(chunk=0)
