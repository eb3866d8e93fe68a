"""One test per rule of the Raft paper (extended version, Figure 2 and §5), modelled on etcd-io/raft's
raft_paper_test.go. Each test name says the rule; the first line of its docstring cites it."""

from __future__ import annotations

import random

import pytest
from raftutil import ELECTION, HEARTBEAT, Network, become_leader, ents, msgs, msgs_of, new_raft

from zraft.core import NONE, ClusterConfig, Entry, EntryKind, HardState, Message, MsgType, Options, Raft, Role

A, AR, V, VR, HB = MsgType.APPEND, MsgType.APPEND_RESP, MsgType.VOTE, MsgType.VOTE_RESP, MsgType.HEARTBEAT


# ---------------------------------------------------------------- §5.1: terms


@pytest.mark.parametrize("role", ["follower", "candidate", "leader"])
def test_update_term_from_message(role: str) -> None:
    """§5.1: if one server's current term is smaller than the other's, it updates its term to the larger value;
    a candidate or leader that finds its term out of date reverts to follower."""
    r = new_raft(1)
    if role == "candidate":
        r.campaign()
    elif role == "leader":
        become_leader(r)
    r.step(Message(A, 2, 1, 5))
    assert r.term == 5
    assert r.role == Role.FOLLOWER
    assert r.lead == 2


def test_reject_stale_term_message() -> None:
    """§5.1: if a server receives a request with a stale term number, it rejects the request."""
    r = new_raft(1, hard_state=HardState(term=2))
    r.step(Message(A, 2, 1, 1, entries=tuple(ents(1))))
    assert r.log.last_index == 0
    assert r.term == 2
    out = msgs(r)
    # The stale leader is told our term so that it steps down.
    assert [(m.type, m.term) for m in out] == [(AR, 2)]


def test_vote_from_stale_term_is_rejected() -> None:
    """Figure 2, RequestVote: reply false if term < currentTerm."""
    r = new_raft(1, hard_state=HardState(term=3))
    r.step(Message(V, 2, 1, 2, index=10, log_term=2))
    assert r.vote == NONE
    assert not [m for m in msgs(r) if m.type == VR and not m.reject]


# ---------------------------------------------------------------- §5.2: leader election


def test_start_as_follower() -> None:
    """§5.2: when servers start up, they begin as followers."""
    assert new_raft(1).role == Role.FOLLOWER


def test_leader_bcast_beat() -> None:
    """§5.2: leaders send periodic heartbeats to all followers to maintain their authority."""
    r = new_raft(1)
    become_leader(r)
    msgs(r)
    for _ in range(HEARTBEAT):
        r.tick()
    hb = msgs_of(r, HB)
    assert sorted(m.dst for m in hb) == [2, 3]
    assert all(m.term == r.term for m in hb)


@pytest.mark.parametrize("start_as_candidate", [False, True])
def test_nonleader_start_election(start_as_candidate: bool) -> None:
    """§5.2: a follower that hears nothing for an election timeout increments its term, becomes candidate, votes
    for itself and sends RequestVote to every other server (a candidate that times out starts a new election)."""
    r = new_raft(1)
    if start_as_candidate:
        r.campaign()
        msgs(r)
    before = r.term
    for _ in range(2 * ELECTION):
        r.tick()
    assert r.term == before + 1
    assert r.role == Role.CANDIDATE
    assert r.vote == 1
    votes = msgs_of(r, V)
    assert sorted(m.dst for m in votes) == [2, 3]
    assert all(m.term == r.term and m.index == 0 and m.log_term == 0 for m in votes)


