"""The prover operator's commands (issue 14) on whole nodes: real hosts on
127.0.0.1, real pow proofs, real signatures, real SQLite, and the control API over
real HTTP (its synchronous client in a worker thread while the nodes serve).

An update is re-posted as updated (the role's re-post loop signs the current
terms) and survives a restart; a raised capacity runs that many proofs at once and
the prover never commits to more than it runs; a paused prover that would win an
ask (the cheapest) leaves it to another; earnings grow with a paid proof."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

from p2p_market.core import limits as L
from p2p_market.core.lifecycle import AskState
from p2p_market.core.messages import Ask, Commit
from p2p_market.core.messages import Market as MarketDescriptor
from p2p_market.node.api_client import ApiClient
from p2p_market.node.api_token import read_token
from p2p_market.node.runtime import Node
from p2p_market.proving.pow import PowBackend
from p2p_market.roles.prover import ProverRole
from tests.roles.harness import MID, Market, market, wait_state

TIMEOUT = 40


def owner(role: ProverRole) -> ApiClient:
    """The control API client of the prover's node, with its token."""
    n = role.node
    return ApiClient(f"http://127.0.0.1:{n.api_port}", token=read_token(n.api_token_file))


async def call(fn: Callable[..., Any], *args: Any) -> Any:
    return await trio.to_thread.run_sync(fn, *args)


async def until(check: Callable[[], bool], what: str, timeout: float = TIMEOUT) -> None:
    try:
        with trio.fail_after(timeout):
            while not check():
                await trio.sleep(0.05)
    except trio.TooSlowError:
        raise AssertionError(f"never: {what}") from None


def current(n: Node, prover: bytes) -> Any:
    """The prover's current bid as node `n` holds it (core/book.py StoredBid)."""
    return n.states[MID].book.current.get(prover)


def commits_by(n: Node, prover: bytes) -> set[bytes]:
    """The asks `prover` has a stored commit to, as node `n` holds them."""
    return {
        e.message.ask
        for e in n.states[MID].stored_envelopes()
        if isinstance(e.message, Commit) and e.signer == prover
    }


async def test_an_update_is_reposted_as_updated_and_survives_a_restart(tmp_path: Path) -> None:
    """A 2 s bid ttl: the role re-posts every second. Before issue 14 the re-post
    signed the configured terms again, undoing a change made through the API."""
    async with market(tmp_path, {"p": (7, 10_000)}, bid_ttl_ms=2_000) as m:
        prover = m.provers["p"]
        client = owner(prover)
        shown = await call(client.prover_bid)
        assert (shown["state"], shown["price"], shown["capacity"]) == ("active", 7, 1)
        answer = await call(client.update_bid, {"price": 9, "proof_time": 8_000})
        assert answer["submitted"]["status"] == "accept" and answer["kept"] is True
        assert (answer["price"], answer["proof_time"]) == (9, 8_000)
        updated_seq = current(prover.node, prover.me).bid.seq
        # Two re-posts later, everyone still holds the updated terms.
        await until(
            lambda: (c := current(m.relay, prover.me)) is not None and c.bid.seq >= updated_seq + 2,
            "the relay holds two re-posts after the update",
        )
        bid = current(m.relay, prover.me).bid
        assert (bid.price, bid.proof_time) == (9, 8_000)

        # A restart with the same config: the update comes back from the role store.
        seq_before = current(m.relay, prover.me).bid.seq
        m.kill["p"].cancel()
        restarted = await m.restart("p", PowBackend())
        assert restarted.config_settings.price == 7
        assert (restarted.settings.price, restarted.settings.proof_time) == (9, 8_000)
        await until(
            lambda: current(m.relay, prover.me).bid.seq > seq_before,
            "the relay holds a bid of the restarted prover",
        )
        bid = current(m.relay, prover.me).bid
        assert (bid.price, bid.proof_time) == (9, 8_000)

        # Paused, it stays paused across a restart: no bid of its terms is posted.
        await call(owner(restarted).bid_action, "pause")
        withdrawal = current(restarted.node, prover.me)
        assert withdrawal.bid.price == L.MAX_UINT
        m.kill["p"].cancel()
        again = await m.restart("p", PowBackend())
        assert again.bid_state == "paused" and again.settings.price == 9
        assert current(again.node, prover.me).id == withdrawal.id
        assert (await call(owner(again).prover_bid))["state"] == "paused"


class Gate(PowBackend):
    """Pow proofs that wait at a gate, counting how many are inside at once."""

    def __init__(self) -> None:
        super().__init__()
        self.inside = 0
        self.most = 0
        self.open = trio.Event()

    async def prove(self, market: MarketDescriptor, inputs: bytes, deadline_s: float) -> bytes:
        self.inside += 1
        self.most = max(self.most, self.inside)
        try:
            await self.open.wait()
            return await super().prove(market, inputs, deadline_s)
        finally:
            self.inside -= 1


async def place(m: Market, text: bytes, max_price: int = 100) -> bytes:
    fields = {"market": MID.hex(), "max_price": max_price, "max_proof_time": 60_000}
    return await m.requester.request(fields, text)


