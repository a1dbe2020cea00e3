"""The attacks of `bench attacks` (attacks.py), each an in-process py-libp2p peer (or
an HTTP client) doing what the security review did to real node processes.

Each attack runs until `target.end_ms`, fills `target.report` with its own figures,
and comes with the target it must meet (`judge`), stated against the quiet run."""

from __future__ import annotations

import http.client
import ipaddress
import itertools
import json
import os
import random
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager, suppress
from pathlib import Path
from typing import Any

import trio
from libp2p.abc import IHost

from p2p_market.bench.attacks import AttackSpec, Figures, Target, dir_mb
from p2p_market.bench.churn import churn
from p2p_market.core.crypto import SigningKey, devnet_key
from p2p_market.core.envelope import message_id, parse
from p2p_market.core.limits import MAX_PENDING_ORPHAN_BYTES
from p2p_market.core.messages import Commit, InvalidInputs, Proof
from p2p_market.core.work import pow_size
from p2p_market.localnet.collect import fetch_stats
from p2p_market.localnet.launcher import NodeProcess
from p2p_market.localnet.rundata import wall_ms
from p2p_market.localnet.scenario import NodeSpec
from p2p_market.markets.devnet import Actor
from p2p_market.net.frame import encode_frame
from p2p_market.net.gossip import Gossip, topic_for
from p2p_market.net.host import connect_all, make_host
from p2p_market.node.direct import (
    DEFAULT_GRACE_S,
    DEFAULT_MIN_RATE,
    DirectError,
    begin_seal,
    send_direct,
)
from p2p_market.node.direct import PROTOCOL as DIRECT_PROTOCOL
from p2p_market.node.peers import PROTOCOL as PEX_PROTOCOL
from p2p_market.node.sync import DEFAULT_ANSWER_BURST_BYTES, DEFAULT_ANSWER_BYTES_PER_S, sync_market
from p2p_market.node.sync import PROTOCOL as SYNC_PROTOCOL
from p2p_market.node.wire import decode, frame, read_msg, write_msg


def _fresh(label: str) -> str:
    """A name for a key nobody used before (the bench is outside the core: random)."""
    return f"attacker-{label}-{os.urandom(6).hex()}"


@asynccontextmanager
async def attacker_peer(
    target: Target, label: str, key: SigningKey | None = None
) -> AsyncIterator[Gossip]:
    """A bare gossip peer (no checks of its own) meshed with the victim."""
    async with trio.open_nursery() as nursery:
        host, listen = make_host(key or devnet_key(_fresh(label)))
        peer = Gossip(host, listen, markets=[target.market_id])
        await nursery.start(peer.run)
        with trio.fail_after(15):
            failed = await connect_all(host, [target.victim.addr])
            if failed:
                raise RuntimeError(f"could not reach the victim: {failed}")
            await peer.wait_for_mesh(target.market_id, _peer_id(target.victim.addr))
        try:
            yield peer
        finally:
            nursery.cancel_scope.cancel()


@asynccontextmanager
async def bare_peer(target: Target, label: str) -> AsyncIterator[IHost]:
    """A libp2p host of a fresh identity connected to the victim, without gossip:
    for the attacks on the node's request/response protocols."""
    host, listen = make_host(devnet_key(_fresh(label)))
    async with host.run(listen):
        with trio.fail_after(15):
            failed = await connect_all(host, [target.victim.addr])
            if failed:
                raise RuntimeError(f"could not reach the victim: {failed}")
        yield host


def _peer_id(addr: str) -> Any:
    from libp2p.peer.id import ID

    return ID.from_base58(addr.rsplit("/p2p/", 1)[1])


async def _until_end(target: Target, every_s: float) -> AsyncIterator[int]:
    """Yield a tick count every `every_s` until the workload ends."""
    for i in itertools.count():
        if wall_ms() >= target.end_ms:
            return
        yield i
        await trio.sleep(min(every_s, max(0.0, (target.end_ms - wall_ms()) / 1000)))


async def _publish(peer: Gossip, target: Target, items: list[bytes]) -> None:
    await peer.pubsub.publish(topic_for(target.market_id), encode_frame(items))


def _victim_stats(target: Target) -> dict[str, Any]:
    stats = fetch_stats(target.victim.api) or {}
    gossip = stats.get("gossip", {})
    return {
        "victim_frames_rejected": gossip.get("frames_rejected"),
        "victim_frames_stale": gossip.get("frames_stale"),
        "victim_peers_banned": gossip.get("peers_banned"),
        "victim_reasons": stats.get("reasons", {}),
    }


# -- phantom bids ---------------------------------------------------------------------
PHANTOMS = 6


async def phantom_bids(target: Target) -> None:
    """Bids at price 0 and 1 ms from fresh keys that never commit: before the fallback
    was bounded, 4 of them stopped every honest commit. A new wave every 10 s (new
    keys: a no-show record is per bid)."""
    market = target.scenario.market
    waves = 0
    async with attacker_peer(target, "phantom") as peer:
        async for _ in _until_end(target, 10.0):
            now = wall_ms()
            bids = [
                Actor(_fresh("phantom"), market).bid(
                    now=now, price=0, proof_time=1, capacity=1024, ttl=600_000
                )
                for _ in range(PHANTOMS)
            ]
            await _publish(peer, target, bids)
            waves += 1
            target.report.update({"phantom_bids": waves * PHANTOMS, "waves": waves})


def _served(quiet: Figures, attacked: Figures, _: dict[str, Any]) -> tuple[bool, str]:
    if not attacked.placed:
        return False, "no asks were placed"
    share = attacked.proven / attacked.placed
    quiet_share = quiet.proven / quiet.placed if quiet.placed else 1.0
    ok = share >= min(0.95, quiet_share) and _within(quiet, attacked, 2.0)
    return ok, f"proven {attacked.proven}/{attacked.placed}, p99 {attacked.p99_ms} ms"


def _within(quiet: Figures, attacked: Figures, factor: float) -> bool:
    if quiet.p99_ms is None or attacked.p99_ms is None:
        return False
    return attacked.p99_ms <= factor * quiet.p99_ms


# -- signer drain -----------------------------------------------------------------------
async def signer_drain(target: Target) -> None:
    """Each frame: one fresh attacker bid and the honest signers' own old envelopes, 25
    frames a second. Before the fix, the replayed envelopes spent their signers' budget
    (the duplicate check came after it) and honest asks expired."""
    market = target.scenario.market
    frames = 0
    async with attacker_peer(target, "drain") as peer:
        honest: list[bytes] = []
        async for _ in _until_end(target, 0.04):
            while len(honest) < 16:
                try:
                    honest.append(peer.deliveries.receive_nowait().raw)
                except trio.WouldBlock:
                    break
            if not honest:
                continue
            fresh = Actor(_fresh("drain"), market).bid(now=wall_ms(), price=1_000, proof_time=1)
            await _publish(peer, target, [fresh, *honest[-8:]])
            frames += 1
            target.report["frames"] = frames
    target.report.update(_victim_stats(target))