@pytest.mark.parametrize(
    ("size", "grants", "role"),
    [
        (1, {}, Role.LEADER),
        (3, {2: True, 3: True}, Role.LEADER),
        (3, {2: True}, Role.LEADER),
        (5, {2: True, 3: True, 4: True, 5: True}, Role.LEADER),
        (5, {2: True, 3: True}, Role.LEADER),
        (3, {2: False, 3: False}, Role.FOLLOWER),
        (5, {2: False, 3: False, 4: False}, Role.FOLLOWER),
        (3, {}, Role.CANDIDATE),
        (5, {2: True}, Role.CANDIDATE),
        (5, {2: False, 3: False}, Role.CANDIDATE),
    ],
)
def test_leader_election_in_one_round_rpc(size: int, grants: dict[int, bool], role: Role) -> None:
    """§5.2: a candidate wins with votes from a majority; it stays candidate without a decision, and steps down
    when a majority has refused it."""
    r = new_raft(1, size)
    r.campaign()
    for src, ok in grants.items():
        r.step(Message(VR, src, 1, r.term, reject=not ok))
    assert r.role == role
    assert r.term == 1


@pytest.mark.parametrize(
    ("vote", "src", "granted"),
    [(NONE, 2, True), (NONE, 3, True), (2, 2, True), (3, 3, True), (2, 3, False), (3, 2, False)],
)
def test_follower_vote(vote: int, src: int, granted: bool) -> None:
    """§5.2: each server votes for at most one candidate in a given term, first-come-first-served."""
    r = new_raft(1, hard_state=HardState(term=1, vote=vote))
    r.step(Message(V, src, 1, 1))
    out = msgs(r)
    assert [(m.type, m.dst, m.reject) for m in out] == [(VR, src, not granted)]
    assert r.vote == (src if granted else vote)


@pytest.mark.parametrize("leader_term", [1, 2])
def test_candidate_fallback(leader_term: int) -> None:
    """§5.2: a candidate that receives AppendEntries from a leader whose term is at least its own returns to
    follower and recognizes the leader."""
    r = new_raft(1)
    r.campaign()
    assert r.role == Role.CANDIDATE and r.term == 1
    r.step(Message(A, 2, 1, leader_term))
    assert r.role == Role.FOLLOWER
    assert r.term == leader_term
    assert r.lead == 2


@pytest.mark.parametrize("role", ["follower", "candidate"])
def test_election_timeout_randomized(role: str) -> None:
    """§5.2: election timeouts are chosen randomly from a fixed interval ([et, 2et) ticks here)."""
    seen = set()
    for seed in range(200):
        r = new_raft(1, seed=seed)
        if role == "candidate":
            r.campaign()
        term = r.term
        for t in range(1, 2 * ELECTION + 1):
            r.tick()
            if r.term > term:
                seen.add(t)
                break
    assert seen
    assert min(seen) >= ELECTION and max(seen) < 2 * ELECTION
    assert len(seen) > ELECTION // 2  # really spread over the interval


@pytest.mark.parametrize("size", [3, 5])
def test_election_timeouts_rarely_collide(size: int) -> None:
    """§5.2: randomized timeouts make split votes rare: at most 30% of rounds see two nodes time out together
    (etcd's bound)."""
    rng = random.Random(42)
    rounds = 1000
    collisions = 0
    for _ in range(rounds):
        nodes = [Raft(i, ClusterConfig(tuple(range(1, size + 1))), random.Random(rng.getrandbits(32)),
                      Options(election_ticks=ELECTION, heartbeat_ticks=HEARTBEAT, pre_vote=False))
                 for i in range(1, size + 1)]
        for _t in range(2 * ELECTION):
            for r in nodes:
                r.tick()
            timed_out = sum(1 for r in nodes if r.role == Role.CANDIDATE)
            if timed_out:
                collisions += timed_out > 1
                break
    assert collisions / rounds <= 0.3


def test_new_leader_appends_noop_of_its_term() -> None:
    """§8 / dissertation §6.4: a leader commits a blank no-op entry of its own term at the start of its term."""
    r = new_raft(1)
    become_leader(r)
    e = r.log.entries[-1]
    assert (e.index, e.term, e.kind) == (1, 1, EntryKind.NOOP)
    assert sorted(m.dst for m in msgs_of(r, A)) == [2, 3]


