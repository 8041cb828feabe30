"""README.md's examples run as a new user would run them, so they cannot drift from the code.

The rules (a block is a fenced code block; a marker is an HTML comment on the line just before
its fence, ``<!-- readme-test: WORD ...; WORD ... -->``):

- Every ```python block runs in a fresh ``python`` process: cwd an empty temporary folder of its
  own, ``KVSTORE_DATA_DIR`` inside it, ``KVSTORE_CONFIG`` unset. Top-level ``await`` /
  ``async with`` / ``async for`` run as in ``python -m asyncio`` (the code is compiled with
  ``PyCF_ALLOW_TOP_LEVEL_AWAIT`` and awaited).
- ``continues``: the block builds on the previous ```python block of its section and runs
  concatenated after it, in the same process.
- ``setup: CODE``: CODE (one line of Python; ``;`` separates statements) runs first, hidden, for
  a fragment that uses a name the prose introduces (``pm``, a manager on the embedded default).
- ``file NAME``: a ```yaml (or any) block is written to NAME in the folder of every block of its
  section and of later sections, before they run. Every ```yaml block must load as a kvstore
  configuration.
- ``needs redis`` / ``needs postgres``: skipped with the reason unless ``KVSTORE_TEST_REDIS_URL``
  / ``KVSTORE_TEST_POSTGRES_DSN`` is set; when set, the block's ``redis://...`` /
  ``postgresql://...`` URLs are replaced by it. ``needs MODULE`` (any other word, e.g.
  ``langchain_core``): skipped with the reason unless that optional package is installed.
- ``skip (reason)``: not run; the reason is shown. Blocks that are neither Python nor ``kvstore``
  commands (``pip install``, ``docker compose``) are marked so as well: every ```python,
  ```console and ```bash block is either run or marked skip, and the skips are counted.
- ``/var/app`` (a server's data folder in the examples) is the section's folder.
- Expected values: an expression statement whose comment begins, after an optional ``-> ``, with
  a repr (a literal such as ``{'name': 'Ann'}``, ``[(1, {...})]``, ``3``, ``True``, or
  ``Name(...)``) must evaluate to a value whose ``repr`` matches it, ``...`` standing for any
  text. Text after the repr (``, oldest first``, ``: atomic ...``) is commentary; a bare number
  counts only when nothing but ``,`` or ``:`` follows it, and a comment that is prose
  (``# -> memory``, ``# atomic``, ``# 4 workers, 0 lost``) is not compared.
- ```console / ```bash blocks whose commands (``$ `` lines) are all ``kvstore ...`` run in order
  in their section's folder, each command in ``bash`` with ``kvstore`` meaning ``python -m
  kvstore``; the lines after a command are its output (stdout and stderr) and must match, and it
  must exit 0 (a command that shows a failure ends in ``; echo "exit $?"``). In the
  shown output ``/home/ann/app`` stands for the section's folder, a line ``...`` for any lines, and
  a backup's timestamped name for whichever name the run's ``backup`` printed (commands naming
  the README's backup get the real one).
"""

from __future__ import annotations

import ast
import importlib.util
import marshal
import os
import re
import subprocess
import sys
import tokenize
from dataclasses import dataclass, field
from io import StringIO
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
MARKER = re.compile(r"<!--\s*readme-test:\s*(.*?)\s*-->")
FENCE = re.compile(r"^```(\w*)\s*$")
SERVERS = {"redis": ("KVSTORE_TEST_REDIS_URL", re.compile(r"redis://[^\s\"']+")),
           "postgres": ("KVSTORE_TEST_POSTGRES_DSN", re.compile(r"postgres(?:ql)?://[^\s\"']+"))}
SHOWN_HOME = "/home/ann/app"  # the user's folder in shown output
SERVER_DIR = "/var/app"  # a server's data folder in the examples
BACKUP_NAME = re.compile(r"kvstore-backup-\d{8}T\d{6}\.\d+Z-[0-9a-f]+")


@dataclass
class Block:
    lang: str
    text: str
    line: int  # of the opening fence, 1-based
    section: str
    markers: dict[str, str] = field(default_factory=dict)

    @property
    def where(self) -> str:
        return f"README.md:{self.line} ({self.section})"


def _markers(comment: str) -> dict[str, str]:
    """``skip (a; b); needs redis`` -> {"skip": "(a; b)", "needs": "redis"}; ``setup:`` takes
    the rest of the comment."""
    found: dict[str, str] = {}
    head, setup, code = comment.partition("setup:")
    for part in re.split(r";(?![^()]*\))", head):
        word, _, rest = part.strip().partition(" ")
        if word:
            found[word] = rest.strip()
    if setup:
        found["setup"] = code.strip()
    return found


