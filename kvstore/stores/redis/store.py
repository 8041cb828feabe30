"""RedisStore: the synchronous Redis driver on redis-py (see :mod:`kvstore.stores.redis`)."""

from __future__ import annotations

import copy
from contextlib import contextmanager
from typing import Any, Iterator

from ..._commit import Before
from ...errors import ConfigError, InvalidKeyError, NotAnIntegerError, StoreUnavailableError
from ...serializers import SerializerSpec
from ...store import MISSING, TTL, Check, Op, PersistenceStore, conflict, same_blob
from .commit import MarkedCommits
from .connect import (DEFAULT_MAX_CONNECTIONS, DEFAULT_POOL_TIMEOUT, POOL_EXHAUSTED,
                      build_client, check_pool, mask_url, pool_options)
from .scripts import (COMMIT, LOG, LOG_TAIL, META, REPLACE, RESERVED, SCAN_COUNT, TOUCH,
                      commit_args, glob_escape, log_tail_args, log_tail_rows, ms, name_str,
                      snapshot_rows)

__all__ = ["RedisStore"]


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
        self.unavailable_errors: tuple[type[BaseException], ...] = (
            redis.exceptions.ConnectionError, redis.exceptions.TimeoutError,
            redis.exceptions.BusyLoadingError, redis.exceptions.ClusterDownError,
            redis.exceptions.TryAgainError, redis.exceptions.MasterDownError,
            redis.exceptions.ReadOnlyError, ConnectionError, TimeoutError, OSError)
        try:
            from redis.exceptions import MaxConnectionsError  # redis-py >= 5.1

            self.unavailable_errors += (MaxConnectionsError,)
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
        self.reserved_guard = RESERVED.startswith(key_prefix) or key_prefix.startswith(RESERVED)
        self._commit_script = self._client.register_script(COMMIT)
        self._touch_script = self._client.register_script(TOUCH)
        self._tail_script = self._client.register_script(LOG_TAIL)
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
        except ConfigError:
            raise  # already names the setting (url: unknown scheme 'http' ...)
        except ValueError as exc:
            raise ConfigError(f"url: {mask_url(url)!r}: {exc}") from exc
        except self.unavailable_errors + (self._redis.exceptions.RedisClusterException,) as exc:
            raise StoreUnavailableError(f"Redis at {mask_url(url)} is unavailable: {exc}") from exc

    @property
    def client(self) -> Any:
        """The redis-py client (a layer over this store, such as the near cache's invalidation
        channel, opens dedicated connections with its pools' settings)."""
        return self._client

    def describe(self) -> str:
        extra = ", cluster=True" if self.cluster else ""
        return f"url={mask_url(self.url)!r}, key_prefix={self.key_prefix!r}{extra}"

    def unavailable(self, exc: BaseException) -> StoreUnavailableError:
        """The StoreUnavailableError for redis-py's ``exc`` (one of :attr:`unavailable_errors`
        or a cluster error), naming this store's masked URL; both drivers raise it."""
        where = "Redis Cluster" if self.cluster else "Redis"
        if POOL_EXHAUSTED in str(exc):
            return self.pool_exhausted(exc)
        return StoreUnavailableError(f"{where} at {mask_url(self.url)} is unavailable: {exc}")

    def pool_exhausted(self, exc: BaseException | None = None) -> StoreUnavailableError:
        """All ``max_connections`` stayed busy for ``pool_timeout`` seconds (nothing was sent)."""
        return StoreUnavailableError(
            f"Redis at {mask_url(self.url)}: no connection came free within "
            f"pool_timeout={self.pool_timeout:g}s (all max_connections={self.max_connections} "
            "in use); raise redis.max_connections or redis.pool_timeout"
            + (f": {exc}" if exc is not None else ""))

    @contextmanager
    def _call(self) -> Iterator[Any]:
        """The client; redis-py connection failures become StoreUnavailableError."""
        try:
            yield self._client
        except self.unavailable_errors as exc:
            raise self.unavailable(exc) from exc
        except self._redis.exceptions.RedisClusterException as exc:
            raise self.unavailable(exc) from exc

    # -- byte-level operations -----------------------------------------------------------------------

    def _k(self, key: str) -> str:
        return self.key_prefix + key

    def check_key(self, key: Any) -> None:
        super().check_key(key)
        if self.reserved_guard and (self.key_prefix + key).startswith(RESERVED):
            raise InvalidKeyError(f"key {key!r} is in kvstore's reserved namespace "
                                  "(locks and logs)")

    # get and set catch errors inline: a generator-based context manager costs more than
    # everything else kvstore adds to a round trip.
    def raw_get(self, key: str) -> Any:
        try:
            blob = self._client.get(self.key_prefix + key)
        except self.unavailable_errors as exc:
            raise self.unavailable(exc) from exc
        except self._redis.exceptions.RedisClusterException as exc:
            raise self.unavailable(exc) from exc
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
                self._client.set(self.key_prefix + key, blob, px=ms(ttl))
        except self.unavailable_errors as exc:
            raise self.unavailable(exc) from exc
        except self._redis.exceptions.RedisClusterException as exc:
            raise self.unavailable(exc) from exc

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
                px = ms(ttl)
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
            pttl = r.pttl(self._k(key))
        return None if pttl is None or pttl < 0 else pttl / 1000.0

    def raw_incr(self, key: str, amount: int, ttl: float | None) -> int:
        name = self._k(key)
        try:
            with self._call() as r:
                if ttl is None:
                    return int(r.incrby(name, amount))
                # A new counter gets the ttl (SET NX does nothing when the key exists, so an
                # existing key keeps its TTL); MULTI makes both steps one atomic unit.
                pipe = r.pipeline(transaction=True)
                pipe.set(name, 0, nx=True, px=ms(ttl))
                pipe.incrby(name, amount)
                return int(pipe.execute()[1])
        except self._redis.exceptions.ResponseError as exc:
            if "not an integer" in str(exc) or "out of range" in str(exc):
                raise NotAnIntegerError(f"incr {key!r}: stored value is not an integer") from exc
            raise

    def _scan(self, r: Any, prefix: str) -> Iterator[str]:
        pattern = glob_escape(self.key_prefix + prefix) + "*"
        guard = self.reserved_guard
        for name in r.scan_iter(match=pattern, count=SCAN_COUNT):
            if isinstance(name, bytes):
                name = name.decode("utf-8", "surrogateescape")
            if guard and name.startswith(RESERVED):
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
            return bool(r.set(self._k(key), blob, nx=True, px=None if ttl is None else ms(ttl)))

    def raw_cas(self, key: str, expected: Any, new: Any, ttl: Any) -> bool:
        with self._call():
            return self._run_commit([(key, expected)], [(key, new, ttl)]) is None

    def raw_touch(self, key: str, ttl: float | None) -> bool:
        with self._call() as r:
            if ttl is not None:
                return bool(r.pexpire(self._k(key), ms(ttl)))
            return bool(self._touch_script(keys=[self._k(key)], args=[""]))

    def connect_async(self) -> Any:
        """A ``redis.asyncio`` client with this store's settings (for the asyncio front)."""
        return self._connect(*self._settings, asyncio=True)[0]

    def _run_commit(self, checks: list[Check], ops: list[Op]) -> str | None:
        """One run of the commit script; the key of the first failed check, or None."""
        names, args = commit_args(self.key_prefix, checks, ops)
        failed = int(self._commit_script(keys=names, args=args))
        return None if failed == 0 else checks[failed - 1][0]

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
                    pipe.set(self._k(key), blob, px=None if ttl is None else ms(ttl))
            else:
                permanent = {self._k(k): b for k, b, t in rows if t is None}
                if permanent:
                    pipe.mset(permanent)
                for key, blob, ttl in rows:
                    if ttl is not None:
                        pipe.set(self._k(key), blob, px=ms(ttl))
            pipe.execute()

    # -- logs: one Redis list per log ----------------------------------------------------------------
    # A list rather than a stream: RPUSH answers the new length, which is the record's dense
    # sequence number (stream IDs are timestamps), and LRANGE pages by position, so append and
    # read are one round trip each. The lists live under a reserved prefix keys() never lists.

    def log_key(self, name: str) -> str:
        """The Redis list that holds log ``name`` (for both drivers)."""
        return LOG + self.key_prefix + name

    def raw_log_append(self, name: str, blob: Any) -> int:
        with self._call() as r:
            return int(r.rpush(self.log_key(name), blob))

    def raw_log_read(self, name: str, after: int, limit: int | None) -> list[tuple[int, Any]]:
        end = -1 if limit is None else after + limit - 1
        with self._call() as r:
            blobs = r.lrange(self.log_key(name), after, end)
        return [(after + 1 + i, blob) for i, blob in enumerate(blobs)]

    def raw_log_read_desc(self, name: str, after: int, limit: int | None) -> list[tuple[int, Any]]:
        # One script from the end of the list: LLEN + LRANGE of the last ``limit`` records.
        with self._call():
            return log_tail_rows(self._tail_script(keys=[self.log_key(name)],
                                                   args=log_tail_args(after, limit)))

    def raw_log_len(self, name: str) -> int:
        with self._call() as r:
            return int(r.llen(self.log_key(name)))

    def raw_log_delete(self, name: str) -> bool:
        with self._call() as r:
            return bool(r.delete(self.log_key(name)))

    def raw_log_names(self, prefix: str) -> list[str]:
        start = len(LOG + self.key_prefix)
        with self._call() as r:
            found = r.scan_iter(match=glob_escape(self.log_key(prefix)) + "*", count=SCAN_COUNT)
            names = [name_str(n) for n in found]
        return sorted(n[start:] for n in names)

    def open_meta(self) -> "RedisStore":
        meta = copy.copy(self)
        meta.__dict__.pop("_meta_store", None)
        meta.key_prefix = META + self.key_prefix
        meta._prefix_len = len(meta.key_prefix)
        meta.reserved_guard = False
        meta.serializer = None
        return meta

    def lock_id(self) -> str:
        return f"redis:{mask_url(self.url)}:{self.key_prefix}"

    def raw_snapshot(self, keys: list[str]) -> list[tuple[str, Any, float | None]]:
        with self._call() as r:
            pipe = r.pipeline(transaction=False)
            for key in keys:
                pipe.get(self._k(key))
                pipe.pttl(self._k(key))
            results = pipe.execute()
        return snapshot_rows(keys, results)

    # -- restores: everything replaced by one script ---------------------------------------------------

    def raw_replace_all(self, rows: Any, logs: Any) -> None:
        if self.cluster:  # a script cannot span slots: copy first, put back on failure
            return super().raw_replace_all(rows, logs)
        args: list[Any] = [glob_escape(self.key_prefix) + "*", RESERVED if self.reserved_guard else "",
                           "" if logs is None else glob_escape(self.log_key("")) + "*"]
        for key, blob, ttl in rows:
            args += ("k", self._k(key), blob, "" if ttl is None else ms(ttl))
        for name, blobs in logs or ():
            args += ("l", self.log_key(name), len(blobs), *blobs)
        with self._call():
            self._replace_script(args=args)

    @property
    def _replace_script(self) -> Any:
        script = self.__dict__.get("_replace_sha")
        if script is None:
            script = self.__dict__["_replace_sha"] = self._client.register_script(REPLACE)
        return script

    def close(self) -> None:
        try:
            self._client.close()
        except Exception:  # closing a dead connection must not raise
            pass