# ---------------------------------------------------------------- §5.3: log replication


def test_leader_start_replication() -> None:
    """§5.3: the leader appends the command to its log as a new entry, then sends AppendEntries to each other
    server with the entry, the index and term of the entry before it, and its commit index."""
    r = new_raft(1)
    become_leader(r)
    msgs(r)
    for m in [2, 3]:  # followers acknowledge the no-op; they are now in steady replication
        r.step(Message(AR, m, 1, r.term, index=1))
    msgs(r)
    idx = r.propose([b"some data"])
    assert idx == 2
    out = msgs_of(r, A)
    assert sorted(m.dst for m in out) == [2, 3]
    for m in out:
        assert (m.index, m.log_term, m.commit) == (1, 1, 1)
        assert m.entries == (Entry(2, 1, EntryKind.NORMAL, b"some data"),)


def test_leader_commit_entry() -> None:
    """§5.3: once an entry is replicated on a majority, the leader commits it, applies it, and tells followers
    the new commit index in later AppendEntries."""
    n = Network(*(new_raft(i) for i in (1, 2, 3)))
    n.elect(1)
    r = n.peers[1]
    r.propose([b"x"])
    rd = r.ready()
    assert r.log.commit == 1  # the no-op committed during the election round trip
    for m in rd.messages:
        r.step(Message(AR, m.dst, 1, r.term, index=m.entries[-1].index))
    assert r.log.commit == 2
    rd = r.ready()
    assert [e.data for e in rd.committed_entries] == [b"x"]
    assert {(m.dst, m.commit) for m in rd.messages if m.type == A} == {(2, 2), (3, 2)}


@pytest.mark.parametrize(
    ("size", "acks", "committed"),
    [(1, set(), True), (3, set(), False), (3, {2}, True), (3, {2, 3}, True),
     (5, set(), False), (5, {2}, False), (5, {2, 3}, True), (5, {2, 3, 4, 5}, True)],
)
def test_leader_acknowledge_commit(size: int, acks: set[int], committed: bool) -> None:
    """§5.3: an entry is committed once the leader has replicated it on a majority of servers."""
    r = new_raft(1, size)
    become_leader(r)
    msgs(r)
    idx = r.propose([b"x"])
    msgs(r)
    for src in acks:
        r.step(Message(AR, src, 1, r.term, index=idx))
    assert (r.log.commit >= idx) == committed


def test_leader_commit_preceding_entries() -> None:
    """§5.3: committing an entry also commits all preceding entries, including those of earlier leaders."""
    prev = ents(1, 1, 2)
    r = new_raft(1, entries=prev, hard_state=HardState(term=2))
    become_leader(r)
    msgs(r)
    r.propose([b"x"])
    r.step(Message(AR, 2, 1, r.term, index=5))
    rd = r.ready()
    assert [e.index for e in rd.committed_entries] == [1, 2, 3, 4, 5]


def test_follower_commit_entry() -> None:
    """§5.3: once a follower learns that an entry is committed, it applies it (and those before it) in order."""
    r = new_raft(2)
    r.step(Message(A, 1, 2, 1, entries=tuple(ents(1, 1, 1)), commit=2))
    rd = r.ready()
    assert [e.index for e in rd.committed_entries] == [1, 2]
    assert rd.hard_state is not None and rd.hard_state.commit == 2


@pytest.mark.parametrize(
    ("index", "log_term", "ok"),
    [(0, 0, True), (3, 3, True), (2, 2, True), (3, 2, False), (4, 3, False), (1, 2, False)],
)
def test_follower_check_append(index: int, log_term: int, ok: bool) -> None:
    """§5.3: if the follower has no entry at prevLogIndex with term prevLogTerm, it refuses the new entries."""
    r = new_raft(2, entries=ents(1, 2, 3), hard_state=HardState(term=3))
    r.step(Message(A, 1, 2, 3, index=index, log_term=log_term, entries=tuple(ents(3, start=index + 1))))
    resp = msgs(r)[-1]
    assert resp.type == AR and resp.reject == (not ok)
    if ok:
        assert resp.index == index + 1
        assert r.log.last_index == index + 1


