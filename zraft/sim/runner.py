"""One seed, one randomized fault schedule: simulated clients append and read through their sessions while a
nemesis injects faults (partitions, loss, crashes inside ready batches and fsyncs); then it heals and the
cluster must elect a leader, commit new writes and converge; then the clients' history must be linearizable and
every acknowledged append must appear exactly once."""

from __future__ import annotations

import multiprocessing
import random
import traceback
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from zraft import check
from zraft.core import Options

from .clients import DEADLINE_MS, SimClient, SimPipeClient
from .cluster import TICK_MS, NetConfig, SimCluster, Violation

PROFILES = ("calm", "lossy", "partitions", "crashes", "churn", "backlog")
"""Fault mixes: none; lossy network; partitions of every shape; crash/restart (often the leader, often right
after a proposal); all of them at once; and partitions whose cut links hold their messages and deliver them in a
burst at the heal, with some messages delayed past an election timeout (a real network's stale backlog)."""

KEYS = ("a", "b", "c")
LEADER_BOUND_MS = 5000.0
"""After the last fault heals, a stable leader must exist within this much virtual time (100 ticks)."""
COMMIT_BOUND_MS = 3000.0


@dataclass
class SeedResult:
    seed: int
    nodes: int
    profile: str
    steps: int = 0
    faults: int = 0
    messages: int = 0
    writes_ok: int = 0
    reads_ok: int = 0
    unknown: int = 0
    sessions: int = 0
    snapshots: int = 0
    installed: int = 0
    crashes: int = 0
    membership: bool = False
    changes: dict[str, int] = field(default_factory=dict)
    """Membership changes and transfers the leader took (client requests it did not refuse), by kind."""
    changes_done: dict[str, int] = field(default_factory=dict)
    """Those answered OK (committed; for a transfer: the target leads), by kind."""
    configs_committed: int = 0
    window: int = 0
    """Appends a pipelined client kept in flight (0: none in this seed)."""
    pipelined: int = 0
    """Appends of the pipelined client acknowledged."""
    error: str | None = None
    trace: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None

    def replay_command(self) -> str:
        return (f"python -m zraft.sim --seed {self.seed} --nodes {self.nodes} --profile {self.profile} "
                f"--membership {'on' if self.membership else 'off'}")


MEMBERSHIP_SHARE = 0.35
"""The share of seeds whose nemesis also changes the membership (adds, promotes and removes nodes, the leader
included, and transfers leadership) while the other faults happen."""
SPARES = 2
"""Nodes a membership seed holds in reserve, started (with no configuration) when first added."""


def pick(seed: int) -> tuple[int, str, bool]:
    """The cluster size, fault profile and membership changes (on or off) a seed runs with by default."""
    rng = random.Random(f"shape-{seed}")
    n = rng.choices((3, 5, 7), weights=(5, 4, 2))[0]
    prof = rng.choice(PROFILES)
    return n, prof, rng.random() < MEMBERSHIP_SHARE


def run_seed(seed: int, nodes: int | None = None, profile: str | None = None, duration_ms: float = 8000.0,
             compact_every: int | None = None, membership: bool | None = None, pipeline: int = 0) -> SeedResult:
    """``pipeline``: also run a client with that many appends in flight in one session (``SimPipeClient``; off
    by default, and in the seeds the suite runs: it costs 10-100 times a seed's steps)."""
    dn, dp, dm = pick(seed)
    n = nodes or dn
    prof = profile or dp
    members = dm if membership is None else membership
    res = SeedResult(seed, n, prof, membership=members)
    rng = random.Random(seed * 7919 + 17)
    net = NetConfig()
    if prof in ("lossy", "churn"):
        net = NetConfig(drop=rng.uniform(0.02, 0.15), duplicate=rng.uniform(0.0, 0.1),
                        long_delay=rng.uniform(0.0, 0.1))
    elif prof == "backlog":
        net = NetConfig(long_delay=rng.uniform(0.01, 0.1), long_delay_max=rng.choice((1500.0, 3000.0)),
                        hold_blocked=True)
    if compact_every is None:
        compact_every = rng.choice((0, 10, 40, 200))
    chunk_bytes = rng.choice((256, 4096, 1 << 20))
    # The core's own settings vary too: small messages and windows split a new leader's no-op from the entries
    # before it (what makes a Figure 8 bug observable), and PreVote/CheckQuorum off gives split votes.
    options = Options(
        election_ticks=10,
        heartbeat_ticks=rng.choice((1, 2, 3)),
        pre_vote=rng.random() < 0.75,
        check_quorum=rng.random() < 0.75,
        max_msg_entries=rng.choice((1, 3, 64, 1024)),
        max_inflight=rng.choice((1, 4, 16, 64)),
        snapshot_timeout_ticks=20,
    )
    c = SimCluster(n, seed, net, options, compact_every=compact_every, chunk_bytes=chunk_bytes,
                   spares=SPARES if members else 0)
    if prof in ("crashes", "churn"):
        c.crash_after_vote = 0.3
        c.crash_points = True
    history: list[check.Op] = []
    clients: list[SimClient | SimPipeClient] = []
    if pipeline:  # from a generator of its own: the seed's other schedules are those it has without it
        prng = random.Random(f"pipe-{seed}")
        clients.append(SimPipeClient(c, 0, prng, KEYS, history, pipeline, budget=pipeline + 200))
        clients[-1].start(prng.uniform(0, 200))
    res.window = pipeline
    try:
        _drive(c, rng, prof, duration_ms, history, clients, members)
        _check_history(c, history)
    except Violation as e:
        res.error = str(e)
    except Exception:  # a crash inside the core is a failure too, with its traceback
        res.error = traceback.format_exc(limit=8)
    res.steps = c.steps
    res.faults = c.faults
    res.messages = c.messages_sent
    res.writes_ok = sum(1 for o in history if o.kind != "get" and o.ret is not None)
    res.reads_ok = sum(1 for o in history if o.kind == "get")
    res.unknown = sum(1 for o in history if o.ret is None)
    res.sessions = sum(cl.sessions for cl in clients)
    res.pipelined = sum(cl.acked for cl in clients if isinstance(cl, SimPipeClient))
    live = [nd.replica for nd in c.nodes.values() if nd.replica is not None]
    res.snapshots = c.snapshots_taken + sum(r.snapshots_taken for r in live)
    res.installed = c.snapshots_installed + sum(r.snapshots_installed for r in live)
    res.crashes = c.crashes
    res.changes = dict(c.membership)
    res.changes_done = dict(c.membership_acked)
    res.configs_committed = c.committed_configs
    if res.error is not None:
        res.trace = c.log_lines[-40:]
    return res


