"""What RedisStore and AsyncRedisStore send to Redis, written once: the reserved names, the Lua
scripts and their arguments, and the encoding of TTLs and key patterns.

Both drivers register these scripts on their own client (redis-py or ``redis.asyncio``) and build
the scripts' KEYS and ARGV with the functions here, so a script and its arguments cannot differ
between the two fronts.
"""

from __future__ import annotations

import re
from typing import Any

from ..._marks import KEEP, MISSING, Check, Op

__all__ = ["RESERVED", "META", "LOG", "TX", "SCAN_COUNT", "MARKER_MS", "COMMIT", "COMMIT_MARKED",
           "SETTLE", "FORGET", "REPLACE", "TOUCH", "glob_escape", "ms", "commit_args", "images",
           "name_str", "LOG_TAIL", "log_tail_args", "log_tail_rows", "snapshot_rows"]

RESERVED = "\x00kvstore-"         # kvstore's own names start with this; keys never do
META = RESERVED + "meta\x00"      # locks
LOG = RESERVED + "log\x00"        # logs
TX = RESERVED + "tx\x00"          # transaction commit markers (see COMMIT_MARKED)
SCAN_COUNT = 1000

# How long a marker outlives its commit when nobody removes it: long enough for any stalled
# delivery of the script, or any later recovery of a crashed committer, to find it.
MARKER_MS = 7 * 24 * 3600 * 1000

_GLOB_SPECIAL = re.compile(r"([*?\[\]\\])")


def glob_escape(text: str) -> str:
    """``text`` as a literal in a SCAN/KEYS pattern."""
    return _GLOB_SPECIAL.sub(r"\\\1", text)


def ms(ttl: float) -> int:
    """A TTL in seconds as Redis's milliseconds (at least 1: 0 would mean "no expiry")."""
    return max(1, int(round(ttl * 1000)))


def name_str(name: Any) -> str:
    """A key name as redis-py returns it (bytes without ``decode_responses``) as a string."""
    return name.decode("utf-8", "surrogateescape") if isinstance(name, bytes) else name


# Restore: ARGV[1] the store's key pattern, ARGV[2] a reserved prefix those keys skip ("": none),
# ARGV[3] the store's log pattern ("": logs stay); then "k", name, blob, ms ("": no expiry) per
# key and "l", name, count, blobs... per log. Everything old goes, everything new comes, at once.
REPLACE = """
for _, name in ipairs(redis.call('KEYS', ARGV[1])) do
  if ARGV[2] == '' or string.sub(name, 1, #ARGV[2]) ~= ARGV[2] then redis.call('DEL', name) end
end
if ARGV[3] ~= '' then
  for _, name in ipairs(redis.call('KEYS', ARGV[3])) do redis.call('DEL', name) end
end
local a = 4
while a <= #ARGV do
  if ARGV[a] == 'k' then
    if ARGV[a + 3] == '' then redis.call('SET', ARGV[a + 1], ARGV[a + 2])
    else redis.call('SET', ARGV[a + 1], ARGV[a + 2], 'PX', ARGV[a + 3]) end
    a = a + 4
  else
    local n = tonumber(ARGV[a + 2])
    for i = 1, n do redis.call('RPUSH', ARGV[a + 1], ARGV[a + 2 + i]) end
    a = a + 3 + n
  end
end
return 0
"""
# A new expiry for a live key, or none ("" in ARGV[1]); 0 when the key is missing.
TOUCH = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if ARGV[1] == '' then redis.call('PERSIST', KEYS[1]) else redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return 1
"""

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


def commit_args(prefix: str, checks: list[Check], ops: list[Op]) -> tuple[list[str], list[Any]]:
    """KEYS and ARGV of :data:`COMMIT` for ``checks`` (key, expected blob or MISSING) and
    ``ops`` (key, blob or MISSING, ttl or KEEP or None), keys named ``prefix + key``."""
    args: list[Any] = [len(checks)]
    for _, expected in checks:
        args += ("m", "") if expected is MISSING else ("v", expected)
    for _, blob, ttl in ops:
        if blob is MISSING:
            args += ("d", "", "")
        elif ttl is KEEP:
            args += ("k", blob, "")
        elif ttl is None:
            args += ("n", blob, "")
        else:
            args += ("p", blob, ms(ttl))
    names = [prefix + k for k, _ in checks] + [prefix + k for k, _, _ in ops]
    return names, args


def images(keys: list[str], found: list[Any]) -> list[tuple[str, Any, float | None]]:
    """The before-images of ``keys`` (the distinct written keys, in order) from a marker (see
    COMMIT_MARKED)."""
    out: list[tuple[str, Any, float | None]] = []
    for i in range(1, len(found) - 2, 3):
        flag, blob, pttl = found[i], found[i + 1], int(found[i + 2])
        key = keys[len(out)]
        if flag in (b"m", "m") or pttl == -2:
            out.append((key, MISSING, None))
        else:
            out.append((key, blob, None if pttl < 0 else pttl / 1000.0))
    return out


def snapshot_rows(keys: list[str], results: list[Any]) -> list[tuple[str, Any, float | None]]:
    """``raw_snapshot``'s rows from a pipeline's replies: GET, PTTL for each key in turn."""
    out: list[tuple[str, Any, float | None]] = []
    for i, key in enumerate(keys):
        blob, pttl = results[2 * i], results[2 * i + 1]
        if blob is None or pttl == -2:  # missing, or expired between GET and PTTL
            out.append((key, MISSING, None))
        else:
            out.append((key, blob, None if pttl is None or pttl < 0 else pttl / 1000.0))
    return out


# A log's newest records (seq > ARGV[1], at most ARGV[2]) and where they start: one atomic call,
# so the numbering and the records come from the same state of the list.
LOG_TAIL = """
local n = redis.call('LLEN', KEYS[1])
local start = math.max(tonumber(ARGV[1]), n - tonumber(ARGV[2]))
if start >= n then return {n, {}} end
return {start, redis.call('LRANGE', KEYS[1], start, n - 1)}
"""


def log_tail_args(after: int, limit: int | None) -> list[int]:
    return [after, 2**53 if limit is None else limit]


def log_tail_rows(reply: Any) -> list[tuple[int, Any]]:
    """:data:`LOG_TAIL`'s reply as ``(seq, blob)``, newest first."""
    start, blobs = reply
    return [(int(start) + i, blob) for i, blob in reversed(list(enumerate(blobs, start=1)))]
