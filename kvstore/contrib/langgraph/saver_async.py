"""The checkpoint saver's operations, written once (the asyncio source of ``saver_sync.py``).

``tools/async_to_sync.py`` writes the synchronous twin, renaming LangGraph's async method names
to the synchronous ones (the ``sync-names`` lines below: the twin's names lose the ``a``). :class:`~kvstore.contrib.langgraph.KVStoreSaver` mixes both in. The key
layout and the record format are in :mod:`.layout` (no I/O).

Every operation is a few calls on the store: ``put`` one write, ``put_writes`` one atomic
``update``, ``get_tuple`` by id one ``load_many`` (the checkpoint and its writes), the latest
one descending listing first (``keys(..., reverse=True, limit=1)``, never the whole thread). The thread operations
(``delete_thread``, ``copy_thread``, ``delete_for_runs``, ``prune``) gather their writes and
deletes, then apply them as one atomic step of the store (the backend contract's
``raw_apply``: one SQL transaction, one Redis script, the file store's journaled commit).
Writes are stored with the saver's ``ttl`` as given (None: no expiry), never the store's
``ttl_default``.
"""
# sync-names: aput=put aput_writes=put_writes aget_tuple=get_tuple alist=list
# sync-names: adelete_thread=delete_thread adelete_for_runs=delete_for_runs
# sync-names: acopy_thread=copy_thread aprune=prune async_target=sync_target _aapply=_apply
# sync-names: AsyncSaverOps=SaverOps _apage=_page _akey_pages=_key_pages

from __future__ import annotations

import asyncio  # async only
from typing import Any, AsyncIterator, Optional, Sequence

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (ChannelVersions, Checkpoint, CheckpointMetadata,
                                       CheckpointTuple, get_checkpoint_id,
                                       get_checkpoint_metadata)

from ...errors import InvalidArgumentError
from ...store import MISSING
from .layout import (Layout, checkpoint_record, config_for, load_metadata, matches, merged,
                     to_tuple, write_records)

__all__ = ["AsyncSaverOps"]

STRATEGIES = ("keep_latest", "delete")
#: What a thread operation applies in one atomic step: ``(key, blob or MISSING, ttl)``. (A
#: module-level name: in the class, ``list`` is the twin's ``list`` method.)
Ops = list[tuple[str, Any, Optional[float]]]
#: Checkpoints read per ``load_many`` by ``list``.
PAGE = 100


