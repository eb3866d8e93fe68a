"""zraft sim: run many seeded fault schedules against production replicas, or replay one."""

from __future__ import annotations

import argparse
import os
import sys
import time

from .cluster import COVERAGE
from .redis import REDIS_COVERAGE
from .runner import PROFILES, SeedResult, run_many, run_seed


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description="Deterministic cluster simulator: runs the production replica (zraft.server.replica: the Raft "
                    "core, "
                    "zraft.storage on a disk that crashes and tears writes, the KV store with client sessions, "
                    "chunked snapshot transfer, the wire codec) under seeded faults (message loss, duplication, "
                    "reordering, partitions, crashes inside ready batches and fsyncs) in virtual time. It checks "
                    "Raft's safety properties at every step, liveness after the faults heal, and the simulated "
                    "clients' history with zraft.tools.check (linearizable, every acknowledged append exactly once). A "
                    "failure prints the command that replays it.",
    )
    p.add_argument("--seeds", type=int, default=200, help="how many seeds to run (default 200)")
    p.add_argument("--first-seed", type=int, default=0, help="the first seed (default 0)")
    p.add_argument("--seed", type=int, help="replay this one seed, printing its event trace")
    p.add_argument("--nodes", type=int, choices=(3, 5, 7), help="cluster size (default: chosen by each seed)")
    p.add_argument("--profile", choices=PROFILES, help="fault mix (default: chosen by each seed)")
    p.add_argument("--duration", type=float, default=8000.0,
                   help="virtual milliseconds of faults before everything heals (default 8000)")
    p.add_argument("--membership", choices=("on", "off"),
                   help="membership changes during the faults: add, promote and remove nodes (the leader too) and "
                        "transfer leadership (default: on for about a third of the seeds, chosen by each seed)")
    p.add_argument("--compact-every", type=int,
                   help="snapshot and compact every N applied entries, 0 for never (default: chosen by each seed)")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                   help="worker processes (default: one per CPU)")
    p.add_argument("--pipeline", type=int, metavar="N",
                   help="with --seed: also run a client keeping N appends in flight in one session, 0 for none "
                        "(default: chosen by the seed; about one seed in twelve has one)")
    p.add_argument("--redis", type=int, metavar="N",
                   help="every node also runs its Redis server, and N simulated Redis clients append and read "
                        "through them (any node: followers forward writes); their history is checked with the "
                        "others' (0: no Redis servers; default: chosen by each seed, about one in ten has 1-3)")
    p.add_argument("--txn", type=int, metavar="N",
                   help="N simulated clients run list-append transactions (checked for strict serializability) and "
                        "compare-and-swap on registers (checked for linearizability) (0: none; default: chosen by "
                        "each seed, about one in seven has 1-2)")
    p.add_argument("--leases", type=int, metavar="N",
                   help="N simulated clients grant leases, attach keys and keep them alive, then let them expire, and "
                        "every node's clock runs fast or slow by up to 1%%; checked: no lease expired while its "
                        "holder was promised it (0: none; default: chosen by each seed, about one in seven has 1-3)")
    p.add_argument("--watches", type=int, metavar="N",
                   help="N simulated clients watch an appended key, resuming from node to node; checked: every "
                        "event extends the one before by one append, and a watcher that caught up holds the final "
                        "value (0: none; default: chosen by each seed, about one in seven has 1-3)")
    p.add_argument("-q", "--quiet", action="store_true", help="print failures and the summary only")
    a = p.parse_args(argv)
    membership = None if a.membership is None else a.membership == "on"

    if a.seed is not None:
        r = run_seed(a.seed, a.nodes, a.profile, a.duration, a.compact_every, membership, pipeline=a.pipeline,
                     redis=a.redis, txn=a.txn, leases=a.leases, watches=a.watches)
        print(f"seed {r.seed}: {r.nodes} production replicas, profile {r.profile}, {r.steps} steps, {r.faults} "
              f"faults ({r.crashes} crashes), {r.messages} messages; {r.sessions} client sessions, {r.writes_ok} "
              f"appends and {r.reads_ok} reads acknowledged, {r.unknown} unknown, all checked; {r.snapshots} "
              f"snapshots taken, {r.installed} installed")
        if r.txn:
            print(f"transactions: {r.txn} clients, {r.txns} transactions and compare-and-swaps acknowledged, "
                  f"checked (strictly serializable, linearizable)")
        if r.lease:
            print(f"leases: {r.lease} clients, {r.leases} grants and keepalives acknowledged, {r.expired} leases "
                  "expired by the leaders, none while promised")
        if r.watch:
            print(f"watches: {r.watch} clients, {r.watched} events checked, {r.watch_resumes} resumes")
        if r.membership:
            print(f"membership requests taken: {_changes(r.changes)}; answered OK: {_changes(r.changes_done)}; "
                  f"{r.configs_committed} configuration changes committed")
        print(coverage_table([r]))
        if r.error:
            print("\n".join(r.trace))
            print(f"FAILED: {r.error}")
        print(f"seeds=1 steps={r.steps} faults={r.faults} failures={0 if r.ok else 1}")
        return 0 if r.ok else 1

    start = time.monotonic()
    seeds = range(a.first_seed, a.first_seed + a.seeds)
    total_steps = total_faults = failures = done = 0
    totals = {"crashes": 0, "sessions": 0, "appends": 0, "reads": 0, "snapshots": 0, "installed": 0, "txns": 0,
              "leases": 0, "expired": 0, "watched": 0}
    changes: dict[str, int] = {}  # kind -> seeds in which the leader answered OK to at least one
    member_seeds = configs = 0
    results: list[SeedResult] = []
    for r in run_many(seeds, a.nodes, a.profile, a.duration, a.jobs, a.compact_every, membership, a.redis,
                      a.txn, a.leases, a.watches):
        done += 1
        results.append(SeedResult(r.seed, r.nodes, r.profile, coverage=r.coverage, redis=r.redis))
        total_steps += r.steps
        total_faults += r.faults
        for k, v in (("crashes", r.crashes), ("sessions", r.sessions), ("appends", r.writes_ok),
                     ("reads", r.reads_ok), ("snapshots", r.snapshots), ("installed", r.installed),
                     ("txns", r.txns), ("leases", r.leases), ("expired", r.expired), ("watched", r.watched)):
            totals[k] += v
        member_seeds += r.membership
        configs += r.configs_committed
        for kind in r.changes_done:
            changes[kind] = changes.get(kind, 0) + 1
        if not r.ok:
            failures += 1
            print(f"FAIL seed {r.seed} ({r.nodes} nodes, {r.profile}): {r.error.strip() if r.error else ''}")
            print(f"  replay: {r.replay_command()}")
        elif not a.quiet and done % 100 == 0:
            print(f"... {done} seeds, {failures} failures, {time.monotonic() - start:.0f} s", flush=True)
    elapsed = time.monotonic() - start
    print(f"production replicas: {totals['crashes']} crashes, {totals['sessions']} client sessions, "
          f"{totals['appends']} acknowledged appends and {totals['reads']} reads checked (linearizable, exactly "
          f"once), {totals['txns']} transactions and compare-and-swaps (strictly serializable), "
          f"{totals['leases']} lease grants and keepalives ({totals['expired']} leases expired, none early), "
          f"{totals['watched']} watch events (none skipped, repeated or reordered), "
          f"{totals['snapshots']} snapshots taken, {totals['installed']} installed")
    if member_seeds:
        print(f"membership: {member_seeds} seeds changed it, {configs} configuration changes committed; seeds with "
              f"at least one done: {_changes(changes)}")
    print(coverage_table(results))
    print(f"seeds={done} steps={total_steps} faults={total_faults} failures={failures} seconds={elapsed:.1f}")
    return 1 if failures else 0


def coverage_table(results: list[SeedResult]) -> str:
    """How often the seeds reached each situation the simulator aims at (``cluster.COVERAGE``), and in how many
    seeds: a row at 0 is a class of bugs these seeds cannot find."""
    lines = [f"{'times':>8} {'seeds':>6}  situation"]
    rows = {**COVERAGE, **REDIS_COVERAGE} if any(r.redis for r in results) else COVERAGE
    for key, text in rows.items():
        times = sum(r.coverage.get(key, 0) for r in results)
        seeds = sum(1 for r in results if r.coverage.get(key, 0))
        lines.append(f"{times:>8} {seeds:>6}  {text}")
    return "\n".join(lines)


def _changes(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {counts.get(k, 0)}" for k in ("add_learner", "promote", "remove", "transfer"))


if __name__ == "__main__":
    sys.exit(main())
