"""The MIT 6.5840 Raft lab scenarios and the classic Raft bugs of ../shared/RAFT-TESTING.md, against the
deterministic simulator. Every step of every scenario also runs the simulator's safety checks (one leader per
term, log matching, leader completeness, state machine safety, monotonic commit/applied, fresh reads)."""

from __future__ import annotations

import itertools
import random

import pytest

from zraft.core import Role
from zraft.sim import TICK_MS, NetConfig, SimCluster
from zraft.transport.requests import Append

ELECTION_MS = 10 * TICK_MS  # the simulator's election timeout is 10 ticks (randomized up to 20)


def elect(c: SimCluster, max_ms: float = 5000.0) -> int:
    assert c.run_until(lambda: c.stable_leader() is not None, max_ms), "no stable leader"
    ld = c.stable_leader()
    assert ld is not None
    return ld


def term_of(c: SimCluster, i: int) -> int:
    r = c.nodes[i].raft
    assert r is not None
    return r.term


def converge(c: SimCluster, max_ms: float = 5000.0) -> None:
    """Every live node applies everything the leader committed; then the end-of-run checks."""
    ld = elect(c, max_ms)
    assert c.write("sync", max_ms) is not None
    lead = c.nodes[ld]
    assert c.run_until(lambda: all(n.applied == lead.applied for n in c.nodes.values() if n.up), max_ms)
    c.check_converged()


# ---------------------------------------------------------------- elections


def test_initial_election() -> None:
    """InitialElection: a leader is elected, and the term stays put while nothing fails."""
    c = SimCluster(3, seed=1)
    ld = elect(c)
    term = term_of(c, ld)
    c.run_for(2000)
    assert c.stable_leader() == ld and term_of(c, ld) == term


def test_re_election() -> None:
    """ReElection: a new leader when the leader is cut off; the old one rejoins without disruption; no leader
    without a quorum; a leader again once a quorum is back."""
    c = SimCluster(3, seed=2)
    old = elect(c)
    c.isolate(old)
    assert c.run_until(lambda: any(
        n.raft is not None and n.raft.role == Role.LEADER and n.id != old for n in c.nodes.values()), 3000)
    new = next(n.id for n in c.nodes.values() if n.raft is not None and n.raft.role == Role.LEADER and n.id != old)
    c.heal()
    assert elect(c) == new
    # Cut everyone off from everyone: nobody can lead.
    c.partition([1], [2], [3])
    c.run_for(3000)
    assert c.stable_leader() is None
    assert not any(n.raft is not None and n.raft.role == Role.LEADER for n in c.nodes.values())
    c.partition([1, 2, 3])
    elect(c)


def test_many_elections() -> None:
    """ManyElections: 7 nodes, three random nodes cut off at a time, ten times; the rest always elect a leader."""
    c = SimCluster(7, seed=3)
    rng = random.Random(3)
    elect(c)
    for _ in range(10):
        out = rng.sample(sorted(c.nodes), 3)
        c.partition([i for i in c.nodes if i not in out], *[[i] for i in out])
        assert c.run_until(lambda out=out: any(
            n.raft is not None and n.raft.role == Role.LEADER and n.id not in out
            and all(c.nodes[j].raft.lead == n.id for j in c.nodes if j not in out)  # type: ignore[union-attr]
            for n in c.nodes.values()), 5000)
        c.heal()
    elect(c)


# ---------------------------------------------------------------- agreement


def test_basic_agree() -> None:
    """BasicAgree: each write is applied by every node, at the same index."""
    c = SimCluster(3, seed=4)
    elect(c)
    for _ in range(3):
        assert c.write("k") is not None
    converge(c)


def test_fail_agree() -> None:
    """FailAgree: a cut-off follower does not stop the others; when it comes back it catches up."""
    c = SimCluster(3, seed=5)
    ld = elect(c)
    f = next(i for i in c.nodes if i != ld)
    c.isolate(f)
    for _ in range(5):
        assert c.write("k") is not None
    c.heal()
    converge(c)


