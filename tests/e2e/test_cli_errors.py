"""Bad input to the trading commands: exit status 2, one line `error: ...` on
stderr naming the problem, nothing on stdout, never a traceback, and nothing
published.

Bad arguments must be refused before any node starts, so most cases run in
process (CliRunner, no network). Then the same kinds of mistakes as real
processes pointed at a running prover: its control API shows that no ask and no
bid arrived, and a good request right after does publish one (so the check can
see a publication when there is one).
"""

from __future__ import annotations

import re
import socket
import subprocess
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from p2p_market.cli.app import app
from p2p_market.core.crypto import devnet_key
from p2p_market.core.envelope import market_id
from p2p_market.markets.descriptor import read_descriptor
from p2p_market.node.api_client import ApiClient
from p2p_market.node.api_token import TOKEN_ENV
from p2p_market.node.keyfile import write_key
from tests.e2e.test_cli_e2e import quick_market
from tests.processes import ANY_LISTEN, cli, process

runner = CliRunner()
ADDR = "/ip4/127.0.0.1/tcp/4001/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN"
ASK = "ab" * 32


def one_line_error(stdout: str, stderr: str, code: int, expected: int = 2) -> str:
    """The one `error: ...` line, after checking the exit status and the streams."""
    assert code == expected, f"exit {code}\nstdout: {stdout}\nstderr: {stderr}"
    assert "Traceback" not in stdout + stderr
    assert stdout == "", stdout
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: "), stderr
    return lines[0]


def invoke(*args: str) -> Result:
    return runner.invoke(app, list(args))


