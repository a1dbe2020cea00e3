"""The attacks of `bench attacks` (attacks.py), each an in-process py-libp2p peer (or
an HTTP client) doing what the security review did to real node processes.

Each attack runs until `target.end_ms`, fills `target.report` with its own figures,
and comes with the target it must meet (`judge`), stated against the quiet run."""

from __future__ import annotations

import http.client
import itertools
import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

import trio

from p2p_market.bench.attacks import AttackSpec, Figures, Target
from p2p_market.bench.churn import churn
from p2p_market.core.crypto import SigningKey, devnet_key
from p2p_market.core.envelope import message_id
from p2p_market.localnet.collect import fetch_stats
from p2p_market.localnet.launcher import NodeProcess
from p2p_market.localnet.rundata import wall_ms
from p2p_market.localnet.scenario import NodeSpec
from p2p_market.markets.devnet import Actor
from p2p_market.net.frame import encode_frame
from p2p_market.net.gossip import Gossip, topic_for
from p2p_market.net.host import connect_all, make_host
from p2p_market.node.direct import DirectError, send_direct
from p2p_market.node.sync import DEFAULT_ANSWER_BURST_BYTES, DEFAULT_ANSWER_BYTES_PER_S
from p2p_market.node.sync import PROTOCOL as SYNC_PROTOCOL
from p2p_market.node.wire import frame, read_msg, write_msg


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


def _dir_mb(path: Path) -> float:
    total = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return round(total / 2**20, 1)


async def sybil_swarm(target: Target) -> None:
    """A fresh key for every ask, each with 30 KiB of inputs, 6 asks to a frame (under
    the frame's 256 KiB), 25 frames a second (the review's swarm was 2,793 keys x
    32 KiB in 20 s)."""
    market = target.scenario.market
    sent = 0
    before = _dir_mb(target.victim.data_dir)
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
        {"victim_data_mb_before": before, "victim_data_mb_after": _dir_mb(target.victim.data_dir)}
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
    "griefing-prover": AttackSpec(
        griefing_prover,
        "every ask it won proven by another; it stops winning after two timeouts",
        _outgrown,
        behaviours=(("prover-1", "withhold"),),
    ),
}
