"""A groth16 market end to end, every node its own `p2p-market` process: a prover
(`prover run`) on the shipped example market protocols/circuits/multiplier-groth16,
and a requester (`p2p-market request`) that buys a proof of a·b = 33 and verifies
it, with real snarkjs on both sides (their Node.js workers)."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

import pytest

from p2p_market.core.envelope import market_id
from p2p_market.markets.descriptor import read_descriptor
from p2p_market.proving.snark import SHIPPED_ARTIFACTS, SnarkBackend, parse_verifier
from tests.processes import ANY_LISTEN, Made, cli, process

CIRCUITS = Path(__file__).resolve().parents[2] / "protocols" / "circuits"
KEYS = Path(__file__).resolve().parents[2] / "keys" / "devnet"


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


@pytest.mark.slow
async def test_a_prover_that_knows_only_the_market_id_joins_and_wins(
    tmp_path: Path, made_market: Callable[[str], Made]
) -> None:
    """A groth16 market made here (`market create`, conftest.made_market: a new setup,
    so its proving and verification keys are nowhere else). prover-1 has the descriptor and the
    artifacts. prover-2 is given nothing but the market's id and prover-1's address:
    it fetches the descriptor and the keys from prover-1 (each checked against the
    id; the witness generator is found locally, the compile being deterministic),
    runs in the market, bids cheaper and proves the requester's ask with the fetched
    keys. `market list --network` on prover-1's API shows the market announced by
    prover-2."""
    made = made_market("groth16").out
    (descriptor,) = made.glob("*.toml")
    market = read_descriptor(descriptor)
    mid = market_id(market).hex()
    ref = parse_verifier(market.verifier)
    have = {"P2P_MARKET_ARTIFACTS": str(made / "artifacts")}
    inputs = tmp_path / "inputs.json"
    inputs.write_bytes(b'{"a":"3","b":"11"}')
    out = tmp_path / "proof.json"
    with ExitStack() as stack:
        _, first = stack.enter_context(
            process(
                "prover", "run", "--market", str(descriptor), "--price", "5",
                "--proof-time", "5000", "--devnet-key", "prover-1",
                "--data-dir", str(tmp_path / "prover-1"), env=have,
            )
        )  # fmt: skip
        _, second = stack.enter_context(
            process(
                "prover", "run", "--market", mid, "--price", "3",
                "--proof-time", "5000", "--devnet-key", "prover-2",
                "--data-dir", str(tmp_path / "prover-2"), "--bootstrap", first["addr"],
            )
        )  # fmt: skip
        fetched = tmp_path / "prover-2" / "artifacts"
        assert (tmp_path / "prover-2" / "markets" / f"{mid}.toml").is_file()
        assert sorted(p.name for p in fetched.iterdir()) == sorted(
            [f"{ref.zkey}.zkey", f"{ref.vkey}.vkey.json", f"{mid}.market"]
        )
        api = f"http://127.0.0.1:{first['api_port']}"
        for _ in range(60):
            listed = cli("market", "list", "--network", "--api", api)
            assert listed.returncode == 0, listed.stdout + listed.stderr
            if "prover-2" in listed.stdout and mid in listed.stdout:
                break
            time.sleep(0.5)
        else:
            raise AssertionError(f"prover-2's announcement never listed:\n{listed.stdout}")
        assert market.name in listed.stdout and "groth16" in listed.stdout
        done = cli(
            "request", "--market", str(descriptor), "--input", str(inputs),
            "--max-price", "10", "--max-proof-time", "10000",
            "--bootstrap", first["addr"], "--bootstrap", second["addr"],
            "--out", str(out), "--timeout", "60",
            env=have,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
    lines = dict(line.split(":", 1) for line in done.stdout.splitlines() if ":" in line)
    assert "prover-2" in lines["prover"]
    assert json.loads(out.read_bytes())["publicSignals"] == ["33"]


async def test_a_node_config_naming_only_the_market_id_joins_it(tmp_path: Path) -> None:
    """`node run --config` with `[prover] market = "<id>"` and a bootstrap peer: the
    descriptor is fetched before the node starts, and kept for the next start."""
    descriptor = CIRCUITS / "multiplier-groth16-devnet-INSECURE.toml"
    mid = market_id(read_descriptor(descriptor)).hex()
    with ExitStack() as stack:
        _, first = stack.enter_context(
            process(
                "prover", "run", "--market", str(descriptor), "--price", "5",
                "--proof-time", "5000", "--devnet-key", "prover-1",
                "--data-dir", str(tmp_path / "prover-1"),
            )
        )  # fmt: skip
        config = tmp_path / "node.toml"
        config.write_text(
            "[node]\n"
            f'key_file = "{KEYS}/prover-3.pem"\n'
            'data_dir = "prover-3"\n'
            f'bootstrap = ["{first["addr"]}"]\n'
            "[prover]\n"
            f'market = "{mid}"\n'
            "price = 4\n"
            "proof_time = 5000\n"
        )
        _, joined = stack.enter_context(process("node", "run", "--config", str(config)))
        assert joined["event"] == "ready"
    assert (tmp_path / "prover-3" / "markets" / f"{mid}.toml").is_file()


REPO = Path(__file__).resolve().parents[2]


def snarkjs_verify(system: str, vkey: Path, public: Path, proof: Path) -> str:
    """Plain `npx snarkjs <system> verify`, from the repository's node_modules, not
    through this project's code: what a requester runs to check what it bought."""
    done = subprocess.run(
        ["npx", "--no", "snarkjs", system, "verify", str(vkey), str(public), str(proof)],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    return done.stdout + done.stderr


@pytest.mark.slow
async def test_a_requester_that_knows_only_the_market_id_buys_a_proof_snarkjs_accepts(
    tmp_path: Path, made_market: Callable[[str], Made]
) -> None:
    """A groth16 market made here (conftest.made_market, a new setup: its keys are
    nowhere else). The
    requester is given the market id and the prover's address, nothing else: it
    fetches the descriptor and the keys into its --data-dir, buys a proof, and writes
    it with --proof-out as snarkjs's proof.json and public.json, which plain `npx
    snarkjs groth16 verify` accepts with the market creator's verification key (and
    with the copy written beside them, whose hash the market pins). A proof.json
    altered by one digit is refused by snarkjs too, so the check can fail."""
    made = made_market("groth16").out
    (descriptor,) = made.glob("*.toml")
    market = read_descriptor(descriptor)
    mid = market_id(market).hex()
    ref = parse_verifier(market.verifier)
    creators_vkey = made / "artifacts" / f"{ref.vkey}.vkey.json"
    inputs = tmp_path / "inputs.json"
    inputs.write_bytes(b'{"a":"3","b":"11"}')
    bought = tmp_path / "bought"
    with process(
        "prover", "run", "--market", str(descriptor), "--price", "5",
        "--proof-time", "10000", "--devnet-key", "prover-1",
        "--data-dir", str(tmp_path / "prover-1"), *ANY_LISTEN,
        env={"P2P_MARKET_ARTIFACTS": str(made / "artifacts")},
    ) as (_, prover):  # fmt: skip
        done = cli(
            "request", "--market", mid, "--input", str(inputs),
            "--max-price", "10", "--max-proof-time", "20000",
            "--bootstrap", prover["addr"], "--data-dir", str(tmp_path / "requester"),
            "--out", str(tmp_path / "proof.bin"), "--proof-out", str(bought),
            "--timeout", "90",
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
    assert f"fetched market {market.name}" in done.stderr
    assert (tmp_path / "requester" / "markets" / f"{mid}.toml").is_file()
    assert (tmp_path / "requester" / "artifacts" / f"{ref.vkey}.vkey.json").is_file()
    assert not list((tmp_path / "requester").rglob("*.zkey"))  # a requester needs no proving key
    assert sorted(p.name for p in bought.iterdir()) == [
        "proof.json", "public.json", "verification_key.json",
    ]  # fmt: skip
    assert json.loads((bought / "public.json").read_text()) == ["33"]
    assert (bought / "verification_key.json").read_bytes() == creators_vkey.read_bytes()
    for vkey in (creators_vkey, bought / "verification_key.json"):
        said = snarkjs_verify("groth16", vkey, bought / "public.json", bought / "proof.json")
        assert "OK!" in said, said
    # The same check refuses a proof with one coordinate changed.
    body = json.loads((bought / "proof.json").read_text())
    body["pi_c"][0] = str(int(body["pi_c"][0]) + 1)
    forged = tmp_path / "forged.json"
    forged.write_text(json.dumps(body))
    said = snarkjs_verify("groth16", creators_vkey, bought / "public.json", forged)
    assert "OK!" not in said and "ERROR" in said, said


@pytest.mark.slow
async def test_a_node_following_a_market_listed_only_by_id_buys_a_verified_proof(
    tmp_path: Path,
) -> None:
    """`node run --config` whose `[[markets]]` names the groth16 market by id alone,
    with a `[requester]` section and prover-1 as its bootstrap peer: the descriptor
    is fetched before the node starts; `request --api` through that node (given
    the same id and the node's data dir, where the descriptor now is) ends with a
    proof the node verified, the CLI verified again, and plain snarkjs accepts."""
    descriptor = CIRCUITS / "multiplier-groth16-devnet-INSECURE.toml"
    market = read_descriptor(descriptor)
    mid = market_id(market).hex()
    inputs = tmp_path / "inputs.json"
    inputs.write_bytes(b'{"a":"3","b":"11"}')
    with ExitStack() as stack:
        _, first = stack.enter_context(
            process(
                "prover", "run", "--market", str(descriptor), "--price", "5",
                "--proof-time", "10000", "--devnet-key", "prover-1",
                "--data-dir", str(tmp_path / "prover-1"), *ANY_LISTEN,
            )
        )  # fmt: skip
        config = tmp_path / "node.toml"
        config.write_text(
            "[node]\n"
            f'key_file = "{KEYS}/requester-1.pem"\n'
            'data_dir = "buyer"\n'
            'listen = ["/ip4/127.0.0.1/tcp/0"]\n'
            f'bootstrap = ["{first["addr"]}"]\n'
            "[[markets]]\n"
            f'id = "{mid}"\n'
            "[requester]\n"
        )
        _, buyer = stack.enter_context(process("node", "run", "--config", str(config)))
        assert (tmp_path / "buyer" / "markets" / f"{mid}.toml").is_file()
        done = cli(
            "request", "--market", mid, "--input", str(inputs),
            "--max-price", "10", "--max-proof-time", "20000",
            "--api", f"http://127.0.0.1:{buyer['api_port']}",
            "--api-token-file", buyer["api_token_file"],
            "--data-dir", str(tmp_path / "buyer"),
            "--out", str(tmp_path / "proof.bin"), "--proof-out", str(tmp_path / "bought"),
            "--timeout", "90",
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
    assert "verified" in done.stdout
    bought = tmp_path / "bought"
    said = snarkjs_verify(
        "groth16", bought / "verification_key.json", bought / "public.json", bought / "proof.json"
    )
    assert "OK!" in said, said


async def test_the_sdk_given_only_the_market_id_buys_a_verified_proof(tmp_path: Path) -> None:
    """`open_client(market=<id>)` on a machine without the descriptor: fetched from
    the bootstrap peer into `data_dir` (and kept there), then a verified proof."""
    from p2p_market.sdk import RequestFailed, open_client

    descriptor = CIRCUITS / "multiplier-groth16-devnet-INSECURE.toml"
    market = read_descriptor(descriptor)
    mid = market_id(market).hex()
    with process(
        "prover", "run", "--market", str(descriptor), "--price", "5",
        "--proof-time", "10000", "--devnet-key", "prover-1",
        "--data-dir", str(tmp_path / "prover-1"), *ANY_LISTEN,
    ) as (_, prover):  # fmt: skip
        async with open_client([prover["addr"]], mid, data_dir=tmp_path / "sdk") as client:
            proof = await client.request_proof(
                b'{"a":"3","b":"11"}', max_price=10, max_proof_time=20_000, timeout=90
            )
    assert (tmp_path / "sdk" / "markets" / f"{mid}.toml").is_file()
    assert json.loads(proof)["publicSignals"] == ["33"]
    async with SnarkBackend("groth16", dirs=[SHIPPED_ARTIFACTS]) as backend:
        assert await backend.verify(market, b'{"a":"3","b":"11"}', proof)
    # The prover is gone now: an id fetched from nobody is RequestFailed("unreachable").
    with pytest.raises(RequestFailed) as caught:
        async with open_client([prover["addr"]], "ab" * 32, data_dir=tmp_path / "sdk2"):
            raise AssertionError("the client should not open")
    assert caught.value.reason == "unreachable", caught.value
