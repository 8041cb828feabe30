"""The API reference (README "API reference"): ``python tools/api_docs.py OUT`` builds it from
the docstrings with pdoc, with no warning; a warning fails the build."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("pdoc")

ROOT = Path(__file__).resolve().parent.parent
TOOL = ROOT / "tools" / "api_docs.py"


@pytest.mark.slow
def test_the_api_reference_builds_without_a_warning(tmp_path):
    out = tmp_path / "api"
    done = subprocess.run([sys.executable, str(TOOL), str(out)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "warning" not in done.stderr.lower(), done.stderr
    pages = {p.relative_to(out).as_posix() for p in out.rglob("*.html")}
    for page in ("index.html", "kvstore.html", "kvstore/aio.html", "kvstore/testing.html",
                 "kvstore/backend.html", "kvstore/registry.html", "kvstore/errors.html",
                 "kvstore/serializers.html", "kvstore/observe.html", "kvstore/manager.html",
                 "kvstore/front/manager_sync.html", "kvstore/front/store_async.html"):
        assert page in pages, sorted(pages)
    assert not any(p.startswith(("kvstore/stores", "kvstore/core", "kvstore/_")) for p in pages)
    # The manager's page links its operations to where they are written and documented.
    assert 'href="kvstore/front/manager_sync.html#ManagerOps.save"' in (
        out / "kvstore.html").read_text()
    assert "Write a new backup" in (out / "kvstore/front/operate_sync.html").read_text()
    assert "log_appends" in (out / "kvstore/manager.html").read_text()  # StoreStats
    # No reST left raw in a rendered docstring (a role pdoc did not read, a table, a directive).
    raw = re.compile(r":\w+:`|^={4,}|\.\. \w+::", re.M)
    for page in out.rglob("*.html"):
        for docstring in re.findall(r'<div class="docstring">(.*?)</div>', page.read_text(), re.S):
            assert not raw.search(docstring), (page, raw.search(docstring))
    # An integration is there when its framework is, and named as left out otherwise.
    for module, framework in (("kvstore/contrib/otel.html", "opentelemetry"),
                              ("kvstore/contrib/django.html", "django")):
        try:
            __import__(framework)
        except ImportError:
            assert module not in pages and module[:-5].replace("/", ".") in done.stderr
        else:
            assert module in pages


def test_a_docstring_warning_fails_the_build(tmp_path, monkeypatch, capsys):
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import api_docs
    finally:
        sys.path.remove(str(ROOT / "tools"))
    (tmp_path / "warns_in_docs.py").write_text(
        '"""A module."""\n\n\ndef f(x: "List[") -> None:\n    """Broken annotation."""\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(api_docs, "PUBLIC", ["warns_in_docs"])
    monkeypatch.setattr(api_docs, "CONTRIB", {})
    assert api_docs.main([str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "Error parsing type annotation" in err and "1 warning(s)" in err
