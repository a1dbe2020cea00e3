"""The requester's lifecycle commands (issue 14), as real processes on 127.0.0.1:
`request --json`, `--deny` keeping the cheapest prover from winning, a split
request from the command line, `asks --mine`, and `proof fetch` from a requester
node, also after that node restarted (its role store)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from p2p_market.core.crypto import devnet_key
from p2p_market.core.envelope import market_id
from p2p_market.core.messages import sha256
from p2p_market.markets.descriptor import read_descriptor
from p2p_market.node.api_client import ApiClient
from p2p_market.node.keyfile import write_key
from p2p_market.proving.pow import pow_ok
from tests.e2e.test_cli_e2e import quick_market, wait_state
from tests.e2e.test_cli_errors import closed_port, one_line_error
from tests.processes import ANY_LISTEN, ANY_PORT, cli, process

CHEAP = devnet_key("prover-1").public_key.hex()
DEAR = devnet_key("prover-2").public_key.hex()


@pytest.fixture(scope="module")
def provers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Two provers in one quick pow market: prover-1 at 3, prover-2 at 6 (the
    cheapest wins an ask that prefers cost, unless the ask denies it)."""
    tmp = tmp_path_factory.mktemp("provers")
    descriptor = quick_market(tmp)
    with (
        process(
            "prover", "run", "--market", str(descriptor), "--price", "3",
            "--proof-time", "3000", "--capacity", "4", "--devnet-key", "prover-1",
            "--data-dir", str(tmp / "p1"), *ANY_LISTEN,
        ) as (_, cheap),
        process(
            "prover", "run", "--market", str(descriptor), "--price", "6",
            "--proof-time", "3000", "--capacity", "4", "--devnet-key", "prover-2",
            "--data-dir", str(tmp / "p2"), "--bootstrap", cheap["addr"], *ANY_LISTEN,
        ) as (_, dear),
    ):  # fmt: skip
        yield {
            "descriptor": descriptor,
            "market": read_descriptor(descriptor),
            "addrs": [cheap["addr"], dear["addr"]],
            "api": ApiClient(f"http://127.0.0.1:{cheap['api_port']}"),
        }


def _request(provers: dict[str, Any], tmp: Path, *extra: str) -> Any:
    inputs = tmp / "inputs.txt"
    inputs.write_bytes(b"prove me, but not you\n")
    boot = [a for addr in provers["addrs"] for a in ("--bootstrap", addr)]
    return cli(
        "request", "--market", str(provers["descriptor"]), "--input", str(inputs),
        "--max-price", "20", "--max-proof-time", "10000", "--prefer", "cost",
        *boot, "--out", str(tmp / "proof.bin"), "--timeout", "90", "--json", *extra,
    )  # fmt: skip


def test_deny_keeps_the_cheapest_prover_from_winning(
    provers: dict[str, Any], tmp_path: Path
) -> None:
    """Both provers bid within the caps and prover-1 is the cheaper: denied (by the
    start of its key), prover-2 wins at its price. The --json document says so."""
    done = _request(provers, tmp_path, "--deny", CHEAP[:12], "--discover-timeout", "60")
    assert done.returncode == 0, done.stdout + done.stderr
    doc = json.loads(done.stdout)  # one document, nothing else on stdout
    assert doc["ok"] is True and doc["state"] == "proven"
    assert [(w["prover"], w["name"], w["price"]) for w in doc["winners"]] == [(DEAR, "prover-2", 6)]
    assert doc["paid"] == 6
    proof = doc["proofs"][0]
    assert proof["path"] == str(tmp_path / "proof.bin") and proof["prover"] == DEAR
    inputs = (tmp_path / "inputs.txt").read_bytes()
    assert pow_ok(inputs, provers["market"].difficulty, (tmp_path / "proof.bin").read_bytes())
    assert proof["bytes"] == (tmp_path / "proof.bin").stat().st_size
    kinds = [e["event"] for e in doc["events"]]
    assert kinds[0] == "placed" and "assigned" in kinds and kinds[-1] == "verified"
    assert set(doc["timings_ms"]) == {"discover", "placed_to_proven", "total"}
    # Signed in the ask, as every node holds it: the full key, and only it.
    view = wait_state(provers["api"], doc["ask"], "proven")
    assert view["deny"] == [CHEAP] and view["allow"] == []
    assert view["winners"] == [DEAR]