# -- stale flood ------------------------------------------------------------------------
async def stale_flood(target: Target) -> None:
    """New frames of envelopes the victim already holds, from two identities, as fast
    as the library sends: each costs a hash per envelope now, not a verification, and
    the flooder is banned."""
    sent = 0
    async with attacker_peer(target, "stale-a") as a, attacker_peer(target, "stale-b") as b:
        held: dict[bytes, None] = {}  # honest envelopes, as the victim forwarded them
        with trio.move_on_after(12):
            while len(held) < 12:
                for peer in (a, b):
                    with suppress(trio.WouldBlock):
                        held[peer.deliveries.receive_nowait().raw] = None
                await trio.sleep(0.05)
        if len(held) < 2:
            target.report["error"] = "no envelopes to replay"
            return
        combos = itertools.chain.from_iterable(
            itertools.combinations(list(held), k) for k in range(len(held), 1, -1)
        )
        async for i in _until_end(target, 0.012):
            combo = next(combos, None)
            if combo is None:
                break
            await _publish(a if i % 2 else b, target, list(combo))
            sent += 1
            target.report["frames"] = sent
    target.report.update(_victim_stats(target))


def _banned(quiet: Figures, attacked: Figures, report: dict[str, Any]) -> tuple[bool, str]:
    ok, why = _served(quiet, attacked, report)
    bans = report.get("victim_peers_banned") or 0
    return ok and bans >= 1, f"{why}; victim banned {bans} peer(s)"


# -- invalid signatures, a new identity every few frames --------------------------------
async def invalid_flood(target: Target) -> None:
    """Frames of badly signed envelopes, a fresh identity every 5 frames (ban evasion)."""
    market = target.scenario.market
    identities = frames = 0
    while wall_ms() < target.end_ms:
        async with attacker_peer(target, "invalid") as peer:
            identities += 1
            for _ in range(5):
                raw = bytearray(
                    Actor(_fresh("x"), market).bid(now=wall_ms(), price=1, proof_time=1)
                )
                raw[-1] ^= 1  # the last byte of the signature
                await _publish(peer, target, [bytes(raw)])
                frames += 1
                target.report.update({"identities": identities, "frames": frames})
                await trio.sleep(0.01)
            await trio.sleep(0.2)
    stats = _victim_stats(target)
    verified = stats["victim_frames_rejected"] or 0
    stats["signature_checks_per_invalid_frame"] = round(verified / frames, 2) if frames else None
    target.report.update(stats)


# -- one key over its limit ---------------------------------------------------------------
async def one_key_spam(target: Target) -> None:
    """One key at 10x the per-signer limit (20/s): 200 bids a second, 10 per frame."""
    market = target.scenario.market
    spammer = Actor(_fresh("spam"), market)
    sent = 0
    async with attacker_peer(target, "spam") as peer:
        async for _ in _until_end(target, 0.05):
            now = wall_ms()
            await _publish(
                peer,
                target,
                [spammer.bid(now=now, price=1_000, proof_time=9_000) for _ in range(10)],
            )
            sent += 10
    target.report.update({"envelopes": sent, **_victim_stats(target)})


# -- equivocation flood -----------------------------------------------------------------
async def equivocation_flood(target: Target) -> None:
    """One key signs two different bids with each seq (twins), 20 seqs a second."""
    market = target.scenario.market
    name = _fresh("twins")
    author = Actor(name, market)
    pairs = 0
    async with attacker_peer(target, "twins") as peer:
        async for i in _until_end(target, 0.05):
            now = wall_ms()
            twins = [
                author.bid(now=now, price=900 + k, proof_time=9_000, seq=i + 1) for k in range(2)
            ]
            await _publish(peer, target, twins)
            pairs += 1
            target.report["twin_pairs"] = pairs
    await trio.sleep(1.0)  # let the last twins spread
    target.report["versions_per_node"] = _versions_held(target, author.public_key.hex())


def _versions_held(target: Target, prover: str) -> dict[str, int]:
    """How many current bids of `prover` each node's book shows (1 at most)."""
    out = {}
    for node in [target.victim, *target.others]:
        try:
            book = node.api.book(target.market_id.hex())
        except Exception:
            continue
        out[node.name] = sum(1 for b in book.get("bids", []) if b.get("prover") == prover)
    return out


def _one_version(quiet: Figures, attacked: Figures, report: dict[str, Any]) -> tuple[bool, str]:
    ok, why = _served(quiet, attacked, report)
    versions = report.get("versions_per_node", {})
    return ok and bool(versions) and max(versions.values()) <= 1, f"{why}; versions {versions}"


# -- a web page posting to the control API ----------------------------------------------
async def cross_site_post(target: Target) -> None:
    """What any web page could do before the token: a text/plain POST with a foreign
    Origin (a CORS "simple request"), and a read through a rebinding Host."""
    port = target.victim.api.port
    body = json.dumps(
        {"market": target.market_id.hex(), "price": 1, "proof_time": 1, "capacity": 9}
    )

    def attempt(headers: dict[str, str], method: str = "POST", path: str = "/v1/bids") -> int:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            conn.request(method, path, body=body if method == "POST" else None, headers=headers)
            return conn.getresponse().status
        finally:
            conn.close()

    codes = {
        "foreign_origin": await trio.to_thread.run_sync(
            attempt, {"Content-Type": "text/plain", "Origin": "http://evil.example"}
        ),
        "no_origin": await trio.to_thread.run_sync(attempt, {"Content-Type": "text/plain"}),
        "rebinding_host": await trio.to_thread.run_sync(
            attempt, {"Host": f"rebind.example:{port}"}, "GET", "/v1/status"
        ),
    }
    book = target.victim.api.book(target.market_id.hex())
    cheap = [b for b in book.get("bids", []) if b.get("price") == 1]
    target.report.update({"codes": codes, "bids_at_price_1": len(cheap)})


def _refused(quiet: Figures, attacked: Figures, report: dict[str, Any]) -> tuple[bool, str]:
    codes = report.get("codes", {})
    ok = (
        codes.get("foreign_origin") == 403
        and codes.get("no_origin") in (401, 415)
        and codes.get("rebinding_host") == 421
        and report.get("bids_at_price_1") == 0
    )
    return ok, f"codes {codes}, bids at price 1: {report.get('bids_at_price_1')}"


# -- a swarm of fresh keys --------------------------------------------------------------
SYBIL_INPUT_BYTES = 30 * 1024


