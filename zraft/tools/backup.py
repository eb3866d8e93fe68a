"""``zraft backup FILE``: check a backup file (every byte's checksum, and that its store decodes) and print what
it holds. The file format and restoring are ``zraft.statemachine.backup``."""

from __future__ import annotations

import argparse
import sys

from zraft.statemachine.backup import BackupError, inspect


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Check a zraft backup file (every byte's checksum, and that its store "
                                            "decodes) and print what it holds.")
    p.add_argument("file", help="a backup written by client_shell.py backup FILE")
    a = p.parse_args(argv)
    try:
        info = inspect(a.file, full=True)
    except BackupError as e:
        print(f"zraft backup: {e}", file=sys.stderr)
        return 1
    print(f"{a.file}: OK, {info.describe()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
