"""One PySyncObj node replicating a dict (``pysyncobj.batteries.ReplDict``), with a thin RPC for load generators.

    python bench/pysyncobj_node.py --self 127.0.0.1:7001 --partners 127.0.0.1:7002,127.0.0.1:7003 \
        --rpc 127.0.0.1:8001 [--journal DIR]

PySyncObj is a library, not a server, so ``bench/compare.py`` drives it through this process. The RPC is
ZeroMQ (a ROUTER bound at ``--rpc``) with msgpack frames, the same transport zraft uses:

  request: [id, op, key, value]   op is "put", "get" or "status"
  answer:  [id, ok, value]        put: ok once PySyncObj has committed and applied the set (its callback);
                                  get: the value in this node's dict (a local read: PySyncObj has no
                                  linearizable read); status: [is_leader, is_ready]

Writes go through ``ReplDict.set(key, value, callback=...)``; the callback runs in PySyncObj's thread, queues
the answer and wakes the RPC loop through a pipe. With ``--journal DIR`` the node keeps PySyncObj's journal and
full dump files there (PySyncObj writes its journal through mmap and does not fsync it per entry); without,
its log is in memory only.
"""

from __future__ import annotations

import argparse
import collections
import os
import signal
import sys
from typing import Any

import msgpack
import zmq

try:
    from pysyncobj import FAIL_REASON, SyncObj, SyncObjConf  # type: ignore[import-untyped]
    from pysyncobj.batteries import ReplDict  # type: ignore[import-untyped]
except ImportError:  # a benchmark-only dependency
    sys.exit("PySyncObj is not installed: pip install -r bench/requirements-bench.txt")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--self", required=True, help="this node's PySyncObj address HOST:PORT")
    p.add_argument("--partners", required=True, help="the other nodes' addresses, comma-separated")
    p.add_argument("--rpc", required=True, help="HOST:PORT for the load generators' RPC")
    p.add_argument("--journal", help="directory for the journal and dump files (default: in memory)")
    a = p.parse_args()
    conf_args: dict[str, Any] = {"dynamicMembershipChange": False, "appendEntriesUseBatch": True}
    if a.journal:
        os.makedirs(a.journal, exist_ok=True)
        conf_args.update(journalFile=os.path.join(a.journal, "journal.bin"),
                         fullDumpFile=os.path.join(a.journal, "dump.bin"))
    d = ReplDict()
    obj = SyncObj(a.self, [x for x in a.partners.split(",") if x], consumers=[d], conf=SyncObjConf(**conf_args))
    ctx = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVHWM, 100_000)
    sock.setsockopt(zmq.SNDHWM, 100_000)
    sock.bind(f"tcp://{a.rpc}")
    done: collections.deque[tuple[bytes, int, bool]] = collections.deque()
    rfd, wfd = os.pipe()
    os.set_blocking(rfd, False)
    stop = False

    def on_term(signum: int, frame: Any) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)

    def callback(ident: bytes, rid: int) -> Any:
        def cb(result: Any, error: Any) -> None:
            done.append((ident, rid, error == FAIL_REASON.SUCCESS))
            os.write(wfd, b"x")
        return cb

    poller = zmq.Poller()
    poller.register(sock, zmq.POLLIN)
    poller.register(rfd, zmq.POLLIN)
    while not stop:
        for what, _ in poller.poll(200):
            if what == rfd:
                try:
                    os.read(rfd, 65536)
                except BlockingIOError:
                    pass
            else:
                while True:
                    try:
                        ident, payload = sock.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    rid, op, key, value = msgpack.unpackb(payload)
                    if op == "put":
                        d.set(key, value, callback=callback(ident, rid))
                    elif op == "get":
                        sock.send_multipart([ident, msgpack.packb([rid, True, d.get(key)])])
                    else:
                        sock.send_multipart([ident, msgpack.packb([rid, True, [obj._isLeader(), obj.isReady()]])])
        while done:
            ident, rid, ok = done.popleft()
            sock.send_multipart([ident, msgpack.packb([rid, ok, None])])
    obj.destroy()
    ctx.destroy(linger=0)
    sys.exit(0)


if __name__ == "__main__":
    main()