def test_fail_no_agree() -> None:
    """FailNoAgree: with 3 of 5 followers cut off nothing commits; after healing the cluster agrees again."""
    c = SimCluster(5, seed=6)
    ld = elect(c)
    others = [i for i in c.nodes if i != ld]
    c.partition([ld, others[0]], [others[1]], [others[2]], [others[3]])
    commit = c.nodes[ld].raft.log.commit  # type: ignore[union-attr]
    ok, _ = c.client_write(0, ld, "k")
    assert ok
    c.run_for(2000)
    assert all(n.raft is None or n.raft.log.commit == commit or n.id in others[1:] for n in c.nodes.values())
    assert not c.acked.get("k")
    c.heal()
    converge(c)


def test_concurrent_starts() -> None:
    """ConcurrentStarts: proposals made at once all commit, each at its own index."""
    c = SimCluster(3, seed=7)
    ld = elect(c)
    for cl in range(5):
        assert c.client_write(cl, ld, "k")[0]
    assert c.run_until(lambda: len(c.acked.get("k", ())) == 5, 2000)
    converge(c)


def test_rejoin() -> None:
    """Rejoin: a partitioned leader with uncommitted entries comes back; its entries are replaced."""
    c = SimCluster(3, seed=8)
    l1 = elect(c)
    assert c.write("k") is not None
    c.isolate(l1)
    for cl in range(3):
        c.client_write(cl, l1, "lost")  # never commits: l1 is alone
    assert c.run_until(lambda: c.leader() not in (None, l1), 3000)
    assert c.write("k") is not None
    l2 = c.leader()
    assert l2 is not None
    c.isolate(l2)
    c.run_for(100)
    c.partition([l1] + [i for i in c.nodes if i not in (l1, l2)], [l2])
    assert c.run_until(lambda: c.leader() not in (None, l2), 3000)
    assert c.write("k") is not None
    c.heal()
    converge(c)
    assert not c.acked.get("lost")


def test_backup_over_many_conflicting_entries() -> None:
    """Backup: a leader brings followers back over 50+ conflicting entries quickly (fast backtracking)."""
    c = SimCluster(5, seed=9)
    l1 = elect(c)
    assert c.write("k") is not None
    f1 = next(i for i in c.nodes if i != l1)
    rest = [i for i in c.nodes if i not in (l1, f1)]
    c.partition([l1, f1], rest)
    for i in range(60):  # 60 entries that will never commit
        c.client_write(i, l1, "lost")
    c.run_for(200)
    assert c.run_until(lambda: c.leader() in rest, 5000)
    l2 = c.leader()
    assert l2 is not None
    for _ in range(60):
        assert c.write("k") is not None
    # Now the old pair comes back with only one of the new majority: the leader must overwrite 60 entries.
    other = next(i for i in rest if i != l2)
    c.partition([l1, f1, other], [i for i in rest if i != other])
    c.run_for(500)
    sent_before = c.messages_sent
    c.heal()
    converge(c)
    assert not c.acked.get("lost")
    # Far fewer messages than one round trip per conflicting entry on each of the two nodes (120 entries).
    assert c.messages_sent - sent_before < 400


def test_message_counts() -> None:
    """Count: about 30 messages elect a leader in a 3-node cluster; an idle second costs only heartbeats."""
    c = SimCluster(3, seed=10)
    elect(c)
    assert c.messages_sent <= 30
    c.run_for(1000)
    before = c.messages_sent
    c.run_for(1000)
    idle = c.messages_sent - before
    # Heartbeats every 2 ticks (100 ms) to 2 followers, plus their answers: 40 messages.
    assert idle <= 2 * 2 * (1000 / (2 * TICK_MS)) + 4


# ---------------------------------------------------------------- persistence


def test_persist_all_crash() -> None:
    """Persist1: every node crashes and restarts; every acknowledged write is still there."""
    c = SimCluster(3, seed=11)
    elect(c)
    ops = [c.write("k") for _ in range(5)]
    assert None not in ops
    for i in c.nodes:
        c.crash(i)
    for i in c.nodes:
        c.restart(i)
    converge(c)
    lead = c.nodes[elect(c)]
    assert set(ops) <= set(lead.ops("k"))