def test_follower_with_a_stale_suffix_commits_and_acknowledges_only_what_matched() -> None:
    """Figure 2, AppendEntries receiver: "If leaderCommit > commitIndex, set commitIndex = min(leaderCommit, index
    of last new entry)". A follower holds entries 4 and 5 of an old term that never committed; the leader of
    term 2, whose own entries 4 and 5 differ, sends entries up to 3 only (they match: no conflict, nothing is
    truncated) with its commit index 5. The follower may commit 3, not 5 (its 4 and 5 are not the leader's),
    and acknowledges 3: acknowledging its last index would make the leader count entries it never sent."""
    r = new_raft(2, entries=ents(1, 1, 1, 1, 1), hard_state=HardState(term=2))
    r.step(Message(A, 1, 2, 2, index=2, log_term=1, entries=tuple(ents(1, start=3)), commit=5))
    resp = msgs(r)[-1]
    assert resp.type == AR and not resp.reject and resp.index == 3
    assert r.log.commit == 3
    assert [e.term for e in r.log.entries] == [1, 1, 1, 1, 1]  # the matching append truncated nothing


@pytest.mark.parametrize(
    ("index", "log_term", "new", "want_terms"),
    [
        (2, 2, ents(3, start=3), [1, 2, 3]),  # conflict at 3: replaced
        (1, 1, ents(3, 4, start=2), [1, 3, 4]),  # conflict at 2: 2 and 3 replaced
        (0, 0, ents(1, start=1), [1, 2, 3]),  # already present: nothing changes
        (0, 0, ents(1, 2, 3, start=1), [1, 2, 3]),  # duplicate: nothing truncated
        (3, 3, ents(4, start=4), [1, 2, 3, 4]),  # plain append
    ],
)
def test_follower_append_entries(index: int, log_term: int, new: list[Entry], want_terms: list[int]) -> None:
    """§5.3: if an existing entry conflicts with a new one (same index, different term), delete it and all that
    follow; append entries not already in the log. Entries already present are never truncated."""
    r = new_raft(2, entries=ents(1, 2, 3), hard_state=HardState(term=4))
    r.step(Message(A, 1, 2, 4, index=index, log_term=log_term, entries=tuple(new)))
    assert [e.term for e in r.log.entries] == want_terms


# Figure 7 of the paper: the leader's log (term 8 after it is elected) and six followers' logs (a)-(f).
FIG7_LEADER = [1, 1, 1, 4, 4, 5, 5, 6, 6, 6]
FIG7_FOLLOWERS = [
    [1, 1, 1, 4, 4, 5, 5, 6, 6],  # (a) missing one
    [1, 1, 1, 4],  # (b) missing many
    [1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 6],  # (c) one extra uncommitted
    [1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 7, 7],  # (d) extra from a later term
    [1, 1, 1, 4, 4, 4, 4],  # (e) missing and extra
    [1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3],  # (f) a whole divergent history
]


