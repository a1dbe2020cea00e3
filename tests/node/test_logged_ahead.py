"""One log transaction per gossip frame (`Node.logged_ahead`): what the core keeps
of a frame is written in one go before any of it is admitted, and the log still
holds exactly what the core keeps, whatever the frame's envelopes come to.

Real signed envelopes, a real SQLite log and the validator's own `judge_frame`; no
network (the gossip path around it is tested in test_runtime.py)."""

from __future__ import annotations

from pathlib import Path

import trio

from p2p_market.core.crypto import devnet_key
from p2p_market.core.envelope import message_id
from p2p_market.core.state import MarketState
from p2p_market.core.verdict import Reason, Status
from p2p_market.markets.devnet import Actor
from p2p_market.net.frame import encode_frame, judge_frame
from p2p_market.net.ratelimit import KeyedRateLimiter
from p2p_market.node.config import NodeConfig
from p2p_market.node.runtime import Node
from p2p_market.node.storage import EnvelopeLog
from tests.node.test_full_disk import cap_pages
from tests.node.test_runtime import MARKET, MID, running
from tests.node.test_runtime import make_node as make_running_node

NOW = 1_700_000_000_000


def make_node(tmp: Path) -> Node:
    cfg = NodeConfig(key_file=tmp / "k.pem", data_dir=tmp / "n", markets=(MARKET,))
    node = Node(cfg, devnet_key("logged-ahead"), clock=lambda: NOW)
    node.log = EnvelopeLog(tmp / "n" / "log.sqlite")
    return node


def kept_ids(state: MarketState) -> set[bytes]:
    """Every id the core keeps: stored, evidence, and orphans held for a parent."""
    held = {mid for waiting in state.pending.values() for mid in waiting}
    return set(state.seen) | set(state.evidence) | held


def logged_ids(node: Node) -> set[bytes]:
    assert node.log is not None
    return {row[0] for row in node.log._read("SELECT id FROM envelopes")}


def judge(node: Node, raws: list[bytes]) -> tuple[Status, Reason, int]:
    """The validator's verdict on a frame of `raws`, and how many it delivered."""
    verdict, delivered = judge_frame(
        encode_frame(raws),
        MID,
        node._gossip_check,
        lambda mid: node._holds(MID, mid),
        node.logged_ahead,
    )
    return verdict.status, verdict.reason, len(delivered)


def asks(n: int, *, prefix: str = "r") -> list[bytes]:
    return [
        Actor(f"{prefix}{i}", MARKET).ask(now=NOW, max_price=50, max_proof_time=900)
        for i in range(n)
    ]


def replayed(node: Node) -> MarketState:
    """The state a restart rebuilds from the log."""
    assert node.log is not None
    state = MarketState(MARKET)
    for raw, received_at in node.log.replay_timed(MID):
        state.apply(raw, received_at)
    return state


async def test_a_frame_is_one_transaction_and_the_log_holds_what_the_core_keeps(
    tmp_path: Path,
) -> None:
    node = make_node(tmp_path)
    assert node.log is not None
    frame = asks(20)
    assert judge(node, frame) == (Status.ACCEPT, Reason.OK, 20)
    assert node.log.commits == {"fsynced": 1, "unsynced": 1}  # the schema, then the frame
    state = node.states[MID]
    assert len(state.asks) == 20
    assert logged_ids(node) == kept_ids(state)
    assert replayed(node).state_hash() == state.state_hash()
    # A frame of what the node holds already writes nothing.
    assert judge(node, frame[:5])[1] is Reason.DUPLICATE
    assert node.log.commits["unsynced"] == 1
    node.log.close()