def test_split_request_from_the_command_line(provers: dict[str, Any], tmp_path: Path) -> None:
    """--split 2: two segment asks, then the aggregation ask; its proof to --out.
    --allow names prover-1 by its devnet name, and it wins all three."""
    done = _request(provers, tmp_path, "--split", "2", "--allow", "prover-1")
    assert done.returncode == 0, done.stdout + done.stderr
    doc = json.loads(done.stdout)
    split = doc["split"]
    assert len(split["segment_asks"]) == 2 and doc["ask"] == split["aggregation_ask"]
    assert doc["winners"][0]["prover"] == CHEAP
    assert doc["paid"] == 3 * 3 and split["segment_paid"] == [3, 3]
    api = provers["api"]
    for ask in [*split["segment_asks"], split["aggregation_ask"]]:
        view = wait_state(api, ask, "proven")
        assert view["allow"] == [CHEAP] and view["winners"] == [CHEAP]
    inputs = (tmp_path / "inputs.txt").read_bytes()
    half = len(inputs) // 2
    hashes = {api.ask(a)["inputs_hash"] for a in split["segment_asks"]}
    assert hashes == {sha256(inputs[:half]).hex(), sha256(inputs[half:]).hex()}
    assert (tmp_path / "proof.bin").stat().st_size == doc["proofs"][0]["bytes"] > 0
    assert "[segment 1/2]" in done.stderr and "[aggregate]" in done.stderr


def test_bad_allow_and_deny_are_one_line_before_anything_is_placed(
    provers: dict[str, Any], tmp_path: Path
) -> None:
    before = len(provers["api"].book(market_id(provers["market"]).hex())["asks"])
    for extra, needle in (
        (("--deny", "nobody"), "--deny 'nobody': not a prover's public key"),
        (("--allow", "prover-1", "--deny", "prover-1"), "in both --allow and --deny"),
        (("--deny", "ab" * 6), "no prover whose key starts so has a bid here"),
        (("--split", "1"), "--split must be between 2 and 64"),
    ):
        done = _request(provers, tmp_path, *extra, "--discover-timeout", "60")
        assert needle in one_line_error(done.stdout, done.stderr, done.returncode), extra
    assert len(provers["api"].book(market_id(provers["market"]).hex())["asks"]) == before


