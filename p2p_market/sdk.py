"""The Python SDK: buy proofs (or publish bids) from a trio program.

    import trio
    import p2p_market

    async def main() -> None:
        async with p2p_market.open_client(
            bootstrap=["/ip4/127.0.0.1/tcp/4001/p2p/12D3KooW..."], market="devnet"
        ) as client:
            proof = await client.request_proof(
                b"my inputs", max_price=20, max_proof_time=10_000, prefer="cost"
            )

    trio.run(main)

`open_client` runs an ephemeral node in the caller's trio run (a temporary data
directory unless `data_dir` is given, a fresh key unless `key` is given, listening
on 127.0.0.1 on a free port), dials the bootstrap peers, and runs the requester
role on it: asks are signed with the client's key, inputs go only to the winners
when confidential, every proof is checked with the market's verifier and receipted
(which is what pays the prover). `request_proof` returns verified proof bytes or
raises `RequestFailed` with a `reason` a program can branch on.

Leaving the `async with` waits (a few seconds at most) until a peer holds the
client's last messages (receipts, cancels), so that they are not lost with the
ephemeral node.

This SDK runs only on trio (py-libp2p does). An asyncio program (or one on either
loop) uses `p2p_market.sdk_http`: a client of a running node's control API.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import multiaddr
import trio

from p2p_market.core import limits as L
from p2p_market.core.book import StoredBid
from p2p_market.core.crypto import SigningKey
from p2p_market.core.envelope import market_id, message_id
from p2p_market.core.lifecycle import AskState
from p2p_market.core.messages import InvalidInputs, Market
from p2p_market.core.work import inputs_size
from p2p_market.markets.descriptor import MarketSpecError, is_market_id, label, resolve_market
from p2p_market.net.addrs import ResolveError
from p2p_market.net.gossip import topic_for
from p2p_market.node import peers
from p2p_market.node.artifacts import artifact_name, pinned
from p2p_market.node.config import NodeConfig
from p2p_market.node.direct import DEFAULT_MAX_BYTES
from p2p_market.node.join import (
    REQUESTER_ARTIFACTS,
    JoinError,
    fetched_descriptor,
    join_market,
    store_dir,
)
from p2p_market.node.keyfile import new_key, read_key
from p2p_market.node.runtime import Node
from p2p_market.node.sync import sync_market
from p2p_market.proving.registry import close_at_exit
from p2p_market.proving.snark import SnarkBackend, artifact_dirs
from p2p_market.roles.inbox import Inbox
from p2p_market.roles.requester import AskEvent, RequesterRole
from p2p_market.roles.split import SplitFailed, SplitProof, request_segmented
from p2p_market.roles.wiring import BackendOptions

__all__ = [
    "AskEvent",
    "Client",
    "ProofResult",
    "RequestFailed",
    "SplitProof",
    "check_ask",
    "check_bootstrap",
    "open_client",
]

DEFAULT_TTL_MS: Final = 300_000
DEFAULT_DISCOVER_S: Final = 30.0
"""How long to wait for a prover's bid: measured across namespaces at 300 ms RTT,
discovery (dial, Noise, identify, a sync round) took 6.7 to 10.7 s, against a 10 s
default then (issue 13)."""
FLUSH_S: Final = 5.0
MESH_WAIT_S: Final = 3.0
MAX_INPUT_BYTES: Final = DEFAULT_MAX_BYTES
"""Inputs larger than an ask can carry inline go to the winners directly, up to this."""
PREFERENCES: Final = ("cost", "time")


class RequestFailed(Exception):
    """No verified proof. `reason` is one of:

    - ``unreachable``: no bootstrap peer could be reached
    - ``no_provers``: no live bid in the market, or none within the caps
    - ``refused``: the node refused the ask (the message says why)
    - ``timeout``: no verified proof within the timeout (the ask is cancelled if
      nobody had won it yet)
    - ``expired``: the ask expired first
    - ``cancelled``: the ask was cancelled
    - ``invalid_inputs``: a prover attested that the inputs cannot be proven

    For a split proof (`Client.request_segmented`), `segment` is the index of the
    segment whose ask failed, and `aggregation` is True when the aggregation ask did;
    `ask` is that ask.
    """

    def __init__(
        self,
        reason: str,
        message: str,
        *,
        ask: bytes | None = None,
        segment: int | None = None,
        aggregation: bool = False,
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.ask = ask
        self.segment = segment
        self.aggregation = aggregation


@dataclass(frozen=True, slots=True)
class ProofResult:
    ask: bytes
    proofs: dict[bytes, bytes]
    """Verified proofs, by prover (one per replica)."""
    winners: tuple[bytes, ...]
    paid: int
    """What the requester owes: the bid price of every accepted proof."""

    @property
    def proof(self) -> bytes:
        return next(iter(self.proofs.values()))


def check_ask(
    market: Market,
    *,
    max_price: int,
    max_proof_time: int,
    prefer: str = "cost",
    replicas: int = 1,
    ttl_ms: int = DEFAULT_TTL_MS,
) -> None:
    """ValueError (one line) unless an ask with these terms is well-formed for
    `market`; checked before anything is signed or published."""
    if type(max_price) is not int or not 0 <= max_price <= L.MAX_UINT:
        raise ValueError(f"max price must be a non-negative integer, not {max_price}")
    if type(max_proof_time) is not int or not 1 <= max_proof_time <= L.MAX_UINT:
        raise ValueError(f"max proof time must be at least 1 ms, not {max_proof_time}")
    if prefer not in PREFERENCES:
        raise ValueError(f"prefer must be cost or time, not {prefer!r}")
    if type(replicas) is not int or not 1 <= replicas <= L.MAX_REPLICAS:
        raise ValueError(f"replicas must be between 1 and {L.MAX_REPLICAS}, not {replicas}")
    lo, hi = market.commit_window_ms, market.max_lifetime_ms
    if type(ttl_ms) is not int or not lo <= ttl_ms <= hi:
        raise ValueError(f"ttl must be between {lo} and {hi} ms in market {market.name}")


def check_inputs_size(inputs: bytes) -> None:
    if len(inputs) > MAX_INPUT_BYTES:
        raise ValueError(f"inputs of {len(inputs)} bytes exceed the limit of {MAX_INPUT_BYTES}")


def check_bootstrap(addrs: Sequence[str]) -> tuple[str, ...]:
    """ValueError unless every address is a multiaddr ending in /p2p/<peer id>."""
    for addr in addrs:
        try:
            parsed = multiaddr.Multiaddr(addr)
        except Exception as exc:  # the library raises several unrelated types
            raise ValueError(f"not a multiaddr: {addr!r} ({exc})") from None
        if "/p2p/" not in str(parsed):
            raise ValueError(f"{addr!r} lacks /p2p/<peer id>: use the full address a node prints")
    return tuple(addrs)


class Client:
    """A requester on its own ephemeral node; made by `open_client`."""

    def __init__(self, node: Node, role: RequesterRole, market: Market) -> None:
        self.node = node
        self.role = role
        self.market = market
        self.market_id = market_id(market)
        self._placed: list[bytes] = []

    # -- who and where ----------------------------------------------------------------
    @property
    def public_key(self) -> bytes:
        return self.node.key.public_key

    @property
    def addr(self) -> str:
        assert self.node.gossip is not None
        return self.node.gossip.addr

    def peer_count(self) -> int:
        return 0 if self.node.host is None else len(peers.connected_peers(self.node.host))

    def bids(self) -> list[StoredBid]:
        """Live bids this node has seen, cheapest first."""
        state = self.node.states[self.market_id]
        now = self.node.clock()
        live = [s for s in state.book.current.values() if s.bid.expires_at > now]
        return sorted(live, key=lambda s: (s.bid.price, s.bid.proof_time, s.prover))

    def status(self, ask: bytes) -> dict[str, Any]:
        """The ask's view on this node (as the control API shows it)."""
        return self.node.ask(ask.hex())

    def events(self) -> trio.MemoryReceiveChannel[AskEvent]:
        """What happens to this client's asks, as `AskEvent`s (one reader)."""
        return self.role.events

    # -- finding provers --------------------------------------------------------------
    async def wait_for_provers(
        self,
        *,
        timeout: float = DEFAULT_DISCOVER_S,
        max_price: int | None = None,
        max_proof_time: int | None = None,
        size: int = 1,
        provers: Callable[[bytes], bool] | None = None,
    ) -> list[StoredBid]:
        """Until at least one live bid (within the caps, if given, for an ask of
        `size` units of work: market-v1.md §5.3; of a prover `provers` accepts, if
        given: e.g. one the ask's allow and deny lists let win) has been synced;
        RequestFailed `unreachable` / `no_provers` after `timeout` seconds."""

        def fits(s: StoredBid) -> bool:
            return (
                (provers is None or provers(s.prover))
                and s.bid.max_size >= size
                and (max_price is None or s.bid.price * size <= max_price)
                and (max_proof_time is None or s.bid.proof_time <= max_proof_time)
            )

        boot = self.node.config.bootstrap
        with trio.move_on_after(timeout):
            while True:
                found = [s for s in self.bids() if fits(s)]
                if found:
                    await self._await_mesh()
                    return found
                failures = self.node.bootstrap_failures
                unresolved = [e for e in failures.values() if isinstance(e, ResolveError)]
                if self.peer_count() == 0 and boot and len(unresolved) == len(boot):
                    # Every bootstrap peer is a name that does not resolve: waiting
                    # for the timeout would change nothing but the wait.
                    raise RequestFailed("unreachable", str(unresolved[0]))
                await trio.sleep(0.05)
        where = label(self.market)
        if self.peer_count() == 0:
            why = ""
            if self.node.bootstrap_failures:
                first = next(iter(self.node.bootstrap_failures.values()))
                why = f": {type(first).__name__}: {first}"[:200]
            raise RequestFailed(
                "unreachable",
                f"cannot reach any bootstrap peer ({len(boot)} given) in {timeout:g} s{why}"
                if boot
                else "no bootstrap peer given: nobody to ask",
            )
        bids = self.bids()
        excluded = [s for s in bids if provers is not None and not provers(s.prover)]
        if bids and len(excluded) == len(bids):
            raise RequestFailed(
                "no_provers",
                f"no prover the ask would let win in market {where}: {len(bids)} bid(s) seen,"
                " all of provers it excludes",
            )
        if not bids:
            raise RequestFailed(
                "no_provers",
                f"no provers found in market {where}: {self.peer_count()} peer(s), no live bid"
                f" after {timeout:g} s",
            )
        cheapest = bids[0].bid
        fastest = min(bids, key=lambda s: s.bid.proof_time).bid
        raise RequestFailed(
            "no_provers",
            f"no prover within the caps in market {where}: cheapest bid {cheapest.price}"
            f" ({cheapest.proof_time} ms), fastest {fastest.proof_time} ms"
            f" ({fastest.price}); {len(bids)} bid(s) seen",
        )

    async def _await_mesh(self) -> None:
        """Until a peer is in this node's gossip mesh for the market (about one
        heartbeat after connecting), so that an ask published now reaches it."""
        gossip = self.node.gossip
        assert gossip is not None
        topic = topic_for(self.market_id)
        with trio.move_on_after(MESH_WAIT_S):
            while not gossip.router.mesh.get(topic):
                await trio.sleep(0.05)

    # -- asking -----------------------------------------------------------------------
    async def place_ask(
        self,
        inputs: bytes,
        *,
        max_price: int,
        max_proof_time: int,
        prefer: str = "cost",
        replicas: int = 1,
        confidential: bool = False,
        ttl_ms: int = DEFAULT_TTL_MS,
        size: int | None = None,
        allow: Sequence[bytes] = (),
        deny: Sequence[bytes] = (),
    ) -> bytes:
        """Sign and publish an ask; its id. `size`: the work it declares (default:
        what the inputs need where the market says, else 1; market-v1.md §5.3).
        `allow` (if not empty) and `deny`: the provers' public keys the ask lets win,
        and those it does not (signed in the ask: every node holds them to it).
        ValueError for bad terms (nothing is published), RequestFailed `refused` if
        the node's core refuses it (or the size contradicts the inputs)."""
        check_ask(
            self.market,
            max_price=max_price,
            max_proof_time=max_proof_time,
            prefer=prefer,
            replicas=replicas,
            ttl_ms=ttl_ms,
        )
        check_inputs_size(inputs)
        fields = {
            "market": self.market_id.hex(),
            "max_price": max_price,
            "max_proof_time": max_proof_time,
            "prefer": prefer,
            "replicas": replicas,
            "ttl_ms": ttl_ms,
            "confidential": confidential,
        }
        if size is not None:
            if type(size) is not int or not 1 <= size <= L.MAX_SIZE:
                raise ValueError(f"size must be between 1 and {L.MAX_SIZE}, not {size}")
            fields["size"] = size
        fields |= _key_lists(allow, deny)
        try:
            ask = await self.role.request(fields, inputs)
        except ValueError as exc:
            raise RequestFailed("refused", str(exc)) from None
        self._placed.append(ask)
        return ask

    async def wait(self, ask: bytes, *, timeout: float | None = None) -> ProofResult:
        """Until the ask is proven (every replica verified and receipted); else
        RequestFailed. On `timeout` (seconds) an ask nobody has won is cancelled."""
        tracked = self.role.asks[ask]
        state = self.node.states[self.market_id]
        with trio.move_on_after(timeout if timeout is not None else float("inf")) as scope:
            await tracked.done.wait()
        view = state.view(ask)
        if scope.cancelled_caught and view.state is not AskState.PROVEN:
            note = ""
            if view.state is AskState.OPEN and not view.winners:
                note = "; ask cancelled" if await self.cancel(ask) == "ok" else ""
            raise RequestFailed(
                "timeout",
                f"no verified proof within {timeout:g} s (ask {view.state.value},"
                f" {len(tracked.proofs)} of {view.ask.replicas} proofs{note})",
                ask=ask,
            )
        if view.state is AskState.PROVEN:
            return ProofResult(ask, dict(tracked.proofs), view.winners, view.paid)
        if view.state is AskState.CANCELLED:
            raise RequestFailed("cancelled", "the ask was cancelled", ask=ask)
        if view.state is AskState.INVALID_INPUTS:
            why = [
                e.message.reason
                for e in state.events.get(ask, {}).values()
                if isinstance(e.message, InvalidInputs)
            ]
            raise RequestFailed(
                "invalid_inputs",
                "a prover attested that the inputs cannot be proven"
                + (f": {why[0]}" if why else ""),
                ask=ask,
            )
        raise RequestFailed(
            "expired",
            f"the ask expired before it was proven ({len(tracked.proofs)} of"
            f" {view.ask.replicas} proofs verified)",
            ask=ask,
        )

    async def request_proof(
        self,
        inputs: bytes,
        *,
        max_price: int,
        max_proof_time: int,
        prefer: str = "cost",
        replicas: int = 1,
        confidential: bool = False,
        ttl_ms: int = DEFAULT_TTL_MS,
        timeout: float = 120.0,
        discover_timeout: float = DEFAULT_DISCOVER_S,
        size: int | None = None,
        allow: Sequence[bytes] = (),
        deny: Sequence[bytes] = (),
    ) -> bytes:
        """Wait for a prover within the caps (`discover_timeout`; one the ask lets
        win, with `allow` / `deny`), place the ask, and return a verified proof
        within `timeout` seconds of placing it."""
        check_ask(
            self.market,
            max_price=max_price,
            max_proof_time=max_proof_time,
            prefer=prefer,
            replicas=replicas,
            ttl_ms=ttl_ms,
        )
        await self.wait_for_provers(
            timeout=discover_timeout,
            max_price=max_price,
            max_proof_time=max_proof_time,
            size=size or inputs_size(self.market, inputs) or 1,
            provers=_admits(_key_lists(allow, deny)),
        )
        ask = await self.place_ask(
            inputs,
            max_price=max_price,
            max_proof_time=max_proof_time,
            prefer=prefer,
            replicas=replicas,
            confidential=confidential,
            ttl_ms=ttl_ms,
            size=size,
            allow=allow,
            deny=deny,
        )
        return (await self.wait(ask, timeout=timeout)).proof

    async def request_segmented(
        self,
        segments: Sequence[bytes],
        *,
        max_price: int,
        max_proof_time: int,
        prefer: str = "cost",
        replicas: int = 1,
        confidential: bool = False,
        ttl_ms: int = DEFAULT_TTL_MS,
        timeout: float = 300.0,
        discover_timeout: float = DEFAULT_DISCOVER_S,
        allow: Sequence[bytes] = (),
        deny: Sequence[bytes] = (),
    ) -> SplitProof:
        """A split proof: one ask per segment (inputs), all placed at once, and when
        every segment proof is verified one aggregation ask over them, whose proof
        is `SplitProof.proof` (roles/split.py says how the aggregation inputs are
        made, and that with the pow back-end the aggregation is only a demo). The
        terms apply to every ask, each paid separately (max_price is per ask).
        RequestFailed names the failing segment (`segment`) or the aggregation
        (`aggregation`); on `timeout` (seconds, for the whole) the asks nobody has
        won are cancelled. `allow` and `deny` as for `place_ask`, for every ask."""
        check_ask(
            self.market,
            max_price=max_price,
            max_proof_time=max_proof_time,
            prefer=prefer,
            replicas=replicas,
            ttl_ms=ttl_ms,
        )
        for inputs in segments:
            check_inputs_size(inputs)
        lists = _key_lists(allow, deny)
        await self.wait_for_provers(
            timeout=discover_timeout,
            max_price=max_price,
            max_proof_time=max_proof_time,
            provers=_admits(lists),
        )
        fields = {
            "market": self.market_id.hex(),
            "max_price": max_price,
            "max_proof_time": max_proof_time,
            "prefer": prefer,
            "replicas": replicas,
            "ttl_ms": ttl_ms,
            "confidential": confidential,
            **lists,
        }
        placed: list[bytes] = []

        def on_placed(ask: bytes) -> None:
            placed.append(ask)
            self._placed.append(ask)

        with trio.move_on_after(timeout):
            try:
                return await request_segmented(self.role, fields, segments, on_placed=on_placed)
            except SplitFailed as exc:
                raise RequestFailed(
                    exc.reason,
                    str(exc),
                    ask=exc.ask,
                    segment=exc.segment,
                    aggregation=exc.segment is None,
                ) from None
            except ValueError as exc:
                raise RequestFailed("refused", str(exc)) from None
        state = self.node.states[self.market_id]
        for ask in placed:
            view = state.view(ask)
            if view.state is AskState.OPEN and not view.winners:
                await self.cancel(ask)
        done = sum(1 for a in placed if state.view(a).state is AskState.PROVEN)
        raise RequestFailed(
            "timeout",
            f"no split proof within {timeout:g} s ({done} of {len(placed)} asks proven;"
            " the asks nobody had won are cancelled)",
            ask=placed[-1] if placed else None,
        )

    async def cancel(self, ask: bytes) -> str:
        """Cancel an ask of this client's: "ok", or why the node refused."""
        try:
            return await self.role.cancel(ask)
        except KeyError:
            return "unknown ask"

    # -- bidding ----------------------------------------------------------------------
    async def place_bid(
        self, *, price: int, proof_time: int, capacity: int = 1, ttl_ms: int = 3_600_000
    ) -> bytes:
        """Sign and publish a bid with the client's key (no prover role runs: nobody
        will commit to asks for it); its id. ValueError if it is refused."""
        result = await self.node.place_bid(
            {
                "market": self.market_id.hex(),
                "price": price,
                "proof_time": proof_time,
                "capacity": capacity,
                "ttl_ms": ttl_ms,
            }
        )
        if result.status != "accept":
            raise ValueError(f"bid refused: {result.reason} {result.detail}".strip())
        return bytes.fromhex(result.id)

    # -- leaving ----------------------------------------------------------------------
    async def flush(self, timeout: float = FLUSH_S) -> bool:
        """Until some connected peer holds everything this client signed about its
        asks (the asks, receipts, cancels); False if that is not seen in `timeout`."""
        state = self.node.states[self.market_id]
        me = self.public_key
        wanted: set[bytes] = set()
        for ask in self._placed:
            wanted.add(ask)
            wanted.update(e.id for e in state.events.get(ask, {}).values() if e.signer == me)
        if not wanted:
            return True
        with trio.move_on_after(timeout):
            while self.node.host is not None:
                if await self._held_by_a_peer(wanted):
                    return True
                await trio.sleep(0.2)
        return False

    async def _held_by_a_peer(self, wanted: set[bytes]) -> bool:
        """Ask connected peers (sync protocol) which of `wanted` they list."""
        assert self.node.host is not None
        linked = peers.connected_peers(self.node.host)
        if not linked:
            return False
        seen: set[bytes] = set()
        report = await sync_market(
            self.node.host,
            linked,
            self.market_id,
            holds=lambda mid: mid not in wanted or mid in seen,
            apply=lambda raw: seen.add(message_id(raw)),
            mine=self.node.sync_server.digest(self.market_id),
            timeout_s=2.0,
        )
        return any(p.equal for p in report.peers) or wanted <= seen


