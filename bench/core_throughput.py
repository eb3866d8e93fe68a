"""Committed entries per second of the bare Raft core: a 3-node cluster in one process, an instant network,
no disk. Measures the cost of the consensus logic itself (batching, pipelining, message handling).

    python bench/core_throughput.py [--entries 200000] [--batch 100] [--size 64]
"""

from __future__ import annotations

import argparse
import random
import time
from collections import deque

from zraft.core import ClusterConfig, Message, Options, Raft, Role


def run(entries: int, batch: int, size: int) -> tuple[float, int, int]:
    cfg = ClusterConfig((1, 2, 3))
    opts = Options(election_ticks=10, heartbeat_ticks=2, max_inflight=256, max_msg_entries=4096)
    nodes = {i: Raft(i, cfg, random.Random(i), opts) for i in cfg.voters}
    queue: deque[Message] = deque()
    steps = 0

    def pump() -> None:
        nonlocal steps
        for r in nodes.values():
            if r.has_ready():
                queue.extend(r.ready().messages)
        while queue:
            m = queue.popleft()
            r = nodes[m.dst]
            r.step(m)
            steps += 1
            if r.has_ready():
                queue.extend(r.ready().messages)

    nodes[1].campaign()
    pump()
    assert nodes[1].role == Role.LEADER
    leader = nodes[1]
    payload = [b"x" * size] * batch
    applied = 0
    start = time.perf_counter()
    target = leader.log.commit + entries
    while leader.log.commit < target:
        leader.propose(payload)
        # One event-loop pass: the leader hands out its batch, followers answer, the leader commits.
        rd = leader.ready()
        applied += len(rd.committed_entries)
        queue.extend(rd.messages)
        while queue:
            m = queue.popleft()
            r = nodes[m.dst]
            r.step(m)
            steps += 1
            if r.has_ready():
                rd = r.ready()
                if r is leader:
                    applied += len(rd.committed_entries)
                queue.extend(rd.messages)
    elapsed = time.perf_counter() - start
    return elapsed, leader.log.commit - (target - entries), steps


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--entries", type=int, default=200_000, help="entries to commit (default 200000)")
    p.add_argument("--batch", type=int, default=100, help="entries per proposal batch (default 100)")
    p.add_argument("--size", type=int, default=64, help="bytes per entry (default 64)")
    a = p.parse_args()
    for batch in sorted({1, 10, a.batch}):
        n = a.entries if batch > 1 else min(a.entries, 50_000)
        elapsed, committed, steps = run(n, batch, a.size)
        print(f"batch={batch:5d} entries={committed:7d} seconds={elapsed:6.2f} "
              f"committed/s={committed / elapsed:10.0f} steps/s={steps / elapsed:9.0f}")


if __name__ == "__main__":
    main()