def test_persist_follower_churn() -> None:
    """Persist2: followers crash and restart between writes; the cluster keeps committing and converges."""
    c = SimCluster(5, seed=12)
    rng = random.Random(12)
    for _ in range(10):
        ld = elect(c)
        assert c.write("k") is not None
        down = rng.sample([i for i in c.nodes if i != ld], 2)
        for i in down:
            c.crash(i)
        assert c.write("k") is not None
        for i in down:
            c.restart(i)
    converge(c)


def test_persist_leader_and_follower_crash() -> None:
    """Persist3: the leader and a follower crash; the survivors go on; the crashed ones come back and agree."""
    c = SimCluster(3, seed=13)
    ld = elect(c)
    assert c.write("k") is not None
    f = next(i for i in c.nodes if i != ld)
    c.crash(ld)
    c.crash(f)
    c.restart(f)
    elect(c)
    assert c.write("k") is not None
    c.restart(ld)
    converge(c)


@pytest.mark.parametrize("unreliable", [False, True])
def test_figure8(unreliable: bool) -> None:
    """Figure8 / Figure8Unreliable: the leader crashes right after taking a proposal, over and over; with a
    lossy, reordering network in the unreliable variant. No committed entry may be lost or overwritten."""
    net = NetConfig(drop=0.1, long_delay=0.2, long_delay_max=500) if unreliable else None
    c = SimCluster(5, seed=14 + unreliable, net=net)
    rng = random.Random(14)
    up = set(c.nodes)
    for _ in range(150):
        ld = c.leader()
        if ld is not None:
            c.client_write(0, ld, "k")
        c.run_for(rng.uniform(0, ELECTION_MS / 5) if rng.random() < 0.9 else rng.uniform(0, ELECTION_MS))
        ld = c.leader()
        if ld is not None and rng.random() < 0.5:
            c.crash(ld)
            up.discard(ld)
        if len(up) < 3:
            i = rng.choice(sorted(set(c.nodes) - up))
            c.restart(i)
            up.add(i)
    for i in c.nodes:
        c.restart(i)
    c.net = NetConfig()
    converge(c, 10000)


def test_unreliable_agree() -> None:
    """UnreliableAgree: many concurrent writes over a network that drops, duplicates and reorders."""
    c = SimCluster(5, seed=16, net=NetConfig(drop=0.1, duplicate=0.1, long_delay=0.1))
    elect(c, 10000)
    for _ in range(20):
        ld = c.leader()
        if ld is not None:
            for cl in range(4):
                c.client_write(cl, ld, "k")
        c.run_for(100)
    c.net = NetConfig()
    converge(c, 10000)
    assert len(c.acked.get("k", ())) > 40


@pytest.mark.parametrize("unreliable", [False, True])
def test_churn(unreliable: bool) -> None:
    """ReliableChurn / UnreliableChurn: nodes crash, restart and get cut off while clients write; every value
    a client saw committed is in the final state."""
    net = NetConfig(drop=0.1, duplicate=0.05, long_delay=0.1) if unreliable else None
    c = SimCluster(5, seed=17 + unreliable, net=net, compact_every=25)
    rng = random.Random(17)
    for _ in range(60):
        ld = c.leader()
        for cl in range(3):
            c.client_write(cl, ld if ld is not None else rng.choice(sorted(c.nodes)), "k")
        r = rng.random()
        i = rng.choice(sorted(c.nodes))
        if r < 0.2:
            c.crash(i)
        elif r < 0.5:
            c.restart(i)
        elif r < 0.6:
            c.isolate(i)
        elif r < 0.8:
            c.heal()
        c.run_for(rng.uniform(50, 400))
        c.expire_clients(2000)
    for i in c.nodes:
        c.restart(i)
    c.heal()
    c.net = NetConfig()
    converge(c, 10000)
    assert c.acked.get("k")


# ---------------------------------------------------------------- snapshots


