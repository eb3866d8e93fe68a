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

from zraft.core import Options, Role
from zraft.server.lessor import CLOCK_DRIFT
from zraft.tools import check, txncheck

from .clients import DEADLINE_MS, SimClient, SimPipeClient
from .cluster import TICK_MS, SimCluster, Violation
from .leaseclients import SimLeaseClient, check_leases
from .network import NetConfig
from .redis import CLIENT_TIMEOUT_MS, RedisSimClient
from .txnclients import SimTxnClient, check_txns
from .watchclients import SimWatchClient, check_watches

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
    redis: int = 0
    """Redis clients (each node ran its Redis server; 0: none, and no servers)."""
    txn: int = 0
    """Transaction clients (``txnclients.SimTxnClient``; 0: none)."""
    txns: int = 0
    """Transactions (list-append and compare-and-swap) acknowledged."""
    lease: int = 0
    """Lease clients (``leaseclients.SimLeaseClient``; 0: none, and every node's clock exact)."""
    leases: int = 0
    """Grants and keepalives acknowledged."""
    expired: int = 0
    """Leases expired by the leaders."""
    watch: int = 0
    """Watch clients (``watchclients.SimWatchClient``; 0: none)."""
    watched: int = 0
    """Events the watchers got (each checked to extend the one before by one append)."""
    watch_resumes: int = 0
    pipelined: int = 0
    """Appends of the pipelined client acknowledged."""
    coverage: dict[str, int] = field(default_factory=dict)
    """How often each situation of ``cluster.COVERAGE`` happened."""
    error: str | None = None
    trace: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None

    def replay_command(self) -> str:
        return (f"zraft sim --seed {self.seed} --nodes {self.nodes} --profile {self.profile} "
                f"--membership {'on' if self.membership else 'off'} --pipeline {self.window} --redis {self.redis} "
                f"--txn {self.txn} --leases {self.lease} --watches {self.watch}")


MEMBERSHIP_SHARE = 0.35
"""The share of seeds whose nemesis also changes the membership (adds, promotes and removes nodes, the leader
included, and transfers leadership) while the other faults happen."""
SPARES = 2
"""Nodes a membership seed holds in reserve, started (with no configuration) when first added."""
PIPELINE_SHARE = 0.08
"""The share of seeds with a pipelined client (64-256 appends in flight in one session: its session trims its
answers while retries come and go), against leaders that take at most 64-4,096 uncommitted entries."""
REDIS_SHARE = 0.1
"""The share of seeds in which every node also runs its Redis server and 1-3 Redis clients use it (the rest run
as they did before the simulator ran Redis: their schedules are unchanged)."""
TXN_SHARE = 0.15
"""The share of seeds with 1-2 transaction clients (list-append transactions and a compare-and-swap register,
``txnclients``), drawn from a generator of their own: the other seeds' schedules are unchanged."""
LEASE_SHARE = 0.15
"""The share of seeds with 1-3 lease clients (``leaseclients``) and every node's clock running fast or slow by up to
``lessor.CLOCK_DRIFT``, drawn from a generator of their own: the other seeds' schedules are unchanged."""
WATCH_SHARE = 0.15
"""The share of seeds with 1-3 watch clients (``watchclients``), drawn from a generator of their own: the other seeds'
schedules are unchanged."""
PIPELINE_BUDGET = 300
"""Appends a seed's pipelined client issues in all (what bounds the cost of a pipelined seed)."""


def pick(seed: int) -> tuple[int, str, bool]:
    """The cluster size, fault profile and membership changes (on or off) a seed runs with by default."""
    rng = random.Random(f"shape-{seed}")
    n = rng.choices((3, 5, 7), weights=(5, 4, 2))[0]
    prof = rng.choice(PROFILES)
    return n, prof, rng.random() < MEMBERSHIP_SHARE