async def sybil_swarm(target: Target) -> None:
    """A fresh key for every ask, each with 30 KiB of inputs, 6 asks to a frame (under
    the frame's 256 KiB), 25 frames a second (the review's swarm was 2,793 keys x
    32 KiB in 20 s)."""
    market = target.scenario.market
    sent = 0
    before = dir_mb(target.victim.data_dir)
    async with attacker_peer(target, "sybil") as peer:
        async for _ in _until_end(target, 1 / 25):
            now = wall_ms()
            asks = [
                Actor(_fresh("sybil"), market).ask(
                    now=now,
                    max_price=1,
                    max_proof_time=1,
                    inputs=os.urandom(SYBIL_INPUT_BYTES),
                )
                for _ in range(6)
            ]
            await _publish(peer, target, asks)
            sent += 6
            target.report["asks_sent"] = sent
    target.report.update(
        {"victim_data_mb_before": before, "victim_data_mb_after": dir_mb(target.victim.data_dir)}
    )
    target.report.update(_victim_stats(target))


# -- unsolicited direct payloads --------------------------------------------------------
DIRECT_PAYLOAD = 64 * 1024 * 1024


async def direct_unsolicited(target: Target) -> None:
    """Four 64 MiB "proofs" at a time, sealed to the victim, for asks that do not
    exist, again and again. Before direct v2 the receiver read and decrypted each in
    full before declining it (memory +264 MB); now it refuses on the signed header."""
    key = devnet_key(_fresh("direct"))
    payload = os.urandom(DIRECT_PAYLOAD)
    reasons: dict[str, int] = {}
    recipient = bytes.fromhex(target.victim.public_key)
    async with attacker_peer(target, "direct", key) as peer:

        async def one() -> None:
            try:
                await send_direct(
                    peer.host, key, recipient, "proof", target.market_id, os.urandom(32), payload
                )
                reasons["accepted"] = reasons.get("accepted", 0) + 1
            except DirectError as exc:
                why = str(exc).split(":")[-1].strip()[:40]
                reasons[why] = reasons.get(why, 0) + 1
            target.report["refusals"] = dict(reasons)

        while wall_ms() < target.end_ms:
            async with trio.open_nursery() as nursery:
                for _ in range(4):
                    nursery.start_soon(one)
            await trio.sleep(0.2)
    target.report["payloads"] = sum(reasons.values())


def _unread(quiet: Figures, attacked: Figures, report: dict[str, Any]) -> tuple[bool, str]:
    ok, why = _served(quiet, attacked, report)
    grew = (attacked.victim_rss_mb or 0) - (quiet.victim_rss_mb or 0)
    ok = ok and report.get("payloads", 0) > 0 and "accepted" not in report.get("refusals", {})
    ok = ok and grew < 32
    return ok, f"{why}; {report.get('payloads')} payloads refused; victim RSS {grew:+.1f} MB"


# -- connection churn -----------------------------------------------------------------
CHURN_CONNECTIONS = 1_000


async def connection_churn(target: Target) -> None:
    """1,000 short, cleanly closed connections to the bootstrap node (relay-1), then a
    new node process that knows only that node joins: how long until it has a peer.
    Before the patch (net/libp2p_patches.py) the bootstrap node held an inbound slot
    per closed connection until it stopped: after 250 it accepted no one."""
    boot = next(n for n in target.others if n.name == "relay-1")
    churned = await churn(boot.addr, CHURN_CONNECTIONS)
    target.report.update(
        {
            "connections_ok": churned.ok,
            "refused": churned.failed,
            "churn_s": round(churned.elapsed_s, 1),
        }
    )
    spec = NodeSpec(name="late-joiner", role="relay")
    joiner = NodeProcess(target.scenario, spec, target.victim.dir.parent.parent)
    try:
        started = trio.current_time()
        await joiner.start([boot.addr])
        peers = 0
        with trio.move_on_after(30):
            while peers == 0:
                stats = await trio.to_thread.run_sync(fetch_stats, joiner.api)
                peers = int((stats or {}).get("peers", 0))
                if not peers:
                    await trio.sleep(0.2)
        target.report["joined_s"] = round(trio.current_time() - started, 2) if peers else None
        target.report["joiner_peers"] = peers
    finally:
        joiner.force_stop()


def _joined(quiet: Figures, attacked: Figures, report: dict[str, Any]) -> tuple[bool, str]:
    ok, why = _served(quiet, attacked, report)
    joined = report.get("joined_s")
    ok = ok and joined is not None and report.get("refused") == 0
    return ok, (
        f"{why}; {report.get('connections_ok')} connections, {report.get('refused')} refused;"
        f" a new node had a peer after {joined} s"
    )


# -- sync amplification -----------------------------------------------------------------
async def sync_amplification(target: Target) -> None:
    """Eight sync streams asking the victim again and again for the bodies of every
    envelope the attacker has seen: a small request, a large answer (the review:
    36 MB in, 4.5 GB out, 125x). Each peer now has an answer budget."""
    sent = received = refused = 0
    async with attacker_peer(target, "amplifier") as peer:
        ids: dict[bytes, None] = {}
        with trio.move_on_after(6):
            while len(ids) < 64:
                ids[message_id((await peer.deliveries.receive()).raw)] = None
        request = {"op": "bodies", "market": target.market_id, "ids": sorted(ids)}
        victim = _peer_id(target.victim.addr)

        async def ask_again_and_again() -> None:
            nonlocal sent, received, refused
            try:
                stream = await peer.host.new_stream(victim, [SYNC_PROTOCOL])
                while wall_ms() < target.end_ms:
                    await write_msg(stream, request)
                    sent += len(frame(request))
                    reply = await read_msg(stream)
                    received += len(frame(reply))
                    if reply.get("error"):
                        refused += 1
                        await trio.sleep(0.05)
                    target.report.update(
                        {"bytes_in": sent, "bytes_out": received, "refused": refused}
                    )
            except Exception:  # the victim cut the stream (WireError, a reset): fine
                return

        async with trio.open_nursery() as nursery:
            for _ in range(8):
                nursery.start_soon(ask_again_and_again)
    if sent:
        target.report["amplification"] = round(received / sent, 1)


def _bounded_answers(quiet: Figures, attacked: Figures, report: dict[str, Any]) -> tuple[bool, str]:
    ok, why = _served(quiet, attacked, report)
    seconds = attacked.seconds
    bound = DEFAULT_ANSWER_BURST_BYTES + DEFAULT_ANSWER_BYTES_PER_S * (seconds + 5)
    out = report.get("bytes_out", 0)
    ok = ok and 0 < out <= bound
    return ok, f"{why}; {report.get('bytes_in')} B in, {out} B out (bound {bound:.0f})"


# -- a prover that commits, wins and never proves -----------------------------------------
async def griefing_prover(target: Target) -> None:
    """Nothing from outside: prover-1 (the cheapest, so it would win every ask) runs
    the localnet agent's "withhold" behaviour: it wins and sits on each slot until its
    deadline. Each such ask must still be proven by the other prover, and once the
    requester has timed it out twice it names it in its asks' `deny` list."""
    await trio.sleep(max(0.0, (target.end_ms - wall_ms()) / 1000))


