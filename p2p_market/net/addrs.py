"""Which of its addresses a node tells a peer.

Measured across six network namespaces (issue 13): a node bound to 0.0.0.0 told its
peers `/ip4/0.0.0.0/tcp/…` (in identify, hence in their peer-exchange answers, and in
its banner), an address nobody can dial, so every node stayed connected to the
bootstrap node only and direct messages (confidential asks) found no route.

The rules here:

- `announce` (config `node.announce`, `--announce`) replaces everything: the node
  tells exactly those addresses (a NAT's public address, a DNS name).
- Otherwise a wildcard listen address (0.0.0.0, ::) stands for the host's concrete
  interface addresses (`interface_ips`), link-local never (an IPv6 link-local
  address needs its zone, which a peer elsewhere cannot use). A host with any
  address that is not loopback tells only those (`expand`): besides identify, its
  signed peer record (which py-libp2p's gossipsub attaches to its RPCs, and which
  replaces what the receiver holds for it) lists the same addresses, and cannot be
  filtered per receiver. A peer on this machine reaches the interface addresses
  too. A host bound to loopback only (a local test network) tells loopback.
- A peer that is not itself on loopback is never told an unspecified or loopback
  address (`for_remote`): identify (`install_identify_filter`) and peer exchange
  (node/peers.py) filter per remote. A peer on loopback (a local test network on
  127.0.0.1) is told everything, so a local network keeps working.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import multiaddr
import psutil  # type: ignore[import-untyped]
import trio

from p2p_market.net import relay

IP = ipaddress.IPv4Address | ipaddress.IPv6Address
RESOLVE_TIMEOUT_S = 5.0
DNS_PROTOCOLS = ("dns4", "dns6", "dns")


def ip_of(addr: multiaddr.Multiaddr | str) -> IP | None:
    """The IP of an `/ip4/…` or `/ip6/…` multiaddr, None for any other (DNS names)."""
    parts = str(addr).split("/")
    if len(parts) < 3 or parts[1] not in ("ip4", "ip6"):
        return None
    try:
        return ipaddress.ip_address(parts[2].split("%")[0])
    except ValueError:
        return None


def local_only(addr: multiaddr.Multiaddr | str) -> bool:
    """Whether an address means nothing to a peer on another machine: loopback or
    unspecified (a DNS name or other transport is not judged: False)."""
    ip = ip_of(addr)
    if ip is None:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback or ip.is_unspecified


def remote_is_local(remote: Any) -> bool:
    """Whether a peer's address (a multiaddr, an IP string, or a (host, port) tuple
    as a stream's `get_remote_address` gives it) is loopback. Unknown: False, so
    the caller tells the peer less, never more."""
    if remote is None:
        return False
    if isinstance(remote, tuple) and remote:
        remote = remote[0]
    text = str(remote)
    ip = ip_of(text) if text.startswith("/") else None
    if ip is None:
        try:
            ip = ipaddress.ip_address(text.split("%")[0])
        except ValueError:
            return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def for_remote(addrs: Iterable[Any], remote_local: bool) -> list[Any]:
    """`addrs` as a peer may be told them: all of them if the peer is on loopback,
    else without the loopback and unspecified ones."""
    return [a for a in addrs if remote_local or not local_only(a)]


def interface_ips(version: int) -> list[IP]:
    """This machine's addresses of one IP version, by interface: non-loopback first
    (what peers elsewhere can dial), loopback last; never link-local, multicast or
    unspecified. Read anew at each call (psutil: one netlink query), so an address
    that came up after the node started is told too."""
    family = socket.AF_INET if version == 4 else socket.AF_INET6
    found: list[IP] = []
    for entries in psutil.net_if_addrs().values():
        for entry in entries:
            if entry.family != family:
                continue
            try:
                ip = ipaddress.ip_address(entry.address.split("%")[0])
            except ValueError:
                continue
            if ip.is_link_local or ip.is_multicast or ip.is_unspecified or ip in found:
                continue
            found.append(ip)
    return sorted(found, key=lambda ip: ip.is_loopback)


def expand(addrs: Iterable[multiaddr.Multiaddr]) -> list[multiaddr.Multiaddr]:
    """Listen addresses with every wildcard (0.0.0.0, ::) replaced by the host's
    concrete addresses of that version, the port and the rest kept; without the
    loopback and unspecified ones if any other is left (the module docstring)."""
    out: list[multiaddr.Multiaddr] = []
    seen: set[str] = set()
    for addr in addrs:
        ip = ip_of(addr)
        if ip is None or not ip.is_unspecified:
            concrete = [addr]
        else:
            proto = "ip4" if ip.version == 4 else "ip6"
            rest = str(addr).split("/", 3)[3]
            ips = interface_ips(ip.version)
            concrete = [multiaddr.Multiaddr(f"/{proto}/{i}/{rest}") for i in ips]
        for one in concrete:
            if str(one) not in seen:
                seen.add(str(one))
                out.append(one)
    remote = [a for a in out if not local_only(a)]
    return remote or out


def addrs_factory(
    announce: Sequence[str],
) -> Callable[[list[multiaddr.Multiaddr]], list[multiaddr.Multiaddr]]:
    """libp2p's `AddrsFactory` (BasicHost.get_addrs): `announce` if given, else the
    listen addresses with wildcards expanded."""
    fixed = [multiaddr.Multiaddr(a) for a in announce]

    def factory(candidates: list[multiaddr.Multiaddr]) -> list[multiaddr.Multiaddr]:
        return list(fixed) if fixed else expand(candidates)

    return factory


def best_addr(addrs: Iterable[str]) -> str | None:
    """The address to hand out first: a TCP one with /p2p/, not local-only if any,
    and one through a relay (net/relay.py) only if there is nothing else."""
    tcp = [a for a in addrs if "/tcp/" in a and "/p2p/" in a]
    ordered = sorted(tcp, key=lambda a: (relay.is_circuit(a), local_only(a)))
    return ordered[0] if ordered else None


_installed = False


def install_identify_filter() -> None:
    """Filter identify's listen addresses per remote (`for_remote`), once per process.

    py-libp2p builds the identify message in `_mk_identify_protobuf(host, observed)`
    for every identify answer and push; `observed` is the remote's address as this
    host sees it (None for a push). The wrapper keeps local-only addresses only when
    that remote is loopback; when it drops any, it also drops the signed peer record
    (which lists them all, and which the receiver adds to its address book)."""
    global _installed
    if _installed:
        return
    from libp2p.abc import IHost
    from libp2p.identity.identify import identify
    from libp2p.identity.identify.pb.identify_pb2 import Identify
    from libp2p.identity.identify_push import identify_push

    original = identify._mk_identify_protobuf

    def filtered(host: IHost, observed_multiaddr: multiaddr.Multiaddr | None) -> Identify:
        message = original(host, observed_multiaddr)
        if remote_is_local(observed_multiaddr):
            return message
        kept = []
        for raw in message.listen_addrs:
            try:
                keep = not local_only(multiaddr.Multiaddr(raw))
            except Exception:  # the library raises several unrelated types
                keep = False
            if keep:
                kept.append(raw)
        if len(kept) != len(message.listen_addrs):
            del message.listen_addrs[:]
            message.listen_addrs.extend(kept)
            message.ClearField("signedPeerRecord")
        return message

    identify._mk_identify_protobuf = filtered
    # imported by name there:
    identify_push._mk_identify_protobuf = filtered  # type: ignore[attr-defined]
    _installed = True


# -- names ------------------------------------------------------------------------------
# Bootstrap entries may name a host, `/dns4/NAME/tcp/PORT/p2p/ID` (or /dns6, /dns): the
# name is resolved at each dial, with trio's getaddrinfo (a worker thread per lookup,
# bounded by trio's default limiter, so the event loop never blocks on DNS), so a
# bootstrap node whose address changed is found again under its name.


def is_dns(addr: str) -> bool:
    parts = addr.split("/")
    return len(parts) > 2 and parts[1] in DNS_PROTOCOLS


class ResolveError(OSError):
    """A bootstrap name that did not resolve; the message names it."""


async def resolve(addr: str, *, timeout: float = RESOLVE_TIMEOUT_S) -> list[str]:
    """`addr` with a /dns4, /dns6 or /dns name replaced by each address it resolves to
    (of that family; /dns: both), the rest kept; any other address as it is.
    ResolveError if the name does not resolve (in `timeout`)."""
    if not is_dns(addr):
        return [addr]
    parts = addr.split("/")
    proto, name, rest = parts[1], parts[2], "/".join(parts[3:])
    family = {"dns4": socket.AF_INET, "dns6": socket.AF_INET6}.get(proto, socket.AF_UNSPEC)
    try:
        with trio.fail_after(timeout):
            infos = await trio.socket.getaddrinfo(name, None, family, socket.SOCK_STREAM)
    except trio.TooSlowError:
        raise ResolveError(f"cannot resolve {name}: no answer in {timeout:g} s") from None
    except OSError as exc:  # socket.gaierror
        raise ResolveError(f"cannot resolve {name}: {exc.strerror or exc}") from None
    out: list[str] = []
    for fam, *_, sockaddr in infos:
        ip = str(sockaddr[0]).split("%")[0]
        kind = "ip6" if fam == socket.AF_INET6 else "ip4"
        full = f"/{kind}/{ip}/{rest}"
        if full not in out:
            out.append(full)
    if not out:
        raise ResolveError(f"cannot resolve {name}: no address")
    return out
