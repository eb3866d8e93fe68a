"""The CPU cost of one client request through a leader's replica, in one process, without the network: a batch
frame decoded (``codec.decode``), received, ended (one proposal or one read index), processed (one append and
fsync, apply, answers made). A single-voter cluster, so that a read index is confirmed at once and a write commits
at once: what is measured is the code on the request's path, the part this process can change.

    python bench/replica_path.py [--batch 250] [--rounds 5] [--frames 80]

To compare two versions in one sitting, run it with each on ``PYTHONPATH`` (a ``git worktree`` of the old one):

    PYTHONPATH=/tmp/old python bench/replica_path.py; python bench/replica_path.py

Prints the best round's microseconds per get and per put.
"""

from __future__ import annotations

import argparse
import random
import shutil
import tempfile
import time
from typing import Any

import msgpack

from zraft.core import ClusterConfig, Options, Role
from zraft.server.replica import Replica
from zraft.server.settings import Settings
from zraft.statemachine.kv import KVStore
from zraft.storage import Storage
from zraft.transport import codec


class _Nowhere:
    """A transport that drops everything (a single-voter leader sends nothing a peer needs)."""

    def send(self, m: Any) -> None:
        pass

    def send_chunk(self, peer: int, c: Any) -> bool:
        return True

    def send_ack(self, peer: int, a: Any) -> None:
        pass

    def answer(self, client: bytes, replies: list[dict[str, Any]], batch: bool) -> None:
        pass


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=250, help="requests per frame (default 250)")
    p.add_argument("--rounds", type=int, default=5, help="rounds; the best is printed (default 5)")
    p.add_argument("--frames", type=int, default=80, help="frames of gets and of puts per round (default 80)")
    a = p.parse_args(argv)
    d = tempfile.mkdtemp(prefix="zraft-replica-path-")
    try:
        rep = Replica(1, ClusterConfig((1,)), Storage(d, background_prealloc=False), _Nowhere(), time.monotonic,
                      random.Random(1), Options(election_ticks=10, heartbeat_ticks=1),
                      Settings(threads=False, snapshot_every=1 << 40), machine=KVStore)
        rep.start()
        while rep.raft.role != Role.LEADER:
            rep.tick()
            rep.process()
        n = a.batch
        gets = msgpack.packb(["C", [{"op": "get", "key": b"key%04d" % i, "id": i + 1} for i in range(n)]],
                             use_bin_type=True)
        puts = [msgpack.packb(["C", [{"op": "put", "key": b"key%04d" % i, "id": i + 1, "value": b"x" * 64,
                                      "client": 7 + j, "seq": i + 1, "ack": 1} for i in range(n)]], use_bin_type=True)
                for j in range(a.rounds * a.frames)]

        def run(payload: bytes) -> None:
            kind, msg = codec.decode(payload)
            rep.receive(kind, msg, b"bench")
            rep.end_input()
            rep.process()

        best_get = best_put = float("inf")
        for r in range(a.rounds):
            t = time.perf_counter()
            for _ in range(a.frames):
                run(gets)
            best_get = min(best_get, (time.perf_counter() - t) / a.frames / n * 1e6)
            t = time.perf_counter()
            for j in range(a.frames):
                run(puts[r * a.frames + j])
            best_put = min(best_put, (time.perf_counter() - t) / a.frames / n * 1e6)
        rep.close()
        print(f"get {best_get:.2f} us/request, put {best_put:.2f} us/request (batches of {n}: decode, receive, "
              "read index or proposal, append and fsync, apply, answers)")
    finally:
        shutil.rmtree(d, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
