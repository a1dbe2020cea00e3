"""The switch process: one TAP device per port, Ethernet frames forwarded between
them by learned MAC address (broadcast and unknown destinations to every other
port), each through `Links` (delay, jitter, loss, cuts). One thread, one selector:
a frame costs a read, a dict lookup, a heap push and a write.

    python -m p2p_market.localnet.wan.switch --port NAME [--port NAME ...]
        [--host NAME] [--delay-us N] [--jitter-us N] [--loss-ppm N] [--seed N]

It creates the TAP devices (non-persistent: they vanish when this process ends,
however it ends), prints one JSON line `{"event": "ready", ...}` and serves. The
launcher moves each device into its node's namespace and addresses it; moving a
TAP device keeps it bound to this process's file descriptor. Commands, one JSON
object a line on stdin, each answered by one JSON line on stdout:

    {"cmd": "cut", "ports": ["NAME", ...]}    drop every frame to or from them
    {"cmd": "heal", "ports": ["NAME", ...]}
    {"cmd": "stats"}

End of stdin ends the switch (so does SIGTERM, or the launcher's death:
PR_SET_PDEATHSIG), and with it every TAP device.
"""

from __future__ import annotations

import argparse
import errno
import fcntl
import heapq
import json
import os
import selectors
import struct
import sys
import time
from typing import Any, Final

from p2p_market.localnet.wan.links import LinkError, Links, LinkShape

TUNSETIFF: Final = 0x400454CA
IFF_TAP: Final = 0x0002
IFF_NO_PI: Final = 0x1000
FRAME_MAX: Final = 65_536
READ_BATCH: Final = 64
"""Frames read from one port before looking at the others (fairness under a flood)."""


class SwitchError(RuntimeError):
    """The switch cannot start; one line."""


def open_tap(name: str) -> int:
    """A new TAP device `name`, non-blocking, frames without a packet-info header."""
    try:
        fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    except OSError as exc:
        raise SwitchError(f"cannot open /dev/net/tun: {exc.strerror}") from None
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TAP | IFF_NO_PI))
    except OSError as exc:
        os.close(fd)
        raise SwitchError(f"cannot create TAP device {name}: {exc.strerror}") from None
    return fd


def now_us() -> int:
    return time.monotonic_ns() // 1000


class Switch:
    def __init__(self, names: list[str], fds: list[int], links: Links) -> None:
        self.names = names
        self.fds = fds
        self.index = {n: i for i, n in enumerate(names)}
        self.links = links
        self.macs: dict[bytes, int] = {}
        self.queue: list[tuple[int, int, int, bytes]] = []  # (at_us, seq, port, frame)
        self.seq = 0
        self.frames_in = 0
        self.frames_out = 0
        self.dropped_full = 0

    def receive(self, src: int, frame: bytes, now: int) -> None:
        self.frames_in += 1
        if len(frame) < 14:
            return
        self.macs[frame[6:12]] = src
        dst_mac = frame[0:6]
        known = None if dst_mac[0] & 1 else self.macs.get(dst_mac)
        targets = [known] if known is not None else range(len(self.fds))
        for dst in targets:
            if dst == src:
                continue
            at = self.links.route(src, dst, now)
            if at is None:
                continue
            if at <= now:
                self.send(dst, frame)
            else:
                self.seq += 1
                heapq.heappush(self.queue, (at, self.seq, dst, frame))

    def send(self, dst: int, frame: bytes) -> None:
        try:
            os.write(self.fds[dst], frame)
            self.frames_out += 1
        except OSError as exc:  # the device's queue is full, or it is down: a lost frame
            if exc.errno not in (errno.EAGAIN, errno.EIO, errno.ENOBUFS, errno.EINVAL):
                raise
            self.dropped_full += 1

    def due(self, now: int) -> int | None:
        """Send what is due; the time of the next frame, if any."""
        q = self.queue
        while q and q[0][0] <= now:
            _, _, dst, frame = heapq.heappop(q)
            self.send(dst, frame)
        return q[0][0] if q else None

    def command(self, line: str) -> dict[str, Any]:
        try:
            cmd = json.loads(line)
            kind = cmd["cmd"]
            ports = [self.index[p] for p in cmd.get("ports", [])]
        except (ValueError, KeyError, TypeError) as exc:
            return {"ok": False, "error": f"bad command: {exc}"}
        if kind == "cut":
            self.links.cut.update(ports)
        elif kind == "heal":
            self.links.cut.difference_update(ports)
        elif kind != "stats":
            return {"ok": False, "error": f"unknown command {kind!r}"}
        return {"ok": True, **self.stats()}

    def stats(self) -> dict[str, Any]:
        return {
            "frames_in": self.frames_in,
            "frames_out": self.frames_out,
            "dropped_loss": self.links.dropped_loss,
            "dropped_cut": self.links.dropped_cut,
            "dropped_full": self.dropped_full,
            "queued": len(self.queue),
            "cut": sorted(self.names[i] for i in self.links.cut),
        }

    def serve(self, control: int) -> None:
        sel = selectors.DefaultSelector()
        for i, fd in enumerate(self.fds):
            sel.register(fd, selectors.EVENT_READ, i)
        sel.register(control, selectors.EVENT_READ, -1)
        pending = b""
        while True:
            next_at = self.due(now_us())
            timeout = None if next_at is None else max(0.0, (next_at - now_us()) / 1e6)
            for key, _ in sel.select(timeout):
                port = key.data
                if port == -1:
                    chunk = os.read(control, 65_536)
                    if not chunk:
                        return  # the launcher is gone or done
                    pending += chunk
                    while b"\n" in pending:
                        line, pending = pending.split(b"\n", 1)
                        if line.strip():
                            reply(self.command(line.decode(errors="replace")))
                    continue
                fd = self.fds[port]
                for _ in range(READ_BATCH):
                    try:
                        frame = os.read(fd, FRAME_MAX)
                    except BlockingIOError:
                        break
                    except OSError as exc:
                        if exc.errno == errno.EIO:  # not up yet
                            break
                        raise
                    self.receive(port, frame, now_us())


def reply(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="p2p_market.localnet.wan.switch")
    parser.add_argument("--port", action="append", default=[], help="a node's TAP device")
    parser.add_argument("--host", default=None, help="the control TAP device (not shaped)")
    parser.add_argument("--delay-us", type=int, default=0)
    parser.add_argument("--jitter-us", type=int, default=0)
    parser.add_argument("--loss-ppm", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    names: list[str] = list(args.port) + ([args.host] if args.host else [])
    try:
        shape = LinkShape(args.delay_us, args.jitter_us, args.loss_ppm)
        if not args.port or len(set(names)) != len(names):
            raise SwitchError("give each --port once, at least one")
        fds: list[int] = []
        for name in names:
            fds.append(open_tap(name))
    except (LinkError, SwitchError) as exc:
        reply({"event": "error", "error": str(exc)})
        return 2
    host = len(names) - 1 if args.host else None
    switch = Switch(names, fds, Links(shape, args.seed, host))
    reply({"event": "ready", "pid": os.getpid(), "ports": names})
    try:
        switch.serve(sys.stdin.fileno())
    except KeyboardInterrupt:
        pass
    finally:
        for fd in fds:
            os.close(fd)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
