"""The Redis fallback, a layer over the backend contract: a store that serves the cache tier
from another store while Redis is down (:mod:`.store`), its outage records (:mod:`.outage`) and
its asyncio driver over the async faces of the stores it wraps (:mod:`.aio`)."""

from .store import FallbackStore, Targets

__all__ = ["FallbackStore", "Targets"]