def _outgrown(quiet: Figures, attacked: Figures, report: dict[str, Any]) -> tuple[bool, str]:
    griefer = report.get("prover-1", {})
    won = griefer.get("asks_won", 0)
    ok = (
        attacked.placed > 0
        and attacked.proven == attacked.placed
        and griefer.get("proven_by_another") == won
        and griefer.get("asks_after_its_last_win", 0) > 0
    )
    why = (
        f"proven {attacked.proven}/{attacked.placed}; the griefer won {won} "
        f"(slots {griefer.get('its_slots')}), all proven by another: "
        f"{griefer.get('proven_by_another') == won}; asks after its last win: "
        f"{griefer.get('asks_after_its_last_win')}"
    )
    return ok, why


# -- replayed honest envelopes ------------------------------------------------------------
REPLAY_FRAME = 8
"""Envelopes per replayed frame (a frame of envelopes the victim holds, as gossip sends)."""


async def _stored_count(peer: Gossip, target: Target) -> int | None:
    """How many envelopes the victim holds in the market: its sync digest's count."""
    with suppress(Exception), trio.fail_after(5):
        stream = await peer.host.new_stream(_peer_id(target.victim.addr), [SYNC_PROTOCOL])
        try:
            await write_msg(stream, {"op": "digest", "market": target.market_id})
            reply = await read_msg(stream)
        finally:
            with suppress(Exception):
                await stream.close()
        if reply.get("ok"):
            return int(reply["count"])
    return None


async def _held_and_admitted(peer: Gossip, target: Target, tries: int) -> tuple[int, int] | None:
    """(envelopes held, envelopes ever admitted) of the victim, read while nothing
    arrives at it: the two agree on a quiet second (the digest is cached for 1 s)."""
    for _ in range(tries):
        before = await trio.to_thread.run_sync(fetch_stats, target.victim.api)
        held = await _stored_count(peer, target)
        await trio.sleep(1.1)
        held_again = await _stored_count(peer, target)
        after = await trio.to_thread.run_sync(fetch_stats, target.victim.api)
        if not before or not after or before.get("admitted") != after.get("admitted"):
            continue
        if held is not None and held == held_again:
            return held, int(after["admitted"])
    return None


async def replay(target: Target) -> None:
    """Every envelope the honest nodes published (as the victim forwarded them to a
    subscriber), sent back to the victim in new frames, the whole collection again
    every 0.5 s until the end; a banned identity is replaced by a fresh one. A second
    peer (the observer) counts what the victim forwards again of what was replayed:
    a re-accepted envelope is forwarded, a duplicate is not. The victim's own
    counters say the same: every accepted envelope is a new stored one, so its
    `admitted` count may not grow by more than its held count (orphans taken in
    when their parent comes are stored without a verdict of their own)."""
    captured: dict[bytes, bytes] = {}  # id -> raw
    replayed_ids: set[bytes] = set()
    echoes = identities = frames = 0
    async with attacker_peer(target, "observer") as observer:
        start = await _held_and_admitted(observer, target, 4)

        async def watch() -> None:
            nonlocal echoes
            seen: set[bytes] = set()
            while True:
                raw = (await observer.deliveries.receive()).raw
                mid = message_id(raw)
                if mid in seen and mid in replayed_ids:
                    echoes += 1
                seen.add(mid)
                captured.setdefault(mid, raw)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch)
            while wall_ms() < target.end_ms:
                try:
                    async with attacker_peer(target, "replay") as peer:
                        identities += 1
                        async for _ in _until_end(target, 0.5):
                            with suppress(trio.WouldBlock):
                                while True:  # its own copies too
                                    raw = peer.deliveries.receive_nowait().raw
                                    captured.setdefault(message_id(raw), raw)
                            # shuffled: a frame of the same bytes again would be
                            # dropped as a duplicate message by the library itself
                            items = list(captured.items())
                            random.shuffle(items)
                            for i in range(0, len(items), REPLAY_FRAME):
                                chunk = items[i : i + REPLAY_FRAME]
                                replayed_ids.update(mid for mid, _ in chunk)
                                await _publish(peer, target, [raw for _, raw in chunk])
                                frames += 1
                            target.report.update(
                                {
                                    "identities": identities,
                                    "frames": frames,
                                    "distinct_replayed": len(replayed_ids),
                                }
                            )
                            if _peer_id(target.victim.addr) not in peer.pubsub.peers:
                                break  # cut off: a new identity
                except RuntimeError:  # could not reach the victim (banned address)
                    await trio.sleep(0.5)
            await trio.sleep(1.0)  # what the victim would forward of the last frames
            nursery.cancel_scope.cancel()
        end = await _held_and_admitted(observer, target, 6)  # the market winds down
    target.report["echoes"] = echoes
    if start is not None and end is not None:
        held, admitted = end[0] - start[0], end[1] - start[1]
        target.report.update({"victim_held_growth": held, "victim_admitted_growth": admitted})
        target.report["re_accepted"] = max(0, admitted - held) + echoes
    target.report.update(_victim_stats(target))


def _not_reaccepted(quiet: Figures, attacked: Figures, report: dict[str, Any]) -> tuple[bool, str]:
    ok, why = _served(quiet, attacked, report)
    again = report.get("re_accepted")
    ok = ok and again == 0 and report.get("distinct_replayed", 0) > 0
    return ok, (
        f"{why}; {report.get('distinct_replayed')} envelopes replayed in "
        f"{report.get('frames')} frames by {report.get('identities')} identities: "
        f"{again} re-accepted, {report.get('victim_peers_banned')} ban(s)"
    )


# -- orphan proofs ------------------------------------------------------------------------
ORPHAN_PROOF_BYTES = 48 * 1024
"""The largest inline proof (MAX_INLINE_PROOF_BYTES)."""


ORPHAN_KEYS = 12
"""Signers of the orphans, each with a live bid first: a signer with a live bid is
not a newcomer, so its messages skip the newcomers' shared budget (128 KiB/s, which
would bound the flood long before the orphan pool) and meet only the per-signer
limit (20/s): 12 keys at 13 proofs a second each."""


