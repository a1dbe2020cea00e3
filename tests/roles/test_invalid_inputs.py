"""Inputs that fail the market's input check, end to end on real nodes: the winner
attests instead of proving, the ask ends INVALID_INPUTS on every node, the
requester's role reports who attested and why, and no proof is ever delivered
(nor is the ask reassigned when the attesting winner's deadline passes)."""

from __future__ import annotations

import hashlib
import shlex
import sys
import textwrap
from pathlib import Path
from typing import TypeVar

import trio

from p2p_market.core.lifecycle import AskState, SlotState
from p2p_market.core.messages import InvalidInputs, Proof, Receipt
from p2p_market.markets.devnet import default_market
from p2p_market.proving.external import ExternalBackend
from p2p_market.roles.requester import AskEvent
from tests.roles.harness import MID, Market, market, wait_everywhere

T = TypeVar("T")
UNPROVABLE = b"difficulty=99\nmore than the pow back-end allows (0..40)"


def drain(m: Market) -> list[AskEvent]:
    out = []
    while True:
        try:
            out.append(m.requester.events.receive_nowait())
        except trio.WouldBlock:
            return out


def messages(m: Market, ask: bytes, kind: type[T]) -> list[T]:
    """The relay's stored messages of `kind` about `ask`."""
    events = m.relay.states[m.mid].events.get(ask, {}).values()
    return [e.message for e in events if isinstance(e.message, kind)]


async def test_pow_inputs_that_fail_the_check_end_invalid_everywhere(tmp_path: Path) -> None:
    offers = {"cheap": (10, 3_000), "dear": (20, 3_000)}
    async with market(tmp_path, offers) as m:
        fields = {"market": MID.hex(), "max_price": 100, "max_proof_time": 10_000}
        ask = await m.requester.request(fields, UNPROVABLE)
        with trio.fail_after(30):
            tracked = await m.requester.wait(ask)
        cheap, dear = m.provers["cheap"], m.provers["dear"]
        reason = "inputs fail the market's input check"
        assert tracked.attested == {cheap.me: reason} and tracked.proofs == {}
        reported = [e for e in drain(m) if e.ask == ask and e.kind == "invalid_inputs"]
        assert [e.detail for e in reported] == [{"prover": cheap.me.hex(), "reason": reason}]
        await wait_everywhere(m, ask, AskState.INVALID_INPUTS)
        view = m.relay.states[MID].view(ask)
        assert view.winners == (cheap.me,) and view.slot_states == (SlotState.ATTESTED,)
        assert view.paid == 0
        assert cheap.stats.attested == 1 and cheap.stats.proved == 0
        assert dear.stats.won == 0
        # Past the attesting winner's deadline: no timeout, no next round, no proof.
        deadline = m.relay.states[MID].settlement().runs[ask].slots[cheap.me].deadline
        with trio.fail_after(15):
            while m.relay.clock() < deadline + 1_500:
                await trio.sleep(0.1)
        await wait_everywhere(m, ask, AskState.INVALID_INPUTS)
        assert m.relay.states[MID].view(ask).winners == (cheap.me,)
        assert messages(m, ask, Proof) == [] and messages(m, ask, Receipt) == []
        assert [a.reason for a in messages(m, ask, InvalidInputs)] == [reason]


PROVE = """
    import hashlib, sys
    data = open(sys.argv[1], "rb").read()
    open(sys.argv[2], "wb").write(hashlib.sha256(data).hexdigest().encode())
"""
VERIFY = """
    import hashlib, sys
    data = open(sys.argv[1], "rb").read()
    ok = open(sys.argv[2], "rb").read() == hashlib.sha256(data).hexdigest().encode()
    sys.exit(0 if ok else 1)
"""
CHECK = """
    import sys
    sys.exit(1 if open(sys.argv[1], "rb").read().startswith(b"BAD") else 0)
"""


def cmd(tmp: Path, name: str, source: str, *args: str) -> str:
    script = tmp / f"{name}.py"
    script.write_text(textwrap.dedent(source))
    return " ".join([shlex.quote(sys.executable), shlex.quote(str(script)), *args])


async def test_an_external_check_command_decides_which_inputs_are_invalid(
    tmp_path: Path,
) -> None:
    """The market's own check (an external command, exit 1 = invalid) is what the
    prover consults: the same market proves good inputs and refuses bad ones."""
    descriptor = default_market(
        name="external-check",
        proof_system="external",
        verifier="",
        difficulty=0,
        commit_window_ms=1_000,
        stage_ms=200,
        skew_ms=300,
    )
    prove = cmd(tmp_path, "prove", PROVE, "{inputs}", "{proof}")
    verify = cmd(tmp_path, "verify", VERIFY, "{inputs}", "{proof}")
    check = cmd(tmp_path, "check", CHECK, "{inputs}")
    prover = ExternalBackend(prove, verify, check, timeout_s=20)
    requester = ExternalBackend(None, verify, None, timeout_s=20)
    async with market(
        tmp_path,
        {"p": (10, 8_000)},
        backends={"p": prover},
        descriptor=descriptor,
        requester_backend=requester,
    ) as m:
        fields = {"market": m.mid.hex(), "max_price": 100, "max_proof_time": 10_000}
        bad = await m.requester.request(fields, b"BAD: no witness exists")
        good = await m.requester.request(fields, b"good inputs")
        with trio.fail_after(40):
            refused = await m.requester.wait(bad)
            proven = await m.requester.wait(good)
        p = m.provers["p"].me
        assert list(refused.attested) == [p] and refused.proofs == {}
        assert proven.proofs == {p: hashlib.sha256(b"good inputs").hexdigest().encode()}
        await wait_everywhere(m, bad, AskState.INVALID_INPUTS)
        await wait_everywhere(m, good, AskState.PROVEN)
        assert messages(m, bad, Proof) == []
