"""The code style checks are part of the test suite: ruff (lint) and mypy --strict (types)."""

from __future__ import annotations

import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_ruff_clean() -> None:
    r = subprocess.run([sys.executable, "-m", "ruff", "check", "zraft", "tests", "bench"], cwd=ROOT,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_mypy_strict_clean() -> None:
    r = subprocess.run([sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_core_imports_nothing_from_the_runtime() -> None:
    """Architecture rule 6: the core is sans-I/O and imports no storage, transport, node, time, os or random state."""
    forbidden = ("zraft.storage", "zraft.transport", "zraft.node", "zmq", "socket", "time", "os", "threading")
    for path in (ROOT / "zraft" / "core").glob("*.py"):
        text = path.read_text()
        for name in forbidden:
            assert f"import {name}\n" not in text and f"from {name} " not in text and f"from {name}." not in text, \
                f"{path.name} imports {name}"
