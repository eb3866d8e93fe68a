"""The code style checks are part of the test suite: ruff (lint), mypy --strict (types), and the package's layers
(docs/ARCHITECTURE.md): imports point down only."""

from __future__ import annotations

import ast
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
    forbidden = ("zraft.storage", "zraft.transport", "zraft.server", "zmq", "socket", "time", "os", "threading")
    for path in (ROOT / "zraft" / "core").glob("*.py"):
        text = path.read_text()
        for name in forbidden:
            assert f"import {name}\n" not in text and f"from {name} " not in text and f"from {name}." not in text, \
                f"{path.name} imports {name}"


LAYERS = [("core", "util"), ("storage", "transport"), ("statemachine",), ("server", "client"), ("tools",), ("sim",)]
"""zraft's packages from the bottom up (docs/ARCHITECTURE.md). A module imports from its own package and from
packages of lower layers, never from a package beside it or above it."""


def _imports(path: pathlib.Path) -> list[tuple[int, str]]:
    """Every zraft module ``path`` imports (at the top, inside functions, or for type checking only)."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, *([base] if base else [])])
            found += [(node.lineno, f"{base}.{a.name}" if base == "zraft" else base) for a in node.names]
    return [(line, name) for line, name in found if name.startswith("zraft.")]


def test_imports_point_down_the_layers() -> None:
    level = {pkg: i for i, layer in enumerate(LAYERS) for pkg in layer}
    packages = {p.name for p in (ROOT / "zraft").iterdir() if (p / "__init__.py").exists()}
    assert packages == set(level), f"every package has a layer in LAYERS: {sorted(packages ^ set(level))}"
    wrong = []
    for path in sorted((ROOT / "zraft").rglob("*.py")):
        parts = path.relative_to(ROOT / "zraft").parts
        if len(parts) == 1:
            continue  # zraft/cli.py and zraft/__main__.py: the command line, above every layer
        own = parts[0]
        for line, name in _imports(path):
            pkg = name.split(".")[1]
            if pkg != own and (pkg not in level or level[pkg] >= level[own]):
                wrong.append(f"zraft/{'/'.join(parts)}:{line} ({own}) imports {name}")
    assert not wrong, "imports that do not point down the layers:\n" + "\n".join(wrong)


def test_every_module_says_what_it_owns() -> None:
    """docs/ARCHITECTURE.md's rule for newcomers: each module's docstring says what it owns."""
    missing = [str(p.relative_to(ROOT)) for p in sorted((ROOT / "zraft").rglob("*.py"))
               if not ast.get_docstring(ast.parse(p.read_text()))]
    assert not missing, f"modules without a docstring: {missing}"
