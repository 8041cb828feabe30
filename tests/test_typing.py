"""mypy checks what users' type checkers see: ``load(key, as_type=T)`` returns ``T``, logs and
atomic operations are typed (tests/typing/check_types.py), and kvstore itself type-checks."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_mypy_accepts_kvstore_and_its_typed_api():
    pytest.importorskip("mypy")
    r = subprocess.run([sys.executable, "-m", "mypy", "kvstore", "tests/typing/check_types.py"],
                       cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr


USER_PROGRAM = '''\
from kvstore import Health, PersistenceManager, PersistenceStore, SQLiteStore

store: PersistenceStore = SQLiteStore(path="app.db")
report: dict[str, Health] = PersistenceManager().health()
seconds: float = report["cache"].seconds
wrong: int = report["cache"].status
'''


def _editable_venv(tmp_path: Path) -> Path:
    """A fresh venv with kvstore installed from this checkout by ``pip install -e``, as the
    README says (pip fetches the build backend that pyproject.toml names)."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    r = subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "-e", str(ROOT)],
                       cwd=tmp_path, capture_output=True, text=True, timeout=600)
    if r.returncode and re.search(r"No matching distribution|Could not fetch|connection",
                                  r.stdout + r.stderr, re.IGNORECASE):
        pytest.skip("pip cannot fetch the build backend (no package index reachable)")
    assert r.returncode == 0, r.stdout + r.stderr
    return python


@pytest.mark.slow
def test_mypy_sees_kvstore_through_an_editable_install(tmp_path):
    """Issue 25: after the README's ``pip install -e .``, mypy (and IDEs) resolve kvstore and its
    types: the editable install is a static .pth path entry, not an import hook."""
    pytest.importorskip("mypy")
    python = _editable_venv(tmp_path)
    where = "import importlib.util as u; print(u.find_spec('kvstore').origin)"  # runs nothing
    found = subprocess.run([str(python), "-c", where], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert found.stdout.strip() == str(ROOT / "kvstore" / "__init__.py"), found.stderr
    program = tmp_path / "user.py"
    program.write_text(USER_PROGRAM)
    r = subprocess.run([sys.executable, "-m", "mypy", "--python-executable", str(python),
                        "--no-incremental", str(program)],
                       cwd=tmp_path, capture_output=True, text=True, timeout=600)
    out = r.stdout + r.stderr
    assert "Cannot find implementation or library stub" not in out, out
    # the one wrong line, and only it: kvstore's own types were read
    assert r.returncode == 1 and "user.py:6: error: Incompatible types in assignment" in out, out
    assert out.count("error:") == 1, out
