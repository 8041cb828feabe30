"""RedisStore: the cache tier on redis-py — a single Redis, a Redis Cluster or a Sentinel primary.

URLs:

- ``redis://[user:password@]host:6379/0``, ``rediss://...`` (TLS), ``unix:///path/redis.sock``
- ``redis+cluster://host:7000`` (or ``rediss+cluster://``; or ``cluster=True`` with a plain URL):
  redis-py's ``RedisCluster``, which discovers the other nodes.
- ``redis+sentinel://host1:26379,host2:26379/<service>/<db>``: the primary that the Sentinels
  name for ``<service>`` (redis-py's ``Sentinel.master_for``), followed across fail-overs.

A URL without a password takes ``REDIS_PASSWORD`` (and ``REDIS_USERNAME``) from the environment,
so secrets need not be written in config files. Passwords never appear in ``repr`` or errors.

Atomic operations: set-if-absent is ``SET NX PX``; compare-and-swap, delete-if-equal and a
transaction's checked commit are one Lua script (:data:`_COMMIT`), which Redis runs without
interleaving any other command. Needs Redis 6.0 or newer (``SET ... KEEPTTL``). On a Cluster a
script can only touch one hash slot: a transaction over keys of several slots is checked and
applied slot by slot, and a conflict in a later slot puts the earlier slots back; keep keys
that must change together in one slot with a hash tag (``conv:{42}:messages``).
Locks are keys under the reserved prefix ``"\x00kvstore-meta\x00" + key_prefix``, which
``keys()`` and ``clear()`` skip.

Every redis-py connection or timeout error becomes :class:`StoreUnavailableError` within the
socket timeouts; redis-py's pool drops broken connections, so the store works again as soon as
Redis is back, without a restart. The store holds at most ``max_connections`` connections (per
node on a cluster); callers beyond that wait up to ``pool_timeout`` seconds for one (see
:mod:`~kvstore.stores.redis_connect`).
"""

from __future__ import annotations

import copy
import re
from contextlib import contextmanager
from typing import Any, Iterator

from .._commit import Before
from .redis_commit import COMMIT as _COMMIT, MarkedCommits
from ..errors import ConfigError, InvalidKeyError, NotAnIntegerError, StoreUnavailableError
from ..serializers import SerializerSpec
from ..store import KEEP, MISSING, TTL, Check, Op, PersistenceStore, conflict, same_blob
from .redis_connect import (DEFAULT_MAX_CONNECTIONS, DEFAULT_POOL_TIMEOUT, POOL_EXHAUSTED,
                            build_client, check_pool, mask_url, pool_options)

__all__ = ["RedisStore"]

_GLOB_SPECIAL = re.compile(r"([*?\[\]\\])")
_SCAN_COUNT = 1000
_RESERVED = "\x00kvstore-"         # kvstore's own names start with this; keys never do
_META = _RESERVED + "meta\x00"      # locks
_LOG = _RESERVED + "log\x00"        # logs
# Restore: ARGV[1] the store's key pattern, ARGV[2] a reserved prefix those keys skip ("": none),
# ARGV[3] the store's log pattern ("": logs stay); then "k", name, blob, ms ("": no expiry) per
# key and "l", name, count, blobs... per log. Everything old goes, everything new comes, at once.
_REPLACE = """
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
_TOUCH = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if ARGV[1] == '' then redis.call('PERSIST', KEYS[1]) else redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return 1
"""


def _glob_escape(text: str) -> str:
    return _GLOB_SPECIAL.sub(r"\\\1", text)


_mask_url = mask_url


def _ms(ttl: float) -> int:
    return max(1, int(round(ttl * 1000)))