def test_lagging_follower_catches_up_by_snapshot() -> None:
    """A follower that missed entries the leader compacted away is sent a snapshot and then the log after it."""
    c = SimCluster(3, seed=18, compact_every=10)
    ld = elect(c)
    f = next(i for i in c.nodes if i != ld)
    c.crash(f)
    for _ in range(50):
        assert c.write("k") is not None
    chunks_before = c.chunks_sent
    c.restart(f)
    converge(c)
    # It came back by a snapshot file sent in chunks, installed and restored into its store.
    rep = c.nodes[f].replica
    assert rep is not None and rep.snapshots_installed == 1 and c.chunks_sent > chunks_before
    assert rep.raft.snapshot_index > 0 and rep.storage.recovered.snapshot is None


def test_snapshot_catch_up_while_unreliable() -> None:
    """Lagging peers catch up by InstallSnapshot also when messages are lost and nodes crash."""
    c = SimCluster(5, seed=19, net=NetConfig(drop=0.1, long_delay=0.1), compact_every=5)
    rng = random.Random(19)
    for _ in range(40):
        ld = c.leader()
        if ld is not None:
            c.client_write(0, ld, "k")
        if rng.random() < 0.2:
            i = rng.choice(sorted(c.nodes))
            c.crash(i)
            c.run_for(300)
            c.restart(i)
        c.run_for(100)
    c.net = NetConfig()
    converge(c, 10000)


# ---------------------------------------------------------------- classic bugs


def test_new_leader_read_after_pause_is_fresh() -> None:
    """A new leader answers no read before its no-op commits: cut the leader off past the election timeout,
    then read through the new leader at once. (The simulator checks every read against acknowledged writes.)"""
    c = SimCluster(3, seed=20)
    old = elect(c)
    for _ in range(3):
        assert c.write("k") is not None
    c.isolate(old)
    assert c.run_until(lambda: c.leader() not in (None, old), 3000)
    new = c.leader()
    assert new is not None
    assert c.client_read(0, new, "k")
    assert c.run_until(lambda: c.stats["reads_ok"] == 1, 2000)
    key, value = c.read_results[-1]
    assert key == "k" and set(c.acked["k"]) <= set(value)


def test_deposed_leader_does_not_answer_reads() -> None:
    """An isolated leader must not answer a read: it cannot confirm it is still leader."""
    c = SimCluster(3, seed=21)
    old = elect(c)
    assert c.write("k") is not None
    c.isolate(old)
    assert c.client_read(0, old, "k")
    c.run_for(3000)
    assert c.stats["reads_ok"] == 0


def test_minority_read_waits_for_heal() -> None:
    """A Get in a minority partition does not answer within 1 s, and does answer within 3 s of healing."""
    c = SimCluster(5, seed=22)
    ld = elect(c)
    assert c.write("k") is not None
    minority = [ld, next(i for i in c.nodes if i != ld)]
    c.partition(minority, [i for i in c.nodes if i not in minority])
    c.run_for(100)
    f = minority[1]
    answered = []
    for _ in range(10):  # the client keeps retrying at the minority follower
        if c.client_read(0, f, "k"):
            pass
        c.run_for(100)
        answered.append(c.stats["reads_ok"])
    assert answered[-1] == 0
    c.heal()
    ok = c.run_until(lambda: (c.client_read(0, f, "k") and False) or c.stats["reads_ok"] > 0, 3000)
    assert ok


def test_retried_write_after_lost_reply_is_not_duplicated_by_raft() -> None:
    """The core commits each proposal once: duplicated and reordered messages never apply an entry twice
    (exactly-once for client retries is the state machine's job, tested with the KV store)."""
    c = SimCluster(3, seed=23, net=NetConfig(duplicate=0.5, long_delay=0.3))
    elect(c, 10000)
    for _ in range(20):
        assert c.write("k", 5000) is not None
    c.net = NetConfig()
    converge(c)


