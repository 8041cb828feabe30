"""Markers shared by the byte-level layer: "no value" and "keep the key's expiry"."""

from __future__ import annotations

from typing import Any, Union

__all__ = ["MISSING", "KEEP", "Op", "Check"]


class _Marker:
    __slots__ = ("_name",)

    def __init__(self, name: str) -> None:
        self._name = name

    def __repr__(self) -> str:
        return self._name

    def __bool__(self) -> bool:
        return False


#: What byte-level methods return for an absent or expired key (a stored ``None`` is a value).
#: As the blob of an op it means "delete the key"; as the expected blob of a check, "absent".
MISSING: Any = _Marker("MISSING")

#: As the ttl of an op: keep the key's current expiry. Only used on a key that a check of the
#: same commit proves live, so there always is an expiry (or none) to keep.
KEEP: Any = _Marker("KEEP")

#: One write of a commit: ``(key, blob or MISSING to delete, seconds or None or KEEP)``.
Op = tuple[str, Any, Union[float, None, Any]]
#: One condition of a commit: ``(key, the blob it must still hold, or MISSING: must be absent)``.
Check = tuple[str, Any]
