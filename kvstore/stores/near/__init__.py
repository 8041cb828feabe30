"""The near cache, a layer over the backend contract: a bounded per-process copy of hot values
in front of a :class:`~kvstore.RedisStore`, kept coherent by Redis's server-assisted client
tracking (Redis 6+; redis-py's own client-side cache needs Redis 7.4).

- :mod:`.local`: the copies (an LRU per rule) and the token rule that drops a read's reply
  when an invalidation or a flush came after the read was sent;
- :mod:`.tracking`: the invalidation channel, one dedicated RESP2 connection per primary,
  ``CLIENT TRACKING ON REDIRECT <its own id> BCAST PREFIX <key_prefix>`` then ``SUBSCRIBE
  __redis__:invalidate``, read by a thread;
- :mod:`.store`: :class:`NearStore`, the synchronous wrapper, whose byte-level calls are flows;
- :mod:`.aio`: :class:`~.aio.AsyncNearStore`, the same flows over the asyncio Redis driver;
- :mod:`.settings`: the ``near:`` configuration (per category, per ``redis:`` section).

Why BCAST with the store's prefix, on one connection that redirects to itself, rather than the
default tracking mode with ``REDIRECT`` set on every data connection by a connect hook: BCAST
needs nothing from the data connections (redis-py's pools, its Cluster client and the asyncio
driver each open their own, and the Cluster client already owns the connect hook), it costs the
server no per-key memory of who read what, and an invalidation comes for every write under the
prefix whichever connection read the key, so no read can be untracked. Redirecting to itself
makes the channel one connection: when it drops, tracking and subscription end together and
the drop is seen at once (with a separate tracking connection, RESP2 reports nothing when the
redirect target dies). The price: invalidations for keys under the prefix this process never
read (each one a dictionary lookup in the listener thread).
"""

from .local import NearCache, NearSettings
from .store import NearStore

__all__ = ["NearStore", "NearSettings", "NearCache"]
