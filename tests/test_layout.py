"""The package keeps the shape the architecture promises (README: Writing a backend).

Each check fails on the layout before issue 22: modules past ~500 lines, modules reaching into
each other's ``_private`` names, type switches on backend classes outside the registry, and the
asyncio front restating the synchronous operations.
"""

from __future__ import annotations

import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "kvstore"
SOURCES = sorted(PACKAGE.rglob("*.py"))
BACKEND_CLASSES = r"(MemoryStore|SQLiteStore|FileStore|RedisStore|PostgresStore|FallbackStore)"
#: namedtuple's documented methods, os._exit: spelled with "_" but public.
PUBLIC_UNDERSCORED = {"_replace", "_asdict", "_fields", "_make", "_exit"}


def _text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def test_no_module_past_500_lines():
    long = {str(p.relative_to(PACKAGE)): n for p in SOURCES
            if (n := len(_text(p).splitlines())) > 500}
    assert not long, long


def test_no_module_uses_another_modules_private_names():
    """``obj._name`` (obj not self/cls) where this module does not itself define ``_name``, and
    ``from x import _name`` (a private helper module's names, ``kvstore._msgpack``'s, excepted)."""
    found = []
    for path in SOURCES:
        text = _text(path)
        own = (set(re.findall(r"def (_\w+)", text)) | set(re.findall(r"self\.(_\w+)\s*[:=]", text))
               | set(re.findall(r"^\s+(_\w+)\s*[:=]", text, re.M)))
        for m in re.finditer(r"(\b[A-Za-z_]\w*|\))\.(_[a-z]\w*)\b", text):
            if m.group(1) not in ("self", "cls") and m.group(2) not in PUBLIC_UNDERSCORED | own:
                found.append(f"{path.relative_to(PACKAGE)}: {m.group(0)}")
        for m in re.finditer(r"^\s*from (\S+) import (.*)$", text, re.M):
            if m.group(1).split(".")[-1].startswith("_"):
                continue  # a private helper module serves its package
            imported = re.sub(r"\s+as\s+\w+", "", m.group(2))  # an alias of ours may be private
            names = [n for n in re.split(r"[,\s()]+", imported) if n.startswith("_")
                     and not n.startswith("__")]
            found += [f"{path.relative_to(PACKAGE)}: from {m.group(1)} import {n}" for n in names]
    assert not found, found


def test_no_type_switch_on_a_backend_class_outside_the_registry():
    switch = re.compile(rf"isinstance\([^)]*,\s*{BACKEND_CLASSES}\)|type\([^)]*\) is {BACKEND_CLASSES}")
    found = [f"{p.relative_to(PACKAGE)}:{i}" for p in SOURCES if p.name != "registry.py"
             for i, line in enumerate(_text(p).splitlines(), 1) if switch.search(line)]
    assert not found, found


def test_the_asyncio_package_defines_no_operation_of_the_front():
    """Every public operation is written once in kvstore/front/; kvstore/aio/ holds drivers and
    the async manager's own set-up, so none of the operations' names is defined there."""
    operations = {name for front in ("store_async.py", "manager_async.py")
                  for name in re.findall(r"^    (?:async )?def ([a-z]\w*)\(",
                                         _text(PACKAGE / "front" / front), re.M)}
    assert {"save", "load", "update", "keys", "get_or_set"} <= operations
    defined = {name for p in (PACKAGE / "aio").glob("*.py")
               for name in re.findall(r"^    (?:async )?def ([a-z]\w*)\(", _text(p), re.M)}
    assert not operations & defined, sorted(operations & defined)
