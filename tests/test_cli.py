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
    assert r.returncode == 2 and r.stderr.startswith("kvstore: --ttl: '5x'")
    assert len(r.stderr.strip().splitlines()) == 1
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


def test_config_check_shows_every_path(env, tmp_path):
    import yaml

    path = tmp_path / "app.yaml"
    path.write_text(yaml.safe_dump({"persistence": {
        "sqlite": {"path": str(tmp_path / "app.db")}, "file": {"base_path": str(tmp_path / "files")},
        "categories": {"query": {"store": "cache"}}}}))
    r = kv(env, "config", "check", config=path)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    for where in (tmp_path / "app.db", tmp_path / "app.cache.db", tmp_path / "files"):
        assert str(where) in out
    assert "backups" in out and "snapshot" in out


# -- messages and unavailable stores -------------------------------------------------------------


def _yaml(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_missing_import_file_is_a_usage_error_in_one_line(env, tmp_path):
    r = kv(env, "import", str(tmp_path / "nope.jsonl"))
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and "nope.jsonl" in r.stderr and "Errno" not in r.stderr


def test_yaml_syntax_error_is_one_line(env, tmp_path):
    bad = _yaml(tmp_path, "bad.yaml", "persistence:\n  categories: {a: [\n")
    r = kv(env, "keys", config=bad)
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert "bad.yaml" in r.stderr and "line 3" in r.stderr


def test_refuses_to_set_a_key_that_would_vanish_with_the_process(env, tmp_path):
    mem = _yaml(tmp_path, "mem.yaml", "persistence:\n  categories: {session: {store: memory}}\n")
    r = kv(env, "set", "session:x", "1", config=mem)
    assert r.returncode == 2 and "memory" in r.stderr and "snapshot" in r.stderr
    snap = _yaml(tmp_path, "snap.yaml", "persistence:\n  categories: {session: {store: memory}}\n"
                 f"  memory: {{snapshot: {tmp_path}/mem.snap}}\n")
    assert kv(env, "set", "session:x", "1", config=snap).returncode == 0
    assert kv(env, "get", "session:x", config=snap).stdout.strip() == "1"


def test_names_a_misspelt_top_level_key_as_written(env, tmp_path):
    typo = _yaml(tmp_path, "typo.yaml", "persistense:\n  default_store: file\n")
    r = kv(env, "keys", config=typo)
    assert r.returncode == 2
    assert r.stderr.startswith("kvstore: persistense: unknown top-level setting")
    assert "did you mean 'persistence'" in r.stderr and "persistence.persistense" not in r.stderr


@pytest.fixture
def redis_down(env, tmp_path):
    from redis_servers import free_port

    return _yaml(tmp_path, "down.yaml", "persistence:\n  redis: {url: 'redis://127.0.0.1:"
                 f"{free_port()}/0', connect_timeout: 0.3, socket_timeout: 0.3}}\n"
                 f"  sqlite: {{path: {tmp_path}/app.db}}\n")


def test_get_and_delete_with_redis_down_read_the_stores_that_answer(env, redis_down):
    assert kv(env, "set", "prefs:a", "1", config=redis_down).returncode == 0
    r = kv(env, "get", "prefs:a", config=redis_down)  # routed to database: Redis is not asked
    assert r.returncode == 0 and json.loads(r.stdout) == 1 and r.stderr == ""
    r = kv(env, "get", "prefs:nobody", config=redis_down)  # perhaps in the cache: unknown
    assert r.returncode == 3 and "the cache store could not be read" in r.stderr
    assert "not found" not in r.stderr
    r = kv(env, "delete", "prefs:a", config=redis_down)
    assert r.returncode == 3 and "the cache store could not be read" in r.stderr
    r = kv(env, "get", "prefs:a", "--store", "database", config=redis_down)
    assert r.returncode == 1  # deleted where it could be


def test_stats_reports_the_other_stores_when_redis_is_down(env, redis_down):
    assert kv(env, "set", "a", "1", config=redis_down).returncode == 0
    r = kv(env, "stats", config=redis_down)
    assert r.returncode == 3
    lines = {line.split()[0]: line for line in r.stdout.splitlines()}
    assert "unavailable" in lines["cache"]
    assert "1 key" in lines["database"] and "keys" in lines["file"]


def test_backup_names_the_unavailable_store_or_skips_it(env, redis_down, tmp_path):
    kv(env, "set", "a", "1", config=redis_down)
    dest = tmp_path / "backups"
    r = kv(env, "backup", "--dest", str(dest), config=redis_down)
    assert r.returncode == 3 and "'cache'" in r.stderr and "--skip-unavailable" in r.stderr
    assert not dest.exists() or not any(p.name.startswith("kvstore-backup-")
                                        for p in dest.iterdir())
    r = kv(env, "backup", "--dest", str(dest), "--skip-unavailable", config=redis_down)
    assert r.returncode == 0, r.stderr
    manifest = json.loads((Path(r.stdout.strip()) / "manifest.json").read_text())
    assert "cache" in manifest["skipped"] and manifest["stores"]["database"]["keys"] == 1


def _lines(stdout):
    return [json.loads(line) for line in stdout.splitlines()]


def test_log_append_read_tail_list_delete(env, config):
    for text in ("hi", "hello"):
        r = kv(env, "log", "append", "chat:42", json.dumps({"text": text}), config=config)
        assert r.returncode == 0 and r.stdout == ("1\n" if text == "hi" else "2\n"), r.stderr
    r = kv(env, "log", "append", "chat:42", "-", config=config, input='{"text": "how are you?"}\n')
    assert r.returncode == 0 and r.stdout == "3\n", r.stderr
    kv(env, "log", "append", "audit:1", '"boot"', config=config)
    r = kv(env, "log", "read", "chat:42", config=config)
    assert r.returncode == 0 and r.stdout.splitlines()[0] == '{"seq":1,"record":{"text":"hi"}}'
    assert [row["seq"] for row in _lines(r.stdout)] == [1, 2, 3]
    r = kv(env, "log", "read", "chat:42", "--reverse", "--limit", "2", config=config)
    assert [row["seq"] for row in _lines(r.stdout)] == [3, 2]
    r = kv(env, "log", "read", "chat:42", "--after", "1", config=config)
    assert [row["record"]["text"] for row in _lines(r.stdout)] == ["hello", "how are you?"]
    r = kv(env, "log", "tail", "chat:42", "-n", "2", config=config)
    assert [row["seq"] for row in _lines(r.stdout)] == [2, 3]
    assert kv(env, "log", "list", config=config).stdout == "audit:1\nchat:42\n"
    assert kv(env, "log", "list", "chat:", config=config).stdout == "chat:42\n"
    assert kv(env, "log", "delete", "chat:42", config=config).returncode == 0
    r = kv(env, "log", "delete", "chat:42", config=config)
    assert r.returncode == 1 and r.stderr == "kvstore: log 'chat:42' not found\n"
    assert kv(env, "log", "read", "chat:42", config=config).stdout == ""


def test_log_bad_record_and_name_are_usage_errors(env, config):
    r = kv(env, "log", "append", "chat:1", "not json", config=config)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr == "kvstore: RECORD for log 'chat:1' is not JSON (quote text: '\"hello\"')\n"
    r = kv(env, "log", "append", "", "1", config=config)
    assert r.returncode == 2 and len(r.stderr.splitlines()) == 1 and "Traceback" not in r.stderr
    r = kv(env, "log", "tail", "chat:1", "-n", "0", config=config)
    assert r.returncode == 2 and r.stderr == "kvstore: -n must be at least 1\n"
    r = kv(env, "log", "read", "chat:1", "--store", "nope", config=config)
    assert r.returncode == 2 and "unknown store" in r.stderr
    r = kv(env, "log", "append", "chat:1", "1", "--store", "memory", config=config)
    assert r.returncode == 2 and "the record would be gone" in r.stderr


def test_log_tail_follow_sees_another_process_append_and_exits_0_on_ctrl_c(env, config):
    import signal
    import time

    kv(env, "log", "append", "events:1", '{"n": 1}', config=config)
    cmd = [sys.executable, "-m", "kvstore", "--config", str(config), "log", "tail", "events:1",
           "--follow"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        assert json.loads(proc.stdout.readline()) == {"seq": 1, "record": {"n": 1}}
        assert kv(env, "log", "append", "events:1", '{"n": 2}', config=config).returncode == 0
        assert json.loads(proc.stdout.readline()) == {"seq": 2, "record": {"n": 2}}
        time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert out == "" and err == ""


# -- issue 25: the CLI's habits -------------------------------------------------------------------


def test_a_key_that_keys_lists_get_finds_and_delete_removes(env, config):
    assert kv(env, "set", "x", "1", "--store", "file", config=config).returncode == 0
    assert "x" in kv(env, "keys", config=config).stdout.split()
    r = kv(env, "get", "x", config=config)  # routes to database, lives in file
    assert r.returncode == 0 and json.loads(r.stdout) == 1, r.stderr
    assert "file store" in r.stderr and "routes to database" in r.stderr
    assert kv(env, "get", "x", "--store", "database", config=config).returncode == 1
    # held by two stores: get prefers the routed one; delete removes it from both
    assert kv(env, "set", "x", "2", config=config).returncode == 0
    assert json.loads(kv(env, "get", "x", config=config).stdout) == 2
    r = kv(env, "delete", "x", config=config)
    assert r.returncode == 0 and "database, file" in r.stderr
    assert "x" not in kv(env, "keys", config=config).stdout.split()
    assert kv(env, "get", "x", config=config).returncode == 1
    assert kv(env, "delete", "x", config=config).returncode == 1


def test_set_reads_the_value_from_stdin_or_a_file(env, config, tmp_path):
    big = "v" * 5_000_000  # past what one argument may hold on many systems
    r = kv(env, "set", "prefs:big", "-", config=config, input=json.dumps({"text": big}))
    assert r.returncode == 0, r.stderr
    assert json.loads(kv(env, "get", "prefs:big", config=config).stdout) == {"text": big}
    path = tmp_path / "value.json"
    path.write_text('["from", "a file"]', encoding="utf-8")
    assert kv(env, "set", "prefs:f", "--file", str(path), config=config).returncode == 0
    assert json.loads(kv(env, "get", "prefs:f", config=config).stdout) == ["from", "a file"]
    # the same VALUE rules for every source: not JSON is a usage error naming the source
    path.write_bytes(b"\xff\xfe\x00not json")
    r = kv(env, "set", "prefs:f", "--file", str(path), config=config)
    assert r.returncode == 2 and f"--file {path}" in r.stderr and "not JSON" in r.stderr
    r = kv(env, "set", "prefs:f", "-", config=config, input="hello")
    assert r.returncode == 2 and "stdin" in r.stderr
    r = kv(env, "set", "prefs:f", "1", "--file", str(path), config=config)
    assert r.returncode == 2 and "not both" in r.stderr
    assert kv(env, "set", "prefs:f", config=config).returncode == 2
    r = kv(env, "set", "prefs:f", "--file", str(tmp_path / "missing"), config=config)
    assert r.returncode == 2 and "cannot read" in r.stderr
    assert json.loads(kv(env, "get", "prefs:f", config=config).stdout) == ["from", "a file"]


def test_set_bytes_and_get_raw_round_trip_any_file(env, config, tmp_path):
    blob = bytes(range(256)) * 4000 + b"\x00\r\n"
    path = tmp_path / "blob.bin"
    path.write_bytes(blob)
    r = kv(env, "set", "prefs:blob", "--file", str(path), "--bytes", config=config)
    assert r.returncode == 0, r.stderr
    cmd = [sys.executable, "-m", "kvstore", "--config", str(config), "get", "prefs:blob", "--raw"]
    got = subprocess.run(cmd, env=env, capture_output=True, timeout=60)
    assert got.returncode == 0 and got.stdout == blob
    r = kv(env, "get", "prefs:blob", config=config)  # as JSON: the tagged bytes
    assert r.returncode == 0 and r.stdout.startswith("{")


def test_version(env):
    import kvstore

    r = kv(env, "--version")
    assert r.returncode == 0 and r.stdout.strip() == f"kvstore {kvstore.__version__}"
    toml = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    assert f'version = "{kvstore.__version__}"' in toml


@pytest.mark.parametrize("text", ["", "# only a comment\n", "persistence:\n", "persistence: {}\n"])
def test_an_empty_or_section_less_yaml_is_a_config_error_naming_the_file(env, tmp_path, text):
    path = tmp_path / "kv.yaml"
    path.write_text(text)
    for args in (["keys"], ["config", "check"]):
        r = kv(env, *args, config=path)
        assert r.returncode == 2 and str(path) in r.stderr and "no settings" in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("url, message", [
    ("http://localhost:6379/0", "persistence.redis.url: unknown scheme 'http'"),
    ("localhost:6379", "persistence.redis.url: 'localhost:6379' is not a redis:// URL"),
    ("redis+sentinel://h:26379", "persistence.redis.url: a Sentinel URL names the service"),
    ("redis://h/0?max_connections=x", "persistence.redis.url: max_connections='x' is not a whole"),
])
def test_redis_url_errors_carry_the_settings_full_path(env, tmp_path, url, message):
    path = tmp_path / "kv.yaml"
    path.write_text(f"persistence:\n  redis:\n    url: '{url}'\n")
    for args in (["keys"], ["config", "check"]):  # found while checking, before anything opens
        r = kv(env, *args, config=path)
        assert r.returncode == 2 and r.stderr.startswith(f"kvstore: {message}"), r.stderr


def test_a_stores_own_setting_error_gets_the_full_path():
    """An error a store raises while opening (past the YAML checks) names the YAML setting."""
    from dataclasses import replace

    from kvstore import ConfigError
    from kvstore.config import parse_config
    from kvstore.stores.opening import open_stores

    config = parse_config({"redis": {"url": "redis://127.0.0.1:1/0"}})
    bad = replace(config, redis=replace(config.redis, key_prefix=5))
    with pytest.raises(ConfigError, match=r"^persistence\.redis\.key_prefix: expected a string"):
        open_stores(bad)
