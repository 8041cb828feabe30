"""The ``kvstore`` command, run as a user would: in a subprocess, checking output and exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.fixture
def env(tmp_path):
    e = dict(os.environ)
    e["KVSTORE_DATA_DIR"] = str(tmp_path / "data")
    e.pop("KVSTORE_CONFIG", None)
    return e


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "kv.yaml"
    path.write_text(f"""
persistence:
  default_store: database
  pickle_secret: ${{KV_TEST_SECRET:-}}
  sqlite: {{path: {tmp_path}/db.sqlite}}
  file: {{base_path: {tmp_path}/files}}
  categories:
    config: {{store: file}}
    hist: {{store: cache, ttl: 24h}}
  backup: {{path: {tmp_path}/backups, retention: 2}}
""")
    return path


def kv(env, *args, config=None, input=None):
    cmd = [sys.executable, "-m", "kvstore"]
    if config is not None:
        cmd += ["--config", str(config)]
    return subprocess.run(cmd + list(args), env=env, capture_output=True, text=True, timeout=60,
                          input=input)


def test_set_get_delete_with_exit_codes(env, config):
    r = kv(env, "set", "prefs:ann", '{"theme": "dark", "n": 2}', config=config)
    assert r.returncode == 0, r.stderr
    r = kv(env, "get", "prefs:ann", config=config)
    assert r.returncode == 0 and json.loads(r.stdout) == {"theme": "dark", "n": 2}
    r = kv(env, "get", "prefs:nobody", config=config)
    assert r.returncode == 1 and r.stdout == "" and "not found" in r.stderr
    assert kv(env, "delete", "prefs:ann", config=config).returncode == 0
    assert kv(env, "delete", "prefs:ann", config=config).returncode == 1


def test_set_with_ttl_and_route(env, config):
    assert kv(env, "set", "hist:q", '"query"', "--ttl", "1h", config=config).returncode == 0
    r = kv(env, "route", "hist:q", config=config)
    assert r.returncode == 0 and "cache" in r.stdout and "86400" in r.stdout
    r = kv(env, "route", "config:ui", config=config)
    assert "file" in r.stdout


def test_keys_and_stats(env, config):
    for key in ["prefs:a", "prefs:b", "config:ui"]:
        assert kv(env, "set", key, "1", config=config).returncode == 0
    r = kv(env, "keys", "prefs:", config=config)
    assert r.stdout.split() == ["prefs:a", "prefs:b"]
    r = kv(env, "stats", config=config)
    assert r.returncode == 0
    assert any(line.startswith("database") and " 2 keys" in line for line in r.stdout.splitlines())
    assert (Path(config).parent / "files" / "config:ui.json").exists() or \
        any((Path(config).parent / "files").rglob("*.json"))


def test_usage_errors_exit_2_with_one_line(env, config, tmp_path):
    r = kv(env, "set", "k", "not json", config=config)
    assert r.returncode == 2 and "JSON" in r.stderr and "Traceback" not in r.stderr
    r = kv(env, "set", "k", "1", "--ttl", "5x", config=config)
    assert r.returncode == 2 and "5x" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = kv(env, "get", "k", "--store", "disk", config=config)
    assert r.returncode == 2 and "disk" in r.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("persistence:\n  categories:\n    s: {store: ram}\n")
    r = kv(env, "get", "k", config=bad)
    assert r.returncode == 2
    assert r.stderr.strip() == ("kvstore: persistence.categories.s.store: 'ram' is not one of "
                                "memory, cache, database, file")
    r = kv(env, "frobnicate")
    assert r.returncode == 2


def test_config_check_masks_secrets(env, tmp_path):
    env["KV_TEST_SECRET"] = "pickle-hunter2"
    env["REDIS_URL"] = "redis://app:redis-hunter2@127.0.0.1:6379/0"
    config = tmp_path / "secret.yaml"
    config.write_text("persistence:\n  pickle_secret: ${KV_TEST_SECRET}\n"
                      "  redis: {url: '${REDIS_URL}'}\n")
    r = kv(env, "config", "check", config=config)
    assert r.returncode == 0, r.stderr
    assert "hunter2" not in r.stdout and "***" in r.stdout
    resolved = json.loads(r.stdout.split("\n", 1)[1])["persistence"]
    assert resolved["redis"]["url"] == "redis://app:***@127.0.0.1:6379/0"
    assert resolved["default_store"] == "database"


def test_backup_and_restore(env, config, tmp_path):
    kv(env, "set", "prefs:a", '{"v": 1}', config=config)
    r = kv(env, "backup", config=config)
    assert r.returncode == 0, r.stderr
    path = r.stdout.strip()
    assert Path(path, "manifest.json").exists()
    assert r.stderr == ""  # not a terminal: no progress bar
    kv(env, "delete", "prefs:a", config=config)
    r = kv(env, "restore", path, config=config)
    assert r.returncode == 0, r.stderr
    assert json.loads(kv(env, "get", "prefs:a", config=config).stdout) == {"v": 1}
    r = kv(env, "restore", str(tmp_path / "no-such-backup"), config=config)
    assert r.returncode == 3 and "not a backup" in r.stderr


def test_export_import(env, config, tmp_path):
    kv(env, "set", "prefs:a", '{"v": 1}', config=config)
    kv(env, "set", "prefs:b", "[1, 2]", "--ttl", "1h", config=config)
    out = tmp_path / "dump.jsonl"
    r = kv(env, "export", "--category", "prefs", "-o", str(out), config=config)
    assert r.returncode == 0, r.stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["key"] for r in records) == ["prefs:a", "prefs:b"]
    kv(env, "delete", "prefs:a", config=config)
    kv(env, "delete", "prefs:b", config=config)
    r = kv(env, "import", str(out), config=config)
    assert r.returncode == 0 and "2 keys imported" in r.stdout
    assert json.loads(kv(env, "get", "prefs:b", config=config).stdout) == [1, 2]
    r = kv(env, "import", "-", "--store", "file", config=config, input=out.read_text())
    assert r.returncode == 0
    assert json.loads(kv(env, "get", "prefs:a", "--store", "file", config=config).stdout) == {"v": 1}


def test_migrate(env, config):
    for i in range(30):
        kv_args = ["set", f"m:{i}", str(i)]
        if i == 0:
            kv_args += ["--ttl", "1h"]
        assert kv(env, *kv_args, config=config).returncode == 0
    r = kv(env, "migrate", "--from", "database", "--to", "file", "--prefix", "m:", config=config)
    assert r.returncode == 0 and "30 keys copied" in r.stdout, r.stderr
    assert kv(env, "get", "m:7", "--store", "file", config=config).stdout.strip() == "7"
    r = kv(env, "migrate", "--from", "database", "--to", "nowhere", config=config)
    assert r.returncode == 2


def test_demo_runs_on_the_embedded_default(env):
    r = kv(env, "demo")
    assert r.returncode == 0, r.stderr
    assert "rolled back" in r.stdout and "<expired>" in r.stdout
