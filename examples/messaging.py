"""A messaging app's conversation store: one record per conversation plus an index, saved on
every message, with several worker processes writing at once.

    python examples/messaging.py [DATA_DIR]

Each message updates its conversation record atomically (``pm.update``): 4 processes posting
to the same conversations lose nothing, where load + save would drop messages.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import sys
import tempfile
import time
from typing import Any

from kvstore import PersistenceManager

CONFIG = {"persistence": {"categories": {
    "conversation": {"store": "database"},
    "index": {"store": "database"},
}}}
WORKERS, MESSAGES, CONVERSATIONS = 4, 50, 3


def post(pm: PersistenceManager, conversation: str, sender: str, text: str) -> int:
    """Autosave on every message: the conversation record and the index, each atomically."""
    def add_message(record: dict[str, Any]) -> dict[str, Any]:
        messages = record["messages"] + [{"from": sender, "text": text, "at": time.time()}]
        return {**record, "messages": messages, "updated": time.time()}

    record = pm.update(f"conversation:{conversation}", add_message,
                       default={"id": conversation, "messages": []})
    pm.update("index:conversations",
              lambda ids: ids if conversation in ids else sorted(ids + [conversation]),
              default=[])
    return len(record["messages"])


def worker(data_dir: str, n: int) -> None:
    os.environ["KVSTORE_DATA_DIR"] = data_dir
    with PersistenceManager.from_config(CONFIG) as pm:
        for i in range(MESSAGES):
            post(pm, f"c{i % CONVERSATIONS}", f"worker-{n}", f"message {i}")


def main(data_dir: str) -> None:
    os.environ["KVSTORE_DATA_DIR"] = data_dir
    procs = [mp.Process(target=worker, args=(data_dir, n)) for n in range(WORKERS)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    with PersistenceManager.from_config(CONFIG) as pm:
        index = pm.load("index:conversations")
        total = 0
        for conversation in index:
            messages = pm.load(f"conversation:{conversation}")["messages"]
            total += len(messages)
            print(f"{conversation}: {len(messages)} messages from "
                  f"{len({m['from'] for m in messages})} workers")
        print(f"index: {index}")
        print(f"messages kept: {total} of {WORKERS * MESSAGES}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="messaging-"))
