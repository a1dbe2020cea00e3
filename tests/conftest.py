"""Hypothesis profiles: `default` keeps CI within minutes; `deep` hunts for bugs
(`pytest --hypothesis-profile=deep tests/core`). And fixtures whose setup is costly
enough to share across the run (made_market)."""

from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, settings

from tests.processes import CIRCUITS, Made, cli

settings.register_profile(
    "default", max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "deep", max_examples=3_000, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("default")


@pytest.fixture(scope="session")
def made_market(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Made]:
    """`p2p-market market create` of protocols/circuits/multiplier.circom for a proof
    system, made once for the whole run and shared by the tests that need a market
    made here (a compile, a new ptau and a setup: 15 s of CPU or more each; it was made
    anew by three tests). A new setup: its proving and verification keys are nowhere
    but in its folder, which the tests only read."""
    made: dict[str, Made] = {}

    def make(system: str) -> Made:
        if system not in made:
            out = tmp_path_factory.mktemp(f"made-{system}")
            done = cli(
                "market", "create", "--proof-system", system,
                "--circuit", str(CIRCUITS / "multiplier.circom"), "--out", str(out),
                timeout=600,
            )  # fmt: skip
            assert done.returncode == 0, done.stdout + done.stderr
            made[system] = Made(done.stdout + done.stderr, out)
        return made[system]

    return make