def _key_lists(allow: Sequence[bytes], deny: Sequence[bytes]) -> dict[str, list[str]]:
    """An ask's `allow` and `deny` fields (sorted, without repeats, as signed);
    ValueError for a key that is not 32 bytes, or too many."""
    fields: dict[str, list[str]] = {}
    for name, keys in (("allow", allow), ("deny", deny)):
        unique = sorted(set(keys))
        if any(type(k) is not bytes or len(k) != L.KEY_BYTES for k in unique):
            raise ValueError(f"{name}: a prover is its {L.KEY_BYTES}-byte public key")
        if len(unique) > L.MAX_LIST_ITEMS:
            raise ValueError(f"{name}: at most {L.MAX_LIST_ITEMS} provers")
        if unique:
            fields[name] = [k.hex() for k in unique]
    return fields


def _admits(lists: dict[str, list[str]]) -> Callable[[bytes], bool] | None:
    """Whether an ask with these lists lets a prover win; None when it lets all."""
    if not lists:
        return None
    allow = {bytes.fromhex(k) for k in lists.get("allow", [])}
    deny = {bytes.fromhex(k) for k in lists.get("deny", [])}
    return lambda p: (not allow or p in allow) and p not in deny


KeySpec = SigningKey | str | os.PathLike[str] | None