async def test_a_raised_capacity_runs_that_many_at_once_and_commits_no_more(
    tmp_path: Path,
) -> None:
    """Capacity 1 raised to 3: three asks are proved side by side (before issue 14
    the limiter stayed at 1 while the bid promised 3: the second and third waited,
    committed but not running). A fourth ask finds the prover full: no commit while
    three run, and it is proved once the gate opens."""
    gate = Gate()
    async with market(tmp_path, {"p": (5, 60_000)}, {"p": gate}) as m:
        prover = m.provers["p"]
        answer = await call(owner(prover).update_bid, {"capacity": 3})
        assert answer["capacity"] == 3 == answer["running"]
        await until(lambda: current(m.relay, prover.me).bid.capacity == 3, "the relay has it")
        asks = [await place(m, f"job {i}".encode()) for i in range(3)]
        await until(lambda: gate.inside == 3, "three proofs at once")
        fourth = await place(m, b"job 3")
        # Past its first two commit windows and the skew, in the relay's view too:
        # the prover, full, has not committed to it.
        window, skew = m.market.commit_window_ms, m.market.skew_ms
        env = m.relay.states[MID].asks
        await until(lambda: fourth in env, "the relay holds the fourth ask")
        message = env[fourth].message
        assert isinstance(message, Ask)
        opened = message.timestamp
        await until(lambda: m.relay.clock() > opened + 2 * window + 2 * skew, "two windows go by")
        assert fourth not in commits_by(m.relay, prover.me)
        assert fourth not in commits_by(prover.node, prover.me)
        assert gate.most == 3
        gate.open.set()
        for ask in [*asks, fourth]:
            await wait_state(m, ask, AskState.PROVEN, timeout=TIMEOUT)
        assert gate.most == 3
        jobs = (await call(owner(prover).prover_jobs))["jobs"]
        assert {j["ask"] for j in jobs} == {a.hex() for a in [*asks, fourth]}


async def test_a_paused_prover_that_would_win_leaves_the_ask_to_another(tmp_path: Path) -> None:
    """The cheapest prover pauses: every node stops matching its bid (a superseding
    bid that takes no ask), the ask goes to the dearer one, the paused prover signs
    no commit; resumed, it wins the next ask."""
    async with market(tmp_path, {"cheap": (1, 10_000), "dear": (5, 10_000)}) as m:
        cheap, dear = m.provers["cheap"], m.provers["dear"]
        paused = await call(owner(cheap).bid_action, "pause")
        assert paused["state"] == "paused" and paused["submitted"]["status"] == "accept"
        await until(
            lambda: all(current(n, cheap.me).bid.price == L.MAX_UINT for n in m.nodes),
            "every node holds the withdrawal",
        )
        ask = await place(m, b"while cheap is paused", max_price=10)
        with trio.fail_after(TIMEOUT):
            done = await m.requester.wait(ask)
        assert list(done.proofs) == [dear.me]
        assert ask not in commits_by(m.relay, cheap.me)
        assert (await call(owner(cheap).prover_bid))["state"] == "paused"

        resumed = await call(owner(cheap).bid_action, "resume")
        assert resumed["state"] == "active" and resumed["price"] == 1
        await until(
            lambda: all(current(n, cheap.me).bid.price == 1 for n in m.nodes),
            "every node holds the resumed bid",
        )
        again = await place(m, b"cheap is back", max_price=10)
        with trio.fail_after(TIMEOUT):
            done = await m.requester.wait(again)
        assert list(done.proofs) == [cheap.me]


async def test_earnings_and_jobs_grow_with_a_paid_proof(tmp_path: Path) -> None:
    async with market(tmp_path, {"p": (7, 10_000)}) as m:
        prover = m.provers["p"]
        client = owner(prover)
        before = await call(client.prover_earnings)
        assert (before["earned"], before["paid_proofs"]) == (0, 0)
        ask = await place(m, b"pay me")
        with trio.fail_after(TIMEOUT):
            await m.requester.wait(ask)
        await wait_state(m, ask, AskState.PROVEN)
        await until(lambda: prover.stats.paid == 1, "the prover's node sees the receipt")
        after = await call(client.prover_earnings)
        assert (after["earned"], after["paid_proofs"]) == (7, 1)
        assert after["markets"] == [{"market": MID.hex(), "earned": 7, "paid_proofs": 1}]
        (job,) = (await call(client.prover_jobs))["jobs"]
        assert (job["ask"], job["state"], job["price"]) == (ask.hex(), "accepted", 7)
        assert job["earned"] == 7
        assert job["started"] is not None and job["prove_ms"] is not None


