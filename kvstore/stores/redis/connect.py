"""RedisStore's redis-py clients: single node, Cluster and Sentinel, sync and asyncio, with pools
that wait for a free connection instead of failing.

redis-py's default pools raise as soon as they are full ("Too many connections": the asyncio
pool's limit is 100, so ``asyncio.gather`` of 200 calls failed) or, in the sync client, open one
connection per thread without limit. kvstore's clients use redis-py's ``BlockingConnectionPool``
(``max_connections``, ``timeout``): a call beyond ``max_connections`` waits up to
``pool_timeout`` seconds for a connection, then raises ``StoreUnavailableError`` naming the
settings. Per client kind (redis-py 8):

- single node, sync and asyncio: ``BlockingConnectionPool``;
- Sentinel, sync and asyncio: a ``SentinelConnectionPool`` that blocks the same way;
- Cluster, sync: a ``BlockingConnectionPool`` per node (``connection_pool_class``);
- Cluster, asyncio: redis-py's per-node pool only raises ``MaxConnectionsError``, so
  :class:`~kvstore.stores.redis.aio.AsyncRedisStore` admits at most ``max_connections``
  commands at a time (a semaphore with the same bounded wait), which keeps every node within
  the limit.

Retries stay off everywhere (``Retry(NoBackoff(), 0)``): a command whose reply was lost may have
run, and is never sent again. A wait for a pool connection happens before anything is sent.
"""

from __future__ import annotations

import importlib
import os
from functools import lru_cache
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from ...errors import ConfigError

__all__ = ["DEFAULT_MAX_CONNECTIONS", "DEFAULT_POOL_TIMEOUT", "build_client", "check_url", "pool_options",
           "POOL_EXHAUSTED"]

DEFAULT_MAX_CONNECTIONS = 50
DEFAULT_POOL_TIMEOUT = 5.0
POOL_EXHAUSTED = "No connection available"  # redis-py's message when the blocking wait ends


def mask_url(url: str) -> str:
    from ...config import mask_secrets

    return mask_secrets(url)


def check_pool(max_connections: Any, pool_timeout: Any, where: str = "") -> tuple[int, float]:
    """Validated ``(max_connections, pool_timeout)``; ConfigError naming the bad one."""
    if isinstance(max_connections, bool) or not isinstance(max_connections, int) \
            or max_connections < 1:
        raise ConfigError(f"{where}max_connections: expected a whole number of at least 1, "
                          f"got {max_connections!r}")
    if isinstance(pool_timeout, bool) or not isinstance(pool_timeout, (int, float)) \
            or pool_timeout <= 0:
        raise ConfigError(f"{where}pool_timeout: expected a positive number of seconds, "
                          f"got {pool_timeout!r}")
    return max_connections, float(pool_timeout)


def pool_options(url: str) -> tuple[str, dict[str, Any]]:
    """``url`` without ``max_connections``/``pool_timeout`` query options, and those options
    (``redis://host/0?max_connections=20&pool_timeout=2``), checked."""
    if not isinstance(url, str) or "?" not in url:
        return url, {}
    parts = urlsplit(url)
    found: dict[str, Any] = {}
    rest = []
    for segment in parts.query.split("&"):  # other options are kept exactly as written
        parsed = parse_qsl(segment, keep_blank_values=True)
        name, value = parsed[0] if parsed else ("", "")
        if name == "max_connections":
            if not value.isdigit():
                raise ConfigError(f"url {mask_url(url)!r}: max_connections={value!r} is not a "
                                  "whole number")
            found[name] = int(value)
        elif name == "pool_timeout":
            try:
                found[name] = float(value)
            except ValueError:
                raise ConfigError(f"url {mask_url(url)!r}: pool_timeout={value!r} is not a "
                                  "number of seconds") from None
        elif segment:
            rest.append(segment)
    if found:
        check_pool(found.get("max_connections", 1), found.get("pool_timeout", 1.0),
                   f"url {mask_url(url)!r}: ")
    return parts._replace(query="&".join(rest)).geturl(), found


def check_url(url: Any, setting: str = "url") -> None:
    """ConfigError naming ``setting`` unless ``url`` is a URL a Redis client can be built from:
    a known scheme, a Sentinel URL naming its service, well-formed pool options. Opens nothing,
    imports no driver: the YAML's ``persistence.redis.url`` is checked with it before any store
    opens."""
    if not isinstance(url, str) or "://" not in url:
        raise ConfigError(f"{setting}: {mask_url(str(url))!r} is not a redis:// URL")
    scheme = url.split("://", 1)[0].lower()
    if scheme.split("+", 1)[0] not in ("redis", "rediss", "unix"):
        raise ConfigError(f"{setting}: unknown scheme {scheme!r} (redis, rediss, unix, "
                          "redis+cluster, redis+sentinel)")
    if scheme in ("redis+sentinel", "rediss+sentinel") and not any(
            p for p in urlsplit(url).path.split("/")):
        raise ConfigError(f"{setting}: a Sentinel URL names the service: "
                          "redis+sentinel://host:26379/<service>/<db>")
    try:
        pool_options(url)
    except ConfigError as exc:  # "url '...': max_connections='x' is not ...": name the setting
        raise ConfigError(f"{setting}: {str(exc).split(': ', 1)[-1]}") from None


