"""RedisStore's transaction commits: one script that checks, records and writes, and settles.

A transaction's commit to Redis is one Lua script (:data:`COMMIT_MARKED`) that also writes a
per-commit *marker* (``"\\x00kvstore-tx\\x00" + key_prefix + token``) holding what the
written keys held before. When its reply is lost (a timeout, a dropped connection) the outcome
is settled, never guessed: a second script (:data:`SETTLE`) finds the marker (the commit ran:
it goes on) or leaves a tombstone that makes the first script refuse to run should it still
arrive (it did not: every store is put back). The journal's recovery asks the same question
(:meth:`MarkedCommits.raw_outcome`) before undoing a crashed committer's Redis part.
"""

from __future__ import annotations

import time
from typing import Any

from .._commit import Before
from ..errors import StoreUnavailableError
from ..store import MISSING, Check, Op, conflict

__all__ = ["COMMIT", "COMMIT_MARKED", "SETTLE", "FORGET", "MarkedCommits"]

_TX = "\x00kvstore-tx\x00"  # in RedisStore's reserved namespace: keys() and clear() skip it

# How long a marker outlives its commit when nobody removes it: long enough for any stalled
# delivery of the script, or any later recovery of a crashed committer, to find it.
_MARKER_MS = 7 * 24 * 3600 * 1000

# KEYS: the checked keys, then the written keys. ARGV[1]: how many checks; then per check a flag
# ("m": must be absent, "v": must hold the next argument) and a blob; then per write a mode
# ("d" delete, "k" keep the TTL, "p" expire in ARGV ms, "n" no expiry), a blob and a TTL in ms.
# Returns 0 when written, else the number of the first check that failed (nothing written).
# The two loops (with ``n`` checks, ARGV position ``a``, written keys up to ``last``) are shared
# with COMMIT_MARKED.
_CHECKS = """
for i = 1, n do
  local cur = redis.call('GET', KEYS[i])
  if ARGV[a] == 'm' then
    if cur then return i end
  elseif cur ~= ARGV[a + 1] then
    return i
  end
  a = a + 2
end
"""
_WRITES = """
for i = n + 1, last do
  local mode = ARGV[a]
  if mode == 'd' then redis.call('DEL', KEYS[i])
  elseif mode == 'k' then redis.call('SET', KEYS[i], ARGV[a + 1], 'KEEPTTL')
  elseif mode == 'p' then redis.call('SET', KEYS[i], ARGV[a + 1], 'PX', ARGV[a + 2])
  else redis.call('SET', KEYS[i], ARGV[a + 1]) end
  a = a + 3
end
"""
COMMIT = ("local n, a, last = tonumber(ARGV[1]), 2, #KEYS" + _CHECKS + _WRITES + "return 0\n")
# A transaction's commit: as COMMIT, plus one last key, the commit's marker, its TTL in ARGV[2]
# and in ARGV[3] '1' to keep the images in it (the checks' flags start at ARGV[4]). Before
# writing, it reads what every written key holds: 'ran', then per distinct written key (in
# order) 'v' and the blob and the PTTL, or 'm' '' '-2' for an absent key; the marker is a list
# of these (or of 'ran' alone, for a commit nothing can undo). It returns them; the number of the
# first failed check; or -1 when the marker was settled as "never ran" (see SETTLE). A marker
# that is already a list (this commit ran) is returned as it is: a commit runs once.
COMMIT_MARKED = """
local marker = KEYS[#KEYS]
local kind = redis.call('TYPE', marker).ok
if kind == 'list' then return redis.call('LRANGE', marker, 0, -1) end
if kind ~= 'none' then return -1 end
local n, a, last = tonumber(ARGV[1]), 4, #KEYS - 1
""" + _CHECKS + """
local images, seen = {'ran'}, {}
for i = n + 1, last do
  local k = KEYS[i]
  if not seen[k] then
    seen[k] = true
    local cur = redis.call('GET', k)
    if cur then
      images[#images + 1] = 'v'
      images[#images + 1] = cur
      images[#images + 1] = tostring(redis.call('PTTL', k))
    else
      images[#images + 1] = 'm'
      images[#images + 1] = ''
      images[#images + 1] = '-2'
    end
  end
end
""" + _WRITES + """
local kept = ARGV[3] == '1' and #images or 1
for i = 1, kept, 300 do
  redis.call('RPUSH', marker, unpack(images, i, math.min(i + 299, kept)))
end
redis.call('PEXPIRE', marker, ARGV[2])
return images
"""
# Settles a commit whose reply was lost: when its marker is a list the commit ran (its images
# are returned); otherwise a tombstone is left (ARGV[1]: its TTL in ms), so the script, should
# it still arrive, refuses to run, and 0 is returned.
SETTLE = """
local kind = redis.call('TYPE', KEYS[1]).ok
if kind == 'list' then return redis.call('LRANGE', KEYS[1], 0, -1) end
if kind == 'none' then redis.call('SET', KEYS[1], 'never ran', 'PX', ARGV[1]) end
return 0
"""
# Drops the marker of a commit that is over, unless it is a tombstone (which must keep
# refusing a late delivery of the script until it expires).
FORGET = """
if redis.call('TYPE', KEYS[1]).ok == 'list' then return redis.call('DEL', KEYS[1]) end
return 0
"""


