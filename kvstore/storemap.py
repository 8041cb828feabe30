"""``pm.stores``: the manager's stores by name, where replacing a store takes effect at once.

A manager caches where each category (and each recently used key) goes. :class:`StoreMap`
is the mapping a manager hands out as ``pm.stores``: it reads like the dict it used to be,
and ``pm.stores["cache"] = other`` (or ``del``) tells the manager, so the very next call
routes to the new store instead of a cached old one.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, MutableMapping, TypeVar

__all__ = ["StoreMap"]

S = TypeVar("S")


class StoreMap(MutableMapping[str, S]):
    """The stores by name. ``changed(name, store)`` runs before each assignment (``store`` None
    for ``del``) and returns what to keep: it may check, convert, or raise to refuse."""

    def __init__(self, data: dict[str, S], changed: Callable[[str, Any], Any]) -> None:
        self._data = data
        self._changed = changed

    def __getitem__(self, name: str) -> S:
        return self._data[name]

    def __setitem__(self, name: str, store: Any) -> None:
        self._data[name] = self._changed(name, store)

    def __delitem__(self, name: str) -> None:
        if name not in self._data:
            raise KeyError(name)
        self._changed(name, None)
        del self._data[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, name: object) -> bool:
        return name in self._data

    def get(self, name: str, default: Any = None) -> Any:  # hot in Core.named: skip the ABC path
        return self._data.get(name, default)

    def __repr__(self) -> str:
        return repr(self._data)