class AsyncSaverOps:
    """LangGraph's checkpoint operations over a kvstore store (see
    :class:`~kvstore.contrib.langgraph.KVStoreSaver`)."""

    # Given by the class this is mixed into.
    layout: Layout
    ttl: float | None
    serde: Any

    def async_target(self) -> Any:
        """The store to call on this front (an AsyncStore here, a store on the twin)."""
        raise NotImplementedError

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        """The checkpoint ``config`` names (its ``checkpoint_id``), else the thread's latest in
        its namespace; None when there is none."""
        st = self.async_target()
        conf = config["configurable"]
        thread_id, ns = conf["thread_id"], conf.get("checkpoint_ns", "")
        checkpoint_id = get_checkpoint_id(config)
        if not checkpoint_id:  # the latest: its id is kept beside the thread
            checkpoint_id = await st.load(self.layout.latest(thread_id, ns))
        key = self.layout.checkpoint(thread_id, ns, checkpoint_id) if checkpoint_id else ""
        wkey = self.layout.writes_key(key)
        found = await st.load_many([key, wkey]) if key else {}
        if key not in found and not get_checkpoint_id(config):
            # No latest id (or it names a deleted checkpoint): the first key listed backwards.
            latest = [k async for k in st.keys(self.layout.namespace(thread_id, ns), limit=1,
                                               reverse=True)]
            if not latest:
                return None
            key, wkey = latest[0], self.layout.writes_key(latest[0])
            checkpoint_id = self.layout.ids(key)[2]
            found = await st.load_many([key, wkey])
        if key not in found:
            return None
        return to_tuple(self.serde, (thread_id, ns, checkpoint_id), found[key],
                        found.get(wkey, ()))

    async def alist(self, config: RunnableConfig | None, *, filter: dict[str, Any] | None = None,
                    before: RunnableConfig | None = None, limit: int | None = None
                    ) -> AsyncIterator[CheckpointTuple]:
        """Checkpoints newest first (by id, per namespace): of every thread (``config`` None),
        of a thread, or of one namespace of it; only those whose metadata has every item of
        ``filter``, with an id below ``before``'s, at most ``limit``."""
        if limit is not None and limit <= 0:
            return
        st = self.async_target()
        wanted_id = get_checkpoint_id(config) if config else None
        before_id = get_checkpoint_id(before) if before else None
        start_after = None
        if config is None:
            prefix = self.layout.checkpoints
        else:
            conf = config["configurable"]
            ns = conf.get("checkpoint_ns")
            if ns is None:
                prefix = self.layout.thread(conf["thread_id"])
            else:
                prefix = self.layout.namespace(conf["thread_id"], ns)
                if before_id:  # one namespace: start below ``before`` in the listing itself
                    start_after = self.layout.checkpoint(conf["thread_id"], ns, before_id)
        native = filter is None and not wanted_id and (before_id is None or start_after)
        listed = st.keys(prefix, start_after=start_after, limit=limit if native else None,
                         reverse=True)
        left = limit
        async for keys in _akey_pages(listed, wanted_id, before_id, limit, self.layout):
            for found in await self._apage(st, keys, filter):
                yield found
                if left is not None:
                    left -= 1
                    if left <= 0:
                        return

    async def _apage(self, st: Any, keys: Sequence[str], filter: dict[str, Any] | None
                     ) -> Sequence[CheckpointTuple]:
        """The tuples of ``keys`` (checkpoints and their writes: one ``load_many``) whose
        metadata matches ``filter``, in the order of ``keys``."""
        layout, serde = self.layout, self.serde
        found = await st.load_many([*keys, *(layout.writes_key(k) for k in keys)])
        out = []
        for key in keys:
            record = found.get(key)
            if record is None:  # deleted since it was listed
                continue
            metadata = load_metadata(serde, record)
            if matches(metadata, filter):
                out.append(to_tuple(serde, layout.ids(key), record,
                                    found.get(layout.writes_key(key), ()), metadata))
        return out

    async def aput(self, config: RunnableConfig, checkpoint: Checkpoint,
                   metadata: CheckpointMetadata, new_versions: ChannelVersions
                   ) -> RunnableConfig:
        """Store a checkpoint, and make it its namespace's latest (one atomic write of two
        keys); returns the config that names it."""
        st = self.async_target()
        conf = config["configurable"]
        thread_id, ns = conf["thread_id"], conf.get("checkpoint_ns", "")
        key = self.layout.checkpoint(thread_id, ns, checkpoint["id"])
        latest = self.layout.latest(thread_id, ns)
        st.check_key(key)
        record = checkpoint_record(self.serde, config, checkpoint,
                                   get_checkpoint_metadata(config, metadata))
        await st.raw_set_many([(key, st.encode(key, record)),
                               (latest, st.encode(latest, checkpoint["id"]))], self.ttl)
        return config_for(thread_id, ns, checkpoint["id"])

    async def aput_writes(self, config: RunnableConfig, writes: Sequence[tuple[str, Any]],
                          task_id: str, task_path: str = "") -> None:
        """Store a task's writes for a checkpoint, in one atomic update of the checkpoint's
        writes. As LangGraph's savers: a regular write already stored for (task, index) is
        kept; a special one (error, interrupt...) replaces it."""
        st = self.async_target()
        conf = config["configurable"]
        key = self.layout.writes_of(conf["thread_id"], conf.get("checkpoint_ns", ""),
                                    conf["checkpoint_id"])
        new = write_records(self.serde, task_id, task_path, writes)
        if new:  # ttl None: the key keeps its (no) expiry; a new key gets self.ttl, not the
            # store's ttl_default
            await st.update_with(key, lambda stored: merged(stored, new), [], self.ttl, self.ttl)

    async def adelete_thread(self, thread_id: str) -> None:
        """Delete every checkpoint and write of the thread, all or nothing."""
        st = self.async_target()
        doomed = [k async for k in st.keys(self.layout.thread(thread_id))]
        doomed += [k async for k in st.keys(self.layout.thread_writes(thread_id))]
        doomed += [k async for k in st.keys(self.layout.thread_latests(thread_id))]
        await self._aapply(st, [(k, MISSING, None) for k in doomed])

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """Copy every checkpoint and write of a thread to another thread, all or nothing (the
        target's own checkpoints with other ids stay)."""
        st = self.async_target()
        ops: Ops = []
        for prefix in (self.layout.thread(source_thread_id),
                       self.layout.thread_writes(source_thread_id),
                       self.layout.thread_latests(source_thread_id)):
            async for key, value in st.items(prefix):
                new = self.layout.moved(key, source_thread_id, target_thread_id)
                st.check_key(new)
                ops.append((new, st.encode(new, value), self.ttl))
        await self._aapply(st, ops)

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        """Delete the checkpoints (and their writes) of the given runs, in every thread, all or
        nothing."""
        runs = set(run_ids)
        if not runs:
            return
        st = self.async_target()
        ops: Ops = []
        left: dict[str, str | None] = {}  # latest-id key -> the greatest id left (None: none)
        async for key, record in st.items(self.layout.checkpoints):
            latest = self.layout.latest_of(key)
            if record.get("r") in runs:
                ops.append((key, MISSING, None))
                ops.append((self.layout.writes_key(key), MISSING, None))
                left.setdefault(latest, None)
            else:  # listed in key order: the last one kept is the greatest
                left[latest] = self.layout.ids(key)[2]
        for latest, checkpoint_id in left.items():
            if checkpoint_id is None:
                ops.append((latest, MISSING, None))
            else:
                ops.append((latest, st.encode(latest, checkpoint_id), self.ttl))
        await self._aapply(st, ops)

    async def aprune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        """``"keep_latest"``: keep only the latest checkpoint of each namespace of each thread
        (and its writes); ``"delete"``: delete them all. All threads in one atomic step."""
        if strategy not in STRATEGIES:
            raise InvalidArgumentError(f"prune: strategy must be one of {STRATEGIES}, "
                                       f"got {strategy!r}")
        st = self.async_target()
        ops: Ops = []
        for thread_id in thread_ids:
            kept: set[tuple[str, str]] = set()
            async for key in st.keys(self.layout.thread(thread_id), reverse=True):
                _, ns, checkpoint_id = self.layout.ids(key)
                if strategy == "keep_latest" and not any(k[0] == ns for k in kept):
                    kept.add((ns, checkpoint_id))  # the first of its namespace: the latest
                else:
                    ops.append((key, MISSING, None))
            async for key in st.keys(self.layout.thread_writes(thread_id)):
                if self.layout.ids(key)[1:] not in kept:
                    ops.append((key, MISSING, None))
            if strategy == "delete":
                ops += [(k, MISSING, None)
                        async for k in st.keys(self.layout.thread_latests(thread_id))]
            else:  # the latest of each namespace is the one kept
                ops += [(self.layout.latest(thread_id, ns), st.encode(
                    self.layout.latest(thread_id, ns), checkpoint_id), self.ttl)
                    for ns, checkpoint_id in kept]
        await self._aapply(st, ops)

    async def _aapply(self, st: Any, ops: Ops) -> None:
        """Apply writes and deletes as one atomic step of the store (a blocking commit: in a
        worker thread on asyncio)."""
        if not ops:
            return
        # sync: st.raw_apply(ops)
        await asyncio.get_running_loop().run_in_executor(  # async only
            None, st.sync.raw_apply, ops)  # async only


async def _akey_pages(listed: AsyncIterator[str], wanted_id: str | None, before_id: str | None,
                      limit: int | None, layout: Layout) -> AsyncIterator[list[str]]:
    """The listed checkpoint keys ``list`` wants (that id, below ``before``), in pages of at
    most PAGE (at most ``limit``, the first time)."""
    size = PAGE if limit is None else min(PAGE, limit)
    page: list[str] = []
    async for key in listed:
        checkpoint_id = layout.ids(key)[2]
        if wanted_id and checkpoint_id != wanted_id or before_id and checkpoint_id >= before_id:
            continue
        page.append(key)
        if len(page) >= size:
            yield page
            page, size = [], PAGE
    if page:
        yield page