async def orphan_flood(target: Target) -> None:
    """Proofs of 48 KiB (the inline maximum) for asks that do not exist, signed by
    12 fresh keys that first placed a bid nobody takes (price 1,000), 4 proofs to a
    frame, 40 frames a second (7.5 MiB/s, under the victim's 50 frames/s per peer):
    the victim holds them as orphans, at most 10,000 and 16 MiB, evicting the oldest
    and deleting the evicted from its log again."""
    market = target.scenario.market
    sent = 0
    before = dir_mb(target.victim.data_dir)
    signers = [Actor(_fresh("orphan"), market) for _ in range(ORPHAN_KEYS)]
    async with attacker_peer(target, "orphans") as peer:
        now = wall_ms()
        bids = [a.bid(now=now, price=1_000, proof_time=9_000, ttl=600_000) for a in signers]
        for i in range(0, len(bids), 6):
            await _publish(peer, target, bids[i : i + 6])
        await trio.sleep(1.0)
        keys = itertools.cycle(signers)
        async for _ in _until_end(target, 0.025):
            now = wall_ms()
            proofs = [
                next(keys).proof(now=now, ask=os.urandom(32), proof=os.urandom(ORPHAN_PROOF_BYTES))
                for _ in range(4)
            ]
            await _publish(peer, target, proofs)
            sent += 4
            target.report["proofs_sent"] = sent
    target.report.update(
        {"victim_data_mb_before": before, "victim_data_mb_after": dir_mb(target.victim.data_dir)}
    )
    stats = _victim_stats(target)
    target.report["victim_orphans_taken"] = stats["victim_reasons"].get("orphan", 0)
    target.report.update(stats)


ORPHAN_BOUND_MB = 4 * MAX_PENDING_ORPHAN_BYTES / 2**20
"""What an orphan flood may add to the victim's memory over the quiet run: the pool's
16 MiB twice (each orphan is held raw and parsed, its proof a second copy), and as
much again for the frames in flight in the library's queues and the allocator's
slack. On disk: the pool's 16 MiB and as much again for SQLite's pages and log."""
ORPHAN_DISK_BOUND_MB = 2 * MAX_PENDING_ORPHAN_BYTES / 2**20
ORPHAN_LATE_GROWTH_MB = 8.0
"""Bounded, not merely small: once the pool is full (well within the first half at
the rate the victim takes them), its RSS may not keep growing in the second half."""


def _orphans_bounded(quiet: Figures, attacked: Figures, report: dict[str, Any]) -> tuple[bool, str]:
    ok, why = _served(quiet, attacked, report)
    rss = (attacked.victim_rss_mb or 0) - (quiet.victim_rss_mb or 0)
    disk = (attacked.victim_data_mb or 0) - (quiet.victim_data_mb or 0)
    late = attacked.victim_rss_late_mb
    ok = ok and report.get("proofs_sent", 0) > 0 and rss <= ORPHAN_BOUND_MB
    ok = ok and disk <= ORPHAN_DISK_BOUND_MB
    ok = ok and late is not None and late <= ORPHAN_LATE_GROWTH_MB
    shown = "unmeasured" if late is None else f"{late:+.1f} MB"
    return ok, (
        f"{why}; {report.get('proofs_sent')} orphan proofs sent, "
        f"{report.get('victim_orphans_taken')} taken; victim RSS {rss:+.1f} MB (bound "
        f"{ORPHAN_BOUND_MB:.0f}; second half {shown}), data dir {disk:+.1f} MB "
        f"(bound {ORPHAN_DISK_BOUND_MB:.0f})"
    )


# -- grief asks ----------------------------------------------------------------------------
GRIEF_LINE = b"difficulty=40\n"


async def grief_asks(target: Target) -> None:
    """An ask a second, signed by one requester key, whose inputs name difficulty 40
    (about 2^40 hashes: days on one core) at the market's usual caps, every other one
    declaring size 1 (a lie every node sees: REJECTed misdeclared_size) and the rest
    their true size (2^(40 - D) units, which no bid takes): no prover may commit, let
    alone grind until its deadline. What the victim does with each is read from what
    it publishes: its commits, attestations and proofs for these asks."""
    market = target.scenario.market
    victim = bytes.fromhex(target.victim.public_key)
    requester = Actor(_fresh("grief"), market)
    mine: set[bytes] = set()
    committed: set[bytes] = set()
    attested: set[bytes] = set()
    proven: set[bytes] = set()
    others_committed: set[bytes] = set()
    async with attacker_peer(target, "grief") as peer:

        async def watch() -> None:
            while True:
                env = parse((await peer.deliveries.receive()).raw)
                m = env.message
                ask = getattr(m, "ask", None)
                if ask not in mine:
                    continue
                if isinstance(m, Commit):
                    (committed if env.signer == victim else others_committed).add(ask)
                elif isinstance(m, InvalidInputs):
                    attested.add(ask)
                elif isinstance(m, Proof):
                    proven.add(ask)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch)
            async for _ in _until_end(target, 1.0):
                honest_size = len(mine) % 2 == 1
                raw = requester.ask(
                    now=wall_ms(),
                    max_price=50,
                    max_proof_time=8_000,
                    ttl=20_000,
                    size=pow_size(market.difficulty, 40) if honest_size else 1,
                    inputs=GRIEF_LINE + os.urandom(16).hex().encode(),
                )
                mine.add(message_id(raw))
                await _publish(peer, target, [raw])
                target.report["grief_asks"] = len(mine)
            await trio.sleep(4.0)  # the last ask's commit window and attestation
            nursery.cancel_scope.cancel()
    target.report.update(
        {
            "victim_committed": len(committed),
            "others_committed": len(others_committed),
            "attested": len(attested),
            "grief_proven": len(proven),
        }
    )


def _no_grinding(quiet: Figures, attacked: Figures, report: dict[str, Any]) -> tuple[bool, str]:
    ok, why = _served(quiet, attacked, report)
    ok = ok and report.get("grief_asks", 0) > 0 and report.get("grief_proven") == 0
    ok = ok and report.get("victim_committed") == 0
    return ok, (
        f"{why}; {report.get('grief_asks')} grief asks: the victim committed to "
        f"{report.get('victim_committed')}, attested {report.get('attested')} at once, "
        f"proven {report.get('grief_proven')}; victim CPU {quiet.victim_cpu} -> "
        f"{attacked.victim_cpu} %"
    )


# -- every sync session taken -----------------------------------------------------------------
SYNC_IDENTITIES = 10
"""More identities than it takes to hold every session (16 / 2 per peer = 8)."""
SYNC_KEEPALIVE_S = 8.0
"""Below the victim's 10 s idle timeout."""


