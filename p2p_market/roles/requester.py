"""The requester role: place asks, send inputs only to the winners, verify every
proof with the market's verifier, and sign the receipts that pay (accepted) or
send the ask to its next round (invalid, timed out).

What a restart would lose is kept in the node's role store (node/role_store.py),
sealed: the inputs of the asks `request` placed, the proofs that came directly
until they are judged, and the proofs it verified. On start the role takes its
open asks back from the rebuilt state (`_resume`)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import trio

from p2p_market.core import effects as fx
from p2p_market.core import limits as L
from p2p_market.core.envelope import Envelope, message_id, seal
from p2p_market.core.lifecycle import TERMINAL, AskState, SlotState
from p2p_market.core.limits import MAX_INLINE_INPUT_BYTES
from p2p_market.core.messages import Ask, Award, InvalidInputs, Outcome, Proof, Receipt, sha256
from p2p_market.core.validation import check_envelope
from p2p_market.core.work import inputs_size
from p2p_market.node.direct import DirectError, DirectMessage, send_direct
from p2p_market.node.role_store import RoleStore
from p2p_market.node.runtime import Node
from p2p_market.proving.backend import ProofBackend, ProvingError
from p2p_market.roles.inbox import Inbox
from p2p_market.roles.reputation import Reputation

log = logging.getLogger("p2p_market.requester")

PROOF_WAIT_S = 30.0
DEFAULT_AWARD_LAG_MS = L.DEFAULT_AWARD_LAG_MS
"""How long after a commit window ends the requester waits for commits signed inside
it before it awards (at most the market's skew). Waiting the whole skew lets a prover
whose clock lags by up to the skew still win, but every proof then starts a skew
later: with clocks kept by NTP (tens of milliseconds apart) a quarter second takes in
every honest commit on a LAN or a continent, and the award, final wherever it
arrives, starts the winners at once (protocols/market-v1.md §12)."""
SEND_ATTEMPTS = 3


@dataclass(frozen=True, slots=True)
class AskEvent:
    """What happened to one of our asks, for the CLI's progress and the SDK."""

    ask: bytes
    kind: str  # placed | state | assigned | delivered | verified | rejected | timed_out
    # | invalid_inputs (detail: prover, reason); verified and rejected carry
    # verify_ms, the verifier's time, when it gave a verdict
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class Tracked:
    market: bytes
    inputs: bytes
    proofs: dict[bytes, bytes] = field(default_factory=dict)
    """Verified proofs, by prover."""
    attested: dict[bytes, str] = field(default_factory=dict)
    """Attestations that the inputs fail the market's check: reason, by prover."""
    done: trio.Event = field(default_factory=trio.Event)


class RequesterRole:
    def __init__(
        self,
        node: Node,
        backends: dict[bytes, ProofBackend],
        inbox: Inbox,
        *,
        adopt: bool = True,
        reputation: Reputation | None = None,
        award_lag_ms: int = DEFAULT_AWARD_LAG_MS,
    ) -> None:
        self.node = node
        self.backends = backends
        self.inbox = inbox
        self.adopt = adopt
        """Also look after this key's asks placed another way (the control API), when
        their inputs are known to the node (inline, or none): see `_adopt`."""
        self.me = node.key.public_key
        for state in node.states.values():
            state.local_requester = self.me
            state.award_lag_ms = award_lag_ms
        self.reputation = reputation or Reputation()
        """Its receipts about each prover; the worst are denied its next asks."""
        node.ask_filters.append(self.reputation.apply)
        node.status_sources["reputation"] = lambda: self.reputation.snapshot(node.clock())
        self.asks: dict[bytes, Tracked] = {}
        self._events_in, self.events = trio.open_memory_channel[AskEvent](10_000)
        self._nursery: trio.Nursery | None = None
        node.hooks.append(self.on_effect)
        node.direct_hooks.append(self._on_direct)
        node.direct_wants.append(inbox.wants)
        node.proof_sources.append(self.verified_proofs)
        self.store = RoleStore(node.config.data_dir, node.key.seed)
        """Inputs of our asks, direct proofs until judged and verified proofs, for
        after a restart (sealed)."""

    def verified_proofs(self, ask: bytes) -> dict[bytes, bytes] | None:
        """The proofs verified so far for an ask this role looks after, else None."""
        tracked = self.asks.get(ask)
        return None if tracked is None else dict(tracked.proofs)

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                self._resume()
                nursery.start_soon(self.store.prune_every, self.node.clock)
                task_status.started()
                await trio.sleep_forever()
        finally:
            self.store.close()

    # -- after a restart ------------------------------------------------------------------
    def _resume(self) -> None:
        """Take back the asks we looked after before a restart. The state was rebuilt
        from the log, and its replay told the roles nothing, so whatever happened
        while we were down is read from the settlement: proofs delivered are checked,
        winners still at work may send their proof and get the inputs (again: they
        may have been lost on the way, and a prover takes them once). Asks no longer
        held lose their rows."""
        states = self.node.states
        self.store.keep_only(lambda m, a: m in states and a in states[m].asks)
        for market, ask_id, _, inputs in self.store.items("own_inputs"):
            self.asks.setdefault(ask_id, Tracked(market=market, inputs=inputs))
        for market, ask_id, prover, proof in self.store.items("verified"):
            if ask_id not in self.asks and not self._adopt(market, ask_id):
                continue
            self.asks[ask_id].proofs[prover] = proof
        for market, state in states.items():
            for ask_id in list(state.asks):
                if ask_id in self.asks or self._adopt(market, ask_id):
                    self._catch_up(market, ask_id, self.asks[ask_id])

    def _catch_up(self, market: bytes, ask_id: bytes, tracked: Tracked) -> None:
        state = self.node.states[market]
        if state.view(ask_id).state in TERMINAL:
            tracked.done.set()
            return
        run = state.settlement().runs.get(ask_id)
        if run is None:
            return  # not yet assigned: the effects to come will do
        env = state.asks[ask_id]
        assert isinstance(env.message, Ask)
        by_hash = not env.message.inputs and bool(tracked.inputs)
        for prover, slot in run.slots.items():
            if slot.state is SlotState.ASSIGNED:
                self.inbox.expect("proof", ask_id, prover)
                if by_hash:
                    self._spawn(self._send_inputs, market, ask_id, prover)
            elif slot.state is SlotState.DELIVERED and slot.proof_hash is not None:
                self._spawn(self._check_proof, market, ask_id, prover, slot.proof_hash)

    async def _on_direct(self, message: DirectMessage) -> bool:
        """Into the inbox; a proof is also stored (sealed) until it is judged: the
        prover sends it once, before its notice, and a restart must not lose it."""
        if not await self.inbox.deliver(message):
            return False
        state = self.node.states.get(message.market)
        env = None if state is None else state.asks.get(message.ask)
        if message.kind == "proof" and env is not None:
            horizon = self._horizon(message.market, env)
            self.store.keep(
                "received", message.market, message.ask, message.sender, message.payload, horizon
            )
        return True

    def _horizon(self, market: bytes, ask: Envelope | None) -> int:
        """When the role store lets go of what it keeps for this ask: when the core
        forgets the ask (`forget_after`, node/role_store.py)."""
        assert ask is not None
        return self.node.states[market].forget_after(ask)

    def _emit(self, ask: bytes, kind: str, **detail: Any) -> None:
        try:
            self._events_in.send_nowait(AskEvent(ask, kind, detail))
        except trio.WouldBlock:
            log.warning("ask event dropped: nobody is reading the event stream")

    async def request(self, fields: dict[str, Any], inputs: bytes) -> bytes:
        """Sign and publish an ask; returns its id. Inputs travel inline unless the ask
        is confidential (then only winners receive them, encrypted to their key)."""
        market = bytes.fromhex(str(fields["market"]))
        confidential = bool(fields.get("confidential", False))
        by_hash = confidential or len(inputs) > MAX_INLINE_INPUT_BYTES
        body = dict(fields)
        body["inputs"] = "" if by_hash else inputs.hex()
        body["inputs_hash"] = sha256(inputs).hex()
        state = self.node.states.get(market)
        need = None if state is None else inputs_size(state.market, inputs)
        if "size" not in body:
            body["size"] = need or 1  # declared from the inputs, sent by hash or not
        elif need is not None and body["size"] != need:
            raise ValueError(f"size {body['size']} does not match the inputs, which need {need}")
        raw = self.node.sign_ask(body)
        # Tracked before it is submitted: the core's first effects about it (and the
        # "placed" event, see on_effect) may run before submit returns.
        ask_id = message_id(raw)
        self.asks[ask_id] = Tracked(market=market, inputs=inputs)
        # Stored before the ask can be held anywhere: a winner may be assigned while
        # this node is down, and only these bytes can prove to it.
        self.store.keep(
            "own_inputs", market, ask_id, b"", inputs, self._horizon(market, check_envelope(raw)[1])
        )
        result = await self.node.submit(raw)
        if result.status != "accept":
            del self.asks[ask_id]
            self.store.delete("own_inputs", ask_id, b"")
            raise ValueError(f"ask refused: {result.reason} {result.detail}".strip())
        return ask_id

    async def cancel(self, ask_id: bytes) -> str:
        result = await self.node.cancel(ask_id.hex())
        return result.reason if result.status != "accept" else "ok"

    async def wait(self, ask_id: bytes) -> Tracked:
        tracked = self.asks[ask_id]
        await tracked.done.wait()
        return tracked

    # -- reacting to the core -------------------------------------------------------------
    async def on_effect(self, market: bytes, effect: fx.Effect) -> None:
        ask_id = getattr(effect, "ask", None)
        if ask_id is None or (ask_id not in self.asks and not self._adopt(market, ask_id)):
            return
        tracked = self.asks[ask_id]
        if isinstance(effect, fx.AttemptSettled) and effect.commits and not effect.final:
            await self._award(market, effect)
        elif isinstance(effect, fx.Assigned):
            self._emit(ask_id, "assigned", prover=effect.prover.hex(), price=effect.price)
            # A large proof comes directly, before its notice: let it in from now.
            self.inbox.expect("proof", ask_id, effect.prover)
            env = self.node.states[market].asks[ask_id]
            assert isinstance(env.message, Ask)
            if not env.message.inputs and tracked.inputs:
                self._spawn(self._send_inputs, market, ask_id, effect.prover)
        elif isinstance(effect, fx.ProofDelivered):
            self._emit(ask_id, "delivered", prover=effect.prover.hex())
            self._spawn(self._check_proof, market, ask_id, effect.prover, effect.proof_hash)
        elif isinstance(effect, fx.DeadlinePassed):
            self._emit(ask_id, "timed_out", prover=effect.prover.hex())
            await self._receipt(market, ask_id, effect.prover, Outcome.TIMED_OUT)
        elif isinstance(effect, fx.AskStateChanged):
            if effect.before is None:  # the core holds it now: events in lifecycle order
                self._emit(ask_id, "placed")
            self._emit(ask_id, "state", state=effect.after.value)
            if effect.after is AskState.INVALID_INPUTS:
                self._attested(market, ask_id, tracked)
            if effect.after in (
                AskState.PROVEN,
                AskState.CANCELLED,
                AskState.EXPIRED,
                AskState.INVALID_INPUTS,
            ):
                tracked.done.set()

    def _attested(self, market: bytes, ask_id: bytes, tracked: Tracked) -> None:
        """Record and report who attested invalid inputs, and why. Told once per
        prover: a dispute (an `invalid` receipt) reopens the ask, and another winner
        may attest again."""
        state = self.node.states[market]
        view = state.view(ask_id)
        slots = zip(view.winners, view.slot_states, strict=True)
        standing = {p for p, s in slots if s is SlotState.ATTESTED}
        for env in state.events.get(ask_id, {}).values():
            m = env.message
            if isinstance(m, InvalidInputs) and env.signer in standing - set(tracked.attested):
                tracked.attested[env.signer] = m.reason
                self._emit(ask_id, "invalid_inputs", prover=env.signer.hex(), reason=m.reason)

    def _adopt(self, market: bytes, ask_id: bytes) -> bool:
        """Track an ask signed with this node's key that `request` did not place
        (e.g. POST /v1/asks on the control API), so that its proofs are verified and
        receipted too. Only when the node knows the inputs: inline, or empty. A
        confidential ask, or one whose inputs travel by hash, can only be placed
        through `request`, which holds the inputs."""
        if not self.adopt or market not in self.backends:
            return False
        state = self.node.states.get(market)
        env = state.asks.get(ask_id) if state is not None else None
        if env is None or env.signer != self.me or not isinstance(env.message, Ask):
            return False
        ask = env.message
        if ask.confidential or (not ask.inputs and ask.inputs_hash != sha256(b"")):
            return False
        self.asks[ask_id] = Tracked(market=market, inputs=ask.inputs)
        return True

    def _spawn(self, fn: Any, *args: Any) -> None:
        if self._nursery is not None:
            self._nursery.start_soon(fn, *args)

    async def _send_inputs(self, market: bytes, ask_id: bytes, prover: bytes) -> None:
        assert self.node.host is not None
        for attempt in range(SEND_ATTEMPTS):
            try:
                await send_direct(
                    self.node.host,
                    self.node.key,
                    prover,
                    "inputs",
                    market,
                    ask_id,
                    self.asks[ask_id].inputs,
                )
                return
            except DirectError as exc:
                log.warning(
                    "ask %s: inputs to %s failed (try %d): %s",
                    ask_id.hex()[:16],
                    prover.hex()[:16],
                    attempt + 1,
                    exc,
                )
                await trio.sleep(0.5 * (attempt + 1))

    def _notice(self, market: bytes, ask_id: bytes, prover: bytes, digest: bytes) -> Proof | None:
        """The prover's proof notice with this hash: a prover may deliver twice for
        one ask (a later slot after a reorg), so the first notice may be another."""
        for env in self.node.states[market].events.get(ask_id, {}).values():
            m = env.message
            if env.signer == prover and isinstance(m, Proof) and m.proof_hash == digest:
                return m
        return None

    async def _check_proof(
        self, market: bytes, ask_id: bytes, prover: bytes, digest: bytes
    ) -> None:
        notice = self._notice(market, ask_id, prover, digest)
        not_before = notice.timestamp if notice is not None else 0
        proof = notice.proof if notice is not None and notice.proof else None
        if proof is None:  # it came directly: in the inbox, or stored before a restart
            proof = await self.inbox.wait_for("proof", ask_id, prover, 0)
            stored = self.store.get("received", ask_id, prover)
            if (proof is None or sha256(proof) != digest) and stored is not None:
                proof = stored
        if proof is None:
            self.inbox.expect("proof", ask_id, prover)
            proof = await self.inbox.wait_for("proof", ask_id, prover, PROOF_WAIT_S)
        tracked = self.asks[ask_id]
        valid = False
        timing: dict[str, int] = {}
        if proof is not None and sha256(proof) == digest:
            t0 = trio.current_time()
            try:
                state = self.node.states[market]
                valid = await self.backends[market].verify(state.market, tracked.inputs, proof)
            except ProvingError as exc:
                log.warning("ask %s: verifier failed: %s", ask_id.hex()[:16], exc)
            else:  # how long the proof system took, apart from the market's waits
                timing["verify_ms"] = round((trio.current_time() - t0) * 1000)
        self.store.delete("received", ask_id, prover)  # judged now: kept if verified
        # The verdict is told before the receipt: the receipt changes the ask's state.
        if valid:
            assert proof is not None
            tracked.proofs[prover] = proof
            horizon = self._horizon(market, self.node.states[market].asks.get(ask_id))
            self.store.keep("verified", market, ask_id, prover, proof, horizon)
            self._emit(ask_id, "verified", prover=prover.hex(), size=len(proof), **timing)
            await self._receipt(market, ask_id, prover, Outcome.ACCEPTED, not_before)
        else:
            self._emit(ask_id, "rejected", prover=prover.hex(), **timing)
            await self._receipt(market, ask_id, prover, Outcome.INVALID, not_before)

    async def _award(self, market: bytes, settled: fx.AttemptSettled) -> None:
        """Make the attempt's winners final: from this signed award on, no commit
        anyone publishes later can take their slots (protocols/market-v1.md, finality).
        Signed once the attempt is settled in this node's view, naming the commits
        the ranking picked from what this node holds."""
        award = Award(
            market=market,
            timestamp=max(self.node.clock(), settled.window_end),
            ask=settled.ask,
            round=settled.round,
            attempt=settled.attempt,
            commits=tuple(sorted(settled.commits)),
        )
        result = await self.node.submit(seal(award, self.node.key))
        log.info(
            "ask %s: award of attempt %d to %d commit(s): %s",
            settled.ask.hex()[:16],
            settled.attempt,
            len(settled.commits),
            result.status,
        )

    async def _receipt(
        self, market: bytes, ask_id: bytes, prover: bytes, outcome: Outcome, not_before: int = 0
    ) -> None:
        """Signed no earlier than the proof it judges: a receipt signed before the
        proof (a prover whose clock runs ahead, within the skew) would take no effect
        in the signed-order fold, and the ask would stall."""
        receipt = Receipt(
            market=market,
            timestamp=max(self.node.clock(), not_before),
            ask=ask_id,
            prover=prover,
            outcome=outcome.value,
        )
        result = await self.node.submit(seal(receipt, self.node.key))
        if result.status == "accept":
            self.reputation.record(prover, outcome, receipt.timestamp)
        log.info(
            "ask %s: receipt %s for %s: %s",
            ask_id.hex()[:16],
            outcome.value,
            prover.hex()[:16],
            result.status,
        )