def parse_readme(text: str) -> list[Block]:
    blocks: list[Block] = []
    lines = text.splitlines()
    section, i = "top", 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("## "):
            section = line[3:].strip()
        fence = FENCE.match(line)
        if fence and fence.group(1):
            start, body = i, []
            i += 1
            while i < len(lines) and lines[i] != "```":
                body.append(lines[i])
                i += 1
            previous = lines[start - 1] if start else ""
            marker = MARKER.search(previous)
            blocks.append(Block(fence.group(1), "\n".join(body) + "\n", start + 1, section,
                                _markers(marker.group(1)) if marker else {}))
        i += 1
    return blocks


BLOCKS = parse_readme(README.read_text(encoding="utf-8"))


def _is_cli(block: Block) -> bool:
    commands = [ln[2:] for ln in block.text.splitlines() if ln.startswith("$ ")]
    return bool(commands) and all(c.startswith("kvstore ") for c in commands)


def _env(tmp: Path) -> dict[str, str]:
    env = dict(os.environ, KVSTORE_DATA_DIR=str(tmp / "data"), PYTHONPATH=str(ROOT))
    env.pop("KVSTORE_CONFIG", None)
    return env


# -- expected values in comments -------------------------------------------------------------------

_REPR_START = re.compile(r"[\[{('\"]|-?\d|True\b|False\b|None\b|[A-Z]\w*\(")
_CLOSE = {"(": ")", "[": "]", "{": "}"}


def _shown_repr(comment: str) -> str | None:
    """The repr a comment shows, or None when the comment is prose."""
    text = comment.lstrip("#").strip()
    if text.startswith("->"):
        text = text[2:].strip()
    if not _REPR_START.match(text):
        return None
    if not (text[0] in "([{'\"" or text[0].isupper() and "(" in text):
        scalar = re.match(r"[^\s,:]+(?=$|[,:])", text)  # a number, True, False or None
        return scalar.group(0) if scalar else None  # "4 workers, 0 lost" is prose
    depth, quote, i = 0, "", 0
    while i < len(text):
        ch = text[i]
        if quote:
            if ch == "\\":
                i += 1
            elif ch == quote:
                quote = ""
                if depth == 0:
                    return text[:i + 1]
        elif ch in "'\"":
            quote = ch
        elif ch in _CLOSE:
            depth += 1
        elif ch in _CLOSE.values():
            depth -= 1
            if depth == 0:
                return text[:i + 1]
        i += 1
    return text


def _comments(source: str) -> dict[int, str]:
    return {tok.start[0]: tok.string
            for tok in tokenize.generate_tokens(StringIO(source).readline)
            if tok.type == tokenize.COMMENT}


class _Checks(ast.NodeTransformer):
    """Wraps `expr  # <repr>` statements in a call that compares the value's repr."""

    def __init__(self, comments: dict[int, str]) -> None:
        self.comments = comments

    def visit_Expr(self, node: ast.Expr) -> ast.AST:
        comment = self.comments.get(node.end_lineno or node.lineno)
        shown = _shown_repr(comment) if comment else None
        if shown is None or isinstance(node.value, ast.Constant):
            return node
        call = ast.Call(ast.Name("__readme_check", ast.Load()),
                        [node.value, ast.Constant(shown), ast.Constant(node.lineno)], [])
        return ast.copy_location(ast.Expr(ast.copy_location(call, node)), node)


RUNNER = """
import asyncio, inspect, marshal, re, sys

def check(value, shown, line):
    pattern = ".*".join(re.escape(part) for part in shown.split("..."))
    if not re.fullmatch(pattern, repr(value), re.S):
        raise AssertionError(f"README.md:{line} shows {shown}, the code gives {value!r}")

with open(sys.argv[1], "rb") as f:
    code = marshal.load(f)
result = eval(code, {"__name__": "__main__", "__readme_check": check})
if inspect.iscoroutine(result):
    asyncio.run(result)
"""


def _program(texts: list[tuple[Block, str]]) -> bytes:
    """One compiled program from a chain of blocks; tracebacks name README.md and its lines."""
    lines: list[str] = []
    for block, text in texts:
        setup = block.markers.get("setup")
        pad = block.line - len(lines) - (1 if setup else 0)  # its first line is block.line + 1
        assert pad >= 0, f"{block.where}: a setup line needs a line above the fence"
        lines.extend([""] * pad)
        if setup:
            lines.append(setup)
        lines.extend(text.splitlines())
    source = "\n".join(lines) + "\n"
    tree = ast.fix_missing_locations(_Checks(_comments(source)).visit(ast.parse(source)))
    # dont_inherit: the block runs as a user's file would, without this module's
    # ``from __future__ import annotations`` (string annotations break TypedDict schemas).
    code = compile(tree, str(README), "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT,
                   dont_inherit=True)
    return marshal.dumps(code)


# -- the groups ------------------------------------------------------------------------------------