def test_the_nodes_snapshot_at_different_indices_each_within_its_range() -> None:
    """A snapshot is due after a random 80-100% of ``snapshot_every`` entries, drawn per node: nodes that apply the
    same entries do not all snapshot at the same moment (on one machine they would stall together), and none goes
    past ``snapshot_every``."""
    c = SimCluster(3, seed=20, compact_every=100)
    elect(c)
    seen: dict[int, list[int]] = {i: [0] for i in c.nodes}
    for _ in range(600):
        assert c.write("k") is not None
        for i, n in c.nodes.items():
            if n.replica is not None and n.replica.raft.snapshot_index != seen[i][-1]:
                seen[i].append(n.replica.raft.snapshot_index)
    for points in seen.values():
        gaps = [b - a for a, b in itertools.pairwise(points)]
        assert len(gaps) >= 5 and all(80 <= g <= 101 for g in gaps), points
    assert not set.intersection(*(set(p[1:]) for p in seen.values())), seen  # never all three at one index
    converge(c)


# ---------------------------------------------------------------- uncommitted entries


def test_a_leader_that_cannot_commit_refuses_writes_past_its_bound() -> None:
    """A leader cut off from its followers (CheckQuorum off, so it keeps leading) holds at most ``max_uncommitted``
    entries beyond its commit index; later writes are answered ``busy`` (the client backs off), and nothing more
    is logged."""
    from zraft.core import Options

    c = SimCluster(3, seed=5, options=Options(election_ticks=10, heartbeat_ticks=2, check_quorum=False),
                   max_uncommitted=8)
    ld = elect(c)
    c.isolate(ld)
    r = c.nodes[ld].raft
    assert r is not None
    room = 8 - (r.log.last_index - r.log.commit)
    taken = [c.client_write(1, ld, "k")[0] for _ in range(12)]
    assert taken == [True] * room + [False] * (12 - room)
    assert r.log.last_index - r.log.commit == 8
    rep = c.nodes[ld].replica
    assert rep is not None and rep.stats.responses.get("busy") == 12 - room


def test_a_write_retried_while_its_first_copy_waits_is_logged_once() -> None:
    """A retry of a write the leader has proposed and not yet applied (same client and seq) is not logged again:
    it gets the first copy's answer when that commits."""
    c = SimCluster(3, seed=6)
    ld = elect(c)
    rep = c.nodes[ld].replica
    r = c.nodes[ld].raft
    assert rep is not None and r is not None
    answers: list[dict[str, object]] = []
    c.clients[b"retrier"] = lambda node, reply: answers.append(reply)
    last = r.log.last_index
    for rid in (1, 2, 3):
        rep.receive("client", Append(rid, 77, 1, 1, b"k", b"x;"), b"retrier")
    rep.end_input()
    rep.process()
    assert r.log.last_index == last + 1
    assert c.run_until(lambda: len(answers) == 3, 3000)
    assert all(a["ok"] for a in answers) and sorted(a["id"] for a in answers) == [1, 2, 3]
    assert c.nodes[ld].kv is not None and c.nodes[ld].kv.get(b"k") == b"x;"


def test_copies_of_one_write_waiting_at_a_leader_that_cannot_commit_are_bounded() -> None:
    """A client resending one write (same client and seq) to a leader that cannot commit: at most
    ``MAX_RETRY_WAITERS`` copies wait for its entry; the rest are answered ``busy``, and the write is logged once."""
    from zraft.core import Options
    from zraft.server.clients import MAX_RETRY_WAITERS

    c = SimCluster(3, seed=7, options=Options(election_ticks=10, heartbeat_ticks=2, check_quorum=False))
    ld = elect(c)
    c.isolate(ld)
    rep, r = c.nodes[ld].replica, c.nodes[ld].raft
    assert rep is not None and r is not None
    c.clients[b"resender"] = lambda node, reply: None
    last = r.log.last_index
    for rid in range(1, 101):
        rep.receive("client", Append(rid, 78, 1, 1, b"k", b"x;"), b"resender")
        rep.end_input()
        rep.process()
    assert r.log.last_index == last + 1
    assert len(rep.pending_writes[(78, 1)]) == MAX_RETRY_WAITERS
    assert rep.stats.responses.get("busy") == 100 - MAX_RETRY_WAITERS