@pytest.mark.parametrize("follower", FIG7_FOLLOWERS)
def test_leader_sync_follower_log(follower: list[int]) -> None:
    """§5.3 and Figure 7: the leader forces a follower's log to duplicate its own; conflicting entries in the
    follower's log are overwritten, whatever the pattern of missing and extra entries."""
    lead = new_raft(1, entries=ents(*FIG7_LEADER), hard_state=HardState(term=7, commit=0))
    fol = new_raft(2, entries=ents(*follower), hard_state=HardState(term=7))
    # A third voter with the leader's log grants the election; it is cut off afterwards so only 1 and 2 talk.
    third = new_raft(3, entries=ents(*FIG7_LEADER), hard_state=HardState(term=7))
    n = Network(lead, fol, third)
    lead.campaign()
    n.cut(1, 2)
    n.settle()
    assert lead.role == Role.LEADER and lead.term == 8
    n.recover()
    n.cut(1, 3)
    lead.propose([b"sync"])
    n.settle()
    for _ in range(3):
        n.tick_all()
    assert [(e.term, e.data) for e in fol.log.entries] == [(e.term, e.data) for e in lead.log.entries]


@pytest.mark.parametrize(("follower", "rejections"), list(zip(FIG7_FOLLOWERS, [1, 1, 0, 0, 1, 1], strict=True)))
def test_leader_backs_up_a_whole_term_per_round_trip(follower: list[int], rejections: int) -> None:
    """§5.3 (optimization): "when rejecting an AppendEntries request, the follower can include the term of the
    conflicting entry and the first index it stores for that term. With this information, the leader can
    decrement nextIndex to bypass all of the conflicting entries in that term; one AppendEntries RPC will be
    required for each term with conflicting entries, rather than one RPC per entry." With the leader also using
    the follower's term (etcd's variant), each Figure 7 follower needs at most one rejection: (a), (b), (e) and
    (f) one each ((f): 11 entries of 3 divergent terms, skipped at once), (c) and (d) none (the probe matches and
    the extra entries are overwritten)."""
    lead = new_raft(1, entries=ents(*FIG7_LEADER), hard_state=HardState(term=7))
    fol = new_raft(2, entries=ents(*follower), hard_state=HardState(term=7))
    third = new_raft(3, entries=ents(*FIG7_LEADER), hard_state=HardState(term=7))
    n = Network(lead, fol, third)
    lead.campaign()
    n.cut(1, 2)
    n.settle()
    n.recover()
    n.cut(1, 3)
    n.delivered.clear()
    lead.propose([b"x"])
    n.tick_all()  # the first probe was lost to the cut; the heartbeat answer unpauses the follower
    assert len([m for m in n.delivered if m.type == AR and m.reject]) == rejections
    assert [e.term for e in fol.log.entries] == [e.term for e in lead.log.entries]


# ---------------------------------------------------------------- §5.4: safety


@pytest.mark.parametrize(
    ("log_terms", "cand_index", "cand_term", "granted"),
    [
        ([2], 1, 2, True), ([2], 1, 3, True), ([2], 2, 2, True), ([2], 0, 0, False), ([2], 1, 1, False),
        ([1, 1], 1, 1, False), ([1, 1], 2, 1, True), ([1, 2], 3, 1, False), ([1, 2], 1, 3, True),
    ],
)
def test_voter(log_terms: list[int], cand_index: int, cand_term: int, granted: bool) -> None:
    """§5.4.1: the voter denies its vote if its own log is more up to date than the candidate's: a later last
    term wins; with the same last term, the longer log wins."""
    r = new_raft(1, entries=ents(*log_terms), hard_state=HardState(term=3))
    r.step(Message(V, 2, 1, 4, index=cand_index, log_term=cand_term))
    resp = msgs(r)[-1]
    assert resp.type == VR and resp.reject == (not granted)


def test_leader_only_commits_log_from_current_term() -> None:
    """§5.4.2 (Figure 8): a leader never commits an entry from a previous term by counting replicas; it commits
    it only once an entry of its own term is replicated on a majority."""
    r = new_raft(1, entries=ents(1, 2), hard_state=HardState(term=2))
    become_leader(r)  # term 3; appends its no-op at index 3
    msgs(r)
    r.step(Message(AR, 2, 1, r.term, index=2))  # a majority now holds entry 2 (term 2)
    assert r.log.commit == 0
    r.step(Message(AR, 2, 1, r.term, index=3))  # the term-3 no-op reaches a majority
    assert r.log.commit == 3


