"""Isolated transactions and the manager's routed atomic methods.

A transaction checks at commit every key it read: a change since the read raises ConflictError
and writes nothing; ``pm.atomic`` re-runs on conflict, so 4 processes doing read-modify-write
transactions across SQLite, files (and Redis when present) lose nothing.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import threading
import time
import traceback
import uuid
from typing import Any

import pytest

from conftest import REDIS_URL
from kvstore import (ConflictError, InvalidArgumentError, LockTimeout, NotAListError,
                     PersistenceManager, StoreUnavailableError, TransactionError)

CATEGORIES = {
    "session": {"store": "memory"},
    "query_history": {"store": "cache", "ttl": "24h"},
    "preferences": {"store": "database"},
    "population": {"store": "database", "ttl": "1h"},
    "config": {"store": "file"},
    "memo": {"store": "database", "ttl": "10m"},
}


@pytest.fixture
def pm(data_dir):
    with PersistenceManager.from_config({"persistence": {"categories": CATEGORIES}}) as manager:
        yield manager


# -- isolation ---------------------------------------------------------------------------------


def test_a_change_since_the_read_raises_conflict_and_writes_nothing(pm):
    pm.save("preferences:balance", 100)
    with pytest.raises(ConflictError) as err:
        with pm.transaction() as tx:
            balance = tx.load("preferences:balance")
            pm.save("preferences:balance", 50)  # another writer, after our read
            tx.save("preferences:balance", balance - 10)
            tx.save("config:audit", "withdrew 10")
            tx.save("session:s", 1)
    assert isinstance(err.value, TransactionError)
    assert pm.load("preferences:balance") == 50
    assert not pm.exists("config:audit") and not pm.exists("session:s")


@pytest.mark.parametrize("key", ["preferences:new", "config:new", "session:new"])
def test_a_key_created_since_read_as_missing_conflicts(pm, key):
    with pytest.raises(ConflictError):
        with pm.transaction() as tx:
            assert not tx.exists(key)
            pm.save(key, "someone else")
            tx.save(key, "mine")
    assert pm.load(key) == "someone else"


def test_a_key_deleted_since_the_read_conflicts(pm):
    pm.save("config:c", 1)
    with pytest.raises(ConflictError):
        with pm.transaction() as tx:
            tx.load("config:c")
            pm.delete("config:c")
            tx.save("preferences:p", 1)
    assert not pm.exists("preferences:p")


def test_reads_inside_a_transaction_are_repeatable(pm):
    pm.save("preferences:a", 1)
    with pytest.raises(ConflictError):
        with pm.transaction() as tx:
            assert tx.load("preferences:a") == 1
            pm.save("preferences:a", 2)
            assert tx.load("preferences:a") == 1
            tx.save("preferences:b", 1)


def test_unread_keys_do_not_conflict(pm):
    pm.save("preferences:a", 1)
    with pm.transaction() as tx:
        tx.save("preferences:a", 2)  # a blind write: nothing was read, nothing to check
        tx.delete("preferences:gone")
        pm.save("preferences:a", 3)
    assert pm.load("preferences:a") == 2


def test_a_read_only_transaction_commits(pm):
    pm.save("preferences:a", 1)
    with pm.transaction() as tx:
        assert tx.load("preferences:a") == 1


def test_atomic_retries_on_conflict_and_returns(pm):
    pm.save("preferences:n", 0)
    calls = []

    def bump(tx: Any) -> int:
        calls.append(1)
        n = tx.load("preferences:n")
        if len(calls) == 1:
            pm.save("preferences:n", 10)  # a concurrent writer wins the first round
        tx.save("preferences:n", n + 1)
        return n + 1

    assert pm.atomic(bump) == 11
    assert pm.load("preferences:n") == 11 and len(calls) == 2


def test_atomic_gives_up_after_retries(pm):
    pm.save("preferences:n", 0)

    def always_loses(tx: Any) -> None:
        tx.load("preferences:n")
        pm.update("preferences:n", lambda v: v + 1)
        tx.save("preferences:other", 1)

    with pytest.raises(ConflictError):
        pm.atomic(always_loses, retries=2)
    assert pm.load("preferences:n") == 3
    with pytest.raises(InvalidArgumentError):
        pm.atomic(always_loses, retries=-1)


def test_atomic_across_threads_loses_nothing(pm):
    pm.save("preferences:a", 0)
    pm.save("config:b", 0)

    def move(tx: Any) -> None:
        tx.save("preferences:a", tx.load("preferences:a") + 1)
        tx.save("config:b", tx.load("config:b") - 1)

    def worker() -> None:
        for _ in range(20):
            pm.atomic(move, retries=1000)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert pm.load("preferences:a") == 80 and pm.load("config:b") == -80


def _config(tmp: str, prefix: str | None) -> dict[str, Any]:
    persistence: dict[str, Any] = {"categories": CATEGORIES}
    if prefix is not None:
        persistence["redis"] = {"url": REDIS_URL, "key_prefix": prefix}
    return {"persistence": persistence}


def _transfers(tmp: str, prefix: str | None, proc: int, n: int, queue: Any) -> None:
    try:
        os.environ["KVSTORE_DATA_DIR"] = tmp
        with PersistenceManager.from_config(_config(tmp, prefix)) as pm:
            keys = ["preferences:a", "config:b"] + (["query_history:c"] if prefix else [])

            def move(tx: Any) -> None:
                for key in keys:
                    tx.save(key, tx.load(key, 0) + 1)

            for _ in range(n):
                pm.atomic(move, retries=10_000)
        queue.put(None)
    except BaseException:
        queue.put(traceback.format_exc())


@pytest.mark.slow
def test_processes_atomic_transactions_lose_nothing(data_dir):
    """The issue's measurement: 4 processes x 60 read-modify-write transactions, 240 survive
    (60 did on 0.1)."""
    prefix = f"kvtest:{uuid.uuid4().hex[:8]}:" if REDIS_URL else None
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_transfers, args=(str(data_dir), prefix, p, 60, queue))
             for p in range(4)]
    for p in procs:
        p.start()
    errors = [e for e in (queue.get(timeout=300) for _ in procs) if e]
    for p in procs:
        p.join(60)
    assert not errors, errors[0]
    with PersistenceManager.from_config(_config(str(data_dir), prefix)) as pm:
        assert pm.load("preferences:a") == 240
        assert pm.load("config:b") == 240
        if prefix:
            assert pm.load("query_history:c") == 240
            pm.stores["cache"].clear()


# -- a commit whose Redis reply is lost: settled, never guessed ---------------------------------

@pytest.fixture
def pm_redis(data_dir):
    if not REDIS_URL:
        pytest.skip("needs KVSTORE_TEST_REDIS_URL")
    config = {"persistence": {"categories": CATEGORIES, "redis": {
        "url": REDIS_URL, "key_prefix": f"kvtest:{uuid.uuid4().hex[:8]}:", "ttl_default": None}}}
    with PersistenceManager.from_config(config) as manager:
        manager.save("preferences:k", "old")
        manager.save("query_history:k", "old")
        yield manager
        manager.stores["cache"].clear()


def _lose_reply(store: Any, *, run: bool) -> list[Any]:
    """The next commit script's reply is lost: it ran (``run``) or never reached Redis. Returns
    the arguments it was sent with, to deliver it late."""
    import redis

    real, sent = store._marked_script, []

    def lost(**kwargs: Any) -> Any:
        store._marked_script = real
        sent.append(kwargs)
        if run:
            real(**kwargs)
        raise redis.exceptions.TimeoutError("Timeout reading from socket")

    store._marked_script = lost
    return sent


def _commit_both(pm: Any, value: str) -> None:
    with pm.transaction() as tx:
        tx.save("preferences:k", value)
        tx.save("query_history:k", value)


def test_a_commit_applied_whose_reply_was_lost_completes(pm_redis):
    _lose_reply(pm_redis.stores["cache"], run=True)
    _commit_both(pm_redis, "new")  # Redis applied it: the commit goes on, nothing raises
    assert pm_redis.load("preferences:k") == "new" and pm_redis.load("query_history:k") == "new"


def test_a_commit_whose_script_never_ran_is_undone_and_refused_if_it_arrives_late(pm_redis):
    redis = pm_redis.stores["cache"]
    sent = _lose_reply(redis, run=False)
    with pytest.raises(TransactionError) as info:
        _commit_both(pm_redis, "new")
    assert info.value.outcome == "undone" and "'cache'" in str(info.value)
    assert redis._marked_script(**sent[0]) == -1  # delivered late: it refuses to run
    assert pm_redis.load("preferences:k") == "old" and pm_redis.load("query_history:k") == "old"


def test_an_unreachable_redis_leaves_the_commit_in_doubt_until_the_next_transaction(pm_redis):
    import redis as redis_py

    redis = pm_redis.stores["cache"]
    _lose_reply(redis, run=True)
    settle = redis._settle_script
    redis._settle_script = lambda **kw: (_ for _ in ()).throw(
        redis_py.exceptions.ConnectionError("Connection refused"))
    errors: list[Any] = []
    pm_redis.on("error", errors.append)
    with pytest.raises(TransactionError) as info:
        _commit_both(pm_redis, "new")
    assert info.value.outcome == "in doubt"
    assert "next transaction or manager to open settles it" in str(info.value)
    assert pm_redis.load("query_history:k") == "new"  # applied, while SQLite was rolled back
    assert pm_redis.load("preferences:k") == "old"
    redis._settle_script = settle  # Redis answers again
    with pm_redis.transaction() as tx:  # any next transaction settles it first
        tx.save("session:x", 1)
    assert pm_redis.load("query_history:k") == "old" and pm_redis.load("preferences:k") == "old"
    assert not pm_redis._core.journal.left


# -- the manager's routed atomic methods --------------------------------------------------------


def test_incr_routes_and_gives_a_new_key_its_category_ttl(pm):
    assert pm.incr("population:x") == 1
    assert pm.incr("population:x", 5) == 6
    assert 3500 < pm.ttl("population:x") <= 3600
    assert pm.stores["database"].load("population:x") == 6
    assert pm.incr("session:hits") == 1 and pm.ttl("session:hits") is None
    assert pm.stats()["database"]["saves"] >= 2


def test_ttl_and_touch_follow_the_category(pm):
    pm.save("population:a", 1, ttl=5)
    assert pm.ttl("population:a") <= 5
    assert pm.touch("population:a")  # no ttl: the category's
    assert 3500 < pm.ttl("population:a") <= 3600
    assert pm.touch("population:a", "2h") and pm.ttl("population:a") > 7000
    assert pm.touch("population:missing") is False
    assert pm.ttl("population:missing") is None


def test_add_update_append_are_routed(pm):
    assert pm.add("config:x", 1) and not pm.add("config:x", 2)
    assert pm.stores["file"].load("config:x") == 1
    assert pm.update("population:n", lambda v: v + 1, default=0) == 1
    assert 3500 < pm.ttl("population:n") <= 3600  # a new key gets its category's TTL
    assert pm.append("session:chat", "hi") == 1 and pm.append("session:chat", "yo") == 2
    assert pm.stores["memory"].load("session:chat") == ["hi", "yo"]
    pm.save("config:s", "text")
    with pytest.raises(NotAListError):
        pm.append("config:s", 1)
    assert pm.stats()["file"]["errors"] == 1


def test_get_or_set_counts_misses_and_hits(pm):
    assert pm.get_or_set("memo:k", lambda: 42) == 42
    assert pm.get_or_set("memo:k", lambda: 0) == 42
    assert 500 < pm.ttl("memo:k") <= 600  # the category's TTL
    stats = pm.stats()["database"]
    assert stats["misses"] == 1 and stats["hits"] == 1


def test_lock_is_routed_by_category(pm):
    with pm.lock("config:deploy", ttl=5):
        with pytest.raises(LockTimeout):
            with pm.stores["file"].lock("config:deploy", timeout=0):
                pass
        with pm.stores["database"].lock("config:deploy", timeout=0):
            pass  # another store's lock of the same name is another lock


def test_batches_are_grouped_per_store(pm):
    pm.save_many({"session:a": 1, "preferences:b": 2, "config:c": 3, "population:d": 4})
    assert pm.stores["memory"].load("session:a") == 1
    assert pm.stores["file"].load("config:c") == 3
    assert pm.ttl("preferences:b") is None
    assert 3500 < pm.ttl("population:d") <= 3600
    assert pm.load_many(["config:c", "session:a", "nope:x", "preferences:b"]) == {
        "config:c": 3, "session:a": 1, "preferences:b": 2}
    assert pm.delete_many(["session:a", "config:c", "nope:x"]) == 2
    assert not pm.exists("session:a") and not pm.exists("config:c")


def test_save_many_checks_everything_before_writing(pm):
    with pytest.raises(ValueError):
        pm.save_many({"session:a": 1, "config:../escape": 2, "": 3})
    assert not pm.exists("session:a")


def test_clear_with_a_category_prefix_asks_only_that_store(pm):
    pm.save("preferences:a", 1)
    pm.save("preferences:b", 2)
    pm.save("config:preferences:c", 3)
    pm.save("preferences:x", 4, store="file")  # put elsewhere by hand: not this category's
    assert sorted(pm.keys("preferences:")) == ["preferences:a", "preferences:b"]
    assert pm.clear("preferences:") == 2
    assert pm.load("preferences:x", store="file") == 4
    assert pm.load("config:preferences:c") == 3


def test_keys_of_a_category_works_while_redis_is_down(data_dir):
    from redis_servers import free_port

    config = {"persistence": {"categories": CATEGORIES,
                              "redis": {"url": f"redis://127.0.0.1:{free_port()}/0",
                                        "socket_timeout": 0.2, "connect_timeout": 0.2}}}
    with PersistenceManager.from_config(config) as pm:
        pm.save("population:a", 1)
        assert list(pm.keys("population:")) == ["population:a"]
        assert pm.clear("population:") == 1
        with pytest.raises(StoreUnavailableError):
            list(pm.keys(""))


def test_cached_memoizes_by_arguments(pm):
    calls: list[Any] = []

    @pm.cached(category="memo", ttl="10m")
    def square(x: int, *, label: str = "") -> dict[str, Any]:
        calls.append(x)
        return {"x": x * x, "label": label}

    assert square(3) == {"x": 9, "label": ""}
    assert square(3) == {"x": 9, "label": ""}
    assert square(4, label="b") == {"x": 16, "label": "b"}
    assert calls == [3, 4]
    key = square.cache_key(3)
    assert key.startswith("memo:") and pm.exists(key) and 500 < pm.ttl(key) <= 600
    assert square.invalidate(3)
    square(3)
    assert calls == [3, 4, 3]
    assert square.__name__ == "square"


def test_cached_methods_share_results_across_instances(pm):
    calls = []

    class Report:
        def __init__(self, who: str) -> None:
            self.who = who

        @pm.cached(category="memo")
        def build(self, day: str) -> str:
            calls.append(day)
            return f"report {day}"

    assert Report("a").build("mon") == Report("b").build("mon") == "report mon"
    assert calls == ["mon"]


def test_cached_computes_once_among_threads(pm):
    calls = []

    @pm.cached(category="memo")
    def slow(x: int) -> int:
        calls.append(x)
        time.sleep(0.3)
        return x

    threads = [threading.Thread(target=slow, args=(7,)) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert calls == [7]


def test_cached_rejects_bad_settings(pm):
    with pytest.raises(InvalidArgumentError):
        pm.cached(category="a:b")
    with pytest.raises(ValueError):
        pm.cached(ttl="5x")


def test_the_transaction_class_is_the_generated_one(pm):
    """``kvstore.manager.Transaction`` is the generated class ``pm.transaction()`` yields; a
    finished transaction refuses more work."""
    from kvstore.front.transaction_sync import Transaction as Generated
    from kvstore.manager import Transaction

    assert Transaction is Generated
    with pm.transaction() as tx:
        assert isinstance(tx, Transaction)
        assert tx.save("config:t", 1) and not tx.delete("config:nope") and len(tx) == 2
    assert pm.load("config:t") == 1
    with pytest.raises(TransactionError):
        tx.save("config:t", 2)
    with pytest.raises(TransactionError):
        tx.commit()