async def sync_sessions(target: Target) -> None:
    """Ten identities each open as many sync sessions to the victim as it grants and
    keep them alive with a digest request every 8 s, reopening any that ends. Every
    3 s a separate peer (a node that has just joined) syncs the market from the
    victim: does it get served, and how fast?"""
    victim = _peer_id(target.victim.addr)
    held = 0
    peak = 0
    refused: dict[str, int] = {}
    honest: list[float | None] = []
    honest_errors: dict[str, int] = {}

    async def hold_one(peer: IHost) -> None:
        nonlocal held, peak
        while wall_ms() < target.end_ms:
            counted = False
            try:
                stream = await peer.new_stream(victim, [SYNC_PROTOCOL])
                while wall_ms() < target.end_ms:
                    await write_msg(stream, {"op": "digest", "market": target.market_id})
                    reply = await read_msg(stream)
                    if not reply.get("ok"):
                        why = str(reply.get("error"))
                        refused[why] = refused.get(why, 0) + 1
                        break
                    if not counted:
                        counted = True
                        held += 1
                        peak = max(peak, held)
                    target.report.update({"sessions_peak": peak, "refusals": dict(refused)})
                    await trio.sleep(SYNC_KEEPALIVE_S)
            except Exception:  # the victim ended it: open another
                pass
            finally:
                if counted:
                    held -= 1
            await trio.sleep(0.5)

    async def honest_syncs() -> None:
        async with bare_peer(target, "honest-sync") as peer:
            async for _ in _until_end(target, 3.0):
                got: set[bytes] = set()
                report = await sync_market(
                    peer, [victim], target.market_id, got.__contains__, _adder(got)
                )
                ok = bool(report.peers) and report.peers[0].ok
                honest.append(round(report.elapsed_s * 1000) if ok else None)
                if not ok:
                    why = report.peers[0].error[:40] if report.peers else "no peer"
                    honest_errors[why] = honest_errors.get(why, 0) + 1
                target.report["honest_syncs"] = {
                    "tried": len(honest),
                    "served": sum(1 for h in honest if h is not None),
                    "errors": dict(honest_errors),
                    "max_ms": max((h for h in honest if h is not None), default=None),
                }

    async with trio.open_nursery() as outer:
        async with AsyncExitStack() as stack:
            peers = [
                await stack.enter_async_context(bare_peer(target, f"sessions-{i}"))
                for i in range(SYNC_IDENTITIES)
            ]
            async with trio.open_nursery() as nursery:
                for peer in peers:
                    for _ in range(3):  # one more than the per-peer cap
                        nursery.start_soon(hold_one, peer)
                await trio.sleep(2.0)  # the sessions are taken first
                outer.start_soon(honest_syncs)
        outer.cancel_scope.cancel()


def _adder(got: set[bytes]) -> Any:
    return lambda raw: got.add(message_id(raw))


def _honest_sync_served(
    quiet: Figures, attacked: Figures, report: dict[str, Any]
) -> tuple[bool, str]:
    syncs = report.get("honest_syncs", {})
    tried, served = syncs.get("tried", 0), syncs.get("served", 0)
    ok = tried > 0 and served == tried
    return ok, (
        f"the attacker held {report.get('sessions_peak')} sessions at once; honest "
        f"syncs served {served}/{tried} (slowest {syncs.get('max_ms')} ms, "
        f"errors {syncs.get('errors')})"
    )


# -- peer exchange -----------------------------------------------------------------------
PEX_IDENTITIES = 4
"""Attacker peers connected to the victim. A node asks one random peer of its own
every `sync_every_s` (5 s here), and only while it has fewer than 8 peers: with the
3 honest ones, 4 attackers make 7, and 4 of 7 asks reach them."""
PEX_ENTRIES = 40_000
OUT_OF_SCOPE = (
    "/ip4/10.255.{a}.{b}/tcp/4001",
    "/ip4/172.31.{a}.{b}/tcp/4001",
    "/ip4/100.64.{a}.{b}/tcp/4001",
    "/ip4/198.18.{a}.{b}/tcp/4001",
    "/ip4/169.254.{a}.{b}/tcp/4001",
    "/ip4/0.0.0.0/tcp/4001",
    "/ip4/224.0.{a}.{b}/tcp/4001",
    "/ip6/::ffff:10.0.{a}.{b}/tcp/4001",
    "/ip6/fd00::{a}:{b}/tcp/4001",
    "/dns4/localhost/tcp/4001",
)
"""Addresses a node that listens on 127.0.0.1 and bootstraps from it must never dial
(private, shared, benchmark, link-local, unspecified, multicast, a mapped private
IPv6 address, a DNS name that resolves to loopback); none is globally reachable."""


def _bogus_entry(i: int, last: str | None = None) -> dict[str, Any]:
    from libp2p.peer.id import ID

    a, b = (i // 250) % 250 + 1, i % 250 + 1
    addrs = [OUT_OF_SCOPE[(i + k) % len(OUT_OF_SCOPE)].format(a=a, b=b) for k in range(4)]
    if last is not None:
        addrs[-1] = last
    return {"id": ID(b"\x00\x24\x08\x01\x12\x20" + os.urandom(32)).to_base58(), "addrs": addrs}


def _frame_unchecked(obj: Any) -> bytes:
    from p2p_market.node.wire import encode

    body = encode(obj)
    return len(body).to_bytes(4, "big") + body


def _socket_inodes(pid: int) -> set[str]:
    out = set()
    with suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with suppress(OSError):
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
                if link.startswith("socket:["):
                    out.add(link[8:-1])
    return out


def _hex_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    raw = bytes.fromhex(text)
    # /proc/net/tcp{,6}: each 32-bit word in host (little-endian) order
    swapped = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    return ipaddress.ip_address(swapped)


def remote_ips(pid: int) -> set[str]:
    """The remote addresses of the TCP sockets process `pid` holds (connected or
    connecting), but loopback ones: whom it talks to beyond its machine."""
    inodes = _socket_inodes(pid)
    found = set()
    for table in ("tcp", "tcp6"):
        with suppress(OSError):
            lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
            for line in lines:
                cols = line.split()
                if len(cols) < 10 or cols[9] not in inodes:
                    continue
                ip = _hex_ip(cols[2].split(":")[0])
                if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
                    ip = ip.ipv4_mapped
                if not ip.is_loopback and not ip.is_unspecified:
                    found.add(str(ip))
    return found


async def peer_exchange(target: Target) -> None:
    """Four peers answer the victim's peer exchange: every other answer is 40,000
    entries (about 7 MB, far above the 64 KiB a node reads), the others as many
    entries as fit 60 KiB, the 32 a node looks at first naming addresses outside its
    networks and, last of four, a loopback address where the attacker counts the
    victim's dials. The victim's own sockets are watched (/proc) for any address
    beyond loopback: an out-of-scope dial."""
    asked = huge = compact = 0
    huge_taken: list[int] = []
    entries_sent = 0
    in_scope_dials = 0
    outside: set[str] = set()
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    lure = f"/ip4/127.0.0.1/tcp/{port}"
    big = _frame_unchecked({"peers": [_bogus_entry(i) for i in range(PEX_ENTRIES)]})

    def small_answer() -> bytes:
        entries = [_bogus_entry(i, lure if i % 4 == 3 else None) for i in range(32)]
        while True:
            more = _bogus_entry(len(entries))
            if len(_frame_unchecked({"peers": [*entries, more]})) > 60 * 1024:
                return _frame_unchecked({"peers": entries})
            entries.append(more)

    small = small_answer()
    small_entries = len(decode(small[4:])["peers"])

    async def serve(stream: Any) -> None:
        nonlocal asked, huge, compact, entries_sent
        asked += 1
        taken = 0
        try:
            await read_msg(stream, timeout_s=5)
            if asked % 2:
                huge += 1
                entries_sent += PEX_ENTRIES
                taken = 0
                with trio.move_on_after(10):
                    for i in range(0, len(big), 16 * 1024):
                        await stream.write(big[i : i + 16 * 1024])
                        taken = i + 16 * 1024
                huge_taken.append(min(taken, len(big)))
            else:
                await stream.write(small)
                compact += 1
                entries_sent += small_entries
        except Exception:
            if asked % 2:
                huge_taken.append(taken)
        finally:
            with suppress(Exception):
                await stream.close()
        target.report.update(
            {
                "asked": asked,
                "huge_answers": huge,
                "compact_answers": compact,
                "entries_sent": entries_sent,
                "huge_bytes_taken_max": max(huge_taken, default=0),
            }
        )

    async def count_dials(conn: trio.SocketStream) -> None:
        nonlocal in_scope_dials
        in_scope_dials += 1
        target.report["in_scope_dials"] = in_scope_dials
        await conn.aclose()

    async def watch_sockets() -> None:
        pid = target.victim.pid
        while pid is not None:
            outside.update(await trio.to_thread.run_sync(remote_ips, pid))
            target.report["out_of_scope_dials"] = len(outside)
            await trio.sleep(0.05)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.serve_listeners, count_dials, listeners)
        nursery.start_soon(watch_sockets)
        async with AsyncExitStack() as stack:
            for i in range(PEX_IDENTITIES):
                peer = await stack.enter_async_context(bare_peer(target, f"pex-{i}"))
                peer.set_stream_handler(PEX_PROTOCOL, serve)
            await trio.sleep(max(0.0, (target.end_ms - wall_ms()) / 1000))
        nursery.cancel_scope.cancel()
    target.report.update(
        {
            "huge_frame_bytes": len(big),
            "in_scope_dials": in_scope_dials,
            "out_of_scope_dials": len(outside),
            "outside_addresses": sorted(outside)[:8],
            "entries_read_at_most": compact * 32,
        }
    )


