"""The core's bounds on reads: forwarded and unconfirmed reads time out, and at most MAX_PENDING_READS are held."""

from __future__ import annotations

from raftutil import ELECTION, Network, msgs, new_raft

from zraft.core import Entry, Message, MsgType
from zraft.core.readindex import MAX_PENDING_READS


def test_a_forwarded_read_fails_when_its_leader_never_answers() -> None:
    a, b, c = (new_raft(i) for i in (1, 2, 3))
    net = Network(a, b, c)
    net.elect(1)
    # An answer from a node the read was not sent to is dropped and counted.
    b.read_index("r0")
    msgs(b)
    b.step(Message(MsgType.READ_INDEX_RESP, 3, 2, 0, index=1, context="r0"))
    assert b.dropped and b.ready().read_states == []
    b.step(Message(MsgType.READ_INDEX_RESP, 1, 2, 0, index=1, context="r0"))  # the leader's own answer counts
    assert [r.context for r in b.ready().read_states] == ["r0"]
    b.read_index("r1")
    out = msgs(b)
    assert [m.type for m in out] == [MsgType.READ_INDEX]  # sent to the leader, which never answers
    failed = []
    for _ in range(2 * ELECTION):
        b.tick()
        failed += b.ready().failed_reads
    assert failed == ["r1"]
    n = sum(b.dropped.values())
    b.step(Message(MsgType.READ_INDEX_RESP, 1, 2, 0, index=1, context="r1"))  # late: ignored, not counted
    assert sum(b.dropped.values()) == n and b.ready().read_states == []


def test_a_leader_fails_reads_no_quorum_confirms_and_holds_at_most_the_bound() -> None:
    a, b, c = (new_raft(i) for i in (1, 2, 3))
    net = Network(a, b, c)
    net.elect(1)
    net.isolate(1)
    for i in range(MAX_PENDING_READS + 5):
        a.read_index(i)
    rd = a.ready()
    assert len(a.reads.pending) == MAX_PENDING_READS
    assert sorted(rd.failed_reads) == list(range(MAX_PENDING_READS, MAX_PENDING_READS + 5))
    failed = 0
    for _ in range(2 * ELECTION):
        a.tick()
        failed += len(a.ready().failed_reads)
    assert failed == MAX_PENDING_READS and not a.reads.pending


def test_a_large_compaction_frees_the_dropped_entries_a_slice_at_a_time() -> None:
    """Freeing millions of entries at once stalls the loop (about 300 ms for ten million): above
    RELEASE_AT_ONCE they wait in ``garbage`` and ``release`` frees them in slices; the log is right meanwhile."""
    from zraft.core.log import RELEASE_AT_ONCE, RaftLog

    n = RELEASE_AT_ONCE + 50_000
    log = RaftLog(0, 0, [Entry(i, 1, 0, b"x") for i in range(1, n + 1)], n, n)
    log.compact(n - 10, 1)
    assert log.snap_index == n - 10 and [e.index for e in log.entries] == list(range(n - 9, n + 1))
    assert len(log.garbage) == n  # the old list: its tail is shared with the new one
    slices = 0
    while log.release(40_000):
        slices += 1
    assert not log.garbage and slices == n // 40_000
    assert [e.index for e in log.entries] == list(range(n - 9, n + 1))
    small = RaftLog(0, 0, [Entry(i, 1) for i in range(1, 11)], 10, 10)
    small.compact(5, 1)
    assert not small.garbage and [e.index for e in small.entries] == [6, 7, 8, 9, 10]
    # A runtime that never releases leaks nothing: the next large drop frees the previous one first.
    log2 = RaftLog(0, 0, [Entry(i, 1) for i in range(1, 2 * n + 1)], 2 * n, 2 * n)
    log2.compact(n, 1)
    first = log2.garbage
    log2.restore(3 * n, 2)
    assert not first and len(log2.garbage) == n and log2.entries == []


