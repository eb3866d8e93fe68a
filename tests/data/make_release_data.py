"""Make ``release-0.1.tar.gz``: a 3-node cluster's data directory and a backup, written by zraft 0.1 (commit
5e54920, before the package was reorganized into layers) for ``tests/test_compat.py``, which opens them with the
zraft of today. Rerun only to add a fixture from a new release (under a new name): the point of the file is that
it was written by the old code.

    python tests/data/make_release_data.py OUT.tar.gz
    PYTHONPATH=/path/to/a/worktree/of/the/release python tests/data/make_release_data.py OUT.tar.gz --results

``release-0.2.tar.gz`` was made the second way from commit 583763e (zraft 0.2, the last before revisions), with
``--results``: the session of client 4243 then also keeps results (``incr`` of ``counter`` five times, sequences
1-5), so that its snapshots and backup are in store format 4.

What it holds: keys ``k0``..``k149`` (``v<i>``), ``gone0``..``gone9`` deleted, ``log`` appended 30 times
(``a0`` .. ``a29``), a session (client id 4242) whose append ``session`` = ``s`` has sequence 1, and a backup
``backup.zbak`` taken after all of it. Snapshots every 40 entries and 16 KiB segments, so that the directory holds
snapshot files, compacted logs and several segments."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import tempfile

from zraft.client import Client
from zraft.tools import launch

SESSION = 4242


def main() -> int:
    out = os.path.abspath(sys.argv[1])
    with tempfile.TemporaryDirectory() as tmp:
        d = os.path.join(tmp, "cluster")
        c = launch.start(3, d, ports=launch.free_ports(3), secure=False,
                         node_args=["--snapshot-every", "40", "--segment-bytes", "16384"])
        try:
            with c.client() as cl:
                for i in range(150):
                    cl.put(f"k{i}", f"v{i}")
                for i in range(10):
                    cl.put(f"gone{i}", "x")
                for i in range(10):
                    cl.delete(f"gone{i}")
                for i in range(30):
                    cl.append("log", f"a{i}")
            s = Client(c.addresses, client_id=SESSION)
            s.append("session", "s")
            s.close()
            if "--results" in sys.argv:
                r = Client(c.addresses, client_id=SESSION + 1)
                for seq in range(1, 6):
                    r._call({"op": "incr", "key": b"counter", "by": 1, "client": SESSION + 1, "seq": seq,
                             "ack": seq}, write=True)
                r.close()
            with c.client() as cl:
                cl.backup(os.path.join(tmp, "backup.zbak"))
        finally:
            c.stop()
            c.release()
        for name in os.listdir(d):
            if name.endswith(".log"):
                os.remove(os.path.join(d, name))
        for root, _, files in os.walk(d):
            for f in files:
                if f.endswith(".prealloc") or f == "LOCK":
                    os.remove(os.path.join(root, f))
        with tarfile.open(out, "w:gz") as t:
            t.add(d, "cluster")
            t.add(os.path.join(tmp, "backup.zbak"), "backup.zbak")
    subprocess.run(["tar", "tzvf", out], check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
