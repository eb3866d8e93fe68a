"""Thousands of seeded fault schedules against production replicas (the core, storage on a crashing disk, the KV
store with sessions, chunked snapshots, the codec), across cluster sizes and fault mixes. Seeds choose their
cluster size, fault profile and whether membership changes happen during the faults; the test also checks the
spread and that the production paths (membership changes included) really ran."""

from __future__ import annotations

import collections
import os

from zraft.sim.cluster import COVERAGE
from zraft.sim.redis import REDIS_COVERAGE
from zraft.sim.runner import PROFILES, pick, run_many, run_seed

SEEDS = 2000


def test_seed_shapes_cover_every_size_and_profile() -> None:
    shapes = collections.Counter(pick(s) for s in range(SEEDS))
    assert {n for n, _, _ in shapes} == {3, 5, 7}
    assert {p for _, p, _ in shapes} == set(PROFILES)
    assert {m for _, _, m in shapes} == {True, False}
    sizes = collections.Counter((n, p) for n, p, _ in shapes.elements())
    assert all(count >= 30 for count in sizes.values()), sizes
    assert 0.25 * SEEDS < sum(m for _, _, m in shapes.elements()) < 0.45 * SEEDS


def test_many_seeds() -> None:
    """The failure signal is the simulator's checks alone: Raft's safety properties at every step, what a restart
    would recover, linearizability and exactly-once of the clients' histories, liveness after the heal. What is
    asserted besides is reach: that the seeds got into every situation ``cluster.COVERAGE`` names (each needed by
    a class of bugs that once escaped; tests/planted.py plants them) and ran the production paths."""
    failures = []
    crashes = installed = snapshots = sessions = unknown = configs = 0
    reach: collections.Counter[str] = collections.Counter()  # situation -> seeds in which it happened
    changes: collections.Counter[str] = collections.Counter()  # kind -> seeds in which the leader accepted one
    for r in run_many(range(SEEDS), jobs=max(2, os.cpu_count() or 1)):
        configs += r.configs_committed
        changes.update(r.changes_done.keys())
        reach.update(k for k, v in r.coverage.items() if v)
        crashes += r.crashes
        installed += r.installed
        snapshots += r.snapshots
        sessions += r.sessions
        unknown += r.unknown
        if not r.ok:
            failures.append(f"seed {r.seed}: {r.error}\n  replay: {r.replay_command()}")
    assert not failures, "\n".join(failures[:10])
    missing = {k: reach[k] for k in COVERAGE if reach[k] < 10}
    assert not missing, f"situations reached in fewer than 10 of {SEEDS} seeds: {missing}"
    # The production paths ran: crashes and restarts from the disk, snapshots taken and installed by chunks,
    # clients that lost answers and started new sessions; membership changes of every kind, committed.
    assert crashes > SEEDS and snapshots > SEEDS and installed > SEEDS // 10
    assert sessions > 2 * SEEDS and unknown > 0
    assert all(changes[k] > SEEDS // 10 for k in ("add_learner", "promote", "remove", "transfer")), changes
    assert configs > SEEDS


REDIS_SEEDS = 60


def test_seeds_with_redis_clients() -> None:
    """Every node also runs the production Redis server (its sockets in memory, its clock virtual), and Redis
    clients append and read through any node while the faults happen: their history joins the native clients' and
    the same checks decide it. Reach: writes forwarded from followers to the leader and answered, connections lost
    with their node, and outcomes left unknown (tests/planted.py bugs 16 and 17 are the Redis server's own)."""
    failures = []
    reach: collections.Counter[str] = collections.Counter()
    redis_ops = 0
    for r in run_many(range(REDIS_SEEDS), jobs=max(2, os.cpu_count() or 1), redis=2):
        reach.update(k for k, v in r.coverage.items() if v)
        redis_ops += r.coverage.get("redis_forwarded", 0)
        if not r.ok:
            failures.append(f"seed {r.seed}: {r.error}\n  replay: {r.replay_command()}")
    assert not failures, "\n".join(failures[:10])
    missing = {k: reach[k] for k in REDIS_COVERAGE if reach[k] < REDIS_SEEDS // 10}
    assert not missing, f"situations reached in fewer than {REDIS_SEEDS // 10} of {REDIS_SEEDS} seeds: {missing}"
    assert redis_ops > REDIS_SEEDS * 10


TXN_SEEDS = 60


def test_seeds_with_transaction_clients() -> None:
    """Transaction clients run Elle's list-append transactions and compare-and-swap on registers while the faults
    happen: the transactions must be strictly serializable (``zraft.tools.txncheck``), the registers linearizable,
    every acknowledged append there once (tests/planted.py bugs 18 and 19 are transactions' own)."""
    failures = []
    txns = 0
    for r in run_many(range(TXN_SEEDS), jobs=max(2, os.cpu_count() or 1), txn=2):
        txns += r.txns
        if not r.ok:
            failures.append(f"seed {r.seed}: {r.error}\n  replay: {r.replay_command()}")
    assert not failures, "\n".join(failures[:10])
    assert txns > TXN_SEEDS * 30


def test_seeds_with_lease_and_watch_clients() -> None:
    """Lease clients keep leases alive and let them expire while every node's clock drifts up to 1%; watch clients
    watch appended keys across the faults: no lease expires while promised, no watcher skips, repeats or reorders a
    change (tests/planted.py bugs 20-22 are theirs)."""
    failures = []
    leases = watched = expired = 0
    for r in run_many(range(TXN_SEEDS), jobs=max(2, os.cpu_count() or 1), leases=2, watches=2):
        leases += r.leases
        watched += r.watched
        expired += r.expired
        if not r.ok:
            failures.append(f"seed {r.seed}: {r.error}\n  replay: {r.replay_command()}")
    assert not failures, "\n".join(failures[:10])
    assert leases > TXN_SEEDS * 2 and expired > TXN_SEEDS and watched > TXN_SEEDS * 10, (leases, expired, watched)


def test_replay_is_deterministic() -> None:
    a = run_seed(4242)
    b = run_seed(4242)
    assert (a.steps, a.messages, a.writes_ok, a.reads_ok, a.faults, a.crashes, a.sessions, a.snapshots, a.installed,
            a.unknown) == (b.steps, b.messages, b.writes_ok, b.reads_ok, b.faults, b.crashes, b.sessions, b.snapshots,
                           b.installed, b.unknown)
    a = run_seed(4242, membership=True)
    b = run_seed(4242, membership=True)
    assert a.changes and (a.steps, a.messages, a.changes, a.configs_committed) == (
        b.steps, b.messages, b.changes, b.configs_committed)
    a = run_seed(4242, redis=2)
    b = run_seed(4242, redis=2)
    assert a.coverage.get("redis_forwarded") and (a.steps, a.messages, a.writes_ok, a.reads_ok, a.unknown) == (
        b.steps, b.messages, b.writes_ok, b.reads_ok, b.unknown)
    a = run_seed(4242, txn=2)
    b = run_seed(4242, txn=2)
    assert a.txns and (a.steps, a.messages, a.txns, a.unknown) == (b.steps, b.messages, b.txns, b.unknown)
    a = run_seed(4242, leases=2, watches=2)
    b = run_seed(4242, leases=2, watches=2)
    assert a.leases and a.watched and (a.steps, a.messages, a.leases, a.expired, a.watched) == (
        b.steps, b.messages, b.leases, b.expired, b.watched)


def test_a_replay_command_runs_the_same_schedule_in_another_process() -> None:
    """What ``replay_command`` prints (size, profile, membership, pipeline, Redis and transaction clients) runs the
    seed's schedule again, in a fresh interpreter with another hash seed (no order may come from ``hash``)."""
    import random
    import subprocess
    import sys

    from zraft.sim.runner import PIPELINE_SHARE

    seed = next(s for s in range(1000) if random.Random(f"pipe-{s}").random() < PIPELINE_SHARE and pick(s)[2])
    r = run_seed(seed, redis=2, txn=1)
    assert r.window and r.membership and r.txn
    for hash_seed in ("1", "2"):
        out = subprocess.run([sys.executable, "-m", *r.replay_command().split()],
                             env={**os.environ, "PYTHONHASHSEED": hash_seed}, capture_output=True, text=True,
                             timeout=300)
        assert f"seeds=1 steps={r.steps} " in out.stdout, (hash_seed, r.steps, out.stdout[-500:], out.stderr[-500:])


def test_cli_prints_summary_last_and_replays_one_seed() -> None:
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "zraft", "sim", "--seeds", "3", "--first-seed", "10", "--jobs", "1"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    last = r.stdout.strip().splitlines()[-1]
    assert last.startswith("seeds=3 steps=") and "failures=0" in last
    r = subprocess.run([sys.executable, "-m", "zraft", "sim", "--seed", "10"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0 and r.stdout.startswith("seed 10:")
    r = subprocess.run([sys.executable, "-m", "zraft", "sim", "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "--first-seed" in r.stdout


def test_seed_9103965_elects_a_leader_after_healing() -> None:
    """Found by a soak: 7 nodes, PreVote off, CheckQuorum on; three nodes with stale logs campaigned in turn and
    every vote request reset the up-to-date nodes' election timers, so no one who could win ever stood."""
    r = run_seed(9103965, nodes=7, profile="partitions")
    assert r.ok, r.error


def test_a_client_with_many_appends_in_flight_gets_each_applied_once() -> None:
    """``--pipeline``: a client keeping 64 appends in flight in one session (ack = its oldest unanswered one, so the
    session trims answers while retries of the oldest come and go), in a calm seed: every acknowledged append is
    in the final values once, and the history is linearizable."""
    r = run_seed(3, nodes=3, profile="calm", pipeline=64)
    assert r.ok, r.error
    assert r.window == 64 and r.pipelined >= 200 and r.coverage["session_trims"] > 0