def test_commit_never_moves_backwards() -> None:
    """Figure 2: commitIndex only increases; a stale AppendEntries with a lower leaderCommit changes nothing."""
    r = new_raft(2)
    r.step(Message(A, 1, 2, 1, entries=tuple(ents(1, 1, 1)), commit=3))
    assert r.log.commit == 3
    r.step(Message(A, 1, 2, 1, index=0, log_term=0, entries=tuple(ents(1)), commit=1))
    r.step(Message(HB, 1, 2, 1, commit=1))
    assert r.log.commit == 3
    assert r.log.last_index == 3


def test_vote_survives_restart() -> None:
    """Figure 2: currentTerm and votedFor are persistent state; a voter restarted from its hard state does not
    vote twice in one term."""
    r = new_raft(1)
    r.step(Message(V, 2, 1, 5))
    rd = r.ready()
    assert rd.hard_state == HardState(term=5, vote=2, commit=0)
    again = new_raft(1, hard_state=rd.hard_state)
    again.step(Message(V, 3, 1, 5))
    assert msgs(again)[-1].reject


def test_only_a_batch_that_changes_only_the_commit_index_may_skip_the_fsync() -> None:
    """Figure 2: currentTerm, votedFor and log[] are persistent state, "updated on stable storage before
    responding to RPCs"; commitIndex is volatile state. So a batch must be synced if it carries entries or a new
    term or vote (``Ready.must_sync``), and need not be if only the commit index moved."""
    r = new_raft(2)
    r.step(Message(V, 1, 2, 1))
    rd = r.ready()
    assert rd.hard_state == HardState(term=1, vote=1, commit=0) and rd.must_sync  # a vote
    r.step(Message(A, 1, 2, 1, entries=tuple(ents(1, 1)), commit=0))
    rd = r.ready()
    assert rd.entries and rd.hard_state is None and rd.must_sync  # entries
    r.step(Message(HB, 1, 2, 1, commit=2))
    rd = r.ready()
    assert rd.hard_state == HardState(term=1, vote=1, commit=2) and not rd.must_sync  # the commit index only
    assert [e.index for e in rd.committed_entries] == [1, 2]
    r.step(Message(V, 3, 2, 2))
    rd = r.ready()
    assert rd.hard_state is not None and rd.hard_state.term == 2 and rd.must_sync  # a new term


# ---------------------------------------------------------------- PreVote and CheckQuorum (dissertation §9.6, §6.2)


def test_pre_vote_does_not_change_terms() -> None:
    """diss. §9.6: a pre-candidate asks with term+1 but neither it nor the voters change their term."""
    n = Network(*(new_raft(i, pre_vote=True) for i in (1, 2, 3)))
    n.peers[1].campaign()
    pre = msgs(n.peers[1])
    assert {m.type for m in pre} == {MsgType.PRE_VOTE} and all(m.term == 1 for m in pre)
    assert n.peers[1].term == 0
    n.send(*pre)
    assert n.peers[1].role == Role.LEADER and n.peers[1].term == 1


def test_partitioned_node_rejoins_without_disrupting_leader() -> None:
    """diss. §9.6: with PreVote, a node cut off for many election timeouts does not raise its term, so when it
    comes back the healthy leader stays leader."""
    n = Network(*(new_raft(i, pre_vote=True, check_quorum=True) for i in (1, 2, 3)))
    n.elect(1)
    n.isolate(3)
    for _ in range(10 * ELECTION):
        n.tick_all()
    assert n.peers[3].term == 1
    n.recover()
    n.tick_all(ELECTION)
    assert n.peers[1].role == Role.LEADER and n.peers[1].term == 1


