"""Checked conversion between JSON values and frozen dataclasses.

Control messages are JSON objects; this module turns them into typed,
immutable values and refuses anything that does not fit: wrong types,
missing fields, strings or lists that are too long, integers out of range.
Unknown fields are ignored (a newer minor version may add them). Strings
with a control character (but tab and newline: no terminal escape, no NUL)
or a lone surrogate are refused: they cannot name a file or be shown safely.

Supported field types: ``str``, ``int``, ``float``, ``bool``, ``X | None``,
``tuple[X, ...]``, ``Literal[...]`` and nested dataclasses. Per-field bounds
come from ``field(metadata=bounded(...))``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
import types
import typing
from typing import Any, Literal

from recovery.errors import RemoteProtocolError

MAX_STR = 4096
# C0 controls but tab and newline, DEL, C1: terminal escapes, NUL. No field of ours needs them, and a
# peer's string reaches screens and logs.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")
MAX_ITEMS = 4096
MAX_INT = (1 << 63) - 1


class SchemaError(RemoteProtocolError):
    """A control message does not match its schema."""


def bounded(
    *,
    max_len: int | None = None,
    lo: int | float | None = None,
    hi: int | float | None = None,
    min_len: int | None = None,
) -> dict[str, Any]:
    """Field metadata with bounds: ``field(metadata=bounded(max_len=64))``; ``min_len``: a string's
    fewest characters."""
    return {"max_len": max_len, "lo": lo, "hi": hi, "min_len": min_len}


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def from_json(cls: type, value: Any, where: str = "") -> Any:
    """Build ``cls`` (a dataclass) from a decoded JSON object, checking everything."""
    where = where or cls.__name__
    if not isinstance(value, dict):
        raise SchemaError(f"{where}: expected an object")
    hints = _hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        if f.name not in value:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise SchemaError(f"{where}: missing field {f.name!r}")
            continue
        kwargs[f.name] = _convert(hints[f.name], value[f.name], f.metadata, f"{where}.{f.name}")
    return cls(**kwargs)


def _convert(tp: Any, value: Any, meta: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _convert(inner, value, meta, where)
    if origin is Literal:
        if value not in args or type(value) is not type(args[0]):
            raise SchemaError(f"{where}: {value!r} is not one of {list(args)}")
        return value
    if origin is tuple:
        if not isinstance(value, list):
            raise SchemaError(f"{where}: expected a list")
        limit = meta.get("max_len") or MAX_ITEMS
        if len(value) > limit:
            raise SchemaError(f"{where}: {len(value)} items, at most {limit}")
        return tuple(_convert(args[0], v, {}, f"{where}[{i}]") for i, v in enumerate(value))
    if dataclasses.is_dataclass(tp):
        return from_json(tp, value, where)  # type: ignore[arg-type]
    if tp is bool:
        if not isinstance(value, bool):
            raise SchemaError(f"{where}: expected true or false")
        return value
    if tp is int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise SchemaError(f"{where}: expected an integer")
        lo = meta.get("lo", 0)
        hi = meta.get("hi", MAX_INT)
        lo = 0 if lo is None else lo
        hi = MAX_INT if hi is None else hi
        if not lo <= value <= hi:
            raise SchemaError(f"{where}: {value} outside {lo}..{hi}")
        return value
    if tp is float:
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise SchemaError(f"{where}: expected a number")
        value = float(value)
        if not math.isfinite(value) or value < (meta.get("lo") or 0.0):
            raise SchemaError(f"{where}: {value} out of range")
        hi = meta.get("hi")
        if hi is not None and value > hi:
            raise SchemaError(f"{where}: {value} out of range")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise SchemaError(f"{where}: expected a string")
        limit = meta.get("max_len") or MAX_STR
        if len(value) > limit:
            raise SchemaError(f"{where}: string of {len(value)} characters, at most {limit}")
        if len(value) < (meta.get("min_len") or 0):
            raise SchemaError(f"{where}: string of {len(value)} characters, at least {meta['min_len']}")
        bad = _CONTROL.search(value)
        if bad:
            raise SchemaError(f"{where}: string holds the control character {ord(bad.group()):#04x}")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise SchemaError(f"{where}: string holds a lone surrogate (not valid Unicode text)") from None
        return value
    raise TypeError(f"unsupported schema type {tp!r} at {where}")  # a bug in a message class


def to_json(obj: Any) -> Any:
    """A dataclass (nested) as plain JSON values."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_json(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (tuple, list)):
        return [to_json(v) for v in obj]
    return obj
