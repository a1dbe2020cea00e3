"""`p2p-market init relay|prover|requester` on real files: each template goes
through the real config parser and role planner, says what each key is for, and the
command refuses what it should with one line and exit status 2. That the three run
as a market: tests/e2e/test_init_e2e.py; that their keys are documented:
tests/test_config_reference.py."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from p2p_market.cli.app import app
from p2p_market.cli.templates import API_PORTS, LISTEN_PORTS
from p2p_market.core.envelope import market_id
from p2p_market.core.messages import Market
from p2p_market.markets.devnet import default_market
from p2p_market.net.host import peer_id_of
from p2p_market.node.config import load_config
from p2p_market.node.keyfile import new_key, read_key, write_key
from p2p_market.roles.wiring import RolePlan, plan_from_config

runner = CliRunner()


def invoke(*args: str) -> Result:
    return runner.invoke(app, list(args))


def one_line_error(result: Result) -> str:
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def init(tmp: Path, role: str, *args: str) -> Path:
    out = tmp / f"{role}.toml"
    done = invoke("init", role, "--out", str(out), *args)
    assert done.exit_code == 0, done.output
    return out


def planned(path: Path) -> tuple[list[Market], RolePlan]:
    cfg, plan = plan_from_config(load_config(path), path.parent)
    return list(cfg.markets), plan


def test_the_three_templates_parse_and_plan(tmp_path: Path) -> None:
    relay, prover, requester = (init(tmp_path, r) for r in ("relay", "prover", "requester"))
    devnet = [default_market()]
    markets, plan = planned(relay)
    assert markets == devnet and plan.names == []
    markets, plan = planned(prover)
    assert markets == devnet and plan.names == ["prover"]
    assert plan.prover is not None
    assert (plan.prover.price, plan.prover.proof_time, plan.prover.capacity) == (10, 5000, 1)
    markets, plan = planned(requester)
    assert markets == devnet and plan.names == ["requester"]
    # the prover and the requester bootstrap from the relay template's address
    relay_key = read_key(tmp_path / "relay.pem", None)
    address = (
        f"/ip4/127.0.0.1/tcp/{LISTEN_PORTS['relay']}/p2p/"
        f"{peer_id_of(relay_key.public_key).to_base58()}"
    )
    for path in (prover, requester):
        assert load_config(path).bootstrap == (address,)
    assert load_config(relay).bootstrap == ()
    # fixed ports, distinct per role, so that the three run on one machine
    for role, path in (("relay", relay), ("prover", prover), ("requester", requester)):
        cfg = load_config(path)
        assert cfg.listen == (f"/ip4/127.0.0.1/tcp/{LISTEN_PORTS[role]}",)
        assert cfg.api_port == API_PORTS[role]
        assert cfg.data_dir == tmp_path / "data" / role
        # a fresh key of its own, readable by the owner only
        assert cfg.key_file == tmp_path / f"{role}.pem"
        assert cfg.key_file.stat().st_mode & 0o777 == 0o600
    keys = {read_key(tmp_path / f"{r}.pem", None).public_key for r in LISTEN_PORTS}
    assert len(keys) == 3


@pytest.mark.parametrize("role", ["relay", "prover", "requester"])
def test_every_key_is_explained_and_every_section_named(tmp_path: Path, role: str) -> None:
    """A comment right above each key the template sets, and in the comment block
    above each section header a line naming its section of docs/config.md."""
    if role != "relay":
        init(tmp_path, "relay")
    lines = init(tmp_path, role).read_text().splitlines()
    assert lines[0].startswith("# ")
    for i, line in enumerate(lines):
        if header := re.fullmatch(r"\[\[?(\w+)\]\]?", line):
            block: list[str] = []
            while lines[i - 1 - len(block)].startswith("#"):
                block.append(lines[i - 1 - len(block)])
            assert any("docs/config.md" in c and line in c for c in block), line
            assert header.group(1) in ("node", "markets", role)
        elif re.match(r"\w+ = ", line):
            assert lines[i - 1].startswith("# "), f"no comment above {line!r}"
    sections = set(tomllib.loads("\n".join(lines)))
    assert sections == {"node", "markets", *(() if role == "relay" else (role,))}


def test_requester_template_says_how_to_buy(tmp_path: Path) -> None:
    init(tmp_path, "relay")
    text = init(tmp_path, "requester").read_text()
    port = API_PORTS["requester"]
    assert f"p2p-market request --api http://127.0.0.1:{port}" in text
    assert "--api-token-file data/requester/api.token" in text


def test_refuses_to_overwrite_without_force_and_keeps_the_key(tmp_path: Path) -> None:
    relay = init(tmp_path, "relay")
    relay.write_text(relay.read_text() + "# edited\n")
    before = relay.read_bytes(), (tmp_path / "relay.pem").read_bytes()
    error = one_line_error(invoke("init", "relay", "--out", str(relay)))
    assert "exists" in error and "--force" in error
    assert (relay.read_bytes(), (tmp_path / "relay.pem").read_bytes()) == before
    again = invoke("init", "relay", "--out", str(relay), "--force")
    assert again.exit_code == 0, again.output
    assert "# edited" not in relay.read_text()
    # the key stays: the others' bootstrap names the relay's peer id
    assert (tmp_path / "relay.pem").read_bytes() == before[1]
    assert "kept" in again.stdout


def test_bad_role_is_one_line(tmp_path: Path) -> None:
    error = one_line_error(invoke("init", "miner", "--out", str(tmp_path / "m.toml")))
    assert "relay, prover or requester" in error
    assert list(tmp_path.iterdir()) == []


def test_prover_without_a_relay_says_what_to_do(tmp_path: Path) -> None:
    error = one_line_error(invoke("init", "prover", "--out", str(tmp_path / "p.toml")))
    assert "init relay" in error and "--bootstrap" in error
    assert list(tmp_path.iterdir()) == []


def test_a_relay_on_any_port_needs_an_explicit_bootstrap(tmp_path: Path) -> None:
    init(tmp_path, "relay", "--listen", "/ip4/127.0.0.1/tcp/0")
    error = one_line_error(invoke("init", "prover", "--out", str(tmp_path / "prover.toml")))
    assert "tcp/0" in error and "--bootstrap" in error


def test_options_market_file_id_key_listen_bootstrap(tmp_path: Path) -> None:
    """--market FILE and ID, --key-file, --listen, --api-port, --bootstrap land in
    a config that still parses and plans."""
    descriptor = tmp_path / "markets" / "quick.toml"
    made = invoke(
        "market", "create", "--name", "quick", "--proof-system", "pow",
        "--difficulty", "8", "--out", str(descriptor),
    )  # fmt: skip
    assert made.exit_code == 0, made.output
    sub = tmp_path / "conf"
    sub.mkdir()
    key = write_key(tmp_path / "keys" / "mine.pem", new_key(), None)
    peer = f"/ip4/127.0.0.1/tcp/4999/p2p/{peer_id_of(new_key().public_key).to_base58()}"
    out = init(
        sub, "prover", "--market", str(descriptor), "--key-file", str(key),
        "--listen", "/ip4/0.0.0.0/tcp/5001", "--api-port", "0", "--bootstrap", peer,
    )  # fmt: skip
    data = tomllib.loads(out.read_text())
    assert data["prover"]["market"] == "../markets/quick.toml"
    assert data["markets"] == [{"descriptor": "../markets/quick.toml"}]
    assert data["node"]["key_file"] == "../keys/mine.pem"
    assert not (sub / "prover.pem").exists()
    cfg = load_config(out)
    assert cfg.listen == ("/ip4/0.0.0.0/tcp/5001",) and cfg.api_port == 0
    assert cfg.bootstrap == (peer,)
    _, plan = planned(out)
    assert plan.prover is not None and plan.prover.market.name == "quick"
    # a market id: written as an id entry (fetched from the bootstrap peers at start)
    mid = market_id(plan.prover.market).hex()
    out = init(sub, "requester", "--market", mid, "--bootstrap", peer)
    data = tomllib.loads(out.read_text())
    assert data["markets"] == [{"id": mid}]
    assert f"--market {mid}" in out.read_text()


def test_bad_options_are_one_line(tmp_path: Path) -> None:
    out = str(tmp_path / "relay.toml")
    for args, words in (
        (("--market", str(tmp_path / "nope.toml")), "not found"),
        (("--listen", "not-an-addr"), "--listen"),
        (("--api-port", "70000"), "--api-port"),
        (("--key-file", str(tmp_path / "nope.pem")), "--key-file"),
        (("--relay", out), "--relay"),
    ):
        assert words in one_line_error(invoke("init", "relay", "--out", out, *args))
    assert list(tmp_path.iterdir()) == []


def test_passphrase_file_encrypts_the_new_key_or_opens_a_given_one(tmp_path: Path) -> None:
    (tmp_path / "pw.txt").write_text("correct horse\n")
    out = init(tmp_path, "relay", "--passphrase-file", str(tmp_path / "pw.txt"))
    cfg = load_config(out)
    assert cfg.passphrase_file == tmp_path / "pw.txt"
    assert (tmp_path / "relay.pem").read_text().startswith("-----BEGIN ENCRYPTED")
    read_key(cfg.key_file, b"correct horse")
    # the prover's bootstrap comes off the encrypted relay key too
    prover = load_config(init(tmp_path, "prover"))
    assert prover.bootstrap[0].endswith(
        peer_id_of(read_key(cfg.key_file, b"correct horse").public_key).to_base58()
    )
    # a given encrypted key without its passphrase: one line, nothing written
    error = one_line_error(
        invoke(
            "init", "requester", "--out", str(tmp_path / "q.toml"), "--key-file", str(cfg.key_file)
        )
    )
    assert "passphrase" in error and "--passphrase-file" in error
    assert not (tmp_path / "q.toml").exists()