def run_seed(seed: int, nodes: int | None = None, profile: str | None = None, duration_ms: float = 8000.0,
             compact_every: int | None = None, membership: bool | None = None,
             pipeline: int | None = None, redis: int | None = None, txn: int | None = None,
             leases: int | None = None, watches: int | None = None) -> SeedResult:
    """``pipeline``: also run a client with that many appends in flight in one session (``SimPipeClient``; 0 for
    none; None: ``PIPELINE_SHARE`` of the seeds choose 64, 128 or 256). ``redis``: every node also runs its Redis
    server, and that many Redis clients append and read through them (``redis.RedisSimClient``; 0 for none; None:
    ``REDIS_SHARE`` of the seeds choose 1 to 3). ``txn``: that many transaction clients
    (``txnclients.SimTxnClient``; None: ``TXN_SHARE`` of the seeds choose 1 or 2). ``leases``: that many lease
    clients, and clocks that drift (``leaseclients.SimLeaseClient``; None: ``LEASE_SHARE`` of the seeds choose 1 to
    3). ``watches``: that many watch clients (``watchclients.SimWatchClient``; None: ``WATCH_SHARE`` of the seeds
    choose 1 to 3)."""
    prng = random.Random(f"pipe-{seed}")  # a generator of its own: the seed's other schedules do not depend on it
    drawn = prng.choice((64, 64, 128, 256)) if prng.random() < PIPELINE_SHARE else 0
    if pipeline is None:  # (drawn either way: a replay with the seed's choice given runs the same schedule)
        pipeline = drawn
    rrng = random.Random(f"redis-clients-{seed}")  # of its own too: the other clients' schedules do not change
    drawn = rrng.choice((1, 2, 3)) if rrng.random() < REDIS_SHARE else 0
    if redis is None:
        redis = drawn
    trng = random.Random(f"txn-clients-{seed}")
    drawn = trng.choice((1, 2)) if trng.random() < TXN_SHARE else 0
    if txn is None:
        txn = drawn
    lrng = random.Random(f"lease-clients-{seed}")
    drawn = lrng.choice((1, 2, 3)) if lrng.random() < LEASE_SHARE else 0
    if leases is None:
        leases = drawn
    wrng = random.Random(f"watch-clients-{seed}")
    drawn = wrng.choice((1, 2, 3)) if wrng.random() < WATCH_SHARE else 0
    if watches is None:
        watches = drawn
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
    segment_bytes = rng.choice((1 << 10, 4 << 10, 16 << 10))  # small segments: compactions end at every kind
    c = SimCluster(n, seed, net, options, compact_every=compact_every, chunk_bytes=chunk_bytes,
                   spares=SPARES if members else 0, max_uncommitted=rng.choice((64, 512, 4096)), redis=redis > 0)
    c.segment_bytes = segment_bytes
    c.work_ms = rng.choice((1.0, 5.0, 25.0))
    c.pass_ms = rng.choice((0.0, 0.2, 1.0, 3.0))
    c.read_new_leaders = 0.5
    if prof in ("crashes", "churn"):
        c.crash_after_vote = 0.3
        c.crash_points = True
    history: list[check.Op] = []
    clients: list[SimClient | SimPipeClient | RedisSimClient | SimTxnClient | SimLeaseClient] = []
    if pipeline:
        clients.append(SimPipeClient(c, 0, prng, KEYS, history, pipeline, budget=PIPELINE_BUDGET))
        clients[-1].start(prng.uniform(0, 200))
    res.window = pipeline
    res.redis = redis
    for number in range(redis):
        clients.append(RedisSimClient(c, number, random.Random(rrng.getrandbits(64)), KEYS, history))
        clients[-1].start(rrng.uniform(0, 200))
    txns: list[txncheck.Txn] = []
    res.txn = txn
    for number in range(txn):
        clients.append(SimTxnClient(c, number, random.Random(trng.getrandbits(64)), txns, history))
        clients[-1].start(trng.uniform(0, 200))
    res.lease = leases
    if leases:
        c.lease_watch = True
        c.drift.update({i: lrng.uniform(1 - CLOCK_DRIFT, 1 + CLOCK_DRIFT) for i in sorted(c.nodes)})
    for number in range(leases):
        clients.append(SimLeaseClient(c, number, random.Random(lrng.getrandbits(64))))
        clients[-1].start(lrng.uniform(0, 200))
    res.watch = watches
    watchers = [SimWatchClient(c, number, random.Random(wrng.getrandbits(64)), KEYS) for number in range(watches)]
    for w in watchers:
        w.start(wrng.uniform(0, 500))
    try:
        _drive(c, rng, prof, duration_ms, history, clients, members)
        if watchers:
            check_watches(c, watchers)
        _check_history(c, history)
        if txn:
            check_txns(c, txns)
        if leases:
            check_leases(c)
    except Violation as e:
        res.error = str(e)
    except Exception:  # a crash inside the core is a failure too, with its traceback
        res.error = traceback.format_exc(limit=8)
    res.steps = c.steps
    res.faults = c.faults
    res.messages = c.messages_sent
    res.writes_ok = sum(1 for o in history if o.kind != "get" and o.ret is not None)
    res.txns = sum(1 for t in txns if t.ret is not None) + sum(1 for o in history if o.kind == "cas" and o.ret)
    res.reads_ok = sum(1 for o in history if o.kind == "get")
    res.unknown = sum(1 for o in history if o.ret is None)
    res.sessions = sum(cl.sessions for cl in clients)
    res.pipelined = sum(cl.acked for cl in clients if isinstance(cl, SimPipeClient))
    live = [nd.replica for nd in c.nodes.values() if nd.replica is not None]
    res.snapshots = c.snapshots_taken + sum(r.snapshots_taken for r in live)
    res.installed = c.snapshots_installed + sum(r.snapshots_installed for r in live)
    res.crashes = c.crashes
    res.leases = sum(cl.acked for cl in clients if isinstance(cl, SimLeaseClient))
    res.expired = len(c.lease_expired)
    res.watched = sum(w.events for w in watchers)
    res.watch_resumes = sum(w.resumes for w in watchers)
    res.changes = dict(c.membership)
    res.changes_done = dict(c.membership_acked)
    res.configs_committed = c.committed_configs
    res.coverage = dict(c.cov)
    if res.error is not None:
        res.trace = c.log_lines[-40:]
    return res


