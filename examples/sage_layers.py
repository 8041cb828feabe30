"""SAGE's four layers — memory, cache, database, file — with categories and TTLs from YAML.

    python examples/sage_layers.py [DATA_DIR]
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from kvstore import PersistenceManager

YAML = """
persistence:
  default_store: database
  memory: {max_entries: 10000}
  sqlite: {path: sage.db}              # relative paths: beside this file
  file: {base_path: files}
  categories:
    session:         {store: memory, ttl: 15m}
    query_history:   {store: cache, ttl: 24h}
    token_usage:     {store: cache, ttl: 1h}
    preferences:     {store: database}
    access_patterns: {store: database, ttl: 30d}
    config:          {store: file}
"""


def main(data_dir: str) -> None:
    os.environ["KVSTORE_DATA_DIR"] = data_dir
    path = Path(data_dir) / "sage.yaml"
    path.write_text(YAML)
    with PersistenceManager.from_yaml(path) as pm:
        pm.save("session:u1", {"user": "u1", "started": "09:00"})
        pm.save("query_history:u1", ["what is kvstore?"])
        pm.incr("token_usage:u1", 1200)
        pm.save("preferences:u1", {"theme": "dark", "language": "en"})
        pm.update("access_patterns:u1", lambda p: {**p, "logins": p["logins"] + 1},
                  default={"logins": 0})
        pm.save("config:sage/ui", {"font": 14})
        pm.save("unfiled", 1)
        for key in ["session:u1", "query_history:u1", "token_usage:u1", "preferences:u1",
                    "access_patterns:u1", "config:sage/ui", "unfiled"]:
            route = pm.route(key)
            ttl = "permanent" if route.ttl is None else f"{route.ttl:g}s"
            print(f"{key:20} -> {route.store:8} {ttl:>10}  {pm.load(key)}")
        print(f"layers: {', '.join(f'{n}={type(s).__name__}' for n, s in pm.stores.items())}")
        print(f"sqlite file beside the YAML: {(Path(data_dir) / 'sage.db').exists()}")
        print(f"config file on disk: {(Path(data_dir) / 'files' / 'config:sage' / 'ui.json').exists()}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="sage-"))
