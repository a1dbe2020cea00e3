"""The schema machinery of every TOML file p2p-market reads (a market descriptor in
markets/descriptor_schema.py, the node config in node/config_schema.py, a
scenario's [run] and [network] in localnet/scenario_schema.py): a pydantic model
per table, whose keys carry their type, bounds, default and description (`key`);
`validate` turns pydantic's multi-line ValidationError into one line naming the key
and the problem, in the caller's error type; `reference_table` writes the table
docs/config.md shows (the generated blocks, `p2p-market config reference`), so the
reference says what is checked."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, ClassVar, Final, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import PydanticCustomError

from p2p_market.core import limits as L


def problem(text: str) -> PydanticCustomError:
    """A validator's failure: `text` follows the key's name in the one line (so it
    starts with " must be ..." or ": ...")."""
    return PydanticCustomError("config", "{text}", {"text": text})


def key(
    description: str,
    default: Any = ...,
    *,
    kind: str | None = None,
    default_text: str | None = None,
    **constraints: Any,
) -> Any:
    """A key of a section: pydantic's Field (required without `default`), with what
    docs/config.md's table says of it. `kind` and `default_text` replace the type and
    default the generator would derive (for values a type alone does not say)."""
    extra: dict[str, Any] = {}
    if kind is not None:
        extra["kind"] = kind
    if default_text is not None:
        extra["default_text"] = default_text
    return Field(default, description=description, json_schema_extra=extra or None, **constraints)


class Section(BaseModel):
    """A table of the file: unknown keys refused; TOML types taken as they are (no
    "80" for 80, no true for 1), an integer where a number is asked; no NaN or
    infinity. `UNKNOWN` and `MISSING` word the two errors about keys."""

    UNKNOWN: ClassVar[str] = "unknown setting {name}"
    MISSING: ClassVar[str] = "missing {name}"
    REMOVED: ClassVar[dict[str, str]] = {}
    """Keys that once existed, with what to do instead: a file that still has one
    gets that line rather than a bare "unknown setting"."""

    model_config = ConfigDict(
        extra="forbid", strict=True, frozen=True, allow_inf_nan=False, arbitrary_types_allowed=True
    )


S = TypeVar("S", bound=Section)

_KINDS: Final = {
    "int_type": "int",
    "float_type": "float",
    "bool_type": "bool",
    "string_type": "str",
    "list_type": "a list",
}
_ORDER: Final = {"extra_forbidden": 0, "missing": 1}
"""Which of several problems is told: an unknown key, then a missing one, then the
first bad value in the file's order."""


def validate(model: type[S], table: Any, where: str, error: Callable[[str], Exception]) -> S:
    """`table` (a TOML table) checked by `model`; `error(line)` raised, the line
    naming `where.key` and the problem, never pydantic's own text."""
    if not isinstance(table, dict):
        raise error(f"[{where}] must be a table" if where else "not a table")
    try:
        return model.model_validate(table)
    except ValidationError as exc:
        errors = sorted(exc.errors(), key=lambda e: _ORDER.get(e["type"], 2))
        raise error(one_line(model, errors[0], where)) from None


def one_line(model: type[Section], error: Any, where: str) -> str:
    """One pydantic error as the line a user reads."""
    loc = error["loc"]
    key = str(loc[0]) if loc else ""
    name = (f"{where}.{key}" if where else key) + "".join(
        f"[{i}]" for i in loc[1:] if isinstance(i, int)
    )
    kind, value = error["type"], error.get("input")
    if kind == "extra_forbidden":
        return model.REMOVED.get(key, model.UNKNOWN.format(name=name))
    if kind == "missing":
        return model.MISSING.format(name=name)
    if kind == "config":
        return f"{name}{error['ctx']['text']}"
    if kind == "float_type" and type(value) is int:  # TOML reads integers of any size
        return f"{name} is too large a number"
    if kind in _KINDS:
        return f"{name} must be {_KINDS[kind]}, not {_toml_type(value)}"
    if kind == "literal_error":
        return f"{name} must be {error['ctx']['expected'].replace(chr(39), chr(34))}, not {value!r}"
    if kind == "finite_number":
        return f"{name} must be a finite number, not {value}"
    info = model.model_fields.get(key)
    if info is not None and kind in ("greater_than", "greater_than_equal", "less_than_equal"):
        return f"{name} must be {_range(info)}, not {value}"
    return f"{name}: {error['msg']}"  # pragma: no cover (every kind a schema can raise is above)


