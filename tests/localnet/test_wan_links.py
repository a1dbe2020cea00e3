"""The WAN switch's decisions without namespaces: delay, jitter, loss, cuts (links.py),
and the switch's forwarding (switch.py) over datagram socket pairs, which keep frame
boundaries as a TAP device does."""

from __future__ import annotations

import socket
import statistics
from collections.abc import Iterator

import pytest

from p2p_market.localnet.wan.links import LinkError, Links, LinkShape
from p2p_market.localnet.wan.switch import Switch


def test_a_round_trip_is_two_one_way_delays() -> None:
    shape = LinkShape.from_rtt(100, jitter_ms=2, loss=0.01)
    assert shape == LinkShape(delay_us=50_000, jitter_us=2_000, loss_ppm=10_000)
    links = Links(LinkShape.from_rtt(100), seed=1)
    assert links.route(0, 1, 1_000) == 51_000
    assert links.route(1, 0, 51_000) == 101_000


def test_jitter_stays_within_bounds_and_a_link_stays_in_order() -> None:
    links = Links(LinkShape(delay_us=10_000, jitter_us=5_000), seed=2)
    times = [links.route(0, 1, t * 100) for t in range(2_000)]
    assert all(t is not None for t in times)
    arrivals = [t for t in times if t is not None]
    assert arrivals == sorted(arrivals)  # FIFO: no frame overtakes an earlier one
    delays = [a - t * 100 for t, a in enumerate(arrivals)]
    assert min(delays) >= 5_000 and max(delays) <= 15_000 + 100
    # frames further apart than the jitter: the whole ±5 ms spread, uniform
    sparse = Links(LinkShape(delay_us=10_000, jitter_us=5_000), seed=2)
    spread = [(sparse.route(0, 1, t * 20_000) or 0) - t * 20_000 for t in range(2_000)]
    assert min(spread) >= 5_000 and max(spread) <= 15_000
    assert 2_500 < statistics.pstdev(spread) < 3_300  # 5000 / sqrt(3) = 2887


def test_loss_is_near_its_rate_and_the_same_for_the_same_seed() -> None:
    def decisions(seed: int) -> list[bool]:
        links = Links(LinkShape(loss_ppm=30_000), seed=seed)
        return [links.route(0, 1, t) is None for t in range(100_000)]

    first = decisions(7)
    assert 2_600 <= sum(first) <= 3_400  # 3 % of 100 000, well within 4 sigma
    assert decisions(7) == first
    assert decisions(8) != first


def test_a_cut_drops_both_ways_until_healed_and_the_host_link_is_never_cut() -> None:
    links = Links(LinkShape(delay_us=1_000, loss_ppm=500_000), seed=3, host=9)
    links.cut.add(2)
    assert links.route(2, 1, 0) is None and links.route(1, 2, 0) is None
    assert links.dropped_cut == 2
    # the host port: no delay, no loss, no cut, whatever the shape
    assert all(links.route(9, 2, t) == t and links.route(2, 9, t) == t for t in range(1_000))
    links.cut.discard(2)
    assert any(links.route(2, 1, t) is not None for t in range(100))


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"delay_us": -1}, "delay"),
        ({"jitter_us": 10**9}, "jitter"),
        ({"loss_ppm": 600_000}, "loss"),
    ],
)
def test_a_shape_out_of_range_is_one_named_error(kwargs: dict[str, int], words: str) -> None:
    with pytest.raises(LinkError, match=words):
        LinkShape(**kwargs)


def frame(dst: bytes, src: bytes, body: bytes = b"x" * 50) -> bytes:
    return dst + src + b"\x08\x00" + body


MAC_A, MAC_B, MAC_C = (
    b"\x02\x00\x00\x00\x00\x0a",
    b"\x02\x00\x00\x00\x00\x0b",
    b"\x02" + bytes(4) + b"\x0c",
)
BROADCAST = b"\xff" * 6


@pytest.fixture
def ports() -> Iterator[list[tuple[socket.socket, socket.socket]]]:
    """Three ports: (the switch's end, the node's end) of datagram socket pairs."""
    pairs = [socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM) for _ in range(3)]
    for ours, _ in pairs:
        ours.setblocking(False)
    yield pairs
    for a, b in pairs:
        a.close()
        b.close()


def pending(sock: socket.socket) -> list[bytes]:
    sock.setblocking(False)
    out = []
    while True:
        try:
            out.append(sock.recv(65_536))
        except BlockingIOError:
            return out


def test_the_switch_floods_unknown_destinations_then_learns(
    ports: list[tuple[socket.socket, socket.socket]],
) -> None:
    switch = Switch(["a", "b", "c"], [p[0].fileno() for p in ports], Links(LinkShape(), 0))
    switch.receive(0, frame(BROADCAST, MAC_A), now=0)  # ARP-like: everyone but the sender
    assert [len(pending(p[1])) for p in ports] == [0, 1, 1]
    switch.receive(1, frame(MAC_A, MAC_B), now=0)  # A is known now: to A only
    assert [len(pending(p[1])) for p in ports] == [1, 0, 0]
    switch.receive(0, frame(MAC_B, MAC_A), now=0)
    assert [len(pending(p[1])) for p in ports] == [0, 1, 0]
    switch.receive(0, frame(MAC_C, MAC_A), now=0)  # C never spoke: flooded
    assert [len(pending(p[1])) for p in ports] == [0, 1, 1]


def test_the_switch_holds_a_frame_for_its_delay_and_obeys_cuts(
    ports: list[tuple[socket.socket, socket.socket]],
) -> None:
    switch = Switch(["a", "b", "c"], [p[0].fileno() for p in ports], Links(LinkShape(50_000), 0))
    switch.receive(0, frame(BROADCAST, MAC_A), now=1_000)
    assert switch.due(50_999) == 51_000 and not pending(ports[1][1])
    assert switch.due(51_000) is None
    assert len(pending(ports[1][1])) == 1 and len(pending(ports[2][1])) == 1
    answer = switch.command('{"cmd": "cut", "ports": ["c"]}')
    assert answer["ok"] and answer["cut"] == ["c"]
    switch.receive(0, frame(BROADCAST, MAC_A), now=60_000)
    switch.due(200_000)
    assert len(pending(ports[1][1])) == 1 and not pending(ports[2][1])
    assert switch.command('{"cmd": "heal", "ports": ["c"]}')["cut"] == []
    assert not switch.command('{"cmd": "cut", "ports": ["nobody"]}')["ok"]
    assert not switch.command("not json")["ok"]


def test_a_frame_the_destination_cannot_take_is_counted_as_lost() -> None:
    """A TAP device whose queue is full answers EAGAIN: the frame is lost, as on a
    congested link, and counted; the switch goes on."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    ours.setblocking(False)
    try:
        while True:
            ours.send(b"x" * 1_000)
    except BlockingIOError:
        pass
    switch = Switch(["a", "b"], [ours.fileno(), ours.fileno()], Links(LinkShape(), 0))
    switch.send(1, b"x" * 60)
    assert switch.dropped_full == 1 and switch.frames_out == 0
    ours.close()
    theirs.close()
