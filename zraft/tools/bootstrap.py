"""The first run on a new machine: make a virtual environment with ``requirements.txt`` in it, and run there.

``python launcher.py`` and ``python client_shell.py`` call ``run_in_venv()`` before importing anything outside the
standard library; ``python tests/run.py`` calls ``make_venv()`` itself. Only the standard library is used here, so
this module runs on a Python with nothing installed.

The environment is ``.venv`` beside ``requirements.txt`` (``ZRAFT_VENV`` names another). It is made once, and
brought up to date when ``requirements.txt`` changes (a digest of the file is kept in it). A Python that already
has every runtime requirement importable runs the command itself: the launcher does not insist on its own
environment, the tests do (``tests/run.py``).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
REQUIREMENTS = ROOT / "requirements.txt"
PYPROJECT = ROOT / "pyproject.toml"
RUNTIME = ("zmq", "msgpack", "psutil", "prometheus_client")
"""The modules a node, the launcher and the shell import (the runtime part of ``requirements.txt``)."""
STAMP = "zraft-requirements.sha256"


class BootstrapError(Exception):
    """The environment could not be made; the message says what to do."""


def venv_dir() -> Path:
    return Path(os.environ.get("ZRAFT_VENV") or ROOT / ".venv")


def venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def _digest() -> str:
    """What the environment was made from: ``requirements.txt`` and the package's own ``pyproject.toml``."""
    return hashlib.sha256(REQUIREMENTS.read_bytes() + b"\0" + PYPROJECT.read_bytes()).hexdigest()


def _say(msg: str) -> None:
    print(f"zraft: {msg}", file=sys.stderr, flush=True)


def clean_env() -> dict[str, str]:
    """The environment for a program run in the virtual environment: nothing from outside it on ``sys.path``
    (no PYTHONPATH, no user site-packages)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONUSERBASE")}
    env["PYTHONNOUSERSITE"] = "1"
    return env


def make_venv(venv: Path, fresh: bool = False, quiet: bool = True) -> Path:
    """The Python of ``venv``, made (``fresh``: made anew) with ``requirements.txt`` installed and up to date."""
    py = venv_python(venv)
    if fresh and venv.exists():
        shutil.rmtree(venv)
    if not py.exists():
        _say(f"making a virtual environment in {venv} (once)")
        # Debian's and Ubuntu's python3 come without ensurepip unless python3-venv is installed: then the
        # environment is made without pip, and pip is brought from PyPI.
        with_pip = importlib.util.find_spec("ensurepip") is not None
        r = subprocess.run([sys.executable, "-m", "venv", *([] if with_pip else ["--without-pip"]), str(venv)],
                           capture_output=True, text=True)
        if r.returncode != 0 or not py.exists():
            shutil.rmtree(venv, ignore_errors=True)
            raise BootstrapError(f"could not make a virtual environment with {sys.executable} -m venv:\n"
                                 f"{(r.stdout + r.stderr).strip()}")
        if not with_pip:
            try:
                _pip_from_pypi(py)
            except (OSError, ValueError, KeyError, subprocess.CalledProcessError) as e:
                shutil.rmtree(venv, ignore_errors=True)
                ver = f"{sys.version_info.major}.{sys.version_info.minor}"
                raise BootstrapError(f"this Python has no ensurepip and pip could not be fetched from PyPI ({e}); "
                                     f"on Debian or Ubuntu: apt-get install python{ver}-venv") from e
    stamp = venv / STAMP
    want = _digest()
    if not stamp.exists() or stamp.read_text().strip() != want:
        _say(f"installing {REQUIREMENTS.name} into {venv}")
        _pip_install(py, ["-r", str(REQUIREMENTS)], str(REQUIREMENTS), venv, quiet)
        # The package itself, editable: the ``zraft`` command, and ``import zraft`` from any directory, run this
        # checkout's code. setuptools comes from requirements.txt: nothing more is fetched.
        _pip_install(py, ["--no-deps", "--no-build-isolation", "-e", str(ROOT)], f"zraft ({ROOT})", venv, quiet)
        stamp.write_text(want + "\n")
    return py


def _pip_install(py: Path, args: list[str], what: str, venv: Path, quiet: bool) -> None:
    cmd = [str(py), "-m", "pip", "install", "--disable-pip-version-check", *(["--quiet"] if quiet else []), *args]
    pip = subprocess.run(cmd, env=clean_env())
    if pip.returncode != 0:
        raise BootstrapError(f"pip could not install {what} into {venv} (exit code {pip.returncode}); what it "
                             "printed is above")


def _pip_from_pypi(py: Path) -> None:
    """Install pip into the environment of ``py`` from PyPI's newest pip wheel (checked against PyPI's digest):
    pip runs from its own wheel file to install itself."""
    import json
    import tempfile
    import urllib.parse
    import urllib.request

    _say("this Python has no ensurepip (Debian's python3 without python3-venv): fetching pip from PyPI")
    index = "https://pypi.org/pypi/pip/json"
    with urllib.request.urlopen(index, timeout=60) as f:
        meta = json.load(f)
    wheel = next(u for u in meta["urls"] if u["packagetype"] == "bdist_wheel")
    with urllib.request.urlopen(urllib.parse.urljoin(index, wheel["url"]), timeout=120) as f:
        data = f.read(64 << 20)
    if hashlib.sha256(data).hexdigest() != wheel["digests"]["sha256"]:
        raise ValueError(f"{wheel['filename']} does not match the digest PyPI gives for it")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / wheel["filename"]
        path.write_bytes(data)
        subprocess.run([str(py), f"{path}/pip", "install", "--quiet", "--disable-pip-version-check", str(path)],
                       check=True, env=clean_env())


def _has_runtime() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in RUNTIME)


def run_in_venv(script: str) -> None:
    """Return if this Python can run ``script`` (every runtime requirement importable); otherwise make the
    virtual environment (once) and run ``script`` with the same arguments there, in place of this process."""
    if _has_runtime():
        return
    venv = venv_dir()
    if Path(sys.prefix).resolve() == venv.resolve() and venv_python(venv).exists() and \
            (venv / STAMP).exists() and (venv / STAMP).read_text().strip() == _digest():
        missing = [m for m in RUNTIME if importlib.util.find_spec(m) is None]
        sys.exit(f"zraft: {', '.join(missing)} not importable in {venv}, which should have them: remove {venv} "
                 "and run this again")
    try:
        py = make_venv(venv)
    except BootstrapError as e:
        sys.exit(f"zraft: {e}")
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(py, [str(py), script, *sys.argv[1:]], clean_env())
