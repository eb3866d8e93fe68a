"""The workload of the SIGKILL crash test: a seeded sequence of saves (appends, conflicting truncations,
snapshots), and the model of what the log must hold after each of them."""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection

from zraft.core import ClusterConfig, Entry, HardState, Snapshot

CFG = ClusterConfig((1, 2, 3))


@dataclass
class Op:
    kind: str  # "append" (possibly truncating first) or "snapshot"
    hard_state: HardState | None
    entries: list[Entry]
    snapshot: Snapshot | None
    model: list[Entry]  # the log after the op
    model_snapshot: Snapshot | None


def ops(seed: int, count: int = 400) -> Iterator[Op]:
    rng = random.Random(seed)
    model: list[Entry] = []
    snap: Snapshot | None = None
    term = 1
    commit = 0
    for _ in range(count):
        last = model[-1].index if model else (snap.index if snap else 0)
        r = rng.random()
        if r < 0.1 and model and last > commit:
            cut = rng.randint(commit + 1, last)
            term += 1
            new = _entries(rng, cut, rng.randint(1, 20), term)
            model = [e for e in model if e.index < cut] + new
            yield Op("append", HardState(term, 1, commit), new, None, list(model), snap)
        elif r < 0.15 and commit > (snap.index if snap else 0):
            idx = rng.randint(snap.index + 1 if snap else 1, commit)
            t = next(e.term for e in model if e.index == idx)
            snap = Snapshot(idx, t, CFG, rng.randbytes(rng.randint(0, 3000)))
            model = [e for e in model if e.index > idx]
            yield Op("snapshot", None, [], snap, list(model), snap)
        else:
            new = _entries(rng, last + 1, rng.choice((1, 1, 5, 50, 300)), term)
            model += new
            commit = min(model[-1].index, commit + rng.randint(0, 60))
            yield Op("append", HardState(term, 1, commit), new, None, list(model), snap)


def _entries(rng: random.Random, first: int, n: int, term: int) -> list[Entry]:
    return [Entry(first + i, term, 0, rng.randbytes(rng.randint(0, 200))) for i in range(n)]


def writer(path: str, seed: int, segment_bytes: int, conn: Connection) -> None:
    """Run in a child process: perform the ops, reporting each one's number once its save has returned."""
    from zraft.storage import Storage

    s = Storage(path, segment_bytes=segment_bytes)
    for i, op in enumerate(ops(seed)):
        if op.kind == "snapshot":
            assert op.snapshot is not None
            s.save_snapshot(op.snapshot)
            while s.untidy:  # the removals the node's loop makes a file per pass: crash points too
                s.tidy()
        else:
            s.save(op.hard_state, op.entries)
        conn.send(i)
    conn.send(-1)
