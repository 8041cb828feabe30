"""Build kvstore's API reference (HTML, by pdoc) from the docstrings.

    python tools/api_docs.py docs/api        # then open docs/api/index.html

The public modules: ``kvstore`` (the stores, the manager, the errors), ``kvstore.aio``,
``kvstore.manager`` (``Route``, ``Event``, ``StoreStats``), ``kvstore.logs``, ``kvstore.locking``,
``kvstore.transaction``, ``kvstore.front`` (where each operation of the stores, managers,
transactions, locks and logs is written and documented: the classes above inherit them),
``kvstore.testing``, ``kvstore.backend``, ``kvstore.registry``, ``kvstore.errors``,
``kvstore.serializers``, ``kvstore.observe``, and the ``kvstore.contrib`` integrations whose
framework is installed (each imports its framework: Django, dogpile.cache, OpenTelemetry,
LangGraph, LangChain); the others are left out, and named on stderr. The rest (``kvstore.stores``,
``kvstore.core``, the ``_`` modules...) is how it works, not what to call.

Docstrings are reStructuredText (``:class:`...```). Any warning while building is an error:
the command exits 1 and prints it (``tests/test_docs.py`` runs this).
"""

from __future__ import annotations

import importlib.util
import sys
import warnings
from pathlib import Path

PUBLIC = ["kvstore", "kvstore.aio", "kvstore.manager", "kvstore.logs", "kvstore.locking",
          "kvstore.transaction", "kvstore.front", "kvstore.testing", "kvstore.backend",
          "kvstore.registry", "kvstore.errors", "kvstore.serializers", "kvstore.observe"]
#: Each integration and the framework it imports (documented only when that is installed).
CONTRIB = {"kvstore.contrib.django": "django", "kvstore.contrib.dogpile": "dogpile.cache",
           "kvstore.contrib.otel": "opentelemetry.trace",
           "kvstore.contrib.langgraph": "langgraph", "kvstore.contrib.langchain": "langchain_core"}


def _installed(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:  # a parent package is missing
        return False


def modules() -> tuple[list[str], list[str]]:
    """(the modules to document, the integrations left out: not written yet, or their
    framework not installed)."""
    chosen, left_out = list(PUBLIC), []
    for module, framework in CONTRIB.items():
        if _installed(module) and _installed(framework):
            chosen.append(module)
        else:
            left_out.append(module)
    return chosen, left_out


def build(out: Path) -> list[str]:
    """Write the reference into ``out``; the warnings pdoc gave (none, for a clean build)."""
    import pdoc
    import pdoc.render

    chosen, left_out = modules()
    if left_out:
        print(f"api_docs: left out (framework not installed): {', '.join(left_out)}",
              file=sys.stderr)
    pdoc.render.configure(docformat="restructuredtext", search=True, show_source=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pdoc.pdoc(*chosen, output_directory=out)
    return [f"{w.filename}:{w.lineno}: {w.category.__name__}: {w.message}" for w in caught]


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python tools/api_docs.py OUTPUT_FOLDER", file=sys.stderr)
        return 2
    out = Path(argv[0])
    problems = build(out)
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        print(f"api_docs: {len(problems)} warning(s): fix the docstrings", file=sys.stderr)
        return 1
    print(f"api_docs: wrote {out / 'index.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