def _drive(c: SimCluster, rng: random.Random, prof: str, duration_ms: float, history: list[check.Op],
           clients: list[SimClient | SimPipeClient], membership: bool = False) -> None:
    for number in range(rng.choice((2, 3, 5))):
        sc = SimClient(c, number, random.Random(rng.getrandbits(64)), KEYS, history)
        clients.append(sc)
        sc.start(rng.uniform(0, 100))

    def expire() -> None:
        c.expire_clients(2000.0)
        c.at(250.0, expire)

    c.at(250.0, expire)
    fault_end = duration_ms
    crashed: set[int] = set()

    def nemesis() -> None:
        if c.now >= fault_end:
            return
        ids = [i for i, nd in c.nodes.items() if nd.started]
        if membership and rng.random() < 0.4:
            _membership_step(c, rng)
        kinds = {
            "partitions": ("partition",),
            "backlog": ("partition",),
            "crashes": ("crash",),
            "churn": ("partition", "crash"),
        }.get(prof, ())
        if kinds:
            kind = rng.choice(kinds)
            if kind == "partition":
                _random_partition(c, rng, ids)
                if rng.random() < 0.5:
                    c.at(rng.uniform(200, 1500), c.heal)
            else:
                if crashed and rng.random() < 0.5:
                    i = rng.choice(sorted(crashed))
                    crashed.discard(i)
                    c.restart(i)
                elif len(crashed) < (len(ids) - 1) // 2 + (1 if rng.random() < 0.2 else 0):
                    ld = c.leader()
                    i = ld if ld is not None and rng.random() < 0.5 else rng.choice(ids)
                    if i not in crashed:
                        if rng.random() < 0.3 and ld == i:
                            # Figure 8: crash the leader right after it takes a proposal.
                            c.client_write(9, i, "f8")
                        crashed.add(i)
                        c.crash(i)
        c.at(rng.uniform(100, 800), nemesis)

    c.at(rng.uniform(200, 600), nemesis)
    c.run_for(fault_end)

    # Heal everything; from here on the network is reliable.
    c.heal()
    for i in sorted(crashed):
        c.restart(i)
    c.net = NetConfig()
    c.crash_points = False
    c.crash_after_vote = 0.0
    c.note("all faults healed")
    # A leader may still change once after the heal (a node cut off until then may legitimately win a
    # pre-vote); a write to a deposed leader is lost, so the client tries again, as a real one would.
    for attempt in range(3):
        if not c.run_until(lambda: c.stable_leader() is not None, LEADER_BOUND_MS):
            raise Violation(f"liveness: no stable leader within {LEADER_BOUND_MS:.0f} ms "
                            f"({LEADER_BOUND_MS / TICK_MS:.0f} ticks) after the faults healed")
        ld = c.stable_leader()
        assert ld is not None
        accepted, _ = c.client_write(99, ld, "final")
        if not accepted:
            raise Violation(f"liveness: stable leader {ld} refused a proposal")
        if c.run_until(lambda: "final" in c.acked, COMMIT_BOUND_MS):
            break
        if attempt == 2:
            raise Violation(f"liveness: three proposals after the heal did not commit within {COMMIT_BOUND_MS:.0f} ms")
    for cl in clients:
        cl.stopped = True
    if not c.run_until(lambda: not any(cl.busy for cl in clients) and not c.pending_direct,
                       DEADLINE_MS + COMMIT_BOUND_MS):
        raise Violation("liveness: client requests still pending after the clients stopped")

    def settled() -> bool:
        leader = c.leader()
        r = c.nodes[leader].raft if leader is not None else None
        return r is not None and r.log.commit == r.log.last_index and all(
            n.applied == r.log.commit for n in c.members())

    if not c.run_until(settled, COMMIT_BOUND_MS):
        raise Violation(f"liveness: the nodes did not all apply the leader's log within {COMMIT_BOUND_MS:.0f} ms")
    c.check_converged()