async def test_a_lowered_capacity_keeps_running_what_it_committed_to(tmp_path: Path) -> None:
    """Capacity 3, three proofs at the gate, then lowered to 1: the bid says 1 at
    once (no new commit while three run), but the limiter stays at 3 until the work
    committed under the larger bid is done, so none of the three is stranded; it
    shrinks to 1 once that time has passed."""
    gate = Gate()
    async with market(tmp_path, {"p": (5, 10_000)}, {"p": gate}) as m:
        prover = m.provers["p"]
        client = owner(prover)
        await call(client.update_bid, {"capacity": 3})
        fields = {"market": MID.hex(), "max_price": 100, "max_proof_time": 60_000}
        asks = [await m.requester.request(fields, f"job {i}".encode()) for i in range(3)]
        await until(lambda: gate.inside == 3, "three proofs at once")
        lowered = await call(client.update_bid, {"capacity": 1})
        assert (lowered["capacity"], lowered["running"]) == (1, 3)
        await until(lambda: current(m.relay, prover.me).bid.capacity == 1, "the relay has it")
        gate.open.set()
        for ask in asks:
            await wait_state(m, ask, AskState.PROVEN, timeout=TIMEOUT)
        await until(
            lambda: prover.bid_view()["running"] == 1, "the limiter shrinks to the new capacity"
        )


def cli(*args: str) -> Any:
    """`p2p-market ARGS` in a worker thread (the nodes keep serving), without a
    token in the environment."""
    from typer.testing import CliRunner

    from p2p_market.cli.app import app

    runner = CliRunner(env={"P2P_MARKET_API_TOKEN": None})
    return trio.to_thread.run_sync(lambda: runner.invoke(app, list(args)))


def one_line(result: Any, code: int) -> str:
    assert result.exit_code == code, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    return str(lines[0])


async def test_the_cli_against_a_real_prover_node(tmp_path: Path) -> None:
    async with market(tmp_path, {"p": (7, 10_000)}) as m:
        prover = m.provers["p"]
        api = ["--api", f"http://127.0.0.1:{prover.node.api_port}"]
        token = ["--token-file", str(prover.node.api_token_file)]

        shown = await cli("prover", "bid", "show", *api, "--json")
        assert shown.exit_code == 0, shown.output
        assert json.loads(shown.stdout)["price"] == 7
        human = await cli("prover", "bid", "show", *api)
        assert "7 per unit of work" in human.stdout and "active" in human.stdout

        updated = await cli("prover", "bid", "update", *api, *token, "--price", "8")
        assert updated.exit_code == 0, updated.output
        assert updated.stdout.startswith("bid updated") and "8 per unit" in updated.stdout
        assert current(m.relay, prover.me) is not None
        await until(lambda: current(m.relay, prover.me).bid.price == 8, "the relay has it")

        # Bad input: exit 2, one line, the node not asked or saying what is wrong.
        assert "needs the node's API token" in one_line(
            await cli("prover", "bid", "update", *api, "--price", "9"), 2
        )
        assert "nothing to change" in one_line(
            await cli("prover", "bid", "update", *api, *token), 2
        )
        assert "capacity" in one_line(
            await cli("prover", "bid", "update", *api, *token, "--capacity", "0"), 2
        )
        too_long = str(L.MAX_LIFETIME_MS)  # the protocol's bound, above this market's (409)
        assert "max lifetime" in one_line(
            await cli("prover", "bid", "update", *api, *token, "--ttl-ms", too_long), 2
        )
        assert prover.settings.price == 8 and prover.settings.capacity == 1

        paused = await cli("prover", "bid", "pause", *api, *token, "--json")
        assert paused.exit_code == 0, paused.output
        assert json.loads(paused.stdout)["state"] == "paused"
        withdrawn = await cli("prover", "bid", "withdraw", *api, *token)
        assert withdrawn.exit_code == 0 and withdrawn.stdout.startswith("withdrawn")
        resumed = await cli("prover", "bid", "resume", *api, *token)
        assert resumed.exit_code == 0 and resumed.stdout.startswith("resumed")
        await until(lambda: current(m.relay, prover.me).bid.price == 8, "resumed at 8")

        ask = await place(m, b"for the cli")
        with trio.fail_after(TIMEOUT):
            await m.requester.wait(ask)
        await until(lambda: prover.stats.paid == 1, "the prover's node sees the receipt")
        jobs = await cli("prover", "jobs", *api)
        assert jobs.exit_code == 0, jobs.output
        assert ask.hex()[:16] in jobs.stdout and "accepted" in jobs.stdout
        listed = json.loads((await cli("prover", "jobs", *api, "--json")).stdout)
        assert listed["jobs"][0]["ask"] == ask.hex()
        earned = await cli("prover", "earnings", *api)
        assert earned.exit_code == 0 and earned.stdout.startswith("earned 8 from 1 paid proof")
        as_json = json.loads((await cli("prover", "earnings", *api, "--json")).stdout)
        assert (as_json["earned"], as_json["paid_proofs"]) == (8, 1)

        # A node without a prover role says so (404: exit 2); no node there: exit 1.
        relay_api = ["--api", f"http://127.0.0.1:{m.relay.api_port}"]
        assert "runs no prover" in one_line(await cli("prover", "jobs", *relay_api), 2)
        with trio.socket.socket() as sock:  # a port nobody listens on
            await sock.bind(("127.0.0.1", 0))
            free = sock.getsockname()[1]
        gone = await cli("prover", "earnings", "--api", f"http://127.0.0.1:{free}")
        assert "cannot reach the node" in one_line(gone, 1)