def test_check_quorum_leader_steps_down() -> None:
    """diss. §6.2: a leader that hears from no majority for an election timeout steps down."""
    n = Network(*(new_raft(i, check_quorum=True) for i in (1, 2, 3)))
    n.elect(1)
    n.isolate(1)
    for _ in range(2 * ELECTION + 1):
        n.peers[1].tick()
        n.settle()
    assert n.peers[1].role == Role.FOLLOWER


def test_votes_ignored_while_leader_is_live() -> None:
    """diss. §4.2.3: a follower that heard from its leader within the minimum election timeout ignores a vote
    request, even of a higher term, so a removed or flaky server cannot force elections."""
    r = new_raft(1, check_quorum=True)
    r.step(Message(HB, 2, 1, 1))
    msgs(r)
    r.step(Message(V, 3, 1, 2, index=5, log_term=1))
    assert r.term == 1 and r.vote == NONE and msgs(r) == []


# ---------------------------------------------------------------- ReadIndex (dissertation §6.4)


def test_read_index_waits_for_quorum_heartbeat() -> None:
    """diss. §6.4: the leader records its commit index, confirms leadership with a heartbeat round, and only
    then releases the read."""
    n = Network(*(new_raft(i) for i in (1, 2, 3)))
    n.elect(1)
    r = n.peers[1]
    r.read_index("ctx")
    rd = r.ready()
    assert rd.read_states == []
    hbs = [m for m in rd.messages if m.type == HB]
    assert sorted(m.dst for m in hbs) == [2, 3] and all(m.context for m in hbs)
    r.step(Message(MsgType.HEARTBEAT_RESP, 2, 1, r.term, context=hbs[0].context))
    rd = r.ready()
    assert [(s.context, s.index) for s in rd.read_states] == [("ctx", 1)]


def test_reads_in_one_batch_share_a_heartbeat_round() -> None:
    """diss. §6.4: reads that arrive before the round's heartbeats go out share that round."""
    n = Network(*(new_raft(i) for i in (1, 2, 3)))
    n.elect(1)
    r = n.peers[1]
    for i in range(10):
        r.read_index(i)
    hbs = [m for m in msgs(r) if m.type == HB]
    assert len(hbs) == 2


def test_new_leader_serves_no_read_before_its_noop_commits() -> None:
    """diss. §6.4: until an entry of its own term commits, a new leader's commit index may be stale."""
    r = new_raft(1, entries=ents(1, 1), hard_state=HardState(term=1, commit=1))
    become_leader(r)
    msgs(r)
    r.read_index("early")
    r.step(Message(MsgType.HEARTBEAT_RESP, 2, 1, r.term))
    assert r.ready().read_states == []
    r.step(Message(AR, 2, 1, r.term, index=3))  # the no-op commits
    out = r.ready()
    hbs = [m for m in out.messages if m.type == HB and m.context]
    assert hbs, "the held read now starts its heartbeat round"
    r.step(Message(MsgType.HEARTBEAT_RESP, 2, 1, r.term, context=hbs[0].context))
    assert [(s.context, s.index) for s in r.ready().read_states] == [("early", 3)]


def test_deposed_leader_fails_pending_reads() -> None:
    """A leader that steps down before confirming a read reports it failed; it never serves it."""
    n = Network(*(new_raft(i) for i in (1, 2, 3)))
    n.elect(1)
    r = n.peers[1]
    r.read_index("r")
    msgs(r)
    r.step(Message(A, 2, 1, r.term + 1))
    rd = r.ready()
    assert rd.read_states == [] and rd.failed_reads == ["r"]


def test_follower_read_forwarded_to_leader() -> None:
    """diss. §6.4: a follower asks the leader for a read index and serves the read once it has applied it."""
    n = Network(*(new_raft(i) for i in (1, 2, 3)))
    n.elect(1)
    n.propose(1, b"x")
    f = n.peers[2]
    f.read_index("fr")
    rd = f.ready()
    fwd = [m for m in rd.messages if m.type == MsgType.READ_INDEX]
    assert [m.dst for m in fwd] == [1]
    n.send(*fwd)
    # The read index reached the follower through the network; it serves once it has applied that index.
    assert [(s.context, s.index) for s in n.read_states[2]] == [("fr", 2)]
    assert f.log.applied >= 2


