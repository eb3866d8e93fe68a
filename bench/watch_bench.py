"""What watches cost a node, in one process (no cluster): the store's change hook on every write, and a pass of
``Watches`` (what every node runs after applying) with hundreds of watchers -- each reply packed with msgpack as the
transport would, not sent.

    python bench/watch_bench.py [--events 100] [--passes 200]

Prints the cost of applying a put with and without the hook, and for 1 to 1,000 watchers (each on a prefix of its
own, plus one watching every key per 100), the time a pass takes, per watcher and per event delivered.
"""

from __future__ import annotations

import argparse
import random
import time

import msgpack

from zraft.server.watches import Watches
from zraft.statemachine.kv import KVStore
from zraft.transport.requests import Put, Watch


def puts(events: bool, n: int) -> float:
    s = KVStore()
    for c in s.leader_commands():
        s.apply(1, c)
    if events:
        s.events = []
    cmds = []
    for i in range(n):
        cmd = s.command(Put(0, 1, i + 1, i + 1, b"p%d/k%d" % (i % 50, i % 1000), b"v" * 64))
        assert isinstance(cmd, bytes)
        cmds.append(cmd)
    t0 = time.perf_counter()
    for i, cmd in enumerate(cmds):
        s.apply(s.applied + 1, cmd)
        if events and i % 100 == 99:
            s.events.clear()  # type: ignore[union-attr]
    return (time.perf_counter() - t0) / n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=100, help="changes applied per pass (default 100)")
    ap.add_argument("--passes", type=int, default=200)
    a = ap.parse_args()
    off = min(puts(False, 200_000) for _ in range(3))
    on = min(puts(True, 200_000) for _ in range(3))
    print(f"apply a put: {off * 1e6:.2f} us without the change hook, {on * 1e6:.2f} us with it "
          f"(+{(on - off) * 1e9:.0f} ns)")
    rng = random.Random(1)
    for n in (1, 10, 100, 300, 1000):
        s = KVStore()
        for c in s.leader_commands():
            s.apply(1, c)
        now = [0.0]
        packed = [0]

        def reply(identity: bytes, msg: dict[str, object], packed: list[int] = packed) -> None:
            packed[0] += len(msgpack.packb(["C", msg], use_bin_type=True))

        w = Watches(lambda now=now: now[0], reply)  # type: ignore[misc]
        w.reset(s.revision)
        s.events = w.events
        for i in range(n):
            if i % 100 == 99:
                w.watch(b"c%d" % i, Watch(i, b"", whole=True))
            else:
                w.watch(b"c%d" % i, Watch(i, b"p%d/" % i, b"p%d0" % i))
        seq = 0
        spent = 0.0
        delivered = w.sent
        for _ in range(a.passes):
            for _ in range(a.events):
                seq += 1
                cmd = s.command(Put(0, 1, seq, seq, b"p%d/k" % rng.randrange(max(n, 1)), b"v" * 64))
                assert isinstance(cmd, bytes)
                s.apply(s.applied + 1, cmd)
            t0 = time.perf_counter()
            w.applied(s.revision)
            w.send()
            w.seal()
            spent += time.perf_counter() - t0
            now[0] += 0.002
            for (ident, wid) in list(w.watchers):
                w.ack(ident, wid, s.revision)
        delivered = w.sent - delivered
        per_pass = spent / a.passes
        print(f"{n:5d} watchers, {a.events} changes a pass: {per_pass * 1e3:7.3f} ms a pass, "
              f"{per_pass / n * 1e6:6.2f} us per watcher per pass, {delivered / a.passes:7.1f} events delivered a "
              f"pass ({spent / max(delivered, 1) * 1e6:.2f} us each, packing included)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
