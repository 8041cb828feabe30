"""What a transaction asks of one store's commit, and what the store answers.

A transaction passes a :class:`Before` to each store's ``_committing``. The store fills
``images`` with what the written keys held *under its write lock* (so no other writer can land
between that read and the transaction's write, and an undo from it never reverts an
acknowledged write). A store that writes at exit in one script (Redis) fills it at exit, from
the script itself, and also records the images in a marker named by ``token``, so a lost reply
can be settled ("did the script run?") and a crashed committer undone by recovery.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Before", "Image", "in_doubt"]

#: What a key held before a commit: ``(key, blob or MISSING, seconds left or None)``.
Image = tuple[str, Any, "float | None"]


class Before:
    """One store's share of a transaction's undo information."""

    __slots__ = ("token", "recorded", "undoable", "images", "marked", "holds_record")

    def __init__(self, token: str, recorded: bool = False, undoable: bool = True) -> None:
        #: Names this commit (the same for every store of one transaction).
        self.token = token
        #: Whether the commit journal records this commit: a marker must then outlast a crash
        #: of the committer (it is removed once the record is); otherwise it only has to
        #: outlast the commit call.
        self.recorded = recorded
        #: False when nothing can undo this store's part (it is the only one): a marker then
        #: needs no images.
        self.undoable = undoable
        #: Set by a store that marks this commit under ``token`` (see ``_outcome``): recovery
        #: asks it whether the commit was applied before undoing it.
        self.marked = False
        #: True when the commit's journal record is kept by this store (a shared journal): its
        #: part deletes the record in the same transaction as its writes.
        self.holds_record = False
        #: The before-images of the written keys, once the store has read them under its lock.
        self.images: list[Image] | None = None


def in_doubt(exc: BaseException) -> bool:
    """Whether ``exc`` says a store may or may not have applied a commit (its reply was lost
    and it could not be reached to find out)."""
    return bool(getattr(exc, "in_doubt", False))