@lru_cache(maxsize=2)
def _blocking_sentinel_pool(asyncio: bool) -> type:
    """redis-py's Sentinel pool (follows the primary) with the blocking pool's bounded wait."""
    sentinel: Any = importlib.import_module("redis.asyncio.sentinel" if asyncio
                                            else "redis.sentinel")
    blocking: Any = importlib.import_module("redis.asyncio" if asyncio
                                            else "redis").BlockingConnectionPool

    class BlockingSentinelConnectionPool(sentinel.SentinelConnectionPool, blocking):
        pass

    return BlockingSentinelConnectionPool


def build_client(url: str, cluster: bool | None, socket_timeout: float, connect_timeout: float,
                 max_connections: int, pool_timeout: float, options: dict[str, Any],
                 asyncio: bool = False) -> tuple[Any, bool]:
    """A redis-py client for ``url`` (``asyncio=True``: its ``redis.asyncio`` twin) and whether
    it is a cluster client. ValueError for a URL redis-py refuses."""
    redis: Any = importlib.import_module("redis.asyncio" if asyncio else "redis")
    check_url(url)
    scheme = url.split("://", 1)[0].lower()
    # Never re-send a command: a write whose reply was lost may have run (an RPUSH or an
    # INCRBY sent twice is a duplicate). A failure raises StoreUnavailableError instead.
    from redis.backoff import NoBackoff

    Retry: Any = importlib.import_module(  # noqa: N806
        "redis.asyncio.retry" if asyncio else "redis.retry").Retry
    base = {"socket_timeout": socket_timeout, "socket_connect_timeout": connect_timeout,
            "retry_on_timeout": False, "retry": Retry(NoBackoff(), 0), **options}
    pool = {"max_connections": max_connections, "timeout": pool_timeout}
    parts = urlsplit(url)
    username = unquote(parts.username) if parts.username else os.environ.get("REDIS_USERNAME")
    password = unquote(parts.password) if parts.password else os.environ.get("REDIS_PASSWORD")
    if scheme in ("redis+sentinel", "rediss+sentinel"):
        return _sentinel(parts, scheme, username, password, base, pool, asyncio), False
    is_cluster = bool(cluster) or scheme.endswith("+cluster")
    if scheme.endswith("+cluster"):
        url = scheme.split("+", 1)[0] + "://" + url.split("://", 1)[1]
    if not parts.password and password:
        base["password"] = password
        if username and not parts.username:
            base["username"] = username
    if is_cluster:
        base.setdefault("health_check_interval", 0)
        if asyncio:  # per node, and it raises when full: AsyncRedisStore gates the commands
            base.pop("retry_on_timeout", None)  # redis.asyncio's cluster has no such option
            return redis.cluster.RedisCluster.from_url(
                url, max_connections=max_connections, **base), True
        return redis.cluster.RedisCluster.from_url(
            url, connection_pool_class=redis.BlockingConnectionPool, **pool, **base), True
    base.setdefault("health_check_interval", 30)
    client = redis.Redis(connection_pool=redis.BlockingConnectionPool.from_url(url, **pool, **base))
    client.auto_close_connection_pool = True  # as Redis.from_url does: close() closes the pool
    return client, False


def _sentinel(parts: Any, scheme: str, username: str | None, password: str | None,
              base: dict[str, Any], pool: dict[str, Any], asyncio: bool) -> Any:
    Sentinel: Any = importlib.import_module(  # noqa: N806
        "redis.asyncio.sentinel" if asyncio else "redis.sentinel").Sentinel

    hosts = []
    for item in parts.netloc.rsplit("@", 1)[-1].split(","):
        host, _, port = item.rpartition(":")
        hosts.append((host or item, int(port or 26379) if host else 26379))
    path = [p for p in parts.path.split("/") if p]
    service, db = path[0], int(path[1]) if len(path) > 1 else 0
    conn_kwargs = dict(base, db=db, password=password, username=username,
                       ssl=scheme.startswith("rediss"))
    sentinel = Sentinel(hosts, sentinel_kwargs={"socket_timeout": base["socket_timeout"],
                                                "socket_connect_timeout":
                                                    base["socket_connect_timeout"]},
                        **conn_kwargs)
    return sentinel.master_for(service, connection_pool_class=_blocking_sentinel_pool(asyncio),
                               **pool)
