"""Crash injection on the real file system: a writer process is killed with SIGKILL at random points while
it appends, truncates and compacts. After each kill the storage must recover exactly what the writer's
returned saves made durable, plus at most a prefix of the one save in progress -- byte for byte, nothing else."""

from __future__ import annotations

import itertools
import multiprocessing
import os
import random
import signal
import time
from pathlib import Path

from crash_writer import Op, ops, writer

from zraft.storage import Storage
from zraft.storage.snapshots import loaded

ITERATIONS = 300


def _acceptable(done: list[Op], inflight: Op | None, entries: list, snapshot: object, hard_state: object) -> bool:
    before = done[-1] if done else None
    base_entries = before.model if before else []
    base_snap = before.model_snapshot if before else None
    base_hs = next((op.hard_state for op in reversed(done) if op.hard_state is not None), None)
    if entries == base_entries and snapshot == base_snap and (hard_state == base_hs or base_hs is None):
        return True
    if inflight is None:
        return False
    if inflight.kind == "snapshot":
        return entries == inflight.model and snapshot == inflight.model_snapshot
    # An append interrupted midway: the records that reached the disk are a prefix of the batch.
    first = inflight.entries[0].index
    kept = [e for e in base_entries if e.index < first]
    for j in range(1, len(inflight.entries) + 1):
        if entries == kept + inflight.entries[:j] and snapshot == base_snap:
            return True
    return False


def test_sigkill_at_random_points(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["zraft.storage", "crash_writer"])
    rng = random.Random(7)
    kills_mid_run = 0
    for it in range(ITERATIONS):
        d = str(tmp_path / f"run{it}")
        seed = rng.randrange(1 << 30)
        seg = rng.choice((4096, 65536, 1 << 20))
        parent, child = ctx.Pipe(duplex=False)
        p = ctx.Process(target=writer, args=(d, seed, seg, child))
        p.start()
        child.close()
        stop_after = rng.randint(0, 60)
        done_count = 0
        finished = False
        try:
            while done_count <= stop_after:
                if not parent.poll(10):
                    raise AssertionError(f"writer {p.pid} went silent")
                i = parent.recv()
                if i == -1:
                    finished = True
                    break
                done_count = i + 1
            if not finished:
                time.sleep(rng.random() * 0.002)  # land somewhere inside the next save
                os.kill(p.pid, signal.SIGKILL)
                kills_mid_run += 1
        finally:
            p.join(10)
            if p.is_alive():
                os.kill(p.pid, signal.SIGKILL)
                p.join(10)
        # Every save the writer reported before it died is durable: drain the pipe for the exact count.
        while not finished and parent.poll(0):
            try:
                i = parent.recv()
            except EOFError:
                break
            if i == -1:
                finished = True
            else:
                done_count = i + 1
        parent.close()
        inflight_index = done_count
        all_ops = list(itertools.islice(ops(seed), done_count + 1))
        s = Storage(d, segment_bytes=seg)
        r = s.recovered
        s.close()
        # The kill may land after a save returned but before the writer reported it: then that save is the
        # "in progress" one, recovered whole.
        done = all_ops[:inflight_index]
        inflight = all_ops[inflight_index] if inflight_index < len(all_ops) else None
        assert _acceptable(done, inflight, r.entries, loaded(r.snapshot), r.hard_state), (
            f"iteration {it} (seed {seed}, {done_count} saves done): recovered state is not what the saves made "
            f"durable ({len(r.entries)} entries, snapshot {r.snapshot and r.snapshot.index})"
        )
    assert kills_mid_run > ITERATIONS // 2
