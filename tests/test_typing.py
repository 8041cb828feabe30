"""mypy checks what users' type checkers see: ``load(key, as_type=T)`` returns ``T``, logs and
atomic operations are typed (tests/typing/check_types.py), and kvstore itself type-checks."""

from __future__ import annotations

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