PEX_TAKEN_BOUND = 1024 * 1024
"""Of a 7 MB answer, what the attacker may get written before the victim's reset
stops it: what is in flight while the victim reads the length prefix and resets
(socket buffers and the stream's receive window; 49 KB to 688 KB measured). A
close instead of the reset let all 7 MB through, held by the victim's muxer."""


def _in_scope(quiet: Figures, attacked: Figures, report: dict[str, Any]) -> tuple[bool, str]:
    outside = report.get("out_of_scope_dials")
    taken = report.get("huge_bytes_taken_max", 0)
    ok = report.get("asked", 0) > 0 and outside == 0 and taken <= PEX_TAKEN_BOUND
    return ok, (
        f"asked {report.get('asked')} times ({report.get('huge_answers')} answers of "
        f"{PEX_ENTRIES:,} entries, {taken} B of {report.get('huge_frame_bytes')} taken; "
        f"{report.get('compact_answers')} of 60 KiB); {report.get('in_scope_dials', 0)} "
        f"loopback dials, {outside} out of scope"
    )


# -- trickled direct transfers -------------------------------------------------------------
TRICKLE_BYTES_PER_S = 44_000
TRICKLE_PEERS = 3
"""Requesters trickling, two transfers each (the per-peer cap): more than the 4 slots."""
TRICKLE_SIZE = 4 * 1024 * 1024
DIRECT_ASK_PRICE = 5
"""Only prover-1 (price 4) bids under it: the victim commits to these asks."""


async def _confidential_ask(
    peer: Gossip, target: Target, author: Actor, secret: bytes, victim: bytes, watch: Any
) -> bytes | None:
    """Place a confidential ask only the victim matches; its id once the victim has
    committed to it (then it takes the inputs from `author`), None if it does not."""
    raw = author.ask(
        now=wall_ms(),
        max_price=DIRECT_ASK_PRICE,
        max_proof_time=8_000,
        ttl=60_000,
        inputs=secret,
        confidential=True,
    )
    ask = message_id(raw)
    await _publish(peer, target, [raw])
    with trio.move_on_after(8):
        while ask not in watch.committed:
            await trio.sleep(0.05)
        return ask
    return None


class _Commits:
    """Collects the asks the victim committed to, from a peer's deliveries."""

    def __init__(self, victim: bytes) -> None:
        self.victim = victim
        self.committed: set[bytes] = set()

    async def run(self, peer: Gossip) -> None:
        while True:
            env = parse((await peer.deliveries.receive()).raw)
            if isinstance(env.message, Commit) and env.signer == self.victim:
                self.committed.add(env.message.ask)


async def _trickle(
    peer: Gossip, key: SigningKey, target: Target, ask: bytes, out: dict[str, Any]
) -> None:
    """One transfer of the inputs of `ask`, sent at TRICKLE_BYTES_PER_S after the
    go-ahead: how long the victim kept it open, and why it ended."""
    recipient = bytes.fromhex(target.victim.public_key)
    header, signature, chunks = begin_seal(
        key, recipient, "inputs", target.market_id, ask, os.urandom(TRICKLE_SIZE)
    )
    stream = await peer.host.new_stream(_peer_id(target.victim.addr), [DIRECT_PROTOCOL])
    try:
        await write_msg(stream, {"header": header, "sig": signature})
        reply = await read_msg(stream, timeout_s=10)
        if not reply.get("ok"):
            why = str(reply.get("error")).split(":")[0]
            out["refused"][why] = out["refused"].get(why, 0) + 1
            return
        body = next(chunks)
        started = trio.current_time()
        ended = "still open at the end"
        out["open"] += 1
        out["peak_open"] = max(out["peak_open"], out["open"])

        async def send() -> None:
            step = TRICKLE_BYTES_PER_S // 10
            for i in range(0, len(body), step):
                await stream.write(body[i : i + step])
                await trio.sleep(0.1)

        try:
            async with trio.open_nursery() as nursery:

                async def sender() -> None:
                    with suppress(Exception):
                        await send()

                nursery.start_soon(sender)
                try:
                    verdict = await read_msg(stream, timeout_s=(target.end_ms - wall_ms()) / 1000)
                    ended = str(verdict.get("error", verdict)).split(":")[0]
                except Exception as exc:
                    ended = type(exc).__name__
                nursery.cancel_scope.cancel()
        finally:
            out["open"] -= 1
        held = trio.current_time() - started
        out["trickles"] += 1
        out["held_max_s"] = round(max(out["held_max_s"], held), 2)
        out["ended"][ended] = out["ended"].get(ended, 0) + 1
    finally:
        with suppress(Exception):
            await stream.reset()