def _python_groups() -> list[list[Block]]:
    groups: list[list[Block]] = []
    for block in BLOCKS:
        if block.lang != "python" or "skip" in block.markers:
            continue
        if "continues" in block.markers:
            assert groups and groups[-1][-1].section == block.section, \
                f"{block.where}: 'continues' needs a previous python block in its section"
            groups[-1].append(block)
        else:
            groups.append([block])
    return groups


def _section_files(section: str, tmp: Path) -> None:
    last = max(i for i, b in enumerate(BLOCKS) if b.section == section)
    for block in BLOCKS[:last + 1]:
        if "file" in block.markers:
            (tmp / block.markers["file"]).write_text(block.text, encoding="utf-8")


def _installed(module: str) -> bool:
    """True when ``module`` (dotted: ``langgraph.graph``) can be imported; a missing parent
    package is "not installed", not an error."""
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def _servers(block: Block, text: str) -> str:
    for name in block.markers.get("needs", "").split():
        if name not in SERVERS and not _installed(name):
            pytest.skip(f"{block.where} needs {name}: an optional package, not installed")
    for name, (variable, url) in SERVERS.items():
        if name in block.markers.get("needs", "").split():
            value = os.environ.get(variable)
            if not value:
                pytest.skip(f"{block.where} needs {name}: set {variable}")
            text = url.sub(value, text)
    return text


PYTHON_GROUPS = _python_groups()


