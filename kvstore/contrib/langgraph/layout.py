"""Where the checkpoint saver keeps what, and how a stored record becomes a LangGraph tuple:
the part of :class:`~kvstore.contrib.langgraph.KVStoreSaver` that does no I/O (both fronts
share it).

Keys, under the saver's ``prefix`` (``checkpoint:`` by default)::

    <prefix>c/<thread>/<ns>/<checkpoint id>    one checkpoint: its serialized checkpoint and
                                               metadata, its parent id and run id
    <prefix>w/<thread>/<ns>/<checkpoint id>    the checkpoint's pending writes (a list)
    <prefix>l/<thread>/<ns>                    the id of the namespace's latest checkpoint

A checkpoint by id is then one ``load_many`` of two keys on every store (no listing: on Redis
a listing is a SCAN), and ``put_writes`` one atomic ``update`` of the writes' key (the
checkpoint's own, possibly large, record is never rewritten).

The latest checkpoint is the one ``put`` last in its (thread, namespace) (LangGraph's ids grow
with time, so it is also the greatest id); thread operations that delete it point ``l/`` at
the greatest id left. ``get_tuple`` of the latest is then two reads on every store, however
many checkpoints the thread or the store holds (a key listing costs the whole prefix on Redis,
memory and files). A thread without that key (or naming a deleted checkpoint) is read by
listing its checkpoints backwards.

``<thread>``, ``<ns>`` and the id are escaped (:func:`part`): ``_`` then the text percent-
encoded (the thread's also in braces: one Redis Cluster slot per thread), so no value can reach
into another's prefix (a thread ``a/b`` is not under thread ``a``), an empty namespace is still
a path segment, and ids that contain only letters, digits and ``-`` (LangGraph's uuid6 ids,
ordered by time) keep their order. The checkpoints of one (thread, namespace) are then the keys
under one prefix, sorted by id: the latest is the first key of a descending listing,
``list(before=...)`` starts after a key, and neither reads the rest of the thread.
"""

from __future__ import annotations

import functools
from typing import Any, Iterable, Mapping, Sequence
from urllib.parse import quote, unquote

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (WRITES_IDX_MAP, Checkpoint, CheckpointTuple,
                                       SerializerProtocol, writes_sort_key)

__all__ = ["Layout", "part", "unpart", "thread_part", "checkpoint_record", "write_records", "merged",
           "to_tuple", "load_metadata", "matches", "config_for"]


@functools.lru_cache(maxsize=4096)  # the same threads and namespaces, call after call
def part(text: str) -> str:
    """``text`` as one key segment (see the module's documentation)."""
    return "_" + quote(text, safe="")


def unpart(segment: str) -> str:
    """The text of a segment made by :func:`part`."""
    return unquote(segment[1:])


def thread_part(thread_id: str) -> str:
    """The thread's segment: :func:`part` in braces, a Redis Cluster hash tag, so that every
    key of one thread is in one slot (its operations stay atomic on a cluster)."""
    return "{" + part(thread_id) + "}"


class Layout:
    """The keys of one saver (all under ``prefix``)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.checkpoints = prefix + "c/"
        self.writes = prefix + "w/"
        self.latests = prefix + "l/"

    def thread(self, thread_id: str) -> str:
        """The checkpoints of a thread, every namespace (a prefix)."""
        return f"{self.checkpoints}{thread_part(thread_id)}/"

    def thread_writes(self, thread_id: str) -> str:
        return f"{self.writes}{thread_part(thread_id)}/"

    def namespace(self, thread_id: str, ns: str) -> str:
        """The checkpoints of one (thread, namespace), sorted by id (a prefix)."""
        return f"{self.checkpoints}{thread_part(thread_id)}/{part(ns)}/"

    def checkpoint(self, thread_id: str, ns: str, checkpoint_id: str) -> str:
        return f"{self.checkpoints}{thread_part(thread_id)}/{part(ns)}/{part(checkpoint_id)}"

    def thread_latests(self, thread_id: str) -> str:
        return f"{self.latests}{thread_part(thread_id)}/"

    def latest(self, thread_id: str, ns: str) -> str:
        """The key holding the id of the namespace's latest checkpoint."""
        return f"{self.latests}{thread_part(thread_id)}/{part(ns)}"

    def latest_of(self, checkpoint_key: str) -> str:
        """The latest-id key of a checkpoint key's (thread, namespace)."""
        return self.latests + checkpoint_key[len(self.checkpoints):].rsplit("/", 1)[0]

    def writes_of(self, thread_id: str, ns: str, checkpoint_id: str) -> str:
        """The key of one checkpoint's pending writes."""
        return f"{self.writes}{thread_part(thread_id)}/{part(ns)}/{part(checkpoint_id)}"

    def writes_key(self, checkpoint_key: str) -> str:
        """The writes' key of a checkpoint key."""
        return self.writes + checkpoint_key[len(self.checkpoints):]

    def ids(self, key: str) -> tuple[str, str, str]:
        """``(thread_id, checkpoint_ns, checkpoint_id)`` of a checkpoint key or a writes key."""
        thread, ns, checkpoint_id = key[len(self.checkpoints):].split("/")  # "c/", "w/": 2
        return unpart(thread[1:-1]), unpart(ns), unpart(checkpoint_id)

    def moved(self, key: str, source: str, target: str) -> str:
        """``key`` of thread ``source`` as the same key of thread ``target``."""
        head = key[:len(self.checkpoints)]
        rest = key[len(self.checkpoints) + len(thread_part(source)):]
        return head + thread_part(target) + rest