def _drive(c: SimCluster, rng: random.Random, prof: str, duration_ms: float, history: list[check.Op],
           clients: list[SimClient | SimPipeClient | RedisSimClient | SimTxnClient | SimLeaseClient],
           membership: bool = False) -> None:
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
    held_until = [0.0]

    def nemesis() -> None:
        if c.now >= fault_end:
            return
        ids = [i for i, nd in c.nodes.items() if nd.started]
        if membership and rng.random() < 0.4:
            _membership_step(c, rng, prof)
        kinds = {
            "partitions": ("partition",),
            "backlog": ("partition",),
            "crashes": ("crash",),
            "churn": ("partition", "crash"),
        }.get(prof, ())
        if kinds:
            kind = rng.choice(kinds)
            if kind == "partition" and c.now < held_until[0]:
                pass  # a long partition is in force
            elif kind == "partition":
                if _random_partition(c, rng, ids):
                    # Long enough for the voters to elect a leader and commit while the old one serves reads.
                    held_until[0] = c.now + rng.uniform(1500, 3000)
                    c.at(held_until[0] - c.now, c.heal)
                elif rng.random() < 0.5:
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
                        if ld == i and rng.random() < 0.3:
                            # Crash the leader the moment it acknowledges a write: the next leader has the entry
                            # but not yet its commit (a read there must wait for its own first commit).
                            accepted, _ = c.client_write(9, i, "f8")
                            if accepted:
                                _crash_at_ack(c, rng, i, c.last_direct_op, 0)
                                c.at(rng.uniform(100, 800), nemesis)
                                return
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
    attempts = busy = 0
    while "final" not in c.acked:
        if not c.run_until(lambda: c.stable_leader() is not None, LEADER_BOUND_MS):
            raise Violation(f"liveness: no stable leader within {LEADER_BOUND_MS:.0f} ms "
                            f"({LEADER_BOUND_MS / TICK_MS:.0f} ticks) after the faults healed")
        ld = c.stable_leader()
        assert ld is not None
        r = c.nodes[ld].raft
        assert r is not None
        accepted, _ = c.client_write(99, ld, "final")
        if not accepted:
            if r.log.last_index - r.log.commit < c.settings.max_uncommitted or busy == 3:
                raise Violation(f"liveness: stable leader {ld} refused a proposal ({r.log.last_index - r.log.commit} "
                                "entries uncommitted)")
            # Busy: a pipelined client filled the leader's uncommitted entries; once they commit it takes more.
            busy += 1
            c.run_until(lambda lg=r.log: lg.last_index - lg.commit < c.settings.max_uncommitted,  # type: ignore[misc]
                        COMMIT_BOUND_MS)
            continue
        attempts += 1
        if not c.run_until(lambda: "final" in c.acked, COMMIT_BOUND_MS) and attempts == 3:
            raise Violation(f"liveness: three proposals after the heal did not commit within {COMMIT_BOUND_MS:.0f} ms")
    # And a linearizable read is answered (a read round that never closes stalls every later read).
    for attempt in range(3):
        ld = c.stable_leader()
        before = c.stats["reads_ok"]
        if ld is not None and c.client_read(99, ld, "final") and \
                c.run_until(lambda b=before: c.stats["reads_ok"] > b, COMMIT_BOUND_MS):  # type: ignore[misc]
            break
        if attempt == 2:
            raise Violation(f"liveness: three reads after the heal were not answered within {COMMIT_BOUND_MS:.0f} ms")
        c.run_until(lambda: c.stable_leader() is not None, LEADER_BOUND_MS)
    for cl in clients:
        cl.stopped = True
    # Each client gives up on a request by its deadline; a Redis client's waits for the server's (a node that was
    # removed, or never added, retries its writes until then: it hears from no leader).
    give_up = max(CLIENT_TIMEOUT_MS if isinstance(cl, RedisSimClient) else DEADLINE_MS for cl in clients)
    if not c.run_until(lambda: not any(cl.busy for cl in clients) and not c.pending_direct,
                       give_up + COMMIT_BOUND_MS):
        raise Violation("liveness: client requests still pending after the clients stopped")

    if c.lease_watch:
        # The leases the lease clients held when they stopped expire (their expiries are the leader's writes):
        # within their TTL, a new leader's extension and a commit.
        def no_leases() -> bool:
            ld = c.stable_leader()
            store = c.nodes[ld].kv if ld is not None else None
            return store is not None and not store.leases.table

        bound = max(c.lease_ttl.values(), default=0) + 2 * c.options.election_ticks * TICK_MS + COMMIT_BOUND_MS
        if not c.run_until(no_leases, bound):
            raise Violation(f"liveness: leases no client kept alive were not all expired within {bound:.0f} ms")

    def settled() -> bool:
        leader = c.leader()
        r = c.nodes[leader].raft if leader is not None else None
        return r is not None and r.log.commit == r.log.last_index and all(
            n.applied == r.log.commit for n in c.members())

    if not c.run_until(settled, COMMIT_BOUND_MS):
        raise Violation(f"liveness: the nodes did not all apply the leader's log within {COMMIT_BOUND_MS:.0f} ms")
    c.check_converged()