class RedisStore(MarkedCommits, PersistenceStore):
    """Keys in Redis, with native TTLs.

    Args:
        url: where Redis is (see the module docstring for cluster and Sentinel URLs).
        ttl_default: TTL for ``save`` without one (default 3600 s; None: permanent).
        serializer: format name or :class:`~kvstore.Serializer` (default msgpack).
        key_prefix: a namespace: every key is stored as ``key_prefix + key``; ``keys()`` and
            ``clear()`` never see or touch keys outside it, so applications can share a Redis.
        cluster: True for a Redis Cluster (also implied by a ``redis+cluster://`` URL).
        client: an existing redis-py client to use instead of ``url`` (e.g. ``fakeredis``).
        socket_timeout / connect_timeout: seconds before a call or a connection attempt gives
            :class:`StoreUnavailableError` (nothing hangs).
        max_connections: connections this store opens at most (default 50; also
            ``?max_connections=N`` in the URL). More threads or tasks than that wait for one.
        pool_timeout: seconds a call waits for a free connection before
            :class:`StoreUnavailableError` naming both settings (default 5; ``?pool_timeout=``).
        **client_options: passed to redis-py (``ssl_ca_certs``, ``health_check_interval``...).
    """

    durable = True  # data outlives this object and this process (on the server)

    def __init__(self, url: str = "redis://localhost:6379/0", ttl_default: TTL = 3600,
                 serializer: SerializerSpec = "msgpack", key_prefix: str = "", *,
                 secret: bytes | str | None = None, cluster: bool | None = None,
                 client: Any = None, socket_timeout: float = 5.0, connect_timeout: float = 2.0,
                 max_connections: int | None = None,
                 pool_timeout: float = DEFAULT_POOL_TIMEOUT, **client_options: Any) -> None:
        super().__init__(ttl_default=ttl_default, serializer=serializer, secret=secret)
        try:
            import redis
        except ImportError as exc:  # pragma: no cover - redis is a core dependency
            raise ConfigError("RedisStore needs redis-py: pip install redis") from exc
        if not isinstance(key_prefix, str):
            raise ConfigError(f"key_prefix: expected a string, got {key_prefix!r}")
        self._redis = redis
        self.key_prefix = key_prefix
        self._prefix_len = len(key_prefix)
        # Pool settings in the URL (one string for adapters) win over the arguments.
        url, from_url = pool_options(url)
        self.url = url if client is None else f"<client {type(client).__name__}>"
        self._errors_to_catch: tuple[type[BaseException], ...] = (
            redis.exceptions.ConnectionError, redis.exceptions.TimeoutError,
            redis.exceptions.BusyLoadingError, redis.exceptions.ClusterDownError,
            redis.exceptions.TryAgainError, redis.exceptions.MasterDownError,
            redis.exceptions.ReadOnlyError, ConnectionError, TimeoutError, OSError)
        try:
            from redis.exceptions import MaxConnectionsError  # redis-py >= 5.1

            self._errors_to_catch += (MaxConnectionsError,)
        except ImportError:  # pragma: no cover
            pass
        if max_connections is None:  # before it was a setting, it was a redis-py option
            max_connections = client_options.pop("max_connections", DEFAULT_MAX_CONNECTIONS)
        self.max_connections, self.pool_timeout = check_pool(
            from_url.get("max_connections", max_connections),
            from_url.get("pool_timeout", pool_timeout))
        self._settings = (url, cluster, socket_timeout, connect_timeout, self.max_connections,
                          self.pool_timeout, client_options)
        if client is not None:
            self._client = client
            self.cluster = bool(cluster) or client.__class__.__name__ == "RedisCluster"
        else:
            self._client, self.cluster = self._connect(*self._settings)
        # With a key_prefix that the lock namespace starts with (e.g. ""), a key could name a
        # lock record: such keys are refused, and keys()/clear() skip the namespace.
        self._guard = _RESERVED.startswith(key_prefix) or key_prefix.startswith(_RESERVED)
        self._commit_script = self._client.register_script(_COMMIT)
        self._touch_script = self._client.register_script(_TOUCH)
        self._register_marked(socket_timeout, connect_timeout)

    # -- connecting ----------------------------------------------------------------------------------

    def _connect(self, url: str, cluster: bool | None, socket_timeout: float,
                 connect_timeout: float, max_connections: int, pool_timeout: float,
                 options: dict[str, Any], asyncio: bool = False) -> tuple[Any, bool]:
        """A redis-py client for ``url`` (``asyncio=True``: its ``redis.asyncio`` twin, built
        from the same settings for the asyncio front) and whether it is a cluster client."""
        try:
            return build_client(url, cluster, socket_timeout, connect_timeout, max_connections,
                                pool_timeout, options, asyncio)
        except ValueError as exc:
            raise ConfigError(f"url: {_mask_url(url)!r}: {exc}") from exc
        except self._errors_to_catch + (self._redis.exceptions.RedisClusterException,) as exc:
            raise StoreUnavailableError(f"Redis at {_mask_url(url)} is unavailable: {exc}") from exc

    def describe(self) -> str:
        extra = ", cluster=True" if self.cluster else ""
        return f"url={_mask_url(self.url)!r}, key_prefix={self.key_prefix!r}{extra}"

    def _unavailable(self, exc: BaseException) -> StoreUnavailableError:
        where = "Redis Cluster" if self.cluster else "Redis"
        if POOL_EXHAUSTED in str(exc):
            return self._pool_exhausted(exc)
        return StoreUnavailableError(f"{where} at {_mask_url(self.url)} is unavailable: {exc}")

    def _pool_exhausted(self, exc: BaseException | None = None) -> StoreUnavailableError:
        """All ``max_connections`` stayed busy for ``pool_timeout`` seconds (nothing was sent)."""
        return StoreUnavailableError(
            f"Redis at {_mask_url(self.url)}: no connection came free within "
            f"pool_timeout={self.pool_timeout:g}s (all max_connections={self.max_connections} "
            "in use); raise redis.max_connections or redis.pool_timeout"
            + (f": {exc}" if exc is not None else ""))

    @contextmanager
    def _call(self) -> Iterator[Any]:
        """The client; redis-py connection failures become StoreUnavailableError."""
        try:
            yield self._client
        except self._errors_to_catch as exc:
            raise self._unavailable(exc) from exc
        except self._redis.exceptions.RedisClusterException as exc:
            raise self._unavailable(exc) from exc

    # -- byte-level operations -----------------------------------------------------------------------

    def _k(self, key: str) -> str:
        return self.key_prefix + key

    def check_key(self, key: Any) -> None:
        super().check_key(key)
        if self._guard and (self.key_prefix + key).startswith(_RESERVED):
            raise InvalidKeyError(f"key {key!r} is in kvstore's reserved namespace "
                                  "(locks and logs)")

    # get and set catch errors inline: a generator-based context manager costs more than
    # everything else kvstore adds to a round trip.
    def raw_get(self, key: str) -> Any:
        try:
            blob = self._client.get(self.key_prefix + key)
        except self._errors_to_catch as exc:
            raise self._unavailable(exc) from exc
        except self._redis.exceptions.RedisClusterException as exc:
            raise self._unavailable(exc) from exc
        return MISSING if blob is None else blob

    def raw_get_many(self, keys: list[str]) -> dict[str, Any]:
        with self._call() as r:
            names = [self._k(k) for k in keys]
            blobs = r.mget_nonatomic(names) if self.cluster else r.mget(names)
        return {k: b for k, b in zip(keys, blobs) if b is not None}

    def raw_set(self, key: str, blob: Any, ttl: float | None) -> None:
        try:
            if ttl is None:
                self._client.set(self.key_prefix + key, blob)
            else:
                self._client.set(self.key_prefix + key, blob, px=_ms(ttl))
        except self._errors_to_catch as exc:
            raise self._unavailable(exc) from exc
        except self._redis.exceptions.RedisClusterException as exc:
            raise self._unavailable(exc) from exc

    def _pipeline(self, r: Any) -> Any:
        # Single node: MULTI/EXEC, so the batch is atomic. Cluster: a pipeline per slot (redis-py
        # groups by node); atomic per slot only.
        return r.pipeline(transaction=not self.cluster)

    def raw_set_many(self, items: list[tuple[str, Any]], ttl: float | None) -> None:
        with self._call() as r:
            if ttl is None and not self.cluster:  # one MSET: atomic, and the fewest bytes
                prefix, args = self.key_prefix, list[Any]()
                for key, blob in items:
                    args += (prefix + key, blob)
                r.execute_command("MSET", *args)
                return
            pipe, prefix = self._pipeline(r), self.key_prefix
            command = pipe.execute_command  # the same SET [PX] as pipe.set, without its options
            if ttl is None:
                for key, blob in items:
                    command("SET", prefix + key, blob)
            else:
                px = _ms(ttl)
                for key, blob in items:
                    command("SET", prefix + key, blob, "PX", px)
            pipe.execute()

    def raw_delete(self, key: str) -> bool:
        with self._call() as r:
            return bool(r.delete(self._k(key)))

    def raw_delete_many(self, keys: list[str]) -> int:
        with self._call() as r:
            return self._remove(r, [self._k(k) for k in keys], "delete")

    def raw_exists(self, key: str) -> bool:
        with self._call() as r:
            return bool(r.exists(self._k(key)))

    def raw_ttl(self, key: str) -> float | None:
        with self._call() as r:
            ms = r.pttl(self._k(key))
        return None if ms is None or ms < 0 else ms / 1000.0

    def raw_incr(self, key: str, amount: int, ttl: float | None) -> int:
        name = self._k(key)
        try:
            with self._call() as r:
                if ttl is None:
                    return int(r.incrby(name, amount))
                # A new counter gets the ttl (SET NX does nothing when the key exists, so an
                # existing key keeps its TTL); MULTI makes both steps one atomic unit.
                pipe = r.pipeline(transaction=True)
                pipe.set(name, 0, nx=True, px=_ms(ttl))
                pipe.incrby(name, amount)
                return int(pipe.execute()[1])
        except self._redis.exceptions.ResponseError as exc:
            if "not an integer" in str(exc) or "out of range" in str(exc):
                raise NotAnIntegerError(f"incr {key!r}: stored value is not an integer") from exc
            raise

    def _scan(self, r: Any, prefix: str) -> Iterator[str]:
        pattern = _glob_escape(self.key_prefix + prefix) + "*"
        guard = self._guard
        for name in r.scan_iter(match=pattern, count=_SCAN_COUNT):
            if isinstance(name, bytes):
                name = name.decode("utf-8", "surrogateescape")
            if guard and name.startswith(_RESERVED):
                continue
            yield name

    def raw_keys(self, prefix: str) -> Iterator[str]:
        with self._call() as r:
            names = list(self._scan(r, prefix))
        n = self._prefix_len
        return iter(sorted(name[n:] for name in names))

    def raw_clear(self, prefix: str) -> int:
        removed = 0
        with self._call() as r:
            batch: list[str] = []
            for name in self._scan(r, prefix):
                batch.append(name)
                if len(batch) >= 500:
                    removed += self._remove(r, batch, "unlink")
                    batch = []
            if batch:
                removed += self._remove(r, batch, "unlink")
        return removed

    def _remove(self, r: Any, names: list[str], command: str) -> int:
        """DEL/UNLINK ``names``: one command on a single node; per key in a cluster pipeline
        (keys of different slots cannot share one command)."""
        if not self.cluster:
            return int(getattr(r, command)(*names))
        pipe = r.pipeline(transaction=False)
        for name in names:
            getattr(pipe, command)(name)
        return sum(int(n) for n in pipe.execute())

    # -- atomic operations ---------------------------------------------------------------------------

    def raw_add(self, key: str, blob: Any, ttl: float | None) -> bool:
        with self._call() as r:
            return bool(r.set(self._k(key), blob, nx=True, px=None if ttl is None else _ms(ttl)))

    def raw_cas(self, key: str, expected: Any, new: Any, ttl: Any) -> bool:
        with self._call():
            return self._run_commit([(key, expected)], [(key, new, ttl)]) is None

    def raw_touch(self, key: str, ttl: float | None) -> bool:
        with self._call() as r:
            if ttl is not None:
                return bool(r.pexpire(self._k(key), _ms(ttl)))
            return bool(self._touch_script(keys=[self._k(key)], args=[""]))

    def _connect_async(self) -> Any:
        """A ``redis.asyncio`` client with this store's settings (for the asyncio front)."""
        return self._connect(*self._settings, asyncio=True)[0]

    def _run_commit(self, checks: list[Check], ops: list[Op]) -> str | None:
        """One run of the commit script; the key of the first failed check, or None."""
        names, args = self._commit_args(checks, ops)
        failed = int(self._commit_script(keys=names, args=args))
        return None if failed == 0 else checks[failed - 1][0]

    def _commit_args(self, checks: list[Check], ops: list[Op]) -> tuple[list[str], list[Any]]:
        """KEYS and ARGV of the commit script (see :data:`_COMMIT`)."""
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
                args += ("p", blob, _ms(ttl))
        names = [self._k(k) for k, _ in checks] + [self._k(k) for k, _, _ in ops]
        return names, args

    optimistic = True
    shares_data = True

    @contextmanager
    def raw_commit(self, ops: list[Op], checks: list[Check],
                    before: Before | None = None) -> Iterator[None]:
        # Nothing to lock: the caller's block runs first, then one script checks and writes
        # (and, for a transaction, returns the before-images and records them in a marker).
        if before is not None and self.cluster:
            # A script cannot span slots, so a cluster has no marker: the images are read here,
            # before the journal records them (a save landing before the commit can be lost
            # to an undo; keep such keys on a single node).
            before.images = self.raw_snapshot(list(dict.fromkeys(k for k, _, _ in ops)))
        elif before is not None:
            before.marked = True
        yield
        if before is not None and not self.cluster:
            self._commit_marked(ops, checks, before)
            return
        with self._call() as r:
            if not self.cluster:
                failed = self._run_commit(checks, ops)
                if failed is not None:
                    raise conflict(failed)
                return
            self._commit_by_slot(r, ops, checks)

    def _commit_by_slot(self, r: Any, ops: list[Op], checks: list[Check]) -> None:
        slots: dict[int, tuple[list[Check], list[Op]]] = {}
        for check in checks:
            slots.setdefault(r.keyslot(self._k(check[0])), ([], []))[0].append(check)
        for op in ops:
            slots.setdefault(r.keyslot(self._k(op[0])), ([], []))[1].append(op)
        if len(slots) == 1:
            failed = self._run_commit(checks, ops)
            if failed is not None:
                raise conflict(failed)
            return
        before = self.raw_snapshot(list(dict.fromkeys(k for k, _, _ in ops)))
        for key, expected in checks:  # fail early, before any slot is written
            if not same_blob(self.raw_get(key), expected):
                raise conflict(key)
        applied: list[Op] = []
        for slot_checks, slot_ops in slots.values():
            failed = self._run_commit(slot_checks, slot_ops)
            if failed is not None:
                self.raw_undo(applied, before)
                raise conflict(failed)
            applied.extend(slot_ops)

    def raw_put_rows(self, rows: list[tuple[str, Any, float | None]]) -> None:
        # Bulk writes: one MSET for the keys without expiry and SET ... PX for the others, in
        # one MULTI/EXEC (atomic on a single node; per node on a cluster), one round trip.
        rows = list({key: (key, blob, ttl) for key, blob, ttl in rows}.values())  # last wins
        with self._call() as r:
            pipe = self._pipeline(r)
            if self.cluster:
                for key, blob, ttl in rows:
                    pipe.set(self._k(key), blob, px=None if ttl is None else _ms(ttl))
            else:
                permanent = {self._k(k): b for k, b, t in rows if t is None}
                if permanent:
                    pipe.mset(permanent)
                for key, blob, ttl in rows:
                    if ttl is not None:
                        pipe.set(self._k(key), blob, px=_ms(ttl))
            pipe.execute()

    # -- logs: one Redis list per log ----------------------------------------------------------------
    # A list rather than a stream: RPUSH answers the new length, which is the record's dense
    # sequence number (stream IDs are timestamps), and LRANGE pages by position, so append and
    # read are one round trip each. The lists live under a reserved prefix keys() never lists.

    def _log_key(self, name: str) -> str:
        return _LOG + self.key_prefix + name

    def raw_log_append(self, name: str, blob: Any) -> int:
        with self._call() as r:
            return int(r.rpush(self._log_key(name), blob))

    def raw_log_read(self, name: str, after: int, limit: int | None) -> list[tuple[int, Any]]:
        end = -1 if limit is None else after + limit - 1
        with self._call() as r:
            blobs = r.lrange(self._log_key(name), after, end)
        return [(after + 1 + i, blob) for i, blob in enumerate(blobs)]

    def raw_log_len(self, name: str) -> int:
        with self._call() as r:
            return int(r.llen(self._log_key(name)))

    def raw_log_delete(self, name: str) -> bool:
        with self._call() as r:
            return bool(r.delete(self._log_key(name)))

    def raw_log_names(self, prefix: str) -> list[str]:
        start = len(_LOG + self.key_prefix)
        with self._call() as r:
            found = r.scan_iter(match=_glob_escape(self._log_key(prefix)) + "*", count=_SCAN_COUNT)
            names = [n.decode("utf-8", "surrogateescape") if isinstance(n, bytes) else n
                     for n in found]
        return sorted(n[start:] for n in names)

    def open_meta(self) -> "RedisStore":
        meta = copy.copy(self)
        meta.__dict__.pop("_meta_store", None)
        meta.key_prefix = _META + self.key_prefix
        meta._prefix_len = len(meta.key_prefix)
        meta._guard = False
        meta.serializer = None
        return meta

    def lock_id(self) -> str:
        return f"redis:{_mask_url(self.url)}:{self.key_prefix}"

    def raw_snapshot(self, keys: list[str]) -> list[tuple[str, Any, float | None]]:
        with self._call() as r:
            pipe = r.pipeline(transaction=False)
            for key in keys:
                pipe.get(self._k(key))
                pipe.pttl(self._k(key))
            results = pipe.execute()
        out: list[tuple[str, Any, float | None]] = []
        for i, key in enumerate(keys):
            blob, ms = results[2 * i], results[2 * i + 1]
            if blob is None or ms == -2:  # missing, or expired between GET and PTTL
                out.append((key, MISSING, None))
            else:
                out.append((key, blob, None if ms is None or ms < 0 else ms / 1000.0))
        return out

    # -- restores: everything replaced by one script ---------------------------------------------------

    def raw_replace_all(self, rows: Any, logs: Any) -> None:
        if self.cluster:  # a script cannot span slots: copy first, put back on failure
            return super().raw_replace_all(rows, logs)
        args: list[Any] = [_glob_escape(self.key_prefix) + "*", _RESERVED if self._guard else "",
                           "" if logs is None else _glob_escape(self._log_key("")) + "*"]
        for key, blob, ttl in rows:
            args += ("k", self._k(key), blob, "" if ttl is None else _ms(ttl))
        for name, blobs in logs or ():
            args += ("l", self._log_key(name), len(blobs), *blobs)
        with self._call():
            self._replace_script(args=args)

    @property
    def _replace_script(self) -> Any:
        script = self.__dict__.get("_replace_sha")
        if script is None:
            script = self.__dict__["_replace_sha"] = self._client.register_script(_REPLACE)
        return script

    def close(self) -> None:
        try:
            self._client.close()
        except Exception:  # closing a dead connection must not raise
            pass

