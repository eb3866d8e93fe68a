"""``python -m zraft COMMAND ...``: the ``zraft`` command (``zraft.cli``)."""

import sys

from zraft.cli import main

sys.exit(main())