def _check_history(c: SimCluster, history: list[check.Op]) -> None:
    """The clients' history is linearizable (``zraft.tools.check``), and every acknowledged append is in the final
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


def _membership_step(c: SimCluster, rng: random.Random, prof: str = "calm") -> None:
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
        choices += ["remove_voter"] * (3 if len(voters) % 2 == 0 else 2)
    if not choices:
        return
    kind = rng.choice(choices)
    if kind == "add_learner":
        target = rng.choice(spares)
        if c.change_membership(kind, target) and rng.random() < 0.3:
            # A learner that never answers (it dies at once, or is cut off), then asked to be promoted: a leader
            # must not make a voter of a node it has not heard from.
            if prof in ("crashes", "churn"):
                c.crash(target, restart_after=rng.uniform(300.0, 1500.0))
            else:
                c.cut(target, ld)
            c.at(rng.uniform(10.0, 150.0), lambda: _promote_now(c, target))
    elif kind == "promote":
        c.change_membership(kind, rng.choice(learners))
    elif kind == "remove_learner":
        c.change_membership("remove", rng.choice(learners))
    elif kind == "remove_voter":
        if rng.random() < (0.6 if len(voters) % 2 == 0 else 0.3):  # even: the new voters can out-vote the rest
            if c.change_membership("remove", ld) and rng.random() < 0.5:
                r = c.nodes[ld].raft
                if r is not None:  # (None: it crashed taking the request)
                    _cut_off_removed_leader(c, rng, ld, r.pending_config_index)
        else:
            c.change_membership("remove", rng.choice(voters))
    else:
        c.change_membership(kind, rng.choice([v for v in voters if v != ld]))


def _promote_now(c: SimCluster, target: int) -> None:
    ld = c.leader()
    r = c.nodes[ld].raft if ld is not None else None
    if r is not None and target in r.config.learners:
        c.change_membership("promote", target)


def _cut_off_removed_leader(c: SimCluster, rng: random.Random, ld: int, index: int) -> None:
    """A leader removing itself (its configuration entry at ``index``) ends up cut off with ``q - 1`` of the new
    voters (a quorum of them only if the leader counted itself), and takes a write that only its side gets; the
    ``q`` others have the configuration entry and can elect a leader. The write must not commit: if it did, that
    leader would lack it.

    The steps keep the configuration entry from committing on its own first (the leader steps down when it
    does): the others get the entry but their answers are lost; the leader's side gets nothing until the write is
    in the leader's log, and then both entries in one message."""
    r = c.nodes[ld].raft
    assert r is not None
    others = [v for v in r.config.voters if v != ld]
    q = len(others) // 2 + 1  # the new voters' quorum
    if len(others) - (q - 1) < q:
        return  # an even number of new voters: the leader's side with q - 1 of them leaves no quorum outside
    side = rng.sample(others, q - 1)
    outside = [v for v in others if v not in side]
    for v in side:
        c.cut(ld, v, both=False)
    for v in outside:
        c.cut(v, ld, both=False)

    def when_outside_has_it(waited: int) -> None:
        lr = c.nodes[ld].raft
        if lr is None or lr.role != Role.LEADER or lr.log.commit >= index or waited > 80:
            return
        if any((o := c.nodes[v].raft) is None or o.log.last_index < index for v in outside):
            c.at(0.25, lambda: when_outside_has_it(waited + 1))
            return
        c.partition([ld, *side], [i for i in c.nodes if i != ld and i not in side])
        for v in side:  # still nothing to the leader's side while the entry's first sends are on their way
            c.cut(ld, v, both=False)
        c.at(10.0, write)

    def write() -> None:
        lr = c.nodes[ld].raft
        if lr is None or lr.role != Role.LEADER or lr.log.commit >= index:
            return
        c.cov["leader_removed_self_cut"] += 1
        c.client_write(9, ld, "f8")
        for v in side:
            c.network.blocked.discard((ld, v))
        c.at(rng.uniform(1200.0, 2500.0), c.heal)  # long enough for the voters outside to elect a leader

    when_outside_has_it(0)