def _images(keys: list[str], found: list[Any]) -> list[tuple[str, Any, float | None]]:
    """The before-images of ``keys`` (the distinct written keys, in order) from a marker (see
    _COMMIT_MARKED)."""
    out: list[tuple[str, Any, float | None]] = []
    for i in range(1, len(found) - 2, 3):
        flag, blob, ms = found[i], found[i + 1], int(found[i + 2])
        key = keys[len(out)]
        if flag in (b"m", "m") or ms == -2:
            out.append((key, MISSING, None))
        else:
            out.append((key, blob, None if ms < 0 else ms / 1000.0))
    return out


class MarkedCommits:
    """Mixed into :class:`~kvstore.stores.redis.RedisStore`: its marked commits."""

    # Provided by RedisStore.
    _client: Any
    _errors_to_catch: tuple[type[BaseException], ...]
    url: str
    key_prefix: str
    cluster: bool

    def _commit_args(self, checks: list[Check], ops: list[Op]) -> tuple[list[str], list[Any]]:
        raise NotImplementedError

    def _call(self) -> Any:
        raise NotImplementedError

    def _masked_url(self) -> str:
        from ..config import mask_secrets

        return mask_secrets(self.url)

    def _register_marked(self, socket_timeout: float, connect_timeout: float) -> None:
        self._marked_script = self._client.register_script(COMMIT_MARKED)
        self._settle_script = self._client.register_script(SETTLE)
        self._forget_script = self._client.register_script(FORGET)
        # A marker no journal records is only asked by its own call, within its settle
        # attempts (three, each a reconnect and a socket timeout at most): it expires after.
        self._settle_ms = int(max(10.0, 4 * (socket_timeout + connect_timeout)) * 1000)

    def _marker(self, token: str) -> str:
        return _TX + self.key_prefix + token

    def _commit_marked(self, ops: list[Op], checks: list[Check], before: Before) -> None:
        """One run of the marked commit script. A lost reply (a timeout, a dropped connection)
        does not mean "not applied": the marker settles it, and only an unreachable Redis
        leaves the outcome in doubt (a StoreUnavailableError with ``in_doubt = True``)."""
        names, args = self._commit_args(checks, ops)
        marker = self._marker(before.token)
        try:
            result = self._marked_script(keys=[*names, marker], args=[
                args[0], _MARKER_MS if before.recorded else self._settle_ms,
                "1" if before.undoable else "0", *args[1:]])
        except self._errors_to_catch as exc:
            result = self._settle(marker, exc)
        if isinstance(result, list):
            before.images = _images(list(dict.fromkeys(k for k, _, _ in ops)), result)
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
                return self._settle_script(keys=[marker], args=[_MARKER_MS])
            except self._errors_to_catch as exc:
                error = exc
                time.sleep(0.05 * (attempt + 1))
        doubt = StoreUnavailableError(
            f"Redis at {self._masked_url()}: the reply to a commit was lost ({lost}) and Redis "
            f"could not be reached to find out whether it was applied ({error})")
        doubt.in_doubt = True  # type: ignore[attr-defined]
        raise doubt from lost

    def raw_outcome(self, token: str, keys: list[str]) -> list[tuple[str, Any, float | None]] | None:
        with self._call():
            result = self._settle_script(keys=[self._marker(token)], args=[_MARKER_MS])
        return _images(keys, result) if isinstance(result, list) else None

    def raw_forget(self, token: str) -> None:
        if self.cluster:
            return
        try:
            self._forget_script(keys=[self._marker(token)])
        except self._errors_to_catch:  # it expires on its own
            pass
