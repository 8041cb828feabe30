"""How :class:`~kvstore.contrib.langgraph.store.KVStoreMemoryStore` names and matches its items
(no I/O): namespaces as kvstore keys, LangGraph's search filters and namespace conditions.

A namespace ``("users", "ann")`` with the key ``"prefs"`` in the category ``memory`` is the
kvstore key ``memory:users/ann/prefs``: each label ends with ``/``, the item's key comes last.
Inside a label or a key, ``%`` and ``/`` (and NUL and lone surrogates, which no kvstore key may
hold) are written ``%XX`` of their UTF-8 bytes, and an empty item key is ``%``. So:

- every namespace and key has exactly one kvstore key, and the kvstore key gives them back;
- a namespace prefix is a literal key prefix: ``("users",)`` is ``memory:users/``, which
  ``("users", "ann")`` starts with and ``("users2",)`` does not;
- on the file store each label is a folder (``memory:users/ann/prefs.json``), readable.
"""

from __future__ import annotations

import re
from typing import Any, Iterable

from ...errors import InvalidArgumentError

__all__ = ["quote", "unquote", "namespace_prefix", "item_key", "split_key", "order", "in_order",
           "namespaces", "matches_filter", "matches_condition"]

_SPECIAL = re.compile(r"[%/\x00\ud800-\udfff]")
_ESCAPED = re.compile(r"(?:%[0-9A-F]{2})+")


def _escape(match: re.Match[str]) -> str:
    return "".join(f"%{b:02X}" for b in match.group(0).encode("utf-8", "surrogatepass"))


def quote(text: str) -> str:
    """A label or key as one segment of a kvstore key (never empty, never containing ``/``)."""
    if not text:
        return "%"
    return _SPECIAL.sub(_escape, text)


def unquote(segment: str) -> str:
    """The label or key a segment encodes (the inverse of :func:`quote`)."""
    if segment == "%":
        return ""
    return _ESCAPED.sub(lambda m: bytes.fromhex(m.group(0).replace("%", "")).decode(
        "utf-8", "surrogatepass"), segment)


def namespace_prefix(base: str, namespace: tuple[str, ...]) -> str:
    """The kvstore key prefix of every item in ``namespace`` and in the namespaces below it."""
    return base + "".join(quote(label) + "/" for label in namespace)


def item_key(base: str, namespace: tuple[str, ...], key: str) -> str:
    """The kvstore key of the item ``key`` in ``namespace``."""
    return namespace_prefix(base, namespace) + quote(key)


def split_key(base: str, stored: str) -> tuple[tuple[str, ...], str]:
    """``(namespace, key)`` of a kvstore key made by :func:`item_key`."""
    *labels, last = stored[len(base):].split("/")
    return tuple(unquote(label) for label in labels), unquote(last)


def order(base: str, stored: str) -> tuple[tuple[str, ...], str]:
    """:func:`split_key`, faster for a key with nothing escaped (the sort key of a search)."""
    rest = stored[len(base):]
    if "%" in rest:
        return split_key(base, stored)
    *labels, last = rest.split("/")
    return tuple(labels), last


def in_order(base: str, prefix: str, stored: Iterable[str]) -> list[str]:
    """The kvstore keys ``stored`` (all starting with ``prefix``) in (namespace, key) order.
    Keys of one namespace with nothing escaped after the prefix are already in that order as
    text: then no key is decoded."""
    keys = sorted(stored)
    n = len(prefix)
    if any(k.find("/", n) >= 0 or k.find("%", n) >= 0 for k in keys):
        keys.sort(key=lambda k: order(base, k))
    return keys


def namespaces(base: str, stored: Iterable[str]) -> set[tuple[str, ...]]:
    """The distinct namespaces of kvstore keys made by :func:`item_key` (each decoded once)."""
    distinct = {key[len(base):].rpartition("/")[0] for key in stored}
    return {tuple(unquote(label) for label in ns.split("/")) if ns else () for ns in distinct}


# -- search filters: the operators LangGraph's InMemoryStore applies, the same way ----------------

def matches_filter(value: dict[str, Any], filter: dict[str, Any] | None) -> bool:
    """Whether an item's ``value`` passes a search ``filter``: each field equal to the filter's
    value (nested mappings field by field, lists element by element), or satisfying every
    operator of a ``{"$op": operand}`` mapping (``$eq``, ``$ne``, ``$gt``, ``$gte``, ``$lt``,
    ``$lte``; the ordering ones compare as numbers, and a field that is not a number fails
    them, where InMemoryStore raises)."""
    if not filter:
        return True
    return all(_compare(value.get(field), wanted) for field, wanted in filter.items())


def _compare(found: Any, wanted: Any) -> bool:
    if isinstance(wanted, dict):
        if any(isinstance(k, str) and k.startswith("$") for k in wanted):
            return all(_operator(found, op, operand) for op, operand in wanted.items())
        if not isinstance(found, dict):
            return False
        return all(_compare(found.get(k), v) for k, v in wanted.items())
    if isinstance(wanted, (list, tuple)):
        return (isinstance(found, (list, tuple)) and len(found) == len(wanted)
                and all(_compare(f, w) for f, w in zip(found, wanted)))
    return bool(found == wanted)


_ORDERING = {"$gt": float.__gt__, "$gte": float.__ge__, "$lt": float.__lt__,
             "$lte": float.__le__}


def _operator(found: Any, op: str, operand: Any) -> bool:
    if op == "$eq":
        return bool(found == operand)
    if op == "$ne":
        return bool(found != operand)
    compare = _ORDERING.get(op)
    if compare is None:
        raise InvalidArgumentError(f"search filter: unsupported operator {op!r} (supported: "
                                   "$eq, $ne, $gt, $gte, $lt, $lte)")
    try:
        return bool(compare(float(found), float(operand)))
    except (TypeError, ValueError):
        return False


def matches_condition(match_type: str, path: tuple[str, ...], namespace: tuple[str, ...]) -> bool:
    """Whether ``namespace`` starts (``"prefix"``) or ends (``"suffix"``) with ``path``, where a
    ``"*"`` label of ``path`` matches any one label."""
    if len(namespace) < len(path):
        return False
    if match_type == "prefix":
        pairs = zip(namespace, path)
    elif match_type == "suffix":
        pairs = zip(reversed(namespace), reversed(path))
    else:
        raise InvalidArgumentError(f"list_namespaces: unsupported match type {match_type!r} "
                                   "(supported: 'prefix', 'suffix')")
    return all(want == "*" or label == want for label, want in pairs)
