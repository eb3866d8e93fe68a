"""Who counts toward a quorum, rule by rule: only the voters of the configuration in force. Each test is named after a
bug that once survived the whole suite and 2,800 simulator seeds (issue 32); each was planted by hand, seen to fail
its test, and removed.

- a leader removing itself counts its own copy (an entry commits on a minority of the new voters);
- a learner's heartbeat answer confirms a ReadIndex round (a leader cut off from the voters serves stale reads);
- CheckQuorum counts learners (a leader hearing only from a learner never steps down);
- a learner that never answered is promoted (1 voter + an unreachable learner: a stalled 2-voter cluster).
"""

from __future__ import annotations

import pytest
from raftutil import ELECTION
from test_membership import change, cluster

from zraft.core import Role
from zraft.core.types import ConfigChangeError


def test_a_leader_removing_itself_never_counts_its_own_copy() -> None:
    """diss. §4.2.2: a leader that is not in the configuration in force "replicates log entries but does not count
    itself in majorities". Going from 4 voters to 3 (removing the leader), with one follower still hearing it: the
    removal and every entry after it must reach 2 of the 3 new voters, not 1 of them plus the leader."""
    net = cluster((1, 2, 3, 4))
    net.elect(1)
    r = net.peers[1]
    net.cut(1, 3)
    net.cut(1, 4)  # 2 still hears the leader
    idx = r.propose_config(change(r, remove=1))
    later = r.propose([b"after the removal"])
    net.settle()
    assert r.role == Role.LEADER and net.peers[2].log.last_index == later
    assert r.log.commit < idx, "committed on the leader's own copy and one of three new voters"
    net.recover()
    for _ in range(2 * ELECTION):
        net.tick_all(1)
        if r.log.commit >= later:
            break
    assert r.log.commit >= later and r.role == Role.FOLLOWER  # with two of the new voters: done, and it steps down


def test_a_learners_answer_never_confirms_a_read() -> None:
    """diss. §6.4: a read is served once a *majority of the voters* has acknowledged the leader's heartbeat round.
    A leader cut off from both other voters but still reaching a learner must not confirm reads: another leader may
    have been elected and taken writes meanwhile."""
    net = cluster((1, 2, 3), (4,), check_quorum=False)
    net.elect(1)
    r = net.peers[1]
    r.propose([b"x"])
    net.settle()
    net.cut(1, 2)
    net.cut(1, 3)
    r.read_index("stale?")
    net.settle()
    for _ in range(3):
        net.tick_all(1)
    assert net.read_states[1] == [], "a learner's heartbeat answer confirmed leadership"
    net.recover()
    for _ in range(2 * ELECTION):
        net.tick_all(1)
        if net.read_states[1]:
            break
    assert [s.context for s in net.read_states[1]] == ["stale?"]  # once a voter answers, it is served


def test_check_quorum_counts_voters_only() -> None:
    """diss. §6.2: a leader steps down when it has not heard from a majority of the voters within an election
    timeout. Hearing from a learner does not count."""
    net = cluster((1, 2, 3), (4,))
    net.elect(1)
    r = net.peers[1]
    for a, b in ((1, 2), (1, 3), (4, 2), (4, 3)):  # 1 and the learner on one side, the other voters on the other
        net.cut(a, b)
    for _ in range(2 * ELECTION):
        net.tick_all(1)
        if r.role != Role.LEADER:
            break
    assert r.role != Role.LEADER, "a leader that hears only a learner kept leading"


def test_a_learner_that_never_answered_is_not_promoted() -> None:
    """diss. §4.2.1: a new voter must have caught up. A learner that never answered the leader (it may not even be
    running) has no known log: promoting it would make a 2-voter cluster that needs it for every commit."""
    net = cluster((1,), (2,))
    net.isolate(2)
    net.elect(1)
    r = net.peers[1]
    r.propose([b"x"])
    net.settle()
    with pytest.raises(ConfigChangeError, match="not caught up"):
        r.propose_config(change(r, add_voter=2))
    assert r.config.voters == (1,)
    net.recover()
    for _ in range(2 * ELECTION):  # once it answers and catches up, it may be promoted
        net.tick_all(1)
    r.propose_config(change(r, add_voter=2))
    assert r.config.voters == (1, 2)
