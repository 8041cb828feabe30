"""Loaded data back into typed objects: ``load(key, as_type=SomeDataclass)``."""

from __future__ import annotations

import dataclasses
import datetime as dt
import typing
from typing import Any

__all__ = ["from_dict"]


def from_dict(cls: Any, value: Any) -> Any:
    """Turn loaded data back into ``cls``: dataclasses (nested), datetimes from ISO text,
    ``list[X]``, ``dict[str, X]``, ``Optional[X]``. Other values are returned as they are."""
    origin = typing.get_origin(cls)
    args = typing.get_args(cls)
    if cls is Any or cls is None:
        return value
    if origin is typing.Union or (origin is not None and str(origin) == "<class 'types.UnionType'>"):
        if value is None:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return from_dict(arg, value)
            except (TypeError, ValueError):
                continue
        return value
    if origin in (list, set, frozenset, tuple) and isinstance(value, (list, tuple, set, frozenset)):
        if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
            return tuple(from_dict(a, v) for a, v in zip(args, value))
        item = args[0] if args else Any
        return origin(from_dict(item, v) for v in value)
    if origin is dict and isinstance(value, dict):
        kt, vt = args if args else (Any, Any)
        return {from_dict(kt, k): from_dict(vt, v) for k, v in value.items()}
    if isinstance(cls, type) and dataclasses.is_dataclass(cls):
        if isinstance(value, cls):
            return value
        if not isinstance(value, dict):
            raise TypeError(f"cannot build {cls.__name__} from {type(value).__name__}")
        hints = typing.get_type_hints(cls)
        kwargs = {f.name: from_dict(hints.get(f.name, Any), value[f.name])
                  for f in dataclasses.fields(cls) if f.name in value and f.init}
        return cls(**kwargs)
    if cls is dt.datetime and isinstance(value, str):
        return dt.datetime.fromisoformat(value)
    if cls is dt.date and isinstance(value, str):
        return dt.date.fromisoformat(value)
    return value
