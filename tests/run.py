"""Run the whole test suite on this machine, installing what it needs first: one command on a new machine.

    python tests/run.py                 # the suite, in .venv (made, or brought up to date, from requirements.txt)
    python tests/run.py --fresh         # in a virtual environment made anew (what .ci/run does)
    python tests/run.py -- -k resp -x   # arguments after -- go to pytest

What it does, in order:
1. As root on Debian (apt-get on PATH), installs the Debian packages the tests use and this machine lacks:
   nftables and iproute2 (nodes in network namespaces), chromium, chromium-driver and firefox-esr (the dashboard
   in real browsers), redis-tools (redis-cli and redis-benchmark), python3-venv where ``venv`` cannot make pip.
   Not root: the tests that need a missing one are skipped, and say which package would run them.
2. Makes the virtual environment (``.venv``; ``ZRAFT_VENV`` names another) with ``requirements.txt`` in it.
   Nothing from this machine's own site-packages is visible there, nor PYTHONPATH, nor the user's site-packages:
   a package installed by hand can never make a test pass that fails for a user.
3. Runs ``python -m pytest`` in it from the repository's root, and exits with pytest's exit code.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import subprocess
import sys
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _load_bootstrap() -> types.ModuleType:
    """``zraft.tools.bootstrap``, loaded from its file: this script runs on a Python where zraft is not installed
    (it is what installs it), and bootstrap needs only the standard library."""
    spec = importlib.util.spec_from_file_location("zraft_bootstrap", ROOT / "zraft" / "tools" / "bootstrap.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bootstrap = _load_bootstrap()

DEBIAN = {"nft": "nftables", "ip": "iproute2", "chromium": "chromium", "chromedriver": "chromium-driver",
          "firefox-esr": "firefox-esr", "redis-cli": "redis-tools", "redis-benchmark": "redis-tools"}
"""Commands the tests run -> the Debian package that has it."""


def _venv_works() -> bool:
    """Whether this Python can make a virtual environment with pip in it (Debian's needs python3-venv)."""
    import importlib.util

    return importlib.util.find_spec("ensurepip") is not None and importlib.util.find_spec("venv") is not None


def debian_packages() -> None:
    missing = sorted({pkg for cmd, pkg in DEBIAN.items() if shutil.which(cmd) is None})
    if not _venv_works():
        missing.append("python3-venv")
    if not missing:
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        print(f"tests/run.py: not root on Debian, so not installing {' '.join(missing)}: the tests that need them "
              "are skipped (each says why)", file=sys.stderr)
        return
    print(f"tests/run.py: apt-get install {' '.join(missing)}", file=sys.stderr, flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-qq", *missing]
    ok = subprocess.run(["apt-get", "update", "-qq"], env=env).returncode == 0 and \
        subprocess.run(install, env=env, stdout=subprocess.DEVNULL).returncode == 0
    if not ok:
        print(f"tests/run.py: could not install {' '.join(missing)}: the tests that need them will be skipped",
              file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python tests/run.py", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="Arguments after -- are passed to pytest (for example: -- -x -k resp).")
    ap.add_argument("--fresh", action="store_true", help="make the virtual environment anew (what CI does)")
    ap.add_argument("--venv", type=Path, default=None,
                    help="the virtual environment to use (default: .venv in the repository, or $ZRAFT_VENV)")
    ap.add_argument("--no-apt", action="store_true", help="do not install Debian packages, even as root")
    ap.add_argument("pytest_args", nargs="*", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if not args.no_apt:
        debian_packages()
    try:
        py = bootstrap.make_venv(args.venv or bootstrap.venv_dir(), fresh=args.fresh, quiet=False)
    except bootstrap.BootstrapError as e:
        print(f"tests/run.py: {e}", file=sys.stderr)
        return 2
    cmd = [str(py), "-m", "pytest", *args.pytest_args]
    print(f"tests/run.py: {' '.join(cmd)}", file=sys.stderr, flush=True)
    return subprocess.run(cmd, cwd=ROOT, env=bootstrap.clean_env()).returncode


if __name__ == "__main__":
    sys.exit(main())
