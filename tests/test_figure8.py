"""Figure 8 of the Raft paper, step by step: why a leader must not commit an entry of an earlier term by
counting replicas. Five nodes; messages are delivered by hand so each step of the figure happens exactly."""

from __future__ import annotations

import random

from raftutil import Network, new_raft

from zraft.core import EntryKind, Message, MsgType, Raft, Role


def crash_restart(n: Network, i: int) -> Raft:
    """Node i restarts from what it persisted (everything it handed out: the network drains every batch)."""
    r = n.peers[i]
    n.peers[i] = Raft(i, r.config, random.Random(i), r.opts, r.hard_state(), r.snapshot, list(r.log.entries))
    return n.peers[i]


def win(n: Network, i: int) -> None:
    for _ in range(3):  # a campaign may first lose to a term some voters already voted in
        n.peers[i].campaign()
        n.settle()
        if n.peers[i].role == Role.LEADER:
            return
    raise AssertionError(f"node {i} could not win an election")


def test_figure8_committed_entry_survives_every_later_leader() -> None:
    n = Network(*(new_raft(i, 5, max_msg_entries=1) for i in range(1, 6)))
    s = n.peers  # crash_restart replaces entries of this dict: always look nodes up through it
    # (a) S1 leads term 1 and replicates index 2 to S2 only.
    n.elect(1)
    for j in (3, 4, 5):
        n.cut(1, j)
    n.propose(1, b"x")
    assert s[2].log.last_index == 2 and s[3].log.last_index == 1
    # (b) S1 is cut off; S5 is elected in term 2 by S3, S4 and itself, and appends at index 2 -- but that entry
    # never leaves S5.
    n.recover()
    n.isolate(1)
    n.filter = lambda m: not (m.src == 5 and m.type == MsgType.APPEND)
    s[5].campaign()
    n.settle()
    assert s[5].role == Role.LEADER and s[5].term == 2
    assert s[5].log.entries[1].term == 2  # its no-op at index 2
    # (c) S5 is cut off, and S2 too; S1 is elected in term 3 and replicates its index 2 (term 1) to S3 and S4,
    # but not its own term-3 no-op: index 2 is now on a majority (S1, S2, S3, S4).
    n.filter = None
    n.recover()
    n.isolate(5)
    n.cut(1, 2)
    def no_noop_accepted(m: Message) -> bool:
        # Appends carrying S1's new no-op are lost -- unless the receiver would reject them anyway.
        carries = m.type == MsgType.APPEND and any(e.kind == EntryKind.NOOP and e.term >= 3 for e in m.entries)
        return not (carries and s[m.dst].log.matches(m.index, m.log_term))

    n.filter = no_noop_accepted
    crash_restart(n, 1)
    win(n, 1)
    assert s[1].term >= 3
    n.tick_all(2)  # heartbeats: S3 and S4 are probed and receive index 2
    assert all(s[j].log.last_index == 2 and s[j].log.entries[1].term == 1 for j in (3, 4))
    committed_by_s1 = s[1].log.commit
    s1_terms = {i: s[1].log.term(i) for i in range(1, committed_by_s1 + 1)}
    # (d) S1 crashes; S5 can win term 4 with votes from S2, S3, S4 (its last term, 2, beats their 1) and then
    # overwrites index 2. That is safe only if index 2 was never committed (leader completeness, §5.4).
    n.filter = None
    n.recover()
    n.isolate(1)
    crash_restart(n, 5)
    win(n, 5)
    for i, term in s1_terms.items():
        assert s[5].log.term(i) == term, f"S5 leads term {s[5].term} without entry {i}, which S1 committed"
    n.tick_all(2)
    assert all(r.log.term(2) == 2 for i, r in s.items() if i != 1)


def test_figure8_current_term_entry_commits_the_earlier_one() -> None:
    """Figure 8 (e): once S1 replicates an entry of its own term to a majority, both commit, and S5 can no
    longer win."""
    n = Network(*(new_raft(i, 5) for i in range(1, 6)))
    s = n.peers  # crash_restart replaces entries of this dict: always look nodes up through it
    n.elect(1)
    for j in (3, 4, 5):
        n.cut(1, j)
    n.propose(1, b"x")
    n.recover()
    n.cut(1, 4)
    n.cut(1, 5)
    n.tick_all(3)
    s[1].step(Message(MsgType.APPEND_RESP, 3, 1, s[1].term, index=s[1].log.last_index))
    s[1].propose([b"y"])
    n.settle()
    assert s[1].log.commit == s[1].log.last_index
    n.recover()
    n.isolate(1)
    for _ in range(3):
        s[5].campaign()
        n.settle()
        assert s[5].role != Role.LEADER