def _signing_key(key: KeySpec, passphrase: bytes | None) -> SigningKey:
    if key is None:
        return new_key()
    if isinstance(key, SigningKey):
        return key
    return read_key(key, passphrase)


async def _by_id(mid: bytes, boot: Sequence[str], data_dir: Path) -> Market:
    """Market `mid`: held here (devnet, `<cwd>/markets`, an earlier join into
    `data_dir`) with its artifacts, else fetched from `boot`."""
    held = fetched_descriptor(data_dir, mid)
    try:
        known: Market | None = resolve_market(mid.hex(), also=[held] if held else [])
    except MarketSpecError:
        if not boot:
            raise
        known = None
    dirs = [store_dir(data_dir), *artifact_dirs()]
    if known is not None and all(
        any((d / artifact_name(sha, kind)).is_file() for d in dirs)
        for sha, kind in pinned(known).items()
        if kind in REQUESTER_ARTIFACTS
    ):
        return known
    if not boot:
        assert known is not None
        return known  # its back-end names what is missing when it is used
    try:
        joined = await join_market(
            mid, boot, data_dir, search=dirs, known=known, kinds=REQUESTER_ARTIFACTS
        )
    except JoinError as exc:
        raise RequestFailed("unreachable", str(exc)) from None
    return joined.market