def _crash_at_ack(c: SimCluster, rng: random.Random, node: int, op: str, waited: int) -> None:
    """Crash ``node`` (and restart it later) the moment write ``op`` is acknowledged (or after 100 ms)."""
    if op in c.acked_ops or waited >= 400 or not c.nodes[node].up:
        c.cov["crash_at_ack"] += op in c.acked_ops
        c.crash(node, restart_after=rng.uniform(200.0, 1500.0))
    else:
        c.at(0.25, lambda: _crash_at_ack(c, rng, node, op, waited + 1))


def _read_behind_new_leader(c: SimCluster, old: int, op: str | None, tries: int) -> None:
    """While ``old`` still leads (cut off from the voters, not from its learners), and once a newer leader has
    acknowledged a write: a linearizable read at ``old`` must not be answered without that write (learners'
    acks confirm nothing)."""
    r = c.nodes[old].raft
    if r is None or r.role != Role.LEADER or tries > 60:
        return
    if op is None:
        new = c.leader()
        if new is not None and new != old:
            accepted, _ = c.client_write(8, new, "f8")
            if accepted:
                op = c.last_direct_op
    elif op in c.acked_ops:
        c.cov["read_at_deposed_leader"] += 1
        c.client_read(8, old, "f8")  # its answer is checked against every acknowledged write to f8
        return
    c.at(50.0, lambda: _read_behind_new_leader(c, old, op, tries + 1))


def _random_partition(c: SimCluster, rng: random.Random, ids: list[int]) -> bool:
    """Cut the network in a random shape; True for a shape that should last (the leader with only learners)."""
    ld = c.leader()
    lr = c.nodes[ld].raft if ld is not None else None
    learners = list(lr.config.learners) if lr is not None else []
    shapes = ["isolate", "isolate_leader", "split", "bridge", "one_way"]
    if learners:
        shapes += ["leader_learners"] * 2
    shape = rng.choice(shapes)
    if shape == "leader_learners" and ld is not None:
        # The leader keeps only its learners: their acks must count toward nothing (commit, reads, CheckQuorum).
        c.partition([ld, *learners], [i for i in ids if i != ld and i not in learners])
        c.at(rng.uniform(300.0, 900.0), lambda: _read_behind_new_leader(c, ld, None, 0))
        return True
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
    return False


def _run(args: tuple[int, int | None, str | None, float, int | None, bool | None, int | None, int | None, int | None,
                     int | None]) -> SeedResult:
    seed, nodes, profile, duration, compact, membership, redis, txn, leases, watches = args
    return run_seed(seed, nodes, profile, duration, compact, membership, redis=redis, txn=txn, leases=leases,
                    watches=watches)


def run_many(seeds: Iterable[int], nodes: int | None = None, profile: str | None = None,
             duration_ms: float = 8000.0, jobs: int = 1, compact_every: int | None = None,
             membership: bool | None = None, redis: int | None = None,
             txn: int | None = None, leases: int | None = None,
             watches: int | None = None) -> Iterator[SeedResult]:
    """Run seeds, in ``jobs`` worker processes (fresh interpreters: the spawn start method)."""
    work = [(s, nodes, profile, duration_ms, compact_every, membership, redis, txn, leases, watches) for s in seeds]
    if jobs <= 1:
        yield from map(_run, work)
        return
    with multiprocessing.get_context("spawn").Pool(jobs) as pool:
        yield from pool.imap(_run, work, chunksize=8)