def test_asks_mine_and_proof_fetch_after_a_restart(tmp_path: Path) -> None:
    """A requester node (its [requester] role verifies what it buys) buys through
    `request --api --json`; `asks --mine` lists that ask (and not the prover's
    view of others); the node stops and starts again, and `proof fetch` still
    writes the verified proof, as `request --proof-out` would."""
    descriptor = quick_market(tmp_path)
    market = read_descriptor(descriptor)
    mid = market_id(market).hex()
    me = devnet_key("requester-1").public_key.hex()
    write_key(tmp_path / "q.pem", devnet_key("requester-1"), None)
    inputs = tmp_path / "inputs.txt"
    inputs.write_bytes(b"fetch me later\n")
    with process(
        "prover", "run", "--market", str(descriptor), "--price", "4", "--proof-time", "3000",
        "--devnet-key", "prover-3", "--data-dir", str(tmp_path / "p"), *ANY_LISTEN,
    ) as (_, prover):  # fmt: skip
        config = tmp_path / "q.toml"
        config.write_text(
            f'[node]\nkey_file = "q.pem"\ndata_dir = "q"\n{ANY_PORT}'
            f'bootstrap = ["{prover["addr"]}"]\n'
            f'[[markets]]\ndescriptor = "{descriptor.name}"\n[requester]\n'
        )
        with process("node", "run", "--config", str(config)) as (_, node):
            url, token = f"http://127.0.0.1:{node['api_port']}", node["api_token_file"]
            done = cli(
                "request", "--api", url, "--api-token-file", token, "--market", mid,
                "--input", str(inputs), "--max-price", "10", "--max-proof-time", "5000",
                "--out", str(tmp_path / "proof.bin"), "--timeout", "90", "--json",
                "--discover-timeout", "60",
            )  # fmt: skip
            assert done.returncode == 0, done.stdout + done.stderr
            doc = json.loads(done.stdout)
            ask = doc["ask"]
            assert doc["winners"] == [
                {"prover": devnet_key("prover-3").public_key.hex(), "name": "prover-3", "price": 4}
            ]
            assert [e["event"] for e in doc["events"]][-1] == "accepted"
            listed = cli("asks", "--mine", "--api", url, "--json")
            assert listed.returncode == 0, listed.stderr
            mine = json.loads(listed.stdout)["asks"]
            assert [(a["id"], a["state"], a["requester"], a["paid"]) for a in mine] == [
                (ask, "proven", me, 4)
            ]
            table = cli("asks", "--mine", "--api", url)
            assert ask[:16] in table.stdout and "PROVEN" in table.stdout
            assert "prover-3 4" in table.stdout and "accepted" in table.stdout
            # The prover's node placed no ask: its own list is empty, the market's is not.
            prover_url = f"http://127.0.0.1:{prover['api_port']}"
            wait_state(ApiClient(prover_url), ask, "proven")
            assert json.loads(cli("asks", "--mine", "--api", prover_url, "--json").stdout) == {
                "asks": []
            }
            everyone = json.loads(cli("asks", "--api", prover_url, "--json").stdout)["asks"]
            assert [a["id"] for a in everyone] == [ask]
        with process("node", "run", "--config", str(config)) as (_, node):  # restarted
            url = f"http://127.0.0.1:{node['api_port']}"
            fetched = cli(
                "proof", "fetch", ask[:10], "--api", url, "--out", str(tmp_path / "later"),
                "--input", str(inputs), "--api-token-file", node["api_token_file"], "--json",
            )  # fmt: skip
            assert fetched.returncode == 0, fetched.stdout + fetched.stderr
            got = json.loads(fetched.stdout)
            assert got["ask"] == ask and got["verified_here"] is True
            assert got["proofs"][0]["files"] == [str(tmp_path / "later" / "proof.bin")]
            proof = (tmp_path / "later" / "proof.bin").read_bytes()
            assert proof == (tmp_path / "proof.bin").read_bytes()
            assert pow_ok(inputs.read_bytes(), market.difficulty, proof)
            # Without the token: one line, exit 2; a node that is not there: exit 1.
            no_token = cli("proof", "fetch", ask, "--api", url, "--out", str(tmp_path / "x"))
            assert "needs the node's API token" in one_line_error(
                no_token.stdout, no_token.stderr, no_token.returncode
            )
            wrong = cli(
                "proof", "fetch", "ab" * 32, "--api", url, "--out", str(tmp_path / "x"),
                "--api-token-file", node["api_token_file"],
            )  # fmt: skip
            assert "unknown ask" in one_line_error(wrong.stdout, wrong.stderr, wrong.returncode)
    closed = f"http://127.0.0.1:{closed_port()}"
    gone = cli("asks", "--mine", "--api", closed)
    assert "cannot reach the node" in one_line_error(gone.stdout, gone.stderr, gone.returncode, 1)
    gone = cli(
        "proof", "fetch", ask, "--api", closed, "--out", str(tmp_path / "x"),
        "--api-token-file", str(token),
    )  # fmt: skip
    assert "cannot reach the node" in one_line_error(gone.stdout, gone.stderr, gone.returncode, 1)
    bad = cli("asks", "--api", closed, "--state", "done")
    assert "--state must be one of" in one_line_error(bad.stdout, bad.stderr, bad.returncode)
    assert not (tmp_path / "x").exists()


def test_request_api_without_a_node_exits_1_and_split_needs_its_own_node(
    tmp_path: Path,
) -> None:
    inputs = tmp_path / "inputs.txt"
    inputs.write_bytes(b"abcdef")
    token = tmp_path / "api.token"
    token.write_text("ab" * 32 + "\n")
    closed = f"http://127.0.0.1:{closed_port()}"
    base = [
        "request", "--api", closed, "--api-token-file", str(token), "--input", str(inputs),
        "--max-price", "10", "--max-proof-time", "5000", "--out", str(tmp_path / "p.bin"),
    ]  # fmt: skip
    gone = cli(*base, "--json")
    assert "cannot reach the node" in one_line_error(gone.stdout, gone.stderr, gone.returncode, 1)
    split = cli(*base, "--split", "2")
    assert "--split does not go with --api" in one_line_error(
        split.stdout, split.stderr, split.returncode
    )