def test_a_follower_that_lost_a_full_window_of_appends_is_caught_up_by_heartbeats() -> None:
    """A follower whose appends were lost (it was down, or its link dropped them) while the leader's window of
    unanswered appends to it filled: the leader, paused for it, must still bring it up to date once it answers
    heartbeats again."""
    from raftutil import ELECTION

    rafts = [new_raft(i, 3, max_inflight=4) for i in (1, 2, 3)]
    net = Network(*rafts)
    net.elect(1)
    net.propose(1, b"first")
    leader, follower = rafts[0], rafts[2]
    net.filter = lambda m: not (m.src == 1 and m.dst == 3 and m.type == MsgType.APPEND)  # lost on the way
    for i in range(10):
        net.propose(1, b"x%d" % i)
    assert leader.prs[3].is_paused() and follower.log.last_index < leader.log.last_index
    net.filter = None
    net.tick_all(2 * ELECTION)  # nothing but heartbeats and what they trigger
    assert follower.log.last_index == leader.log.last_index and follower.log.commit == leader.log.commit


def test_no_message_can_run_the_terms_out() -> None:
    """A forged term near MAX_TERM once left every node unable to campaign past it: the cluster never elected a
    leader again. Terms up to TERM_LIMIT are taken from any message (a node back from a long absence must follow);
    inside the reserve above it, a message more than TERM_STEP past our term is dropped and counted, and our term
    moves toward it by at most that much. The cluster elects a leader and goes on, every node with it."""
    from zraft.core import MAX_TERM, Role
    from zraft.core.raft import TERM_LIMIT, TERM_STEP

    a, b, c = (new_raft(i, pre_vote=True, check_quorum=True) for i in (1, 2, 3))
    net = Network(a, b, c)
    net.elect(1)
    reason = "a term jump into the reserve no real history produces"
    b.step(Message(MsgType.APPEND, 3, 2, MAX_TERM))  # the attack's frame (a node key's, or anyone's if --insecure)
    assert b.term == TERM_LIMIT and b.role == Role.FOLLOWER and b.dropped[reason] == 1
    b.step(Message(MsgType.APPEND, 3, 2, MAX_TERM - 1))
    assert b.term == TERM_LIMIT + TERM_STEP and b.dropped[reason] == 2  # a step at a time
    b.step(Message(MsgType.HEARTBEAT, 3, 2, b.term + TERM_STEP))  # within a step: taken as usual
    assert b.term == TERM_LIMIT + 2 * TERM_STEP and b.lead == 3 and b.dropped[reason] == 2
    msgs(b)
    for _ in range(40 * ELECTION):  # the cluster elects a leader at the raised term, and goes on: all three
        net.tick_all()
        if any(r.role == Role.LEADER and r.term > b.term - 5 for r in (a, b, c)) and len({a.term, b.term, c.term}) == 1:
            break
    leaders = [r for r in (a, b, c) if r.role == Role.LEADER]
    assert len(leaders) == 1 and a.term == b.term == c.term > TERM_LIMIT + 2 * TERM_STEP, \
        [(r.role, r.term - TERM_LIMIT) for r in (a, b, c)]
    net.propose(leaders[0].id, b"after")
    net.tick_all(2)  # the followers learn the commit index from the next heartbeat
    assert all(r.log.commit == leaders[0].log.last_index for r in (a, b, c))
    assert MAX_TERM - leaders[0].term > (1 << 40) - 4 * TERM_STEP  # a trillion elections left


def test_a_node_far_behind_follows_any_term_below_the_reserve() -> None:
    from zraft.core import Role
    from zraft.core.raft import TERM_LIMIT

    a, b, c = (new_raft(i, pre_vote=True, check_quorum=True) for i in (1, 2, 3))
    net = Network(a, b, c)
    net.elect(1)
    b.step(Message(MsgType.HEARTBEAT, 1, 2, TERM_LIMIT))  # e.g. a node restored from an old backup
    assert b.term == TERM_LIMIT and not b.dropped
    for _ in range(40 * ELECTION):
        net.tick_all()
        if any(r.role == Role.LEADER and r.term >= TERM_LIMIT for r in (a, b, c)):
            break
    assert [r.role for r in (a, b, c)].count(Role.LEADER) == 1 and min(r.term for r in (a, b, c)) >= TERM_LIMIT