def closed_port() -> int:
    """A local port nobody listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("bad-input")
    inputs = tmp / "inputs.bin"
    inputs.write_bytes(b"inputs")
    (tmp / "a-directory").mkdir()
    external = tmp / "external.toml"
    made = invoke(
        "market", "create", "--name", "ext", "--proof-system", "external",
        "--verifier", "true {inputs} {proof}", "--out", str(external),
    )  # fmt: skip
    assert made.exit_code == 0, made.output
    write_key(tmp / "key.pem", devnet_key("requester-1"), b"secret")
    (tmp / "pass.txt").write_text("not the passphrase\n")
    (tmp / "api.token").write_text("ab" * 32 + "\n")
    (tmp / "huge.toml").write_text('name = "m"\nnonce = ' + "9" * 5000 + "\n")  # > 4300 digits
    return {
        "token": tmp / "api.token",
        "inputs": inputs,
        "dir": tmp / "a-directory",
        "missing": tmp / "missing.pem",
        "external": external,
        "key": tmp / "key.pem",
        "pass": tmp / "pass.txt",
        "out": tmp / "proof.bin",
        "existing": inputs,
        "huge": tmp / "huge.toml",
    }


def edit(base: list[str], **changes: str | None) -> list[str]:
    """`base` with options replaced (a value), added, or dropped (None)."""
    args = list(base)
    for option, value in changes.items():
        flag = "--" + option.replace("_", "-")
        if flag in args:
            i = args.index(flag)
            del args[i : i + 2]
        if value is not None:
            args += [flag, value]
    return args


# `{name}` in an argument is a path from `files` (or `{closed}`: an API nobody serves).
REQUEST = [
    "request", "--input", "{inputs}", "--max-price", "10", "--max-proof-time", "5000",
    "--out", "{out}", "--bootstrap", ADDR,
]  # fmt: skip
PROVER = [
    "prover", "run", "--market", "devnet", "--price", "5", "--proof-time", "5000",
    "--devnet-key", "prover-1",
]  # fmt: skip
MARKET = ["market", "create", "--name", "m", "--proof-system", "pow", "--out", "{out}"]
EXTERNAL = edit(MARKET, proof_system="external")


def request(**changes: str | None) -> list[str]:
    return edit(REQUEST, **changes)


def prover(**changes: str | None) -> list[str]:
    return edit(PROVER, **changes)


def market(**changes: str | None) -> list[str]:
    return edit(MARKET, **changes)


# (test id, arguments, what the one line must say)
CASES: list[tuple[str, list[str], str]] = [
    ("request: unknown market", request(market="nowhere"), "unknown market 'nowhere'"),
    ("request: unknown market id", request(market="cd" * 32), "unknown market id"),
    ("request: negative price", request(max_price="-1"), "max price must be a non-negative"),
    ("request: price not a number", request(max_price="ten"), "'--max-price'"),
    ("request: zero proof time", request(max_proof_time="0"), "max proof time"),
    ("request: bad preference", request(prefer="speed"), "prefer must be cost or time"),
    ("request: zero replicas", request(replicas="0"), "replicas must be between 1 and 16"),
    ("request: zero size", request(size="0"), "--size must be between 1 and"),
    (
        "request: a size the inputs contradict",
        request(size="4"),
        "--size 4 does not match the inputs, which need 1",
    ),
    ("request: short ttl", request(ttl_ms="10"), "ttl must be between"),
    ("request: zero timeout", request(timeout="0"), "--timeout must be"),
    ("request: input missing", request(input="{missing}"), "input file not found"),
    ("request: input a directory", request(input="{dir}"), "input file is a directory"),
    ("request: input unreadable", request(input="{inputs}/x"), "cannot read input file"),
    ("request: no input", request(input=None), "no inputs: pass --input FILE"),
    ("request: key missing", request(key="{missing}"), "key file not found"),
    ("request: key, no passphrase", request(key="{key}"), "a passphrase is needed"),
    ("request: wrong passphrase", request(key="{key}", passphrase_file="{pass}"), "wrong pass"),
    ("request: passphrase, no key", request(passphrase_file="{pass}"), "needs --key"),
    ("request: no bootstrap", request(bootstrap=None), "no bootstrap peer given"),
    ("request: bootstrap, no peer id", request(bootstrap="/ip4/1.2.3.4/tcp/1"), "/p2p/"),
    ("request: bootstrap garbage", request(bootstrap="nonsense"), "not a multiaddr"),
    ("request: out in no directory", request(out="{missing}/p.bin"), "no such directory"),
    ("request: out a directory", request(out="{dir}"), "--out is a directory"),
    ("request: proof-out a file", request(proof_out="{inputs}"), "--proof-out is not a directory"),
    (
        "request: proof-out in no directory",
        request(proof_out="{missing}/d"),
        "--proof-out: no such directory",
    ),
    (
        "request: bad verify command",
        request(market="{external}", verify_cmd='check "{inputs}'),
        "No closing quotation",
    ),
    ("request: unknown option", [*REQUEST, "--fast"], "No such option: --fast"),
    ("request: bad log level", request(log_level="loud"), "unknown log level"),
    ("prover: unknown market", prover(market="nowhere"), "unknown market 'nowhere'"),
    ("prover: negative price", prover(price="-1"), "price must be a non-negative"),
    ("prover: zero proof time", prover(proof_time="0"), "proof time must be at least"),
    ("prover: zero max size", prover(max_size="0"), "max size must be between 1 and"),
    ("prover: zero capacity", prover(capacity="0"), "capacity must be between"),
    ("prover: no price", prover(price=None), "missing --price"),
    ("prover: no key", prover(devnet_key=None), "a prover needs a key"),
    ("prover: key missing", prover(devnet_key=None, key="{missing}"), "key file not found"),
    (
        "prover: wrong passphrase",
        prover(devnet_key=None, key="{key}", passphrase_file="{pass}"),
        "wrong passphrase",
    ),
    ("prover: unknown devnet key", prover(devnet_key="mallory"), "unknown devnet key"),
    ("prover: two keys", prover(key="{key}"), "not both"),
    ("prover: bad backend", prover(backend="gpu"), "unknown backend 'gpu'"),
    ("prover: another system", prover(backend="external"), "use --backend pow"),
    ("prover: no prove command", prover(market="{external}"), "needs a prove command"),
    ("prover: bad listen", prover(listen="here"), "--listen: not a multiaddr"),
    ("prover: bad announce", prover(announce="there"), "--announce: not a multiaddr"),
    (
        "prover: announce with /p2p/",
        prover(announce=f"/ip4/1.2.3.4/tcp/4701/p2p/{ADDR.rsplit('/', 1)[1]}"),
        "without /p2p/",
    ),
    ("prover: announce no tcp", prover(announce="/ip4/1.2.3.4/udp/1"), "HOST/tcp/PORT"),
    ("request: bad listen", request(listen="here"), "--listen: not a multiaddr"),
    ("request: bad announce", request(announce="/ip4/1.2.3.4"), "--announce"),
    (
        "request: --listen with --api",
        [*request(bootstrap=None), "--api", "{closed}", "--listen", "/ip4/0.0.0.0/tcp/0"],
        "--listen does not go with --api",
    ),
    (
        "node: bad announce",
        ["node", "run", "--config", "{missing}", "--announce", "nowhere"],
        "--announce: not a multiaddr",
    ),
    ("prover: bad bootstrap", prover(bootstrap="/ip4/1.2.3.4"), "--bootstrap"),
    ("prover: api port", prover(api_port="70000"), "--api-port"),
    (
        "prover: metrics port",
        prover(metrics_port="70000"),
        "--metrics-port 70000: use a port 1..65535, 0 for any, -1 for off",
    ),
    ("prover: metrics port below -1", prover(metrics_port="-2"), "--metrics-port -2: use a port"),
    ("prover: metrics port not a number", prover(metrics_port="nine"), "'--metrics-port'"),
    (
        "prover: config and metrics port",
        ["prover", "run", "--config", "{missing}", "--metrics-port", "0"],
        "--config and --metrics-port do not mix",
    ),
    (
        "prover: config and flags",
        ["prover", "run", "--config", "{missing}", "--price", "5"],
        "do not mix",
    ),
    ("prover: config missing", ["prover", "run", "--config", "{missing}"], "missing.pem"),
    ("prover: a 5000-digit integer", prover(market="{huge}"), "huge.toml: not valid TOML"),
    ("node: a 5000-digit integer", ["node", "run", "--config", "{huge}"], "not valid TOML"),
    ("market: unknown system", market(proof_system="snark"), "unknown proof system 'snark'"),
    ("market: external, no verifier", EXTERNAL, "needs --verifier"),
    ("market: bad verifier", edit(EXTERNAL, verifier="check {input}"), "{input}"),
    ("market: empty name", market(name=""), "bad market"),
    ("market: zero window", market(commit_window_ms="0"), "commit_window"),
    ("market: file exists", market(out="{existing}"), "already exists"),
    ("cancel: bad id", ["cancel", "xyz", "--api", "http://127.0.0.1:1"], "64 hex characters"),
    ("cancel: no token", ["cancel", ASK, "--api", "{closed}"], "cancel needs the node's API token"),
    (
        "cancel: token file missing",
        ["cancel", ASK, "--api", "{closed}", "--api-token-file", "{missing}"],
        "API token file not found: {missing}",
    ),
    (
        "cancel: not a token file",
        ["cancel", ASK, "--api", "{closed}", "--api-token-file", "{inputs}"],
        "does not hold an API token (64 hex characters)",
    ),
    (
        "request: --api, no token",
        [*request(bootstrap=None), "--api", "{closed}"],
        "request --api needs the node's API token",
    ),
    ("request: token, no --api", request(api_token_file="{token}"), "goes with --api"),
    ("cancel: bad api address", ["cancel", ASK, "--api", "localhost:80"], "http://host:port"),
    ("status: bad id", ["status", "12345", "--api", "http://127.0.0.1:1"], "64 hex characters"),
    ("status: no --api", ["status", ASK], "Missing option '--api'"),
    ("book: bad api address", ["book", "--api", "ftp://127.0.0.1:1"], "http://host:port"),
    (
        "book: unknown market",
        ["book", "--api", "{closed}", "--market", "nowhere"],
        "unknown market 'nowhere'",
    ),
]


def fill(value: str, files: dict[str, Path], closed: str) -> str:
    """`{name}` of a path in `files`, or `{closed}`, replaced; other braces kept."""
    names = {name: str(path) for name, path in files.items()} | {"closed": closed}
    return re.sub(r"\{(\w+)\}", lambda m: names.get(m.group(1), m.group(0)), value)


@pytest.mark.parametrize(("args", "needle"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_exit_2(
    args: list[str], needle: str, files: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    closed = f"http://127.0.0.1:{closed_port()}"
    result = invoke(*(fill(a, files, closed) for a in args))
    line = one_line_error(result.stdout, result.stderr, result.exit_code)
    assert fill(needle, files, closed) in line, line
    assert not files["out"].exists()


WITH_TOKEN = ["--api-token-file", "{token}"]
UNREACHABLE: list[tuple[str, list[str]]] = [
    ("cancel", ["cancel", ASK, "--api", "{closed}", "--api-token-file", "{token}"]),
    ("status", ["status", ASK, "--api", "{closed}"]),
    ("book", ["book", "--api", "{closed}"]),
    ("request --api", [*request(bootstrap=None), "--api", "{closed}", *WITH_TOKEN]),
    (
        "request --api, market by id",
        [*request(bootstrap=None, market="ab" * 32), "--api", "{closed}", *WITH_TOKEN],
    ),
    ("market list --network", ["market", "list", "--network", "--api", "{closed}"]),
    ("prover bid show", ["prover", "bid", "show", "--api", "{closed}"]),
    (
        "prover bid pause",
        ["prover", "bid", "pause", "--api", "{closed}", "--token-file", "{token}"],
    ),
    ("prover jobs", ["prover", "jobs", "--api", "{closed}"]),
    ("prover earnings", ["prover", "earnings", "--api", "{closed}", "--json"]),
]
"""Commands that talk to a node's control API, pointed at a real closed port."""


