"""python launcher.py -n 5: start a local zraft cluster (the same as ``zraft launch``).

Kept at the top of the checkout so that it runs on a new machine before anything is installed: it makes ``.venv``
with ``requirements.txt`` (once) and runs there. The code is ``zraft.tools.launcher``.
"""

import sys

from zraft.tools import bootstrap

if __name__ == "__main__":
    bootstrap.run_in_venv(__file__)
    from zraft.tools import launcher

    sys.exit(launcher.main())
