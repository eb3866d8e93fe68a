"""python client_shell.py: an interactive shell for a zraft cluster (the same as ``zraft shell``).

Kept at the top of the checkout so that it runs on a new machine before anything is installed: it makes ``.venv``
with ``requirements.txt`` (once) and runs there. The code is ``zraft.tools.shell``.
"""

import sys

from zraft.tools import bootstrap

if __name__ == "__main__":
    bootstrap.run_in_venv(__file__)
    from zraft.tools import shell

    sys.exit(shell.main())
