"""A prover's metrics on whole nodes (real hosts, real pow proofs, real SQLite): a
job, its proving time and its earnings, counted when the requester's receipt says
so (pay-as-bid: price times size, for an accepted slot only), and its failures by
reason, whether its own or the requester's verdict."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import trio

from p2p_market.core.lifecycle import AskState
from p2p_market.core.messages import Market as MarketDescriptor
from p2p_market.node.metrics import JOB_OUTCOMES, PROVER_FAILURES
from p2p_market.proving.backend import ProofBackend, ProvingError
from p2p_market.proving.pow import PowBackend
from p2p_market.roles.prover import ProverRole
from tests.roles.harness import MID, BadProofs, market, wait_state

TIMEOUT = 30


def sample(role: ProverRole, name: str, **labels: str) -> float | None:
    return role.node.metrics.registry.get_sample_value(name, {"market": MID.hex(), **labels})


def outcomes(role: ProverRole) -> dict[str, float | None]:
    return {
        o: sample(role, "p2p_market_prover_jobs_finished_total", outcome=o) for o in JOB_OUTCOMES
    }


def failures(role: ProverRole) -> dict[str, float]:
    """The failure counts that are not zero."""
    counts = {
        r: sample(role, "p2p_market_prover_failures_total", reason=r) for r in PROVER_FAILURES
    }
    assert None not in counts.values()  # every reason's series is there, from the start
    return {r: n for r, n in counts.items() if n}


def earned(role: ProverRole) -> float | None:
    return sample(role, "p2p_market_prover_earned_total")


async def until(check: Callable[[], bool], what: str) -> None:
    """Until `check()` is true (what it waits for: `what`, in the failure)."""
    try:
        with trio.fail_after(TIMEOUT):
            while not check():
                await trio.sleep(0.05)
    except trio.TooSlowError:
        raise AssertionError(f"never: {what}") from None


async def test_an_accepted_proof_counts_a_job_its_proving_time_and_price_times_size(
    tmp_path: Path,
) -> None:
    """Inputs naming difficulty 12 in this difficulty-10 market are 4 units of work:
    the prover bids 7 per unit and earns 28, once the requester accepts."""
    async with market(tmp_path, {"p": (7, 10_000, 8)}) as m:
        prover = m.provers["p"]
        assert earned(prover) == 0  # the series exists before the first job
        fields = {"market": MID.hex(), "max_price": 40, "max_proof_time": 30_000}
        ask = await m.requester.request(fields, b"difficulty=12\nfour units")
        with trio.fail_after(TIMEOUT):
            done = await m.requester.wait(ask)
        assert list(done.proofs) == [prover.me]
        await wait_state(m, ask, AskState.PROVEN)
        await until(lambda: earned(prover) == 28, "the prover's node counts the accepted receipt")
        assert sample(prover, "p2p_market_prover_jobs_started_total") == 1
        assert outcomes(prover) == {"delivered": 1, "attested": 0, "failed": 0, "stopped": 0}
        assert sample(prover, "p2p_market_prover_proving_seconds_count") == 1
        took = sample(prover, "p2p_market_prover_proving_seconds_sum")
        assert took is not None and took > 0
        assert sample(prover, "p2p_market_prover_proving_seconds_bucket", le="600.0") == 1
        assert sample(prover, "p2p_market_prover_accepted_total") == 1
        assert failures(prover) == {}
        assert prover.status()["earned"] == 28 == m.relay.states[MID].view(ask).paid
        # Earnings are the prover's own: the other nodes count none.
        for other in (m.relay, m.requester.node):
            labels = {"market": MID.hex()}
            assert other.metrics.registry.get_sample_value(
                "p2p_market_prover_earned_total", labels
            ) is None  # fmt: skip


class Broken(PowBackend):
    """A back-end that fails every proof."""

    async def prove(self, market: MarketDescriptor, inputs: bytes, deadline_s: float) -> bytes:
        raise ProvingError("pow: broken on purpose")


async def test_failures_are_counted_by_reason_and_earn_nothing(tmp_path: Path) -> None:
    """The cheapest prover's back-end fails (its own failure, prove_error; then the
    requester's timed_out receipt), the next delivers garbage (its job delivered,
    then the requester's invalid receipt), the dearest proves and alone is paid."""
    offers = {"broken": (10, 2_000), "liar": (20, 2_000), "honest": (40, 2_000)}
    backends: dict[str, ProofBackend] = {"broken": Broken(), "liar": BadProofs()}
    async with market(tmp_path, offers, backends) as m:
        broken, liar, honest = (m.provers[n] for n in ("broken", "liar", "honest"))
        fields = {"market": MID.hex(), "max_price": 100, "max_proof_time": 10_000}
        ask = await m.requester.request(fields, b"inputs")
        with trio.fail_after(60):
            done = await m.requester.wait(ask)
        assert list(done.proofs) == [honest.me]
        await wait_state(m, ask, AskState.PROVEN)
        await until(lambda: earned(honest) == 40, "the honest prover is paid")
        await until(lambda: "timed_out" in failures(broken), "broken hears its timeout")
        await until(lambda: "invalid" in failures(liar), "the liar hears its invalid receipt")
        assert failures(broken) == {"prove_error": 1, "timed_out": 1}
        assert outcomes(broken) == {"delivered": 0, "attested": 0, "failed": 1, "stopped": 0}
        assert failures(liar) == {"invalid": 1}
        assert outcomes(liar) == {"delivered": 1, "attested": 0, "failed": 0, "stopped": 0}
        assert failures(honest) == {}
        assert (earned(broken), earned(liar), earned(honest)) == (0, 0, 40)
        assert sample(broken, "p2p_market_prover_proving_seconds_count") == 0  # never proved
        assert sample(liar, "p2p_market_prover_proving_seconds_count") == 1
        assert [p.stats.failed for p in (broken, liar, honest)] == [1, 0, 0]