def _range(info: FieldInfo) -> str:
    """What a bounded number must be, as the error says it."""
    integer = info.annotation is int or int in getattr(info.annotation, "__args__", ())
    word = "an integer" if integer else "a number"
    b = _bounds(info)
    low = "ge" in b and f"{b['ge']:g}"
    if "ge" in b and "le" in b:
        return f"{word} between {low} and {b['le']:g}"
    if "gt" in b and "le" in b:
        return f"{word} above {b['gt']:g} and at most {b['le']:g}"
    if "ge" in b:
        return f"{word} of at least {low}"
    return f"{word} above {b['gt']:g}"


def _toml_type(value: Any) -> str:
    return {bool: "bool", int: "int", float: "float", str: "str", list: "list", dict: "table"}.get(
        type(value), type(value).__name__
    )


# -- the reference ---------------------------------------------------------------------


def _number(value: float) -> str:
    if isinstance(value, int) and value >= 1 << 20 and value & (value - 1) == 0:
        return f"2^{value.bit_length() - 1}"
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return f"{value}".replace("-", "\N{MINUS SIGN}")


def _bounds(info: FieldInfo) -> dict[str, float]:
    found: dict[str, float] = {}
    for meta in info.metadata:
        for bound in ("ge", "gt", "le"):
            value = getattr(meta, bound, None)
            if value is not None:
                found[bound] = value
    if found.get("le") == L.MAX_UINT:  # the largest integer anywhere: not repeated
        del found["le"]
    return found


def _kind(info: FieldInfo) -> str:
    """The type column: what the value must be, with its bounds."""
    extra = info.json_schema_extra
    if isinstance(extra, dict) and "kind" in extra:
        return str(extra["kind"])
    ann = info.annotation
    args = getattr(ann, "__args__", ())
    if ann is bool:
        return "boolean"
    if ann is str:
        return "string"
    if getattr(ann, "__origin__", None) is list:
        return "list of strings"
    if getattr(ann, "__origin__", None) is Literal:
        return " or ".join(f'`"{a}"`' for a in args)
    word = "integer" if ann is int or int in args else "number"
    b = _bounds(info)
    if "ge" in b and "le" in b:
        return f"{word} {_number(b['ge'])}..{_number(b['le'])}"
    if "gt" in b and "le" in b:
        return f"{word} above {_number(b['gt'])}, at most {_number(b['le'])}"
    if "ge" in b:
        return f"{word} ≥ {_number(b['ge'])}"
    if "gt" in b:
        return f"{word} > {_number(b['gt'])}"
    return word


def _default(info: FieldInfo) -> str:
    extra = info.json_schema_extra
    if isinstance(extra, dict) and "default_text" in extra:
        return str(extra["default_text"])
    if info.is_required():
        return "**required**"
    value = info.get_default()
    if value is None or value == "":
        return "none"
    return (
        f"`{json.dumps(value).replace(', ', ',')}`"
        if isinstance(value, list)
        else (f"`{json.dumps(value)}`")
    )


def reference_table(model: type[Section]) -> str:
    """The markdown table of one section: key, type, default, meaning."""
    lines = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for key, info in model.model_fields.items():
        lines.append(f"| `{key}` | {_kind(info)} | {_default(info)} | {info.description} |")
    return "\n".join(lines)