# ---------------------------------------------------------------- snapshots


def test_stale_snapshot_never_truncates_committed_entries() -> None:
    """A snapshot older than the follower's commit index changes nothing."""
    from zraft.core import Snapshot

    r = new_raft(2)
    r.step(Message(A, 1, 2, 2, entries=tuple(ents(1, 2, 2)), commit=3))
    msgs(r)
    r.step(Message(MsgType.SNAPSHOT, 1, 2, 2, snapshot=Snapshot(2, 2, ClusterConfig((1, 2, 3)), "old")))
    rd = r.ready()
    assert rd.snapshot is None
    assert r.log.last_index == 3 and r.log.commit == 3
    assert [m.index for m in rd.messages if m.type == AR] == [3]


def test_follower_installs_snapshot_and_continues() -> None:
    """A follower that is sent a snapshot past its log replaces its log with it and continues after it."""
    from zraft.core import Snapshot

    r = new_raft(2)
    snap = Snapshot(10, 3, ClusterConfig((1, 2, 3)), "state")
    r.step(Message(MsgType.SNAPSHOT, 1, 2, 3, snapshot=snap))
    rd = r.ready()
    assert rd.snapshot == snap
    assert rd.hard_state is not None and rd.hard_state.commit == 10
    r.step(Message(A, 1, 2, 3, index=10, log_term=3, entries=tuple(ents(3, start=11)), commit=11))
    rd = r.ready()
    assert [e.index for e in rd.committed_entries] == [11]


def test_leader_sends_snapshot_to_follower_behind_compaction() -> None:
    """A leader whose log no longer holds what a follower needs sends its snapshot instead."""
    n = Network(*(new_raft(i) for i in (1, 2, 3)))
    n.elect(1)
    n.isolate(3)
    for i in range(5):
        n.propose(1, b"v%d" % i)
    lead = n.peers[1]
    snap = lead.make_snapshot(lead.log.applied, "image")
    lead.compact(snap)
    n.recover()
    n.delivered.clear()
    n.tick_all(2)
    sent = [m for m in n.delivered if m.type == MsgType.SNAPSHOT]
    assert [m.dst for m in sent] == [3] and sent[0].snapshot == snap
    assert n.peers[3].log.last_index == lead.log.last_index


def test_a_vote_request_from_a_stale_log_does_not_restart_the_election_timer() -> None:
    """Figure 2, Followers: "If election timeout elapses without receiving AppendEntries RPC from current leader or
    granting vote to candidate: convert to candidate." Seeing a newer term in a vote request that is refused
    adopts the term but is neither of those: the timer keeps running."""
    from raftutil import ents

    r = new_raft(1, 3, check_quorum=True, entries=ents(1, 1, 1), hard_state=HardState(1, 0, 0))
    r.randomized_timeout = ELECTION  # no randomness in this test
    for _ in range(ELECTION - 2):
        r.tick()
    r.step(Message(MsgType.VOTE, 2, 1, 5, log_term=1, index=1))  # term 5, but its log is behind ours: refused
    assert r.term == 5 and r.vote == 0
    assert [m.reject for m in msgs(r)] == [True]
    r.tick()
    r.tick()
    assert r.role == Role.CANDIDATE and r.term == 6  # on time, as if the request had never come
    # Granting a vote does restart it.
    g = new_raft(1, 3, check_quorum=True)
    g.randomized_timeout = ELECTION
    for _ in range(ELECTION - 2):
        g.tick()
    g.step(Message(MsgType.VOTE, 2, 1, 5, log_term=0, index=0))
    assert g.vote == 2
    g.tick()
    g.tick()
    assert g.role == Role.FOLLOWER