@pytest.mark.parametrize("group", PYTHON_GROUPS, ids=[g[0].where for g in PYTHON_GROUPS])
def test_python_block(group: list[Block], tmp_path: Path) -> None:
    texts = [(block, _servers(block, block.text).replace(SERVER_DIR, str(tmp_path)))
             for block in group]
    _section_files(group[0].section, tmp_path)
    script = tmp_path / "readme_block.marshal"
    script.write_bytes(_program(texts))
    r = subprocess.run([sys.executable, "-c", RUNNER, str(script)],
                       cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, f"{group[0].where} failed:\n{r.stdout}\n{r.stderr}"


# -- console blocks --------------------------------------------------------------------------------

def _commands(block: Block) -> list[tuple[str, list[str]]]:
    steps: list[tuple[str, list[str]]] = []
    for line in block.text.splitlines():
        if line.startswith("$ "):
            steps.append((line[2:], []))
        else:
            steps[-1][1].append(line)
    return steps


def _matches(shown: list[str], got: list[str]) -> bool:
    if not shown:
        return not got
    if shown[0].strip() == "...":
        return any(_matches(shown[1:], got[i:]) for i in range(len(got) + 1))
    return bool(got) and shown[0].rstrip() == got[0].rstrip() and _matches(shown[1:], got[1:])


CLI_SECTIONS = sorted({b.section for b in BLOCKS if b.lang in ("console", "bash") and _is_cli(b)
                       and "skip" not in b.markers}, key=[b.section for b in BLOCKS].index)


@pytest.mark.parametrize("section", CLI_SECTIONS)
def test_console_blocks(section: str, tmp_path: Path) -> None:
    _section_files(section, tmp_path)
    home = str(tmp_path.resolve())
    prelude = f'kvstore() {{ "{sys.executable}" -m kvstore "$@"; }}\n'
    backup = None
    for block in BLOCKS:
        if block.section != section or block.lang not in ("console", "bash") \
                or not _is_cli(block) or "skip" in block.markers:
            continue
        for command, shown in _commands(block):
            run = command if backup is None else BACKUP_NAME.sub(backup, command)
            r = subprocess.run(["bash", "-c", prelude + "{ " + run + "\n} 2>&1"], cwd=tmp_path,
                               env=dict(_env(tmp_path), HOME=home), capture_output=True,
                               text=True, timeout=60)
            out = r.stdout
            name = BACKUP_NAME.search(out)
            if name:
                backup = name.group(0)
            got = BACKUP_NAME.sub("<backup>", out.replace(home, SHOWN_HOME)).splitlines()
            want = [BACKUP_NAME.sub("<backup>", line) for line in shown]
            assert r.returncode == 0 and _matches(want, got), (
                f"{block.where}: $ {command}\nREADME shows:\n" + "\n".join(shown)
                + "\nthe command printed:\n" + out + r.stderr)


# -- the other blocks ------------------------------------------------------------------------------

def test_yaml_blocks_are_valid_configurations(tmp_path: Path) -> None:
    from kvstore.config import load_config

    checked = 0
    for block in BLOCKS:
        if block.lang == "yaml" and "skip" not in block.markers:
            path = tmp_path / f"block{block.line}.yaml"
            path.write_text(block.text, encoding="utf-8")
            load_config(path)  # a ConfigError names the mistake
            checked += 1
    assert checked


def test_every_block_is_run_or_skipped_with_a_reason() -> None:
    runnable = ("python", "console", "bash", "yaml", "toml")
    for block in BLOCKS:
        assert block.lang in runnable, f"{block.where}: no rule for ```{block.lang} blocks"
        if "skip" in block.markers:
            assert re.fullmatch(r"\(.+\)", block.markers["skip"]), \
                f"{block.where}: a skip needs a reason: <!-- readme-test: skip (why) -->"
        elif block.lang in ("console", "bash"):
            assert _is_cli(block), f"{block.where}: not a kvstore command; mark it skip (why)"
    skipped = [b for b in BLOCKS if "skip" in b.markers]
    # A block that needs an optional framework names the test that runs it instead, which must
    # exist and read the README: skip (needs langgraph (runs in tests/test_x.py))
    elsewhere = []
    for block in skipped:
        if m := re.search(r"runs in (tests/[\w/]+\.py)", block.markers["skip"]):
            runner = ROOT / m.group(1)
            assert runner.is_file() and "README" in runner.read_text(), f"{block.where}: {runner}"
            elsewhere.append(block)
    assert len(skipped) - len(elsewhere) <= 5, [b.where for b in skipped]  # installs, docker...


def test_shown_repr_convention() -> None:
    assert _shown_repr("# {'name': 'Ann'}") == "{'name': 'Ann'}"
    assert _shown_repr("# -> 1: atomic across threads") == "1"
    assert _shown_repr("# [(1, {...}), (2, {...})], oldest first") == "[(1, {...}), (2, {...})]"
    route = "Route(store='c', reason=\"x 'y' ...\")"
    assert _shown_repr(f"# {route}, commentary") == route
    assert _shown_repr("# -> memory") is None
    assert _shown_repr("# 4 workers, 0 lost") is None
    assert _shown_repr("# -> 2") == "2"
    assert _markers("skip (a; b)") == {"skip": "(a; b)"}
    assert _markers("needs redis; setup: a = 1; b = 2") == {"needs": "redis",
                                                             "setup": "a = 1; b = 2"}
    assert _shown_repr("# atomic, also across processes") is None
    assert _shown_repr("# {}") == "{}"


def test_server_blocks_get_the_test_servers(monkeypatch) -> None:
    block = Block("python", 'open_url("redis://127.0.0.1:6379/0")\n', 1, "s", {"needs": "redis"})
    monkeypatch.setenv("KVSTORE_TEST_REDIS_URL", "redis://10.0.0.9:6380/3")
    assert _servers(block, block.text) == 'open_url("redis://10.0.0.9:6380/3")\n'
    monkeypatch.delenv("KVSTORE_TEST_REDIS_URL")
    with pytest.raises(pytest.skip.Exception, match="needs redis: set KVSTORE_TEST_REDIS_URL"):
        _servers(block, block.text)
    assert _servers(Block("python", "1\n", 1, "s", {"needs": "json"}), "1\n") == "1\n"
    with pytest.raises(pytest.skip.Exception, match="needs no_such_mod: an optional package"):
        _servers(Block("python", "1\n", 1, "s", {"needs": "no_such_mod"}), "1\n")


def test_toml_blocks_parse() -> None:
    import tomllib

    blocks = [b for b in BLOCKS if b.lang == "toml"]
    assert blocks
    for block in blocks:
        tomllib.loads(block.text)  # a pyproject.toml fragment a user copies


# -- numbers and defaults the prose states (issue 25: the README disagreed with what runs) ---------

def test_the_load_save_loss_quoted_is_the_measured_one() -> None:
    """The Concurrency section's loss range is the one in benchmarks/results/concurrency.json."""
    import json

    results = json.loads((ROOT / "benchmarks" / "results" / "concurrency.json").read_text())
    shares = [100 * r["naive"]["lost"] / r["naive"]["appends"]
              for r in results["results"].values() if "naive" in r]
    text = README.read_text(encoding="utf-8")
    m = re.search(r"lost (\d+)–(\d+)% of them in the run below", text)
    assert m, "the Concurrency section quotes the measured loss as 'lost A–B% of them in the run below'"
    assert (int(m.group(1)), int(m.group(2))) == (int(min(shares)), round(max(shares)))


def test_the_outage_timeouts_named_are_the_defaults_that_apply() -> None:
    from kvstore.config import RedisConfig

    text = " ".join(README.read_text(encoding="utf-8").split())
    defaults = RedisConfig()
    assert (f"socket timeout (`socket_timeout`, {defaults.socket_timeout:g} s by default"
            in text)
    assert f"`connect_timeout` ({defaults.connect_timeout:g} s) bounds only setting up" in text
    assert "within the connect/socket timeout" not in text


def test_the_test_line_says_private_redis_servers_start_when_installed() -> None:
    top = README.read_text(encoding="utf-8").split("\n## ", 1)[0]
    assert "When `redis-server` is installed" in top and "private `redis-server`" in top