def _check_history(c: SimCluster, history: list[check.Op]) -> None:
    """The clients' history is linearizable (``zraft.check``), and every acknowledged append is in the final
    value of its key exactly once (a retried append applied twice would show twice)."""
    results = check.check(history)
    bad = [r for r in results if not r.ok]
    if bad:
        raise Violation(f"history not linearizable: {check.verdict(results)}: {bad[0].explanation}")
    ld = c.leader()
    store = c.nodes[ld].kv if ld is not None else None
    assert store is not None
    for key in KEYS:
        value = (store.get(key.encode()) or b"")
        elements = value.split(b";")[:-1]
        if len(set(elements)) != len(elements):
            twice = sorted({e for e in elements if elements.count(e) > 1})
            raise Violation(f"an append was applied twice to {key!r}: {twice[:3]}")
        have = set(elements)
        for o in history:
            if o.key == key and o.kind == "append" and o.ret is not None and o.value is not None \
                    and o.value[:-1] not in have:
                raise Violation(f"acknowledged append {o.value!r} to {key!r} is missing at the end")


def _membership_step(c: SimCluster, rng: random.Random) -> None:
    """One membership change through the leader, chosen among those that make sense now. Voters stay between 3
    and 7 (a removed node, the leader too, keeps running: it must not disrupt the cluster)."""
    ld = c.leader()
    if ld is None:
        return
    r = c.nodes[ld].raft
    assert r is not None
    voters, learners = r.config.voters, r.config.learners
    spares = [i for i, nd in c.nodes.items() if not nd.started]
    choices = ["transfer"] if len(voters) > 1 else []
    if spares and len(learners) < 2:
        choices += ["add_learner"] * 2
    if learners:
        choices += ["promote"] * 3 + ["remove_learner"]
    if len(voters) > 3:
        choices += ["remove_voter"] * 2
    if not choices:
        return
    kind = rng.choice(choices)
    if kind == "add_learner":
        c.change_membership(kind, rng.choice(spares))
    elif kind == "promote":
        c.change_membership(kind, rng.choice(learners))
    elif kind == "remove_learner":
        c.change_membership("remove", rng.choice(learners))
    elif kind == "remove_voter":
        c.change_membership("remove", ld if rng.random() < 0.3 else rng.choice(voters))
    else:
        c.change_membership(kind, rng.choice([v for v in voters if v != ld]))


def _random_partition(c: SimCluster, rng: random.Random, ids: list[int]) -> None:
    shape = rng.choice(("isolate", "isolate_leader", "split", "bridge", "one_way"))
    ld = c.leader()
    if shape in ("isolate", "isolate_leader"):
        i = ld if shape == "isolate_leader" and ld is not None else rng.choice(ids)
        c.isolate(i)
    elif shape == "split":
        shuffled = ids[:]
        rng.shuffle(shuffled)
        k = rng.randint(1, len(ids) // 2)
        c.partition(shuffled[:k], shuffled[k:])
    elif shape == "bridge":
        # Two halves that can both reach one bridge node (Jepsen's "bridge").
        shuffled = ids[:]
        rng.shuffle(shuffled)
        rest = shuffled[1:]  # shuffled[0] is the bridge: it keeps its links to both sides
        half = len(rest) // 2
        c.heal()
        for x in rest[:half]:
            for y in rest[half:]:
                c.cut(x, y)
    else:
        src = rng.choice(ids)
        dst = rng.choice([x for x in ids if x != src])
        c.cut(src, dst, both=False)


def _run(args: tuple[int, int | None, str | None, float, int | None, bool | None]) -> SeedResult:
    seed, nodes, profile, duration, compact, membership = args
    return run_seed(seed, nodes, profile, duration, compact, membership)


def run_many(seeds: Iterable[int], nodes: int | None = None, profile: str | None = None,
             duration_ms: float = 8000.0, jobs: int = 1, compact_every: int | None = None,
             membership: bool | None = None) -> Iterator[SeedResult]:
    """Run seeds, in ``jobs`` worker processes (fresh interpreters: the spawn start method)."""
    work = [(s, nodes, profile, duration_ms, compact_every, membership) for s in seeds]
    if jobs <= 1:
        yield from map(_run, work)
        return
    with multiprocessing.get_context("spawn").Pool(jobs) as pool:
        yield from pool.imap(_run, work, chunksize=8)