async def direct_trickle(target: Target) -> None:
    """Three requesters each place a confidential ask that only the victim matches;
    once it has committed (and so expects their inputs), each keeps two transfers of
    4 MiB of inputs going at 44 KB/s, below the 64 KiB/s minimum, opening another as
    soon as one ends. Meanwhile an honest requester (another in-process peer) places
    a confidential ask every 5 s and delivers its inputs at full speed when the
    victim commits, retrying while the victim is busy, as the requester role does."""
    market = target.scenario.market
    victim = bytes.fromhex(target.victim.public_key)
    out: dict[str, Any] = {
        "open": 0,
        "peak_open": 0,
        "trickles": 0,
        "held_max_s": 0.0,
        "ended": {},
        "refused": {},
    }
    honest: list[float | None] = []
    busy_retries = 0

    async def trickler(i: int) -> None:
        name = _fresh(f"trickle-{i}")
        author = Actor(name, market)
        async with attacker_peer(target, "trickle", author.key) as peer:
            commits = _Commits(victim)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(commits.run, peer)
                ask = None
                while ask is None and wall_ms() < target.end_ms:
                    ask = await _confidential_ask(
                        peer, target, author, os.urandom(64), victim, commits
                    )
                if ask is not None:
                    target.report["trickle_asks_committed"] = (
                        target.report.get("trickle_asks_committed", 0) + 1
                    )

                async def again_and_again() -> None:
                    while ask is not None and wall_ms() < target.end_ms:
                        with suppress(Exception):
                            await _trickle(peer, author.key, target, ask, out)
                        target.report["trickle"] = out
                        await trio.sleep(0.2)

                async with trio.open_nursery() as inner:
                    for _ in range(2):
                        inner.start_soon(again_and_again)
                nursery.cancel_scope.cancel()

    async def honest_requester() -> None:
        nonlocal busy_retries
        author = Actor(_fresh("honest"), market)
        async with attacker_peer(target, "honest", author.key) as peer:
            commits = _Commits(victim)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(commits.run, peer)
                await trio.sleep(6.0)  # the trickles first
                async for _ in _until_end(target, 5.0):
                    secret = os.urandom(32).hex().encode()
                    ask = await _confidential_ask(peer, target, author, secret, victim, commits)
                    if ask is None:
                        continue
                    started = trio.current_time()
                    delivered: float | None = None
                    with trio.move_on_after(15):
                        while delivered is None:
                            try:
                                await send_direct(
                                    peer.host,
                                    author.key,
                                    victim,
                                    "inputs",
                                    target.market_id,
                                    ask,
                                    secret,
                                    timeout_s=10,
                                )
                                delivered = round(trio.current_time() - started, 2)
                            except DirectError as exc:
                                if not exc.busy:
                                    break
                                busy_retries += 1
                                await trio.sleep(0.5)
                    honest.append(delivered)
                    target.report["honest_deliveries"] = {
                        "tried": len(honest),
                        "served": sum(1 for h in honest if h is not None),
                        "slowest_s": max((h for h in honest if h is not None), default=None),
                        "busy_retries": busy_retries,
                    }
                nursery.cancel_scope.cancel()

    async with trio.open_nursery() as nursery:
        for i in range(TRICKLE_PEERS):
            nursery.start_soon(trickler, i)
        nursery.start_soon(honest_requester)
    target.report["trickle"] = out


TRICKLE_CUT_S = DEFAULT_GRACE_S / (1 - TRICKLE_BYTES_PER_S / DEFAULT_MIN_RATE)
"""When the minimum-rate rule cuts a body sent at TRICKLE_BYTES_PER_S: the first
moment its average, less the grace, falls below the minimum (about 3 s)."""


def _trickles_cut(quiet: Figures, attacked: Figures, report: dict[str, Any]) -> tuple[bool, str]:
    trickle = report.get("trickle", {})
    honest = report.get("honest_deliveries", {})
    held = trickle.get("held_max_s", 0.0)
    ok = (
        trickle.get("trickles", 0) > 0
        and held <= TRICKLE_CUT_S + 1.0
        and honest.get("tried", 0) > 0
        and honest.get("served") == honest.get("tried")
    )
    return ok, (
        f"{trickle.get('trickles')} trickles (at most {trickle.get('peak_open')} open at "
        f"once), held at most {held} s (the rule cuts at {TRICKLE_CUT_S:.1f} s), ended "
        f"{trickle.get('ended')}; honest deliveries {honest.get('served')}/"
        f"{honest.get('tried')}, slowest {honest.get('slowest_s')} s, "
        f"{honest.get('busy_retries')} busy retries"
    )


ATTACKS: dict[str, AttackSpec] = {
    "phantom-bids": AttackSpec(
        phantom_bids, "honest asks proven as in the quiet run, p99 <= 2x quiet", _served
    ),
    "signer-drain": AttackSpec(
        signer_drain, "honest asks proven as in the quiet run, p99 <= 2x quiet", _served
    ),
    "stale-flood": AttackSpec(stale_flood, "honest asks served; the flooder banned", _banned),
    "invalid-flood": AttackSpec(
        invalid_flood, "honest asks served; each identity banned after 5 frames", _served
    ),
    "one-key-spam": AttackSpec(one_key_spam, "honest p99 <= 2x quiet", _served),
    "equivocation": AttackSpec(
        equivocation_flood, "<= 1 version per bid on every node; honest asks served", _one_version
    ),
    "cross-site-post": AttackSpec(cross_site_post, "refused: 403 / 401 / 421, no bid", _refused),
    "sybil-swarm": AttackSpec(
        sybil_swarm, "honest p99 <= 2x quiet; the victim stores a bounded share", _served
    ),
    "sync-amplification": AttackSpec(
        sync_amplification,
        "answers within the per-peer budget; honest asks served",
        _bounded_answers,
    ),
    "direct-unsolicited": AttackSpec(
        direct_unsolicited, "refused on the header; victim memory flat", _unread
    ),
    "connection-churn": AttackSpec(
        connection_churn, "0 refused; a new node joins the bootstrap node after", _joined
    ),
    "replay": AttackSpec(
        replay, "0 replayed envelopes re-accepted; honest p99 <= 2x quiet", _not_reaccepted
    ),
    "orphan-flood": AttackSpec(
        orphan_flood,
        "victim memory within 64 MB and disk 32 MB of quiet, flat once full; p99 <= 2x",
        _orphans_bounded,
    ),
    "grief-asks": AttackSpec(
        grief_asks, "no grief ask proven (refused at once); honest p99 <= 2x quiet", _no_grinding
    ),
    "sync-sessions": AttackSpec(
        sync_sessions,
        "an honest peer's sync served while every session is held",
        _honest_sync_served,
    ),
    "direct-trickle": AttackSpec(
        direct_trickle,
        "trickles cut by the minimum-rate rule; honest deliveries served",
        _trickles_cut,
    ),
    "peer-exchange": AttackSpec(
        peer_exchange, "0 out-of-scope dials; oversized answers not read", _in_scope
    ),
    "griefing-prover": AttackSpec(
        griefing_prover,
        "every ask it won proven by another; it stops winning after two timeouts",
        _outgrown,
        behaviours=(("prover-1", "withhold"),),
    ),
}
