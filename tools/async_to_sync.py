"""Generate kvstore's synchronous front from its asyncio source (psycopg's way, by text).

Each operation of the store, manager, transaction, lock and log is written once, as a coroutine
in ``kvstore/front/*_async.py``; this script writes the synchronous twin ``*_sync.py`` beside it,
and ``tests/test_generated.py`` fails when a checked-in twin differs from what it would write.

    python tools/async_to_sync.py           # rewrite every *_sync.py
    python tools/async_to_sync.py --check   # exit 1, naming the files, when one is out of date

The rules, applied line by line outside string literals' meaning (a docstring that says
``await x`` says ``x`` in the synchronous twin, which is what it should say):

- ``async def`` / ``async with`` / ``async for`` lose ``async``; ``await`` is dropped;
- the continuation lines of an ``async def`` signature move 6 columns left with it (they stay
  aligned under the opening bracket);
- names are mapped by :data:`NAMES` (``AsyncIterator`` -> ``Iterator``, ``__aenter__`` ->
  ``__enter__``, ``AsyncX`` -> ``X`` for the front's own classes...), and a module
  ``name_async`` is ``name_sync``;
- a line ``# sync-names: aput=put alist=list ...`` adds whole-word renames for its own file
  (a front whose two sides have different method names, as LangGraph's ``aput``/``put``; also
  after a dot: ``self.aput`` is ``self.put``), and is left out;
- a line ending in ``# async only`` is left out; a line ``# sync: <code>`` becomes ``<code>``
  (indentation kept, and any further indentation after ``# sync: ``), for the few places where
  the fronts truly differ: an import, a listing (``keys()``), ``@property`` over a method the
  async front must await (``lock.owned``), ``__len__`` (``await log.length()`` on asyncio).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FRONT = ROOT / "kvstore" / "front"
#: Integrations written once the same way (their asyncio source beside the generated twin).
CONTRIB = ROOT / "kvstore" / "contrib"

#: Whole-word renames, async name -> sync name.
NAMES = {
    "AsyncIterator": "Iterator",
    "AsyncIterable": "Iterable",
    "AsyncGenerator": "Generator",
    "__aenter__": "__enter__",
    "__aexit__": "__exit__",
    "__aiter__": "__iter__",
    "__anext__": "__next__",
    "StopAsyncIteration": "StopIteration",
    "asynccontextmanager": "contextmanager",
    "aclose": "close",
    "anext": "next",
    "asyncio.sleep": "time.sleep",
    "AsyncTransaction": "Transaction",  # the transaction's concrete class (kvstore/front)
    "AsyncStoreOps": "StoreOps",
    "AsyncManagerOps": "ManagerOps",
    "AsyncOperateOps": "OperateOps",
    "AsyncTransactionOps": "TransactionOps",
    "AsyncLockOps": "LockOps",
    "AsyncLogOps": "LogOps",
    # the fronts' concrete lock and log classes (kvstore.aio.lock / kvstore.locking, kvstore.logs)
    "AsyncLock": "Lock",
    "AsyncLog": "Log",
}

_NAME_RE = re.compile(r"(?<![\w.])(" + "|".join(
    re.escape(n) for n in sorted(NAMES, key=len, reverse=True)) + r")\b")
_SYNC_LINE = re.compile(r"^(\s*)# sync: (.*)$")
_SYNC_NAMES = re.compile(r"^# sync-names: (.*)$", re.MULTILINE)


def convert(source: str, origin: str) -> str:
    out = [f"# Generated from {origin} by tools/async_to_sync.py: do not edit, edit that file.\n"]
    depth = 0  # open brackets of an ``async def`` signature still being read
    own = dict(pair.split("=", 1) for found in _SYNC_NAMES.findall(source)
               for pair in found.split())
    own_re = re.compile(r"(?<!\w)(" + "|".join(  # also an attribute: self.aput -> self.put
        re.escape(n) for n in sorted(own, key=len, reverse=True)) + r")\b") if own else None
    for line in source.splitlines(keepends=True):
        if line.rstrip().endswith("# async only") or _SYNC_NAMES.match(line):
            continue
        sync = _SYNC_LINE.match(line)
        if sync:
            out.append(f"{sync.group(1)}{sync.group(2)}\n")
            continue
        if depth > 0:  # a continued signature: aligned 6 columns left, as "async " went
            if line.startswith(" " * 6):
                line = line[6:]
            depth += _brackets(line)
        elif re.match(r"\s*async def\b", line):
            depth = _brackets(line)
        line = re.sub(r"\basync (def|with|for)\b", r"\1", line)
        line = re.sub(r"\bawait ", "", line)
        line = _NAME_RE.sub(lambda m: NAMES[m.group(1)], line)
        if own_re is not None:
            line = own_re.sub(lambda m: own[m.group(1)], line)
        line = re.sub(r"\b(\w+)_async\b", r"\1_sync", line)  # the front's modules
        out.append(line)
    return "".join(out)


def _brackets(line: str) -> int:
    code = line.split("#", 1)[0]
    return sum(code.count(c) for c in "([{") - sum(code.count(c) for c in ")]}")


def pairs() -> list[tuple[Path, Path]]:
    return [(src, src.with_name(src.name.replace("_async.py", "_sync.py")))
            for src in sorted([*FRONT.glob("*_async.py"), *CONTRIB.rglob("*_async.py")])]


def main(argv: list[str]) -> int:
    check = "--check" in argv
    stale = []
    for src, dst in pairs():
        text = convert(src.read_text(), src.relative_to(ROOT).as_posix())
        if dst.exists() and dst.read_text() == text:
            continue
        stale.append(dst.relative_to(ROOT).as_posix())
        if not check:
            dst.write_text(text)
    if check and stale:
        print("out of date (run python tools/async_to_sync.py):", ", ".join(stale))
        return 1
    for name in stale:
        print("wrote", name)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
