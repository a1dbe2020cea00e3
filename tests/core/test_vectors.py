"""The golden vectors of protocol v1 (protocols/vectors/market-v1.json) against the core.

Each vector: apply `setup` then `envelope_hex` to a fresh MarketState of the devnet
market, all at `now`; the last verdict must be `expected`, and `id_hex` must be the
message id. The committed file must be exactly what the generator produces, so the
vectors cannot drift from the code (nor the code from the vectors) silently.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from p2p_market.core.envelope import market_id
from p2p_market.core.state import MarketState
from p2p_market.core.validation import check_envelope, check_form
from p2p_market.core.verdict import Reason, Status
from p2p_market.markets.devnet import default_market

ROOT = Path(__file__).resolve().parents[2]
VECTOR_DIR = ROOT / "protocols" / "vectors"
GENERATOR = VECTOR_DIR / "generate.py"
VECTOR_FILE = VECTOR_DIR / "market-v1.json"

VECTORS: list[dict[str, Any]] = json.loads(VECTOR_FILE.read_text(encoding="ascii"))
FIELDS = {"name", "description", "envelope_hex", "id_hex", "now", "setup", "expected"}
FORM_LEVEL = {"oversized", "undecodable", "not_canonical"}


@functools.cache
def load_generator() -> ModuleType:
    """protocols/ is not a package: load the generator script as a module."""
    name = "market_v1_vector_generator"
    spec = importlib.util.spec_from_file_location(name, GENERATOR)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while being defined
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("vector", VECTORS, ids=[v["name"] for v in VECTORS])
def test_vector(vector: dict[str, Any]) -> None:
    now = vector["now"]
    state = MarketState(default_market())
    for item in vector["setup"]:
        raw = bytes.fromhex(item)
        verdict, env = check_envelope(raw)
        assert env is not None, f"setup envelope is not well-formed and signed: {verdict}"
        state.apply(raw, now)

    raw = bytes.fromhex(vector["envelope_hex"])
    verdict, _ = state.apply(raw, now)
    expected = vector["expected"]
    assert (verdict.status.value, verdict.reason.value) == (
        expected["status"],
        expected["reason"],
    ), f"{vector['name']}: got {verdict}"

    _, env = check_form(raw)
    if vector["id_hex"] is None:
        assert env is None
        assert expected["reason"] in FORM_LEVEL
    else:
        assert hashlib.sha256(raw).hexdigest() == vector["id_hex"]
        if env is not None:
            assert env.id.hex() == vector["id_hex"]
    if verdict.status is Status.ACCEPT:
        assert bytes.fromhex(vector["id_hex"]) in state.seen


def test_vectors_are_well_formed() -> None:
    names = [v["name"] for v in VECTORS]
    assert len(names) == len(set(names))
    reasons = {r.value for r in Reason}
    for v in VECTORS:
        assert set(v) == FIELDS, v["name"]
        assert v["expected"]["status"] in {s.value for s in Status}
        assert v["expected"]["reason"] in reasons
        # ACCEPT names a reason only for what it keeps as evidence (an invalid proof)
        accepting = v["expected"]["reason"] in ("ok", "invalid_proof")
        assert (v["expected"]["status"] == "accept") == accepting
        assert type(v["now"]) is int


def test_every_claimed_reason_is_covered() -> None:
    gen = load_generator()
    covered = set(gen.COVERED_REASONS)
    unreachable = set(gen.UNREACHABLE_REASONS)
    present = {v["expected"]["reason"] for v in VECTORS}
    assert covered <= present, f"claimed but not covered: {sorted(covered - present)}"
    assert present <= covered, f"covered but not claimed: {sorted(present - covered)}"
    assert not covered & unreachable
    assert covered | unreachable == {r.value for r in Reason}


def test_committed_file_is_what_the_generator_writes() -> None:
    gen = load_generator()
    first: str = gen.render()
    assert first == gen.render(), "the generator is not deterministic"
    assert VECTOR_FILE.read_bytes() == first.encode("ascii"), (
        "protocols/vectors/market-v1.json is stale: run "
        ".venv/bin/python protocols/vectors/generate.py"
    )


def test_market_descriptor_vector_names_the_market() -> None:
    """The devnet market's id is the SHA-256 of the body of its descriptor envelope."""
    vector = next(v for v in VECTORS if v["name"] == "ignore/own_market_descriptor")
    _, env = check_form(bytes.fromhex(vector["envelope_hex"]))
    assert env is not None
    assert hashlib.sha256(env.body).digest() == market_id(default_market())
