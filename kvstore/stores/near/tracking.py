"""The invalidation channel of a near cache: Redis server-assisted client tracking, in threads.

One dedicated RESP2 connection per Redis primary (one on a single node or Sentinel primary, one
per primary of a Cluster) runs::

    CLIENT ID                                   -> <id>
    CLIENT TRACKING ON REDIRECT <id> BCAST [PREFIX <key_prefix>]
    SUBSCRIBE __redis__:invalidate

and then only reads. BCAST makes the server announce every write to a key under the store's
prefix, by any client, whatever connection read it, so the data connections need no set-up of
their own (no connect hook on pooled connections, which redis-py's Cluster already uses for
its own ``on_connect``); and since the connection redirects to itself, a drop of that one
connection ends both the tracking and the subscription, and is seen at once. RESP2 is forced:
with RESP3 (redis-py 8's default elsewhere) the invalidations would be push messages a pub/sub
reader never sees.

Each connection is read by its own daemon thread, so a loop of local hits on an event loop
never delays an invalidation (the thread needs only the GIL). The channel is **up** once every
primary's connection is subscribed; any failure (EOF after an outage, a failover or ``CLIENT
KILL``; no reply to a heartbeat ``PING`` within ``heartbeat`` seconds, as when Redis is
SIGSTOPped or the network drops) flushes the local copies and keeps the cache bypassed (see
:class:`~.local.NearCache`: nothing is filled while down) until the channel is back. On a
Cluster the slot map is compared every ``heartbeat`` seconds too: a change (a slot moved, a
node added or failed over) flushes and re-establishes tracking on the new primaries.

A ``FLUSHDB``/``FLUSHALL`` (an invalidation without keys) flushes every local copy.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from typing import Any

from .local import NearCache

__all__ = ["Tracker", "CHANNEL"]

CHANNEL = "__redis__:invalidate"
log = logging.getLogger("kvstore.near")


def _dedicated(pool: Any, timeout: float) -> Any:
    """A new connection with ``pool``'s settings (address, auth, TLS, db), never pooled,
    speaking RESP2, that does nothing on connect but authenticate and select its db."""
    kwargs = dict(pool.connection_kwargs)
    kwargs.update(protocol=2, socket_timeout=timeout, health_check_interval=0)
    kwargs.pop("redis_connect_func", None)
    kwargs.pop("maint_notifications_config", None)
    if hasattr(pool, "service_name"):  # Sentinel: the connection asks for the current primary
        kwargs["connection_pool"] = pool
    return pool.connection_class(**kwargs)


class Tracker:
    """Keeps ``near.up`` true exactly while invalidations for ``store``'s keys arrive, and
    applies them. ``store`` is the :class:`~kvstore.RedisStore` the near cache wraps."""

    def __init__(self, near: NearCache, store: Any, heartbeat: float = 1.0) -> None:
        self.near = near
        self.store = store
        self.heartbeat = heartbeat
        self.prefix = store.key_prefix
        self._prefix_bytes = self.prefix.encode("utf-8", "surrogateescape")
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._round = 0               # bumped when a Cluster's slot map changes
        self._ready: set[str] = set()  # targets subscribed in this round
        self._targets: list[tuple[str, Any]] = []
        self._live: dict[str, Any] = {}  # target name -> its connection (to close)
        self._threads: list[threading.Thread] = []
        self.established = 0          # times the channel came up (tests, stats)

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self, wait: float = 0.0) -> "Tracker":
        """Start listening; wait up to ``wait`` seconds for the channel to come up."""
        seen = None
        if self.store.cluster:
            try:
                seen = self._slot_map()  # before the listeners: a change from now on is seen
            except Exception:
                pass
        self._begin_round()
        self._start_watch(seen)
        if hasattr(os, "register_at_fork"):
            me = weakref.ref(self)
            os.register_at_fork(after_in_child=lambda: _forked(me))
        self.wait_up(wait)
        return self

    def _start_watch(self, seen: Any) -> None:
        if self.store.cluster:
            thread = threading.Thread(target=self._watch_slots, args=(seen,),
                                      name="kvstore-near-slots", daemon=True)
            thread.start()
            self._threads.append(thread)

    def after_fork(self) -> None:
        """In a forked child (a pre-forking server's worker): the listener threads did not
        come along, so nothing is served locally until this process has its own channel."""
        self._lock = threading.Lock()  # held by a thread of the parent at the fork, maybe
        self.near.lock = threading.Lock()
        self.near.flush(up=False)
        self._live, self._threads = {}, []  # the parent's sockets: never used, never closed here
        if not self._closed.is_set():
            self._begin_round()
            self._start_watch(None)

    def wait_up(self, timeout: float) -> bool:
        """Whether the channel is up, waiting up to ``timeout`` seconds for it."""
        deadline = time.monotonic() + timeout
        while not self.near.up and time.monotonic() < deadline and not self._closed.is_set():
            time.sleep(0.005)
        return self.near.up

    def close(self) -> None:
        self._closed.set()
        with self._lock:
            conns = list(self._live.values())
        for conn in conns:
            self._drop(conn)
        self.near.flush(up=False)

    # -- targets -----------------------------------------------------------------------------------

    def _primaries(self) -> list[tuple[str, Any]]:
        client = self.store.client
        if not self.store.cluster:
            return [("redis", client.connection_pool)]
        found = []
        for node in client.get_primaries():
            if node.redis_connection is None:
                client.nodes_manager.initialize()
                return self._primaries()
            found.append((node.name, node.redis_connection.connection_pool))
        return sorted(found, key=lambda item: item[0])

    def _begin_round(self) -> None:
        """(Re)start one listener per primary, for a new round (the old ones stop)."""
        try:
            targets = self._primaries()
        except Exception as exc:  # a Cluster that cannot be asked: try again at the next check
            log.warning("near cache: cannot list the Redis primaries: %s", exc)
            targets = []
        with self._lock:
            self._round += 1
            this_round = self._round
            self._ready.clear()
            self._targets = targets
            old = list(self._live.values())
        self.near.flush(up=False)
        for conn in old:
            self._drop(conn)
        for name, pool in targets:
            thread = threading.Thread(target=self._listen, args=(this_round, name, pool),
                                      name=f"kvstore-near-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)
        self._threads = [t for t in self._threads if t.is_alive()]

    def _current(self, this_round: int) -> bool:
        return self._round == this_round and not self._closed.is_set()

    # -- one listener ------------------------------------------------------------------------------

    def _listen(self, this_round: int, name: str, pool: Any) -> None:
        pause = 0.02
        while self._current(this_round):
            conn = None
            try:
                conn = _dedicated(pool, self.heartbeat)
                self._subscribe(conn)
                with self._lock:
                    if not self._current(this_round):
                        return
                    self._live[name] = conn
                    self._ready.add(name)
                    everyone = len(self._ready) == len(self._targets)
                if everyone:
                    self.established += 1
                    self.near.flush(up=True)  # epoch moves: nothing read before now is filled
                pause = 0.02
                self._read(conn, this_round)
            except Exception as exc:
                if self._current(this_round):
                    log.info("near cache: invalidation channel to %s lost: %s", name, exc)
            finally:
                with self._lock:
                    self._ready.discard(name)
                    if self._live.get(name) is conn:
                        del self._live[name]
                if self._round == this_round:
                    self.near.flush(up=False)
                if conn is not None:
                    self._drop(conn)
            self._closed.wait(pause)
            pause = min(pause * 2, 1.0)

    def _subscribe(self, conn: Any) -> None:
        conn.connect()
        conn.send_command("CLIENT", "ID")
        client_id = conn.read_response()
        args = ["CLIENT", "TRACKING", "ON", "REDIRECT", client_id, "BCAST"]
        if self.prefix:
            args += ["PREFIX", self.prefix]
        conn.send_command(*args)
        conn.read_response()
        conn.send_command("SUBSCRIBE", CHANNEL)
        reply = conn.read_response()
        if not (isinstance(reply, list) and reply[:1] == [b"subscribe"]):
            raise ConnectionError(f"unexpected reply to SUBSCRIBE: {reply!r}")

    def _read(self, conn: Any, this_round: int) -> None:
        """Apply invalidations until the connection fails, a heartbeat goes unanswered, or the
        round ends."""
        ping_sent: float | None = None
        while self._current(this_round):
            if conn.can_read(timeout=self.heartbeat / 2):
                message = conn.read_response()
                if isinstance(message, list) and message[:1] == [b"message"]:
                    self._invalidated(message[2])
                elif isinstance(message, list) and message[:1] == [b"pong"]:
                    ping_sent = None
                continue
            now = time.monotonic()
            if ping_sent is None:
                conn.send_command("PING")
                ping_sent = now
            elif now - ping_sent > self.heartbeat:
                raise TimeoutError(f"no reply to PING within {self.heartbeat:g}s")

    def _invalidated(self, keys: Any) -> None:
        if keys is None:  # FLUSHDB / FLUSHALL
            self.near.flush(up=True)
            return
        prefix, n = self._prefix_bytes, len(self._prefix_bytes)
        self.near.invalidate([k[n:].decode("utf-8", "surrogateescape") for k in keys
                              if k.startswith(prefix)])

    @staticmethod
    def _drop(conn: Any) -> None:
        # redis-py shuts a socket down only in the process that opened it (a forked child's
        # copy is just closed), so dropping never breaks the parent's channel.
        try:
            conn.disconnect()
        except Exception:
            pass

    # -- Cluster: the slot map -------------------------------------------------------------------

    def _slot_map(self) -> Any:
        reply = self.store.client.execute_command("CLUSTER SLOTS")
        return sorted(repr(item) for item in (reply.items() if isinstance(reply, dict)
                                              else reply))

    def _watch_slots(self, seen: Any) -> None:
        while not self._closed.wait(self.heartbeat):
            try:
                current = self._slot_map()
            except Exception:
                continue  # the listeners see an outage themselves
            if (seen is not None and current != seen) or not self._targets:
                # (no targets: the primaries could not be listed at the last round)
                log.info("near cache: the Cluster's slot map changed; re-tracking")
                try:
                    self.store.client.nodes_manager.initialize()
                except Exception:
                    pass
                self._begin_round()
            seen = current


def _forked(tracker: "weakref.ref[Tracker]") -> None:
    found = tracker()
    if found is not None:
        found.after_fork()