@contextlib.asynccontextmanager
async def open_client(
    bootstrap: Sequence[str] = (),
    market: str | Market = "devnet",
    key: KeySpec = None,
    data_dir: str | os.PathLike[str] | None = None,
    *,
    passphrase: bytes | None = None,
    verify_cmd: str | None = None,
    listen: str = "/ip4/127.0.0.1/tcp/0",
    announce: Sequence[str] = (),
) -> AsyncIterator[Client]:
    """A `Client` on an ephemeral node (see the module docstring). `market` is a
    spec (`devnet`, a descriptor file, a market id) or a `Market`; `key` a
    SigningKey or a key file (with `passphrase` if encrypted), None for a fresh
    one. ValueError (MarketSpecError, KeyFileError) before anything starts.

    A market id this machine holds no descriptor for (or a groth16 / plonk market
    whose artifacts it lacks) is fetched from the bootstrap peers first, into
    `data_dir` (node/join.py: each file checked against the id);
    RequestFailed("unreachable") if no peer serves it."""
    spec = None if isinstance(market, Market) else market.strip()
    chosen = market if isinstance(market, Market) else None
    if spec is not None and not is_market_id(spec):
        chosen = resolve_market(spec)
    signing = _signing_key(key, passphrase)
    boot = check_bootstrap(bootstrap)
    with contextlib.ExitStack() as stack:
        if data_dir is None:
            directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="p2p-market-")))
        else:
            directory = Path(data_dir)
        if chosen is None:
            assert spec is not None
            chosen = await _by_id(bytes.fromhex(spec), boot, directory)
        backend = BackendOptions(verify_cmd=verify_cmd).backend(chosen)
        if isinstance(backend, SnarkBackend):  # where a join puts what it fetched
            backend.dirs.insert(0, store_dir(directory))
        config = NodeConfig(
            key_file=Path("<sdk>"),
            data_dir=directory,
            listen=(listen,),
            bootstrap=boot,
            announce=tuple(announce),
            markets=(chosen,),
        )
        node = Node(config, signing)
        node.log_unreachable = False  # wait_for_provers names it (RequestFailed)
        async with trio.open_nursery() as nursery:
            await nursery.start(node.run)
            await nursery.start(close_at_exit, [backend])
            role = RequesterRole(node, {market_id(chosen): backend}, Inbox())
            await nursery.start(role.run)
            client = Client(node, role, chosen)
            try:
                yield client
            except Exception:
                await client.flush()
                raise
            else:
                await client.flush()
            finally:
                nursery.cancel_scope.cancel()
