"""The prover role: keep a bid in the book, commit when the core says so, prove what
it wins within the deadline, deliver the proof, or attest that the inputs are bad.

Capacity is honoured twice: the core only suggests a commit when the prover's own
view shows a free slot (its commits are open until settled or finished), and the
proving itself runs under a limiter of `capacity` slots, so a race between a reorg
and a new win can never run more proofs at once than the bid promised.

Confidential inputs (sent once, directly, by the requester) and a large proof made
for direct delivery are kept sealed in the node's role store (node/role_store.py)
as soon as they exist, so a restart mid-proof resumes from them
(`_resume_in_flight`) instead of abandoning the slot.

Its operator may change the bid while it runs (the control API's /v1/prover/bid,
`p2p-market prover bid ...`, roles/bid_control.py): the re-post loop always signs the
current terms, a change is posted at once and kept in the role store for the next
start, and a new capacity resizes the proving limiter together with the bid (whose
capacity is the core's free-slot view), so the prover never commits to more proofs
than it runs at once. Paused, it signs no commit: a superseding bid that takes no
ask (bid_control.py says why one is needed) keeps it out of every node's matching.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

import trio

from p2p_market.core import effects as fx
from p2p_market.core.envelope import seal
from p2p_market.core.lifecycle import SlotState
from p2p_market.core.limits import MAX_INLINE_PROOF_BYTES
from p2p_market.core.messages import Ask, Commit, InvalidInputs, Proof, sha256
from p2p_market.core.work import inputs_size
from p2p_market.net.gossip import topic_for
from p2p_market.node.direct import DirectError, DirectMessage, send_direct
from p2p_market.node.facade import Submitted
from p2p_market.node.role_store import RoleStore
from p2p_market.node.runtime import Node
from p2p_market.node.storage import StorageError
from p2p_market.proving.backend import ProofBackend, ProvingError
from p2p_market.roles.bid_control import (
    SETTING_NAME,
    BidState,
    StoredBid,
    at_start,
    terms_of,
    updated,
    withdrawal_fields,
)
from p2p_market.roles.inbox import Inbox
from p2p_market.roles.jobs import JobBook

if TYPE_CHECKING:
    from trio_typing import TaskStatus

    from p2p_market.core.messages import Market

log = logging.getLogger("p2p_market.prover")

LISTENER_MARGIN_MS: Final = 1_000
"""How long before the deadline the prover stops waiting for a peer to publish to
and publishes anyway (into the log, for sync to carry later): see `_await_listener`."""
DELIVER_ATTEMPTS: Final = 5
BUSY_PAUSE_S: Final = 0.5
"""A direct proof refused as busy is tried again after 0.5 s, 1 s, 1.5 s, 2 s."""
PROVE_TIMES_KEPT: Final = 256
"""The latest proofs whose timing the node's status shows: enough for a reader that
polls every few seconds (the simulation's report) to miss none."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ProverSettings:
    market: bytes
    price: int
    proof_time: int
    """Milliseconds the prover promises per proof (its deadline after winning)."""
    capacity: int = 1
    max_size: int = 1
    """The largest ask size (units of work, core/work.py) the bid takes."""
    bid_ttl_ms: int = 600_000


@dataclass(frozen=True, slots=True)
class ProveTime:
    """One proof the back-end made here. Kept apart from the market's timeline so
    that a report can tell the proof system's time from the market's (commit window,
    settling, delivery), which the requester alone cannot."""

    ask: bytes
    started: int
    """The node's clock (epoch ms) when the back-end was called."""
    ms: int
    """How long the back-end took (monotonic clock, ms)."""


@dataclass
class ProverStats:
    commits: int = 0
    won: int = 0
    proved: int = 0
    failed: int = 0
    attested: int = 0
    earned: int = 0
    paid: int = 0
    """Slots the requester accepted: the proofs that earned."""
    active: dict[bytes, trio.CancelScope] = field(default_factory=dict)
    prove_times: deque[ProveTime] = field(default_factory=lambda: deque(maxlen=PROVE_TIMES_KEPT))


class JobFailed(ProvingError):
    """A job failed for a reason other than the back-end's (node/metrics.py
    `PROVER_FAILURES` names them)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class ProverRole:
    def __init__(
        self, node: Node, backend: ProofBackend, settings: ProverSettings, inbox: Inbox
    ) -> None:
        self.node = node
        self.backend = backend
        self.config_settings = settings
        """The settings the role was started with (its config)."""
        self.inbox = inbox
        self.stats = ProverStats()
        self.jobs = JobBook()
        self.me = node.key.public_key
        self.store = RoleStore(node.config.data_dir, node.key.seed)
        """Received confidential inputs and large proofs, for after a restart (sealed),
        and the bid's settings as its operator last changed them."""
        stored = self.store.setting(SETTING_NAME)
        terms, state, note = at_start(
            terms_of(settings), None if stored is None else StoredBid.loads(stored)
        )
        self.bid_state: BidState = state
        if note:
            log.info("%s (%s)", note, state)
        self.settings = dataclasses.replace(settings, **dataclasses.asdict(terms))
        """The bid's current settings: what the re-post loop signs."""
        self._limiter = trio.CapacityLimiter(self.settings.capacity)
        self._shrink_at = -math.inf
        """When a lowered capacity may shrink the limiter (trio clock): the work
        committed under the larger one is done by then (`_resize`)."""
        self._bid_lock = trio.Lock()
        self._bid_changed = trio.Event()
        self._nursery: trio.Nursery | None = None
        node.hooks.append(self.on_effect)
        node.direct_hooks.append(self._on_direct)
        node.direct_wants.append(inbox.wants)
        node.status_sources["prover"] = self.status
        node.prover_control = self
        node.metrics.prover(settings.market)

    def status(self) -> dict[str, Any]:
        """What GET /v1/status shows of this role: its counts and the timing of its
        latest proofs (`PROVE_TIMES_KEPT`)."""
        s = self.stats
        return {
            "commits": s.commits,
            "won": s.won,
            "proved": s.proved,
            "failed": s.failed,
            "attested": s.attested,
            "earned": s.earned,
            "slot_waits": self.state.slot_waits,
            "prove_times": [
                {"ask": t.ask.hex(), "started": t.started, "ms": t.ms} for t in s.prove_times
            ],
        }

    @property
    def state(self):  # type: ignore[no-untyped-def]
        return self.node.states[self.settings.market]

    async def run(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                await self.warm_up()  # before the bid: a win may follow at once
                if self.bid_state == "active":
                    await self.place_bid()
                elif self._matchable():  # paused, but its withdrawal is not in the log
                    await self._withdraw()
                self._resume_in_flight()
                nursery.start_soon(self._refresh_bid)
                nursery.start_soon(self.store.prune_every, self.node.clock)
                task_status.started()
        finally:
            self.store.close()

    async def _on_direct(self, message: DirectMessage) -> bool:
        """Into the inbox; inputs are also stored (sealed) before the requester is
        told they arrived: it sends them once, and a restart must not lose them."""
        if not await self.inbox.deliver(message):
            return False
        env = self.state.asks.get(message.ask) if message.market == self.settings.market else None
        if message.kind == "inputs" and env is not None:
            horizon = self.state.forget_after(env)
            self.store.keep(
                "inputs", message.market, message.ask, message.sender, message.payload, horizon
            )
        return True

    async def warm_up(self) -> None:
        """Have the back-end ready to prove within the bid's proof time, if it needs
        readying (snark.py's worker: `warm_up`). A failure is logged, not fatal: the
        proof will try again, and fail if it must, on its own deadline."""
        warm = getattr(self.backend, "warm_up", None)
        if warm is None:
            return
        try:
            await warm(self.state.market)
        except ProvingError as exc:
            log.warning("the back-end could not be readied: %s", exc)

    async def place_bid(self) -> Submitted:
        s = self.settings
        result = await self.node.place_bid(
            {
                "market": s.market.hex(),
                "price": s.price,
                "proof_time": s.proof_time,
                "capacity": s.capacity,
                "max_size": s.max_size,
                "ttl_ms": s.bid_ttl_ms,
            }
        )
        log.info("bid %s: %s %s", result.id[:16], result.status, result.reason)
        return result

    async def _refresh_bid(self) -> None:
        """A bid that lapses drops out of every ranking: renew it at half its life,
        with the current settings. A change posts its own bid (and may change the
        ttl): the wait starts again from it. Paused, nothing is posted."""
        while True:
            changed = self._bid_changed
            with trio.move_on_after(self.settings.bid_ttl_ms / 2000):
                await changed.wait()
                continue
            if self.bid_state == "active":
                async with self._bid_lock:
                    await self.place_bid()

    # -- the operator's commands (node/facade.py ProverControl) ---------------------------
    def bid_view(self) -> dict[str, Any]:
        s = self.settings
        current = self.state.book.current.get(self.me)
        return {
            "market": s.market.hex(),
            "state": self.bid_state,
            "price": s.price,
            "proof_time": s.proof_time,
            "capacity": s.capacity,
            "max_size": s.max_size,
            "bid_ttl_ms": s.bid_ttl_ms,
            "running": int(self._limiter.total_tokens),
            "bid": None if current is None else current.id.hex(),
        }

    def _changed(self) -> bool:
        """Keep the settings for the next start and wake the re-post loop; whether
        they were kept (a full disk: they apply until the node stops)."""
        self._bid_changed.set()
        self._bid_changed = trio.Event()
        row = StoredBid(terms_of(self.settings), terms_of(self.config_settings), self.bid_state)
        try:
            self.store.put_setting(SETTING_NAME, row.dumps())
        except StorageError as exc:
            log.warning("bid settings not kept for a restart: %s", exc)
            return False
        return True

    def _answer(self, kept: bool, result: Submitted | None) -> dict[str, Any]:
        return {
            **self.bid_view(),
            "kept": kept,
            "submitted": None if result is None else dataclasses.asdict(result),
        }

    async def update_bid(self, changes: dict[str, int]) -> dict[str, Any]:
        """Change the bid's terms, and post them at once if it is active. A larger
        capacity grows the limiter before the bid that promises it is signed; a
        smaller one shrinks it once the work committed under the larger is done."""
        async with self._bid_lock:
            old = self.settings
            terms = updated(terms_of(old), changes, self.state.market.max_lifetime_ms)
            workers = getattr(self.backend, "workers", None)
            if isinstance(workers, int) and terms.capacity > workers:
                raise ValueError(
                    f"capacity {terms.capacity} is above the {workers} proofs this"
                    f" node's back-end was started to run at once: restart it with"
                    f" capacity {terms.capacity}"
                )
            self.settings = dataclasses.replace(old, **dataclasses.asdict(terms))
            if terms.capacity < old.capacity:
                m = self.state.market
                settle_ms = 2 * (m.commit_window_ms + m.skew_ms) + LISTENER_MARGIN_MS
                self._shrink_at = trio.current_time() + (settle_ms + old.proof_time) / 1000
                if self._nursery is not None:
                    self._nursery.start_soon(self._resize_later)
            self._resize()
            result = await self.place_bid() if self.bid_state == "active" else None
            return self._answer(self._changed(), result)

    def _resize(self) -> None:
        """The limiter at the bid's capacity; not below the old one until
        `_shrink_at` (commits under it may still be won and must all run)."""
        total = self.settings.capacity
        if trio.current_time() < self._shrink_at:
            total = max(total, int(self._limiter.total_tokens))
        self._limiter.total_tokens = total

    async def _resize_later(self) -> None:
        await trio.sleep_until(self._shrink_at)
        self._resize()

    async def pause_bid(self, state: str) -> dict[str, Any]:
        """Stop committing and re-posting; the first pause signs the superseding bid
        that takes no ask (bid_control.py). Work already won goes on."""
        if state not in ("paused", "withdrawn"):
            raise ValueError(f"a bid is paused or withdrawn, not {state!r}")
        async with self._bid_lock:
            was, self.bid_state = self.bid_state, "paused" if state == "paused" else "withdrawn"
            result = await self._withdraw() if was == "active" or self._matchable() else None
            return self._answer(self._changed(), result)

    def _matchable(self) -> bool:
        """Whether this node's book holds a live bid of ours that is not a withdrawal."""
        current = self.state.book.current.get(self.me)
        if current is None or current.bid.expires_at <= self.node.clock():
            return False
        return bool(current.bid.price != withdrawal_fields(self.settings.market, 1)["price"])

    async def _withdraw(self) -> Submitted:
        fields = withdrawal_fields(self.settings.market, self.settings.bid_ttl_ms)
        result = await self.node.place_bid(fields)
        log.info("bid withdrawn from matching (%s): %s", self.bid_state, result.status)
        return result

    async def resume_bid(self) -> dict[str, Any]:
        """Post the current terms (a new seq: it supersedes the withdrawal)."""
        async with self._bid_lock:
            self.bid_state = "active"
            result = await self.place_bid()
            return self._answer(self._changed(), result)

    def jobs_view(self) -> dict[str, Any]:
        return {
            "market": self.settings.market.hex(),
            "running": len(self.stats.active),
            "jobs": self.jobs.listing(),
        }

    def earnings_view(self) -> dict[str, Any]:
        s = self.stats
        return {
            "earned": s.earned,
            "paid_proofs": s.paid,
            "markets": [
                {"market": self.settings.market.hex(), "earned": s.earned, "paid_proofs": s.paid}
            ],
        }

    def _resume_in_flight(self) -> None:
        """After a restart (the state was rebuilt from the log, whose replay tells
        the roles nothing): pick up our assignments still before their deadline. The
        rest are abandoned: they time out at the requester and go to the next round
        without us (we are excluded from the ask). Those whose inputs came directly
        (confidential or large) resume from the role store, where the inputs were
        kept on arrival; if they had not arrived, the work is abandoned too: the
        requester sends them once, and waiting for them would only hold a slot.
        Stored rows of asks the node no longer holds go."""
        now = self.node.clock()
        self.store.keep_only(lambda m, a: m == self.settings.market and a in self.state.asks)
        for ask_id, run in self.state.settlement().runs.items():
            slot = run.slots.get(self.me)
            if slot is None or slot.state is not SlotState.ASSIGNED or slot.deadline <= now:
                continue
            direct = not run.ask.inputs and run.ask.inputs_hash != sha256(b"")
            requester = self.state.asks[ask_id].signer
            if direct and self.store.get("inputs", ask_id, requester) is None:
                log.warning(
                    "ask %s: the inputs came directly and were not stored before the"
                    " restart; abandoning (it times out at the requester)",
                    ask_id.hex()[:16],
                )
                continue
            log.info("ask %s: resuming after a restart", ask_id.hex()[:16])
            self.jobs.get(ask_id, price=slot.price, now=now)
            self.jobs.set(ask_id, "assigned", deadline=slot.deadline)
            self._start(ask_id, slot.deadline)

    # -- reacting to the core -------------------------------------------------------------
    async def on_effect(self, market: bytes, effect: fx.Effect) -> None:
        if market != self.settings.market:
            return
        if isinstance(effect, fx.CommitToAsk):
            if self.bid_state != "active":
                log.info("ask %s: paused, no commit", effect.ask.hex()[:16])
                self.state.decline(effect.ask, effect.round, effect.attempt)
                return
            await self._commit(effect)
        elif isinstance(effect, fx.Assigned) and effect.prover == self.me:
            self.stats.won += 1
            now = self.node.clock()
            self.jobs.get(effect.ask, price=effect.price, now=now)
            self.jobs.set(effect.ask, "assigned", price=effect.price, deadline=effect.deadline)
            self._start(effect.ask, effect.deadline)
        elif isinstance(effect, fx.AttemptSettled) and self.me not in effect.winners:
            job = self.jobs.find(effect.ask)
            if job is not None and job.state == "committed":
                job.state = "lost"
        elif isinstance(effect, fx.Reorg) and self.me in set(effect.before) - set(effect.after):
            scope = self.stats.active.pop(effect.ask, None)
            if scope is not None:
                log.info("reorg: ask %s is no longer ours; stopping", effect.ask.hex()[:16])
                scope.cancel()
        elif isinstance(effect, fx.SlotJudged) and effect.prover == self.me:
            self._judged(effect)

    def _judged(self, effect: fx.SlotJudged) -> None:
        """The requester's receipt about one of our slots. Pay-as-bid: an accepted
        slot earns its price (our price per unit times the ask's size), and nothing
        else does, delivered or not (protocols/market-v1.md §11)."""
        metrics = self.node.metrics
        if effect.outcome is SlotState.ACCEPTED:
            self.stats.earned += effect.price
            self.stats.paid += 1
            self.jobs.set(effect.ask, "accepted", earned=effect.price)
            metrics.paid(self.settings.market, effect.price)
            log.info("ask %s: accepted, earned %d", effect.ask.hex()[:16], effect.price)
        else:
            if effect.outcome in (SlotState.INVALID, SlotState.TIMED_OUT):
                self.jobs.set(effect.ask, effect.outcome.value)
            metrics.prover_failed(self.settings.market, effect.outcome.value)
            log.info("ask %s: the requester says %s", effect.ask.hex()[:16], effect.outcome.value)

    async def _commit(self, effect: fx.CommitToAsk) -> None:
        commit = Commit(
            market=self.settings.market,
            timestamp=self.node.clock(),
            ask=effect.ask,
            round=effect.round,
            attempt=effect.attempt,
            bid=effect.bid,
            price=effect.price,
            proof_time=effect.proof_time,
        )
        result = await self.node.submit(seal(commit, self.node.key))
        if result.status != "accept":
            self.state.decline(effect.ask, effect.round, effect.attempt)
        else:
            self.stats.commits += 1
            # Direct inputs are sent to the winners as soon as the requester's node
            # settles the round, which may be before ours does: take them from now.
            env = self.state.asks.get(effect.ask)
            size = env.message.size if env is not None and isinstance(env.message, Ask) else 1
            job = self.jobs.get(effect.ask, price=effect.price * size, now=commit.timestamp)
            if job.state in ("lost", "stopped"):  # a later attempt of the same ask
                job.state = "committed"
            if env is not None and isinstance(env.message, Ask) and not env.message.inputs:
                self.inbox.expect("inputs", effect.ask, env.signer)

    def _start(self, ask: bytes, deadline: int) -> None:
        if ask in self.stats.active or self._nursery is None:
            return
        scope = trio.CancelScope()
        self.stats.active[ask] = scope
        self._nursery.start_soon(self._work, ask, deadline, scope)

    async def _work(self, ask_id: bytes, deadline: int, scope: trio.CancelScope) -> None:
        market, metrics = self.settings.market, self.node.metrics
        metrics.job_started(market)
        outcome = "stopped"  # unless _prove says otherwise: a reorg took the slot
        try:
            with scope:
                async with self._limiter:
                    outcome = await self._prove(ask_id, deadline)
        except ProvingError as exc:
            outcome = "failed"
            self.stats.failed += 1
            reason = exc.reason if isinstance(exc, JobFailed) else "prove_error"
            metrics.prover_failed(market, reason)
            log.warning("ask %s: proving failed: %s", ask_id.hex()[:16], exc)
            if reason in ("prove_error", "check_error") and self._nursery is not None:
                self._nursery.start_soon(self.warm_up)  # a timeout killed the worker
        finally:
            self.stats.active.pop(ask_id, None)
            metrics.job_finished(market, outcome)
            job = self.jobs.find(ask_id)
            if job is not None and job.state in ("assigned", "proving"):
                job.state = outcome  # type: ignore[assignment]

    async def _prove(self, ask_id: bytes, deadline: int) -> str:
        """Prove and deliver, or attest: "delivered" or "attested" ("stopped" for an
        ask not held here); JobFailed or ProvingError if that fails."""
        env = self.state.asks.get(ask_id)
        if env is None:
            return "stopped"
        ask = env.message
        assert isinstance(ask, Ask)
        remaining = (deadline - self.node.clock()) / 1000
        inputs = ask.inputs
        if not inputs and ask.inputs_hash != sha256(b""):
            self.inbox.expect("inputs", ask_id, env.signer)
            sent = self.store.get("inputs", ask_id, env.signer)  # came before a restart
            if sent is None:
                sent = await self.inbox.wait_for("inputs", ask_id, env.signer, remaining)
            if sent is None:
                raise JobFailed("inputs_missing", "the requester never sent the inputs")
            inputs = sent
        market = self.state.market
        try:
            valid = sha256(inputs) == ask.inputs_hash and await self.backend.check_inputs(
                market, inputs
            )
            understated = await self._understated(market, ask, inputs) if valid else None
        except ProvingError as exc:
            raise JobFailed("check_error", f"the inputs could not be checked: {exc}") from None
        if not valid or understated is not None:
            await self._await_listener(deadline)
            await self._attest(ask_id, understated or "inputs fail the market's input check")
            return "attested"
        proof = self.store.get("proof", ask_id, env.signer)  # made before a restart
        if proof is None:
            started = self.node.clock()
            remaining = (deadline - started) / 1000
            self.jobs.set(ask_id, "proving", started=started)
            t0 = trio.current_time()
            proof = await self.backend.prove(market, inputs, remaining)
            took_s = trio.current_time() - t0
            self.stats.prove_times.append(ProveTime(ask_id, started, round(took_s * 1000)))
            self.jobs.set(ask_id, "proving", prove_ms=round(took_s * 1000))
            self.node.metrics.proved(self.settings.market, took_s)
            if len(proof) > MAX_INLINE_PROOF_BYTES:  # delivered directly: keep it till then
                self.store.keep(
                    "proof",
                    self.settings.market,
                    ask_id,
                    env.signer,
                    proof,
                    self.state.forget_after(env),
                )
        await self._await_listener(deadline)
        await self._deliver(ask_id, env.signer, proof)
        return "delivered"

    async def _understated(self, market: Market, ask: Ask, inputs: bytes) -> str | None:
        """Why the inputs need more work than the ask declares, or None. Where the
        ask's own inputs show its size every node checked it (misdeclared_size); the
        inputs of a confidential or directly delivered ask reach the winner only, so
        it checks them here and attests at once rather than grinding past what it
        bid for (protocols/market-v1.md §5.3). The requester may dispute that with an
        `invalid` receipt (then this prover is out of the ask)."""
        need = inputs_size(market, inputs)
        if need is None:
            sizer = getattr(self.backend, "work_size", None)
            need = None if sizer is None else await sizer(market, inputs)
        if need is None or need <= ask.size:
            return None
        return f"misdeclared_size: declares {ask.size}, the inputs need {need}"

    async def _await_listener(self, deadline: int) -> None:
        """Until a peer is in this node's gossip mesh for the market, at most until
        `LISTENER_MARGIN_MS` before the deadline. A node that has just restarted
        resumes its work at once and may finish before it has dialled anyone: a
        message published into an empty mesh stays only in gossipsub's cache for a
        few heartbeats, and after that reaches the requester by periodic sync (every
        30 s), perhaps well after the deadline, when the ask has moved on."""
        gossip = self.node.gossip
        if gossip is None:
            return
        topic = topic_for(self.settings.market)
        budget_s = (deadline - LISTENER_MARGIN_MS - self.node.clock()) / 1000
        with trio.move_on_after(max(0.0, budget_s)):
            while not gossip.router.mesh.get(topic):
                await trio.sleep(0.05)

    async def _attest(self, ask_id: bytes, reason: str) -> None:
        message = InvalidInputs(
            market=self.settings.market, timestamp=self.node.clock(), ask=ask_id, reason=reason
        )
        await self.node.submit(seal(message, self.node.key))
        self.stats.attested += 1

    async def _send_proof(self, ask_id: bytes, requester: bytes, proof: bytes) -> None:
        """Directly to the requester; again after a pause while it is busy (it takes
        a few transfers at once, and only two from one peer), or while it declines:
        it lets a proof in once its own node has settled the assignment, which a
        prover that proves at once can beat by a window's skew."""
        assert self.node.host is not None
        for attempt in range(DELIVER_ATTEMPTS):
            try:
                await send_direct(
                    self.node.host,
                    self.node.key,
                    requester,
                    "proof",
                    self.settings.market,
                    ask_id,
                    proof,
                )
                return
            except DirectError as exc:
                retry = exc.busy or exc.refusal == "declined"
                if not retry or attempt == DELIVER_ATTEMPTS - 1:
                    raise JobFailed("delivery_error", f"cannot deliver the proof: {exc}") from None
                await trio.sleep(BUSY_PAUSE_S * (attempt + 1))

    async def _deliver(self, ask_id: bytes, requester: bytes, proof: bytes) -> None:
        """Small proofs travel inline in the signed notice; large ones go directly to
        the requester, the notice carrying only their hash and size."""
        inline = proof if len(proof) <= MAX_INLINE_PROOF_BYTES else b""
        notice = Proof(
            market=self.settings.market,
            timestamp=self.node.clock(),
            ask=ask_id,
            proof_hash=sha256(proof),
            proof=inline,
            size=len(proof),
        )
        if not inline:
            await self._send_proof(ask_id, requester, proof)
        result = await self.node.submit(seal(notice, self.node.key))
        if result.status != "accept":
            why = f"{result.status} {result.reason} {result.detail}".strip()
            raise JobFailed("notice_refused", f"the node refused the proof notice: {why}")
        self.stats.proved += 1
        log.info("ask %s: proof delivered (%d bytes)", ask_id.hex()[:16], len(proof))