def checkpoint_record(serde: SerializerProtocol, config: RunnableConfig,
                      checkpoint: Checkpoint, metadata: Mapping[str, Any]) -> dict[str, Any]:
    """What one key holds for a checkpoint (a value every kvstore serializer can hold: str and
    bytes). The run id is kept apart, so ``delete_for_runs`` reads no metadata."""
    ctype, cblob = serde.dumps_typed(checkpoint)
    mtype, mblob = serde.dumps_typed(metadata)
    return {"ct": ctype, "cb": cblob, "mt": mtype, "mb": mblob,
            "p": config["configurable"].get("checkpoint_id"), "r": metadata.get("run_id")}


def write_records(serde: SerializerProtocol, task_id: str, task_path: str,
                  writes: Iterable[tuple[str, Any]]) -> list[dict[str, Any]]:
    """One record per write, with the index LangGraph gives it (special channels: their own,
    negative, one)."""
    out = []
    for position, (channel, value) in enumerate(writes):
        vtype, vblob = serde.dumps_typed(value)
        out.append({"t": task_id, "p": task_path, "i": WRITES_IDX_MAP.get(channel, position),
                    "c": channel, "vt": vtype, "vb": vblob})
    return out


def merged(stored: list[dict[str, Any]], new: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The writes after ``put_writes`` of ``new``, as LangGraph's savers do it: a regular
    write already stored for (task, index) is kept, a special one (error, interrupt...,
    negative index) replaces it. A new list (``stored`` is not changed)."""
    at = {(w["t"], w["i"]): n for n, w in enumerate(stored)}
    out = list(stored)
    for w in new:
        n = at.get((w["t"], w["i"]))
        if n is None:
            at[(w["t"], w["i"])] = len(out)
            out.append(w)
        elif w["i"] < 0:
            out[n] = w
    return out


def config_for(thread_id: str, ns: str, checkpoint_id: str) -> RunnableConfig:
    return {"configurable": {"thread_id": thread_id, "checkpoint_ns": ns,
                             "checkpoint_id": checkpoint_id}}


def to_tuple(serde: SerializerProtocol, ids: tuple[str, str, str], record: Mapping[str, Any],
             writes: Sequence[Mapping[str, Any]], metadata: Any = None) -> CheckpointTuple:
    """The :class:`CheckpointTuple` of a stored checkpoint and its writes (in LangGraph's
    replay order, :func:`writes_sort_key`)."""
    thread_id, ns, checkpoint_id = ids
    ordered = writes if len(writes) < 2 else sorted(
        writes, key=lambda w: writes_sort_key(w["p"], w["t"], w["i"]))
    parent = record["p"]
    return CheckpointTuple(
        config=config_for(thread_id, ns, checkpoint_id),
        checkpoint=serde.loads_typed((record["ct"], bytes(record["cb"]))),
        metadata=metadata if metadata is not None else load_metadata(serde, record),
        parent_config=config_for(thread_id, ns, parent) if parent else None,
        pending_writes=[(w["t"], w["c"], serde.loads_typed((w["vt"], bytes(w["vb"]))))
                        for w in ordered])


def load_metadata(serde: SerializerProtocol, record: Mapping[str, Any]) -> Any:
    return serde.loads_typed((record["mt"], bytes(record["mb"])))


def matches(metadata: Mapping[str, Any], wanted: Mapping[str, Any] | None) -> bool:
    """``list(filter=...)``: every item of ``wanted`` equals the metadata's."""
    return not wanted or all(metadata.get(k) == v for k, v in wanted.items())
