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
transaction's checked commit are one Lua script (:data:`~.scripts.COMMIT`), which Redis runs without
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
:mod:`~kvstore.stores.redis.connect`).

The package: :mod:`.store` (:class:`RedisStore`, the redis-py driver), :mod:`.aio`
(:class:`~.aio.AsyncRedisStore`, the ``redis.asyncio`` driver, built from a RedisStore),
:mod:`.scripts` (the reserved names, Lua scripts and their arguments, shared by both drivers),
:mod:`.commit` (a transaction's marked commit) and :mod:`.connect` (clients and pools).
"""

from .store import RedisStore

__all__ = ["RedisStore"]
