"""HelixCode's state persistence: autosave, backup and restore, save/load/error callbacks,
gzip compression, and format detection.

    python examples/helixcode_state.py [DATA_DIR]
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

from kvstore import PersistenceManager, Serializer

def make_config(data_dir: str) -> dict:
    return {"persistence": {
        "sqlite": {"serializer": "json+gzip"},                   # compressed on disk
        "memory": {"snapshot": f"{data_dir}/memory.snap", "autosave": "1s"},  # autosave
        "categories": {"state": {"store": "database"}, "editor": {"store": "memory"}},
    }}


def main(data_dir: str) -> None:
    os.environ["KVSTORE_DATA_DIR"] = data_dir
    config = make_config(data_dir)
    events: list[str] = []
    with PersistenceManager.from_config(config) as pm:
        pm.on("save", lambda e: events.append(f"saved {e.key} ({e.size} bytes)"))
        pm.on("load", lambda e: events.append(f"loaded {e.key}"))
        pm.on("error", lambda e: events.append(f"error {type(e.error).__name__}"))
        session = {"open_files": [f"src/module_{i}.py" for i in range(50)], "cursor": [12, 4]}
        pm.save("state:session", session)
        pm.load("state:session")
        pm.save("editor:buffer", "print('hello')")       # memory, autosaved to the snapshot
        time.sleep(1.5)
        blob = pm.stores["database"].raw_get("state:session")
        print(f"stored as {Serializer.detect(blob)}: {len(blob)} bytes for "
              f"{len(Serializer('json').serialize(session))} bytes of JSON")
        backup = pm.backup(Path(data_dir) / "backups")
        pm.save("state:session", {"open_files": [], "cursor": [0, 0]})   # a later change
        pm.restore(backup)
        print(f"restored: {len(pm.load('state:session')['open_files'])} open files")
        try:
            pm.save("state:bad", object())
        except Exception as exc:  # SerializationError: nothing written
            print(f"refused: {type(exc).__name__}")
    print(f"snapshot written by autosave: {Path(data_dir, 'memory.snap').exists()}")
    with PersistenceManager.from_config(config) as pm:
        print(f"after restart, editor buffer: {pm.load('editor:buffer')!r}")
    print("events: " + "; ".join(events[:2]))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="helix-"))
