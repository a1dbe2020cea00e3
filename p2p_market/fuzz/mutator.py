"""Structure-aware mutation: for the targets whose input is msgpack (envelopes,
frames, the stream protocols' frames), and repetition for those that read text.

libFuzzer mutates bytes; most byte edits of a canonical msgpack value are no longer
msgpack at all, and the rest change a length prefix or a byte of a string. A parser
bug that needs a field of another type (a map where a string belongs), or a
container nested a few hundred levels deep, is many lucky edits away, and coverage
gives no hint on the way: depth runs the same lines at every level. So half the
time this mutator decodes the input, changes one node of the value (another type,
an edge-case integer, a key added or dropped, a node copied from elsewhere, the
node nested 2 to 1,100 levels deep, or, for a byte string that is msgpack itself
such as an envelope's body or a frame's envelope, a node inside that), and encodes
it again in canonical form. The other half, and for input that does not decode,
libFuzzer's own mutation runs (`fallback`).

For text (config files, PEM), `repeat` copies a short piece of the input 2 to 2,000
times in place: `a.` repeated is a dotted key a thousand tables deep, `[` an array
as deep, which byte edits reach no sooner than deep msgpack."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any, Final

import msgpack

Fallback = Callable[[bytes, int], bytes]

PREFIXES: Final = (0, 1, 2)
"""Leading bytes that are not msgpack: the envelope target's mode and kind bytes."""

DEPTHS: Final = (2, 40, 600, 1_100)
"""Nesting to wrap a node in: around msgpack's packer limit (511) and its
unpacker's (1,024), and well inside Python's recursion limit."""

_SENTINEL: Final = b"\xfe p2p-market fuzz: the deep node goes here \xfe"

_ATOMS: Final[tuple[Any, ...]] = (
    None, True, False, 0, 1, -1, 255, 256, 65_536, 2**32, 2**63 - 1, 2**64 - 1, -(2**63),
    1.5, b"", bytes(31), bytes(32), bytes(33), bytes(64), "", "x", "a" * 300,
)  # fmt: skip


def _unpack(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False, strict_map_key=False, use_list=True)


def _canonical(value: Any) -> Any:
    if isinstance(value, dict):
        items = list(value.items())
        if all(type(k) is str for k, _ in items):
            items.sort()
        return {k: _canonical(v) for k, v in items}
    if isinstance(value, list):
        return [_canonical(v) for v in value]
    return value


def _pack(value: Any, deep: tuple[int, Any] | None = None) -> bytes:
    data: bytes = msgpack.packb(_canonical(value), use_bin_type=True)
    if deep is not None:  # the packer refuses depth over 511: splice the levels in as bytes
        levels, node = deep
        inner = b"\x91" * levels + msgpack.packb(_canonical(node), use_bin_type=True)
        data = data.replace(msgpack.packb(_SENTINEL, use_bin_type=True), inner, 1)
    return data


def _slots(value: Any) -> list[tuple[Any, Any]]:
    """Every (container, key) of the tree, breadth first."""
    out: list[tuple[Any, Any]] = []
    todo = [value]
    while todo and len(out) < 500:
        node = todo.pop(0)
        keys = list(node) if isinstance(node, dict) else range(len(node))
        for key in keys:
            out.append((node, key))
            if isinstance(node[key], dict | list):
                todo.append(node[key])
    return out


def _new_node(old: Any, rng: random.Random, others: list[Any], fallback: Fallback) -> Any:
    choice = rng.randrange(8)
    if choice == 0 and others:
        return rng.choice(others)
    if choice == 1:
        return {} if rng.random() < 0.5 else []
    if choice == 2 and isinstance(old, int) and not isinstance(old, bool):
        return old + rng.choice((-1, 1, -(2**8), 2**8, 2**32))
    if choice == 3 and type(old) is bytes:
        inner = mutate(old, 2 * len(old) + 64, rng.randrange(2**32), fallback)
        return inner[: 2 * len(old) + 64]
    if choice == 4 and isinstance(old, str):
        return rng.choice((old[:-1], old + old, old.upper(), ""))
    return rng.choice(_ATOMS)


def _edit(root: Any, rng: random.Random, fallback: Fallback) -> tuple[Any, tuple[int, Any] | None]:
    """One edit of the tree; the second item asks `_pack` for a deeply nested node."""
    box = [root]
    slots = [(box, 0), *_slots(root)] if isinstance(root, dict | list) else [(box, 0)]
    container, key = rng.choice(slots)
    others = [c[k] for c, k in slots]
    op = rng.randrange(10)
    if op == 0 and isinstance(container, dict) and len(container) > 0:
        del container[key]
    elif op == 1 and isinstance(container, dict):
        names = [k for c, k in slots if isinstance(c, dict) and type(k) is str]
        container[rng.choice([*names, "x"]) + rng.choice(("", "", "_"))] = rng.choice(others)
    elif op == 2 and isinstance(container, list) and container is not box:
        if rng.random() < 0.5:
            container.pop(key)
        else:
            container.insert(key, container[key])
    elif op == 3:
        deep = (rng.choice(DEPTHS), container[key])
        container[key] = _SENTINEL
        return box[0], deep
    else:
        container[key] = _new_node(container[key], rng, others, fallback)
    return box[0], None


def mutate(data: bytes, max_size: int, seed: int, fallback: Fallback) -> bytes:
    """libFuzzer's custom mutator (atheris.Setup(custom_mutator=...)), with
    `fallback` = atheris.Mutate."""
    rng = random.Random(seed)
    if rng.random() < 0.5:
        return fallback(data, max_size)
    for offset in PREFIXES:
        try:
            value = _unpack(data[offset:])
            out = data[:offset] + _pack(*_edit(value, rng, fallback))
        except Exception:  # not msgpack here, or a value msgpack will not pack again
            continue
        if len(out) <= max_size:
            return out
        break
    return fallback(data, max_size)


REPEATS: Final = (2, 50, 600, 1_100, 2_000)


def repeat(data: bytes, max_size: int, seed: int, fallback: Fallback) -> bytes:
    """libFuzzer's custom mutator for text: half the time a piece of 1 to 8 bytes
    repeated in place, else `fallback`."""
    rng = random.Random(seed)
    if rng.random() < 0.5 or not data:
        return fallback(data, max_size)
    start = rng.randrange(len(data))
    piece = data[start : start + rng.randint(1, 8)]
    return (data[:start] + piece * rng.choice(REPEATS) + data[start:])[:max_size]
