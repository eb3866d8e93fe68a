"""The zraft command and the installable package: ``zraft COMMAND`` runs every program, ``--help`` describes
each, and a wheel built from the checkout holds the whole package (the dashboard's files too) and the console
script, and runs from another directory."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from zraft.cli import COMMANDS

ROOT = Path(__file__).resolve().parent.parent


def _zraft(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "zraft", *args], capture_output=True, text=True, timeout=120,
                          cwd=cwd, env=env)


def test_help_names_every_command_and_an_unknown_one_is_refused() -> None:
    r = _zraft("--help")
    assert r.returncode == 0
    for name in COMMANDS:
        assert f"  {name}  " in r.stdout or f"  {name} " in r.stdout, name
    r = _zraft("frobnicate")
    assert r.returncode == 2 and "no command 'frobnicate'" in r.stderr


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_has_help(name: str) -> None:
    r = _zraft(name, "--help")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"usage: zraft {name}"), r.stdout[:200]


def test_the_wheel_holds_the_package_and_runs_from_another_directory(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                        str(tmp_path / "dist"), str(ROOT)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    wheel = next((tmp_path / "dist").glob("zraft-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    inside = {n for n in names if n.startswith("zraft/")}
    want = {str(p.relative_to(ROOT)) for p in (ROOT / "zraft").rglob("*")
            if p.is_file() and "__pycache__" not in p.parts}
    assert want <= inside, sorted(want - inside)
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert "zraft = zraft.cli:main" in zipfile.ZipFile(wheel).read(entry).decode()
    meta = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("METADATA"))).decode()
    for dep in ("pyzmq", "msgpack", "psutil", "prometheus_client"):
        assert f"Requires-Dist: {dep}" in meta, dep
    r = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target",
                        str(tmp_path / "site"), str(wheel)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    code = ("import sys, zraft; sys.stdout.write(zraft.__file__ + '\\n'); from zraft.cli import main; "
            "sys.exit(main(['sim', '--seed', '3']))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=elsewhere,
                       env={"PYTHONPATH": str(tmp_path / "site"), "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert r.stdout.startswith(str(tmp_path / "site" / "zraft")), r.stdout[:300]  # the installed copy ran
    assert "failures=0" in r.stdout