async def test_what_the_core_refuses_after_all_is_taken_out_of_the_log(tmp_path: Path) -> None:
    node = make_node(tmp_path)
    assert node.log is not None
    node._signer_limit = KeyedRateLimiter(1.0, 3)  # three per signer, then refused
    requester = Actor("flooder", MARKET)
    frame = [requester.ask(now=NOW + i, max_price=50, max_proof_time=900) for i in range(8)] + asks(
        4
    )
    status, _, delivered = judge(node, frame)
    assert (status, delivered) == (Status.ACCEPT, 7)  # 3 of the flooder's, and the 4 others
    state = node.states[MID]
    assert len(state.asks) == 7
    assert logged_ids(node) == kept_ids(state)  # the 5 refused were written, then deleted
    assert replayed(node).state_hash() == state.state_hash()
    node.log.close()


async def test_a_frame_rejected_half_way_leaves_only_what_was_admitted(tmp_path: Path) -> None:
    node = make_node(tmp_path)
    assert node.log is not None
    ask = Actor("owner", MARKET).ask(now=NOW, max_price=50, max_proof_time=900)
    # Before the frame, the stranger's cancel would be held as an orphan of an ask
    # the node lacks, so it is written ahead; once the ask is admitted, it is
    # provably someone else's cancel and the frame is rejected.
    cancel = Actor("stranger", MARKET).cancel(now=NOW + 1, ask=message_id(ask))
    status, reason, delivered = judge(node, [ask, cancel])
    assert (status, reason, delivered) == (Status.REJECT, Reason.NOT_ASK_OWNER, 0)
    state = node.states[MID]
    assert set(state.asks) == {message_id(ask)}  # admitted before the reject
    assert logged_ids(node) == kept_ids(state) == {message_id(ask)}
    node.log.close()


async def test_a_frame_the_full_log_cannot_take_is_refused_with_the_state_untouched(
    tmp_path: Path,
) -> None:
    node = make_node(tmp_path)
    assert node.log is not None
    assert judge(node, asks(2, prefix="before"))[0] is Status.ACCEPT
    state = node.states[MID]
    before = state.state_hash()
    cap_pages(node, None)  # the file may not grow: a page's free room at most
    frame = asks(40)
    _, _, delivered = judge(node, frame)
    # The batch did not fit; each envelope then met the log on its own: those the
    # last page had room for are kept, the others refused, none half-way.
    refused = 40 - delivered
    assert refused > 0 and node.log_health.refused == refused
    assert logged_ids(node) == kept_ids(state)
    assert len(state.asks) == 2 + delivered  # the refused ones never reached the core
    assert state.state_hash() != before or delivered == 0
    # Room again: while the log was failing each envelope is written on its own,
    # so the refused ones are taken; after that, a frame is one transaction again.
    cap_pages(node, 1_073_741_823)
    with trio.fail_after(5):
        assert judge(node, frame)[2] == refused
    assert node.log_health.failing is None
    unsynced = node.log.commits["unsynced"]
    assert judge(node, asks(10, prefix="after"))[2] == 10
    assert node.log.commits["unsynced"] == unsynced + 1
    assert len(state.asks) == 52 and logged_ids(node) == kept_ids(state)
    node.log.close()


async def test_the_owners_envelope_submitted_twice_at_once_is_kept_once_and_logged(
    tmp_path: Path,
) -> None:
    """Both submissions write and sync it before either is admitted (the fsync runs
    in a worker thread); the second then finds it held: its row must stay."""
    a = make_running_node(tmp_path, "a")
    async with running(a):
        assert a.log is not None
        ask = Actor("twice", MARKET).ask(now=a.clock(), max_price=50, max_proof_time=900)
        answers: list[str] = []

        async def submit() -> None:
            answers.append((await a.submit(ask)).reason)

        assert a.group_sync is not None
        flushes = a.group_sync.syncs
        async with trio.open_nursery() as nursery:
            nursery.start_soon(submit)
            nursery.start_soon(submit)
        assert sorted(answers) == ["duplicate", "ok"]
        assert a.group_sync.syncs == flushes + 2  # both were synced before being admitted
        state = a.states[MID]
        assert state.holds(message_id(ask)) and message_id(ask) in logged_ids(a)
        assert logged_ids(a) == kept_ids(state)
