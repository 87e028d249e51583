"""Frozen-dataclass configs serialised as typed JSON (never repr/eval).

Every dataclass is written as ``{"__type__": "ClassName", field: value, ...}``; nested dataclasses and tuples
round-trip exactly, so a result row carries the full config that produced it and can be reloaded.
"""
from __future__ import annotations

import dataclasses
import json
import types
import typing

_REGISTRY: dict[str, type] = {}


def register(cls):
    """Class decorator: make a frozen dataclass loadable from typed JSON."""
    if not dataclasses.is_dataclass(cls) or not cls.__dataclass_params__.frozen:
        raise TypeError(f"{cls.__name__} must be a frozen dataclass")
    _REGISTRY[cls.__name__] = cls
    return cls


def to_jsonable(obj):
    if dataclasses.is_dataclass(obj):
        out = {"__type__": type(obj).__name__}
        out.update({f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)})
        return out
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot serialise {type(obj).__name__} in a config")


def from_jsonable(data):
    if isinstance(data, dict) and "__type__" in data:
        name = data["__type__"]
        if name not in _REGISTRY:
            raise ValueError(f"unknown config type {name!r}; known: {sorted(_REGISTRY)}")
        cls = _REGISTRY[name]
        hints = typing.get_type_hints(cls)
        kwargs = {}
        for f in dataclasses.fields(cls):
            if f.name in data:
                kwargs[f.name] = _coerce(from_jsonable(data[f.name]), hints.get(f.name))
        return cls(**kwargs)
    if isinstance(data, list):
        return [from_jsonable(v) for v in data]
    if isinstance(data, dict):
        return {k: from_jsonable(v) for k, v in data.items()}
    return data


def _coerce(value, hint):
    """JSON has no tuples; restore them (recursively) where the field is typed as one."""
    origin = typing.get_origin(hint)
    if origin is typing.Union or origin is types.UnionType:  # Optional[X] and X | None
        for arg in typing.get_args(hint):
            if arg is not type(None) and value is not None:
                return _coerce(value, arg)
        return value
    if origin is tuple and isinstance(value, list):
        args = typing.get_args(hint)
        inner = args[0] if args else None
        return tuple(_coerce(v, inner) for v in value)
    return value


def dumps(obj) -> str:
    return json.dumps(to_jsonable(obj), sort_keys=True)


def loads(text: str):
    return from_jsonable(json.loads(text))
