"""The ``near:`` settings: per category and per ``redis:`` section, checked with the rest of
the configuration (before any store opens), and the wrapper they put around the Redis store.

.. code-block:: yaml

    persistence:
      redis: {url: "redis://localhost:6379/0", near: {max_entries: 10000, ttl: 1m}}  # every key
      categories:
        settings: {store: cache, near: {max_entries: 10000, ttl: 1m}}  # this category's keys

Settings: ``max_entries`` (copies kept at most, default 10000), ``ttl`` (how long a copy is
kept at most, default ``1m``; never past the key's own TTL) and ``shared`` (default false:
true hands every reader the same decoded object, see :class:`~.local.NearSettings`). Unknown keys, a wrong type, a
``near:`` on a category that is not stored in Redis (``store: cache`` with a ``redis:``
section) raise :class:`~kvstore.ConfigError` naming the setting.
"""

from __future__ import annotations

from typing import Any

from ... import checks
from ...errors import ConfigError
from .local import NearSettings

__all__ = ["near_settings", "check_near", "wrap_near"]


def _ttl(value: Any, setting: str) -> float:
    seconds = checks.duration(value, setting)
    if seconds is None:
        raise ConfigError(f"{setting}: a near cache's copies need a time limit "
                          "(seconds or e.g. '30s', '1m')")
    return seconds


_NEAR = {"max_entries": lambda v, s: checks.whole(v, s, 1), "ttl": _ttl,
         "shared": checks.boolean}


def near_settings(value: Any, setting: str) -> NearSettings | None:
    """A ``near:`` mapping checked (None: no near cache)."""
    if value is None:
        return None
    settings: NearSettings = checks.section(NearSettings, value, setting, _NEAR)
    return settings


def check_near(config: Any) -> None:
    """Refuse a category's ``near:`` that no Redis would keep coherent."""
    for name, category in config.categories.items():
        if getattr(category, "near", None) is None:
            continue
        setting = f"persistence.categories.{name}.near"
        if category.store != "cache":
            raise ConfigError(f"{setting}: a near cache sits in front of Redis (store: cache), "
                              f"not the {category.store!r} store")
        if config.redis is None:
            raise ConfigError(f"{setting}: needs a persistence.redis section (the near cache "
                              "is kept coherent by Redis's client tracking)")


def wrap_near(store: Any, config: Any) -> Any:
    """``store`` (the ``redis:`` section's RedisStore) behind a NearStore when the
    configuration asks for one, else ``store`` itself."""
    default = getattr(config.redis, "near", None)
    categories = {name: c.near for name, c in config.categories.items()
                  if getattr(c, "near", None) is not None and c.store == "cache"}
    if default is None and not categories:
        return store
    from .store import NearStore

    return NearStore(store, default, categories)