@pytest.mark.parametrize("args", [c[1] for c in UNREACHABLE], ids=[c[0] for c in UNREACHABLE])
def test_an_unreachable_api_is_exit_1_naming_the_address(
    args: list[str], files: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 14: the arguments are fine, there is just no node at the address (not
    running yet, or gone): a runtime failure, exit 1, not 2 (bad input); the one
    line names the address so the user sees which one was tried."""
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    closed = f"http://127.0.0.1:{closed_port()}"
    result = invoke(*(fill(a, files, closed) for a in args))
    line = one_line_error(result.stdout, result.stderr, result.exit_code, expected=1)
    assert f"cannot reach the node at {closed}" in line, line
    assert not files["out"].exists()


def test_the_installed_entry_point_reports_usage_errors_in_one_line(tmp_path: Path) -> None:
    """Through `python -m p2p_market.cli`, not the test runner: click's own usage
    errors (a missing option, a value of the wrong type) are one line too."""
    done = cli("request", "--input", "x", "--max-price", "-5x", "--max-proof-time", "1")
    line = one_line_error(done.stdout, done.stderr, done.returncode)
    assert "'--max-price'" in line and "p2p-market request --help" in line
    done = cli("prover", "run", "--market", "devnet", "--price", "1", "--proof-time", "1")
    assert "a prover needs a key" in one_line_error(done.stdout, done.stderr, done.returncode)


# -- against a running node: nothing is published ----------------------------------------


def test_bad_commands_against_a_running_prover_publish_nothing(tmp_path: Path) -> None:
    descriptor = quick_market(tmp_path)
    mid = market_id(read_descriptor(descriptor)).hex()
    inputs = tmp_path / "inputs.bin"
    inputs.write_bytes(b"good inputs")
    out = tmp_path / "proof.bin"
    with process(
        "prover", "run", "--market", str(descriptor), "--price", "5", "--proof-time", "3000",
        "--devnet-key", "prover-1", "--data-dir", str(tmp_path / "prover"), *ANY_LISTEN,
    ) as (_, ready):  # fmt: skip
        api = ApiClient(f"http://127.0.0.1:{ready['api_port']}")
        me = devnet_key("prover-1").public_key.hex()
        before = api.status()["admitted"]
        assert [b["prover"] for b in api.book(mid)["bids"]] == [me]
        good = [
            "request", "--market", str(descriptor), "--input", str(inputs),
            "--max-price", "10", "--max-proof-time", "10000", "--bootstrap", ready["addr"],
            "--out", str(out), "--timeout", "60",
        ]  # fmt: skip

        via_api = [*good[: good.index("--bootstrap")], "--out", str(out)]
        cancel = ["cancel", "ef" * 32, "--api", api.base_url]
        wrong = tmp_path / "wrong.token"
        wrong.write_text("0f" * 32 + "\n")

        def bad(option: str, value: str) -> list[str]:
            i = good.index(option)
            return [*good[: i + 1], value, *good[i + 2 :]]

        prover = [
            "prover", "run", "--market", str(descriptor), "--price", "3", "--proof-time",
            "3000", "--devnet-key", "prover-2", "--bootstrap", ready["addr"],
            "--data-dir", str(tmp_path / "p2"), *ANY_LISTEN,
        ]  # fmt: skip

        def bad_prover(option: str, value: str | None) -> list[str]:
            i = prover.index(option)
            return [*prover[:i], *([option, value] if value else []), *prover[i + 2 :]]

        key = tmp_path / "no-such-key.pem"
        commands: list[tuple[list[str], str]] = [
            (bad("--market", str(tmp_path / "nowhere.toml")), "unknown market"),
            (bad("--max-price", "-1"), "max price must be a non-negative integer, not -1"),
            (bad("--input", str(tmp_path / "nothing.bin")), "input file not found"),
            ([*good, "--key", str(key)], f"key file not found: {key}"),
            (bad_prover("--market", str(tmp_path / "nowhere.toml")), "unknown market"),
            (bad_prover("--price", "-3"), "price must be a non-negative integer, not -3"),
            (bad_prover("--devnet-key", None), "a prover needs a key"),
            ([*bad_prover("--devnet-key", None), "--key", str(key)], "key file not found"),
            (  # a metrics port in use: here, the running prover's API port (the API
                # is up by then, and says so at level info)
                [*prover, "--metrics-port", str(ready["api_port"]), "--log-level", "warning"],
                f"cannot start the node: cannot serve the metrics on 127.0.0.1:{ready['api_port']}"
                " (Address already in use): choose another metrics port",
            ),
            (["status", "ef" * 32, "--api", api.base_url], "unknown ask"),
            (["cancel", "ef" * 32, "--api", api.base_url], "cancel needs the node's API token"),
            ([*cancel, "--api-token-file", str(wrong)], "error: 401: wrong API token"),
            ([*cancel, "--api-token-file", ready["api_token_file"]], "404: unknown ask efef"),
            ([*via_api, "--api", api.base_url], "request --api needs the node's API token"),
            (["book", "--api", api.base_url, "--market", "devnet"], "does not follow market"),
        ]
        run: Callable[[tuple[list[str], str]], subprocess.CompletedProcess[str]]
        run = lambda c: cli(*c[0], timeout=60)  # noqa: E731
        with ThreadPoolExecutor(4) as pool:
            results = list(pool.map(run, commands))
        for (args, needle), done in zip(commands, results, strict=True):
            line = one_line_error(done.stdout, done.stderr, done.returncode)
            assert needle in line, (args, line)

        book = api.book(mid)
        assert book["asks"] == []  # no ask...
        assert [b["prover"] for b in book["bids"]] == [me]  # ...and no bid but its own
        assert api.status()["admitted"] == before
        assert not out.exists()

        # The check sees a publication when there is one: the good request.
        done = cli(*good)
        assert done.returncode == 0, done.stdout + done.stderr
        assert len(api.book(mid)["asks"]) == 1
        assert api.status()["admitted"] > before


# -- circuit markets: the circuit and the Node.js tools ----------------------------------

CIRCUITS = Path(__file__).resolve().parents[2] / "protocols" / "circuits"
GROTH16 = CIRCUITS / "multiplier-groth16-devnet-INSECURE.toml"
BROKEN_CIRCUIT = """pragma circom 2.0.0;
template Broken() {
    signal input a;
    signal output c;
    c <== a * ;
}
component main = Broken();
"""


def test_market_create_with_no_such_circuit_is_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.circom"
    result = invoke(
        "market", "create", "--proof-system", "groth16", "--circuit", str(missing),
        "--out", str(tmp_path / "out"),
    )  # fmt: skip
    line = one_line_error(result.stdout, result.stderr, result.exit_code)
    assert line == f"error: circuit not found: {missing}"
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("system", ["groth16", "plonk"])
def test_market_create_with_a_circuit_that_does_not_compile_is_one_line(
    tmp_path: Path, system: str
) -> None:
    """circom2 really runs and fails; its complaint (where the syntax error is) is in
    the one line, after the progress line on stdout; no descriptor, no artifact."""
    broken = tmp_path / "broken.circom"
    broken.write_text(BROKEN_CIRCUIT)
    out = tmp_path / "out"
    done = cli(
        "market", "create", "--proof-system", system, "--circuit", str(broken),
        "--out", str(out),
    )  # fmt: skip
    assert done.stdout.startswith("compiling ") and len(done.stdout.splitlines()) == 1
    line = one_line_error("", done.stderr, done.returncode)
    assert line.startswith("error: circom2 (compile) failed"), line
    assert "c <== a * ;" in line
    assert not list(out.rglob("*.toml")) and not list(out.rglob("*.zkey"))


def test_a_missing_node_is_one_line_for_every_command_that_needs_it(tmp_path: Path) -> None:
    """PATH without Node.js (and no $P2P_MARKET_NODE): `market create` of a circuit
    market, `prover run` and `request` in a groth16 market each say so in one line,
    exit 2, before any node starts."""
    inputs = tmp_path / "inputs.json"
    inputs.write_bytes(b'{"a":"3","b":"11"}')
    no_node = {"PATH": str(tmp_path / "empty-bin"), "P2P_MARKET_NODE": ""}
    commands = [
        [
            "market", "create", "--proof-system", "plonk",
            "--circuit", str(CIRCUITS / "multiplier.circom"), "--out", str(tmp_path / "m"),
        ],
        [
            "prover", "run", "--market", str(GROTH16), "--price", "1", "--proof-time", "5000",
            "--devnet-key", "prover-1", "--data-dir", str(tmp_path / "p"), *ANY_LISTEN,
        ],
        [
            "request", "--market", str(GROTH16), "--input", str(inputs), "--max-price", "5",
            "--max-proof-time", "5000", "--out", str(tmp_path / "proof.json"),
            "--bootstrap", ADDR,
        ],
    ]  # fmt: skip
    for args in commands:
        done = cli(*args, env=no_node, timeout=60)
        line = one_line_error(done.stdout, done.stderr, done.returncode)
        assert line == "error: node (Node.js) not found on PATH (or set $P2P_MARKET_NODE)", args
    assert not (tmp_path / "m").exists() and not (tmp_path / "proof.json").exists()
