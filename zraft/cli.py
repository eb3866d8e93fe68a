"""The ``zraft`` command: one entry point whose subcommands are the programs of the package.

    zraft launch -n 5          start a local cluster and keep it in the foreground (python launcher.py)
    zraft shell                an interactive shell for it (python client_shell.py)
    zraft node --id 1 ...      run one node
    zraft chaos ...            a chaos run against a local cluster, checked for linearizability
    zraft check HISTORY        check a recorded history again
    zraft backup FILE          check a backup file and print what it holds
    zraft sim ...              the deterministic simulator: seeded fault schedules against production replicas

``python -m zraft ...`` is the same. ``zraft COMMAND --help`` describes each. Each subcommand imports only its own
program, so a node does not load the tools.
"""

from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "launch": ("zraft.tools.launcher", "start a local cluster and keep it running in the foreground"),
    "shell": ("zraft.tools.shell", "an interactive shell for a cluster"),
    "node": ("zraft.server.node", "run one node"),
    "chaos": ("zraft.tools.chaos.cli", "a chaos run against a local cluster, checked for linearizability"),
    "check": ("zraft.tools.check", "check a recorded client history for linearizability"),
    "backup": ("zraft.tools.backup", "check a backup file and print what it holds"),
    "sim": ("zraft.sim.__main__", "the deterministic simulator (seeded fault schedules)"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    rows = "\n".join(f"  {name:<{width}}  {what}" for name, (_, what) in COMMANDS.items())
    return (f"usage: zraft COMMAND [ARGS...]\n\nA replicated key-value store on Raft.\n\ncommands:\n{rows}\n\n"
            "zraft COMMAND --help describes each.")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        print(f"zraft: no command {name!r:.40}\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    sys.argv[0] = f"zraft {name}"  # argparse's program name in usage and errors
    code: int = module.main(rest)
    return code


if __name__ == "__main__":
    sys.exit(main())
