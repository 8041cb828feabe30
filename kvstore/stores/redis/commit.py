"""RedisStore's transaction commits: one script that checks, records and writes, and settles.

A transaction's commit to Redis is one Lua script (:data:`~.scripts.COMMIT_MARKED`) that also
writes a per-commit *marker* (``"\\x00kvstore-tx\\x00" + key_prefix + token``) holding what the
written keys held before. When its reply is lost (a timeout, a dropped connection) the outcome
is settled, never guessed: a second script (:data:`~.scripts.SETTLE`) finds the marker (the
commit ran: it goes on) or leaves a tombstone that makes the first script refuse to run should it
still arrive (it did not: every store is put back). The journal's recovery asks the same question
(:meth:`MarkedCommits.raw_outcome`) before undoing a crashed committer's Redis part.
"""

from __future__ import annotations

import time
from typing import Any

from ..._commit import Before
from ...errors import StoreUnavailableError
from ...store import Check, Op, conflict
from .scripts import COMMIT_MARKED, FORGET, MARKER_MS, SETTLE, TX, commit_args, images

__all__ = ["MarkedCommits"]


class MarkedCommits:
    """Mixed into :class:`~kvstore.stores.redis.RedisStore`: its marked commits."""

    # Provided by RedisStore.
    _client: Any
    unavailable_errors: tuple[type[BaseException], ...]
    url: str
    key_prefix: str
    cluster: bool

    def _call(self) -> Any:
        raise NotImplementedError

    def _masked_url(self) -> str:
        from ...config import mask_secrets

        return mask_secrets(self.url)

    def _register_marked(self, socket_timeout: float, connect_timeout: float) -> None:
        self._marked_script = self._client.register_script(COMMIT_MARKED)
        self._settle_script = self._client.register_script(SETTLE)
        self._forget_script = self._client.register_script(FORGET)
        # A marker no journal records is only asked by its own call, within its settle
        # attempts (three, each a reconnect and a socket timeout at most): it expires after.
        self._settle_ms = int(max(10.0, 4 * (socket_timeout + connect_timeout)) * 1000)

    def _marker(self, token: str) -> str:
        return TX + self.key_prefix + token

    def _commit_marked(self, ops: list[Op], checks: list[Check], before: Before) -> None:
        """One run of the marked commit script. A lost reply (a timeout, a dropped connection)
        does not mean "not applied": the marker settles it, and only an unreachable Redis
        leaves the outcome in doubt (a StoreUnavailableError with ``in_doubt = True``)."""
        names, args = commit_args(self.key_prefix, checks, ops)
        marker = self._marker(before.token)
        try:
            result = self._marked_script(keys=[*names, marker], args=[
                args[0], MARKER_MS if before.recorded else self._settle_ms,
                "1" if before.undoable else "0", *args[1:]])
        except self.unavailable_errors as exc:
            result = self._settle(marker, exc)
        if isinstance(result, list):
            before.images = images(list(dict.fromkeys(k for k, _, _ in ops)), result)
            return
        if int(result) == -1:
            raise StoreUnavailableError(f"Redis at {self._masked_url()}: this commit was settled "
                                        "as not applied; nothing was written")
        raise conflict(checks[int(result) - 1][0])

    def _settle(self, marker: str, lost: BaseException) -> Any:
        """After a commit's reply was lost: its images when it ran, else 0 (it never will)."""
        error: BaseException = lost
        for attempt in range(3):
            try:
                return self._settle_script(keys=[marker], args=[MARKER_MS])
            except self.unavailable_errors as exc:
                error = exc
                time.sleep(0.05 * (attempt + 1))
        doubt = StoreUnavailableError(
            f"Redis at {self._masked_url()}: the reply to a commit was lost ({lost}) and Redis "
            f"could not be reached to find out whether it was applied ({error})")
        doubt.in_doubt = True  # type: ignore[attr-defined]
        raise doubt from lost

    def raw_outcome(self, token: str, keys: list[str]) -> list[tuple[str, Any, float | None]] | None:
        with self._call():
            result = self._settle_script(keys=[self._marker(token)], args=[MARKER_MS])
        return images(keys, result) if isinstance(result, list) else None

    def raw_forget(self, token: str) -> None:
        if self.cluster:
            return
        try:
            self._forget_script(keys=[self._marker(token)])
        except self.unavailable_errors:  # it expires on its own
            pass
