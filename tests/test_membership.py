"""Membership changes and leadership transfer in the core, rule by rule (Ongaro's dissertation, chapter 4 and
§3.10). Each test quotes the rule it checks; see ``zraft.core.raft``'s docstring for the method (single-server
changes with learners)."""

from __future__ import annotations

import random

import pytest
from raftutil import ELECTION, HEARTBEAT, Network, ents, msgs

from zraft.core import ClusterConfig, EntryKind, HardState, Message, MsgType, Options, Raft, Role, Snapshot
from zraft.core.raft import TransferInProgress
from zraft.core.types import CAMPAIGN_TRANSFER, ConfigChangeError

A = MsgType.APPEND


def node(i: int, voters: tuple[int, ...], learners: tuple[int, ...] = (), *, check_quorum: bool = True,
         pre_vote: bool = True, **opts: int) -> Raft:
    o = Options(election_ticks=ELECTION, heartbeat_ticks=HEARTBEAT, pre_vote=pre_vote, check_quorum=check_quorum,
                **opts)
    return Raft(i, ClusterConfig(voters, learners), random.Random(i), o)


def cluster(voters: tuple[int, ...], learners: tuple[int, ...] = (), **kw: int) -> Network:
    return Network(*(node(i, voters, learners, **kw) for i in voters + learners))


def change(r: Raft, *, add_voter: int = 0, remove: int = 0, add_learner: int = 0) -> ClusterConfig:
    """The leader's configuration with one change made."""
    c = r.config
    voters, learners = list(c.voters), list(c.learners)
    if add_learner:
        learners.append(add_learner)
    if add_voter:
        if add_voter in learners:
            learners.remove(add_voter)
        voters.append(add_voter)
    if remove:
        voters = [v for v in voters if v != remove]
        learners = [v for v in learners if v != remove]
    return ClusterConfig(tuple(voters), tuple(learners), c.context)


def test_a_configuration_round_trips_through_its_entry_and_rejects_garbage() -> None:
    cfg = ClusterConfig((1, 2, 3), (4,), b"addresses")
    assert ClusterConfig.decode(cfg.encode()) == cfg
    assert ClusterConfig.from_wire([1, 2, 3]) == ClusterConfig((1, 2, 3))  # the form written before learners
    for bad in (b"", b"\xc1", b"\x93\x91\x01\x91\x01\xc4\x00", b"\x92\x90\x90", b"\xa3abc"):
        with pytest.raises(ValueError):
            ClusterConfig.decode(bad)
    with pytest.raises(ValueError):
        ClusterConfig((1, 2), (2,))


def test_a_configuration_is_in_force_once_appended_and_falls_back_when_truncated() -> None:
    """diss. §4.1: "a server always uses the latest configuration in its log, regardless of whether the entry is
    committed"; and if a configuration entry is removed by a log truncation, the server falls back to the
    previous one."""
    f = node(2, (1, 2, 3))
    c4 = ClusterConfig((1, 2, 3), (4,))
    f.step(Message(A, 1, 2, 1, entries=(ents(1)[0], ents(1, start=2)[0]._replace(kind=EntryKind.CONFIG,
                                                                                    data=c4.encode())), commit=1))
    rd = f.ready()
    assert f.config == c4 and rd.config == c4 and f.log.commit == 1  # in force, not committed
    # A new leader of term 2 overwrites index 2: the configuration goes back to the bootstrap one.
    f.step(Message(A, 3, 2, 2, index=1, log_term=1, entries=tuple(ents(2, start=2)), commit=1))
    rd = f.ready()
    assert f.config == ClusterConfig((1, 2, 3)) and rd.config == ClusterConfig((1, 2, 3))


def test_a_configuration_entry_that_does_not_decode_is_dropped() -> None:
    f = node(2, (1, 2, 3))
    bad = ents(1)[0]._replace(kind=EntryKind.CONFIG, data=b"\xc1")
    f.step(Message(A, 1, 2, 1, entries=(bad,), commit=0))
    assert f.log.last_index == 0 and f.config == ClusterConfig((1, 2, 3))
    assert any("configuration entry" in k for k in f.dropped)


def test_a_leader_proposes_a_change_only_after_an_entry_of_its_term_commits() -> None:
    """The 2015 fix to single-server changes (Ongaro, raft-dev): a leader may not append a new configuration
    until an entry from its current term has committed -- else a change it appends can race an uncommitted change
    of an earlier leader, and two disjoint majorities can each elect a leader."""
    net = cluster((1, 2, 3))
    net.isolate(1)
    r = net.peers[1]
    r.campaign()
    net.recover()
    for m in msgs(r):
        net.peers[m.dst].step(m)
    # Node 1 is elected, but nothing of its term (its no-op) has been acknowledged yet.
    votes = [m for p in (2, 3) for m in msgs(net.peers[p])]
    for m in votes:
        if m.type in (MsgType.PRE_VOTE_RESP, MsgType.VOTE_RESP):
            r.step(m)
    for m in msgs(r):
        if m.type in (MsgType.VOTE, MsgType.PRE_VOTE):
            for p in (2, 3):
                net.peers[p].step(m)
    for p in (2, 3):
        for m in msgs(net.peers[p]):
            if m.type == MsgType.VOTE_RESP:
                r.step(m)
    assert r.role == Role.LEADER and r.log.term(r.log.commit) != r.term
    with pytest.raises(ConfigChangeError, match="not committed an entry of its own term"):
        r.propose_config(change(r, add_learner=4))
    net.settle()  # the no-op commits
    r.propose_config(change(r, add_learner=4))


def test_one_change_at_a_time() -> None:
    """diss. §4.1: "a leader may not begin a new configuration change until the previous one has committed"."""
    net = cluster((1, 2, 3))
    net.elect(1)
    r = net.peers[1]
    net.isolate(1)
    idx = r.propose_config(change(r, add_learner=4))
    with pytest.raises(ConfigChangeError, match=f"change at index {idx} is not committed"):
        r.propose_config(change(r, add_learner=5))
    net.recover()
    net.tick_all(HEARTBEAT)
    assert r.log.commit >= idx
    r.propose_config(change(r, add_learner=5))
    assert r.config.learners == (4, 5)


def test_a_change_adds_or_removes_at_most_one_voter_and_new_voters_come_from_caught_up_learners() -> None:
    """diss. §4.1: single-server changes, so that any majority of the old voters overlaps any majority of the new;
    §4.2.1: a new server joins without a vote until it has caught up, so it cannot hold up commits."""
    net = cluster((1, 2, 3))
    net.elect(1)
    r = net.peers[1]
    with pytest.raises(ConfigChangeError, match="more than one voter"):
        r.propose_config(ClusterConfig((1, 2, 3, 4, 5)))
    with pytest.raises(ConfigChangeError, match="must join as a learner"):
        r.propose_config(ClusterConfig((1, 2, 3, 4)))
    with pytest.raises(ConfigChangeError, match="at least one voter"):
        r.propose_config(ClusterConfig(()))
    r.propose_config(change(r, add_learner=4))
    net.settle()
    for _ in range(5000):
        r.propose([b"x"])
    with pytest.raises(ConfigChangeError, match="learner 4 is not caught up"):
        r.propose_config(change(r, add_voter=4))  # node 4 does not exist in this network: it has nothing


def test_a_learner_receives_the_log_but_never_counts_and_never_campaigns() -> None:
    """diss. §4.2.1: learners ("non-voting members") get log entries but are not counted in majorities."""
    net = cluster((1, 2, 3), (4,))
    net.elect(1)
    r, learner = net.peers[1], net.peers[4]
    idx = net.propose(1, b"a")
    assert learner.log.last_index == idx and learner.log.commit == idx  # it is replicated to
    net.cut(1, 2)
    net.cut(1, 3)
    idx = net.propose(1, b"b")
    assert learner.log.last_index == idx and r.prs[4].match == idx
    assert r.log.commit < idx  # the leader and a learner are not a majority of three voters
    for _ in range(10 * ELECTION):
        learner.tick()
    assert learner.role == Role.FOLLOWER  # never a candidate
    learner.campaign()
    assert learner.role == Role.FOLLOWER and not msgs(learner)


def test_a_candidate_does_not_count_a_learners_vote() -> None:
    c = node(1, (1, 2, 3), (4,), pre_vote=False, check_quorum=False)
    c.campaign()
    msgs(c)
    c.step(Message(MsgType.VOTE_RESP, 4, 1, c.term))
    assert c.role == Role.CANDIDATE
    c.step(Message(MsgType.VOTE_RESP, 2, 1, c.term))
    assert c.role == Role.LEADER


def test_grow_from_three_to_five_and_commit_with_the_new_quorum() -> None:
    net = cluster((1, 2, 3))
    net.elect(1)
    r = net.peers[1]
    for i in (4, 5):
        net.add(Raft(i, ClusterConfig(()), random.Random(i), r.opts))  # a node waiting to be added
    for i in (4, 5):
        net.propose(1, b"before %d" % i)
        r.propose_config(change(r, add_learner=i))
        net.settle()
        assert net.peers[i].config == r.config  # it learned the configuration from the log
        r.propose_config(change(r, add_voter=i))
        net.settle()
        assert r.log.commit == r.log.last_index
    assert r.config.voters == (1, 2, 3, 4, 5)
    # Three of five now make a quorum: with 2 and 3 cut off, 1, 4 and 5 still commit.
    net.cut(1, 2)
    net.cut(1, 3)
    idx = net.propose(1, b"with the new majority")
    assert r.log.commit == idx


def test_a_node_waiting_to_be_added_never_campaigns() -> None:
    w = Raft(4, ClusterConfig(()), random.Random(4), Options())
    for _ in range(100):
        w.tick()
    assert w.role == Role.FOLLOWER and not msgs(w)


def test_a_leader_that_removes_itself_leads_until_the_change_commits_then_steps_down() -> None:
    """diss. §4.2.2: the leader "steps down once the Cnew entry is committed"; until then it manages a cluster
    that does not include itself: it replicates entries but does not count itself in majorities."""
    net = cluster((1, 2, 3))
    net.elect(1)
    r = net.peers[1]
    net.cut(1, 3)
    idx = r.propose_config(change(r, remove=1))
    assert r.role == Role.LEADER
    net.cut(1, 2)
    net.settle()
    assert r.role == Role.LEADER and r.log.commit < idx  # its own copy does not count: voters are now 2 and 3
    net.recover()
    for _ in range(ELECTION):
        assert r.role == Role.LEADER
        net.tick_all(1)
        if r.log.commit >= idx:
            break
    assert r.log.commit >= idx and r.role == Role.FOLLOWER
    # The rest elect a leader among themselves; the removed node never campaigns again.
    for _ in range(4 * ELECTION):
        net.tick_all(1)
    leaders = [p for p in net.peers.values() if p.role == Role.LEADER]
    assert len(leaders) == 1 and leaders[0].id in (2, 3)
    assert r.role == Role.FOLLOWER


def test_a_removed_node_cannot_disrupt_the_cluster() -> None:
    """diss. §4.2.3: removed servers "can disrupt the cluster" with RequestVote; members drop messages from
    outside their configuration (other than a leader's), so terms do not climb."""
    net = cluster((1, 2, 3), pre_vote=False, check_quorum=False)
    net.elect(1)
    r = net.peers[1]
    r.propose_config(change(r, remove=3))
    net.settle()
    net.tick_all(HEARTBEAT)
    removed = net.peers[3]
    net.isolate(3)  # it never hears of its removal's commit, nor of anything after
    term = r.term
    for _ in range(10 * ELECTION):
        removed.tick()
        for m in msgs(removed):
            net.peers[m.dst].step(m)
        net.tick_all(1)
    assert removed.term > term  # it campaigned ...
    assert r.role == Role.LEADER and r.term == term  # ... and nobody noticed
    assert any("not from a member" in k for k in r.dropped)


def test_transfer_to_an_up_to_date_voter_makes_it_leader_at_once_despite_the_lease() -> None:
    """diss. §3.10: the leader sends TimeoutNow to an up-to-date target, which starts an election at once; its
    vote requests are granted though everyone still hears from the old leader (CheckQuorum's lease)."""
    net = cluster((1, 2, 3))
    net.elect(1)
    net.propose(1, b"a")
    r = net.peers[1]
    r.transfer_leadership(2)
    net.settle()
    assert net.peers[2].role == Role.LEADER and r.role == Role.FOLLOWER and r.lead == 2
    assert any(m.type == MsgType.TIMEOUT_NOW for m in net.delivered)
    assert any(m.type == MsgType.VOTE and m.context == CAMPAIGN_TRANSFER for m in net.delivered)
    assert not any(m.type == MsgType.PRE_VOTE for m in net.delivered[-20:])


def test_transfer_brings_a_lagging_target_up_to_date_first_and_refuses_proposals_meanwhile() -> None:
    net = cluster((1, 2, 3))
    net.elect(1)
    r = net.peers[1]
    net.cut(1, 3)
    for k in range(5):
        net.propose(1, b"%d" % k)
    assert r.prs[3].match < r.log.last_index
    net.recover()
    r.transfer_leadership(3)
    with pytest.raises(TransferInProgress):
        r.propose([b"during"])
    last = r.log.last_index
    timeout_now_at: list[int] = []

    def watch(m: Message) -> bool:
        if m.type == MsgType.TIMEOUT_NOW:
            timeout_now_at.append(net.peers[3].log.last_index)
        return True

    net.filter = watch
    for _ in range(ELECTION - 1):
        net.tick_all(1)
        if net.peers[3].role == Role.LEADER:
            break
    assert net.peers[3].role == Role.LEADER and r.role == Role.FOLLOWER
    assert timeout_now_at and timeout_now_at[0] == last  # it was told to campaign only once it had everything


def test_transfer_is_abandoned_after_an_election_timeout() -> None:
    net = cluster((1, 2, 3))
    net.elect(1)
    r = net.peers[1]
    net.isolate(2)
    r.transfer_leadership(2)
    assert r.transferee == 2
    with pytest.raises(TransferInProgress):
        r.propose([b"x"])
    for _ in range(ELECTION):
        r.tick()
    assert r.transferee == 0 and r.role == Role.LEADER
    r.propose([b"x"])


@pytest.mark.parametrize(("target", "why"), [(4, "is a learner"), (9, "is not a member")])
def test_transfer_only_to_a_voter(target: int, why: str) -> None:
    net = cluster((1, 2, 3), (4,))
    net.elect(1)
    with pytest.raises(ConfigChangeError, match=why):
        net.peers[1].transfer_leadership(target)


def test_a_snapshot_carries_the_configuration_of_its_index_and_a_follower_takes_it() -> None:
    net = cluster((1, 2, 3))
    net.elect(1)
    r = net.peers[1]
    before = r.config
    net.propose(1, b"a")
    at = r.log.commit
    net.isolate(1)
    r.propose_config(change(r, add_learner=4))  # after the snapshot's index, uncommitted
    r.ready()
    snap = r.make_snapshot(at, b"state")
    assert snap.config == before and r.config_at(r.log.last_index) == r.config != before
    f = Raft(5, ClusterConfig(()), random.Random(5), Options())
    cfg = ClusterConfig((1, 2, 3), (5,), b"ctx")
    f.step(Message(MsgType.SNAPSHOT, 1, 5, 3, snapshot=Snapshot(10, 2, cfg, b"s")))
    assert f.config == cfg and f.ready().config == cfg


def test_a_restarted_node_uses_the_last_configuration_in_its_log() -> None:
    cfg = ClusterConfig((1, 2, 3), (4,))
    log = [*ents(1, 1), ents(1, start=3)[0]._replace(kind=EntryKind.CONFIG, data=cfg.encode())]
    r = Raft(2, ClusterConfig((1, 2, 3)), random.Random(2), Options(), HardState(1, 1, 1), None, log)
    assert r.config == cfg and r.pending_config_index == 3 and r.config_at(2) == ClusterConfig((1, 2, 3))


def test_the_2015_single_server_change_scenario_cannot_unfold() -> None:
    """The bug Ongaro reported in 2015 (raft-dev, "bug in single-server membership changes"): in C = {1,2,3,4},
    leader 1 adds 5 but only 5 hears of it; 2 is elected by 2, 3, 4 and at once removes 1, committing that with 3;
    then 1, still with {1..5} in force, is elected by 1, 4, 5 and overwrites the committed change. The fix: 2 may
    not propose its change before an entry of its own term commits in C -- which 4 must then hold, so 4 can no
    longer vote for 1."""
    net = cluster((1, 2, 3, 4), (5,), pre_vote=False, check_quorum=False)
    net.elect(1)
    s1, s2 = net.peers[1], net.peers[2]
    net.propose(1, b"a")
    for p in (2, 3, 4):
        net.cut(1, p)
    c1 = s1.propose_config(change(s1, add_voter=5))
    net.settle()
    assert net.peers[5].config.voters == (1, 2, 3, 4, 5) and s2.config.voters == (1, 2, 3, 4)
    net.isolate(1)
    net.isolate(5)
    net.filter = lambda m: not (m.src == 2 and m.type == MsgType.APPEND)  # 2's no-op reaches nobody yet
    s2.campaign()
    net.settle()
    assert s2.role == Role.LEADER
    with pytest.raises(ConfigChangeError, match="own term"):
        s2.propose_config(change(s2, remove=1))
    net.filter = None
    net.tick_all(1)
    assert s2.log.term(s2.log.commit) == s2.term  # committed in C = {1,2,3,4}: on 2, 3 and 4
    c2 = s2.propose_config(change(s2, remove=1))
    net.settle()
    assert s2.log.commit >= c2
    # 1 restarts (from what it persisted: {1..5} in force) and campaigns, reachable by 4 and 5 only.
    s1 = Raft(1, ClusterConfig((1, 2, 3, 4), (5,)), random.Random(1), s1.opts, s1.hard_state(), None,
              list(s1.log.entries))
    assert s1.config.voters == (1, 2, 3, 4, 5)
    net.add(s1)
    net.recover()
    net.cut(1, 2)
    net.cut(1, 3)
    s1.campaign()
    for m in msgs(s1):
        if m.dst in (4, 5):
            net.peers[m.dst].step(m)
            for resp in msgs(net.peers[m.dst]):
                if resp.dst == 1:
                    s1.step(resp)
    assert s1.role != Role.LEADER
    # Had it won, it would have overwritten a committed entry: its change sits where 2's no-op committed.
    assert c1 <= s2.log.commit and s1.log.term(c1) != s2.log.term(c1)
    assert all(net.peers[p].log.term(c2) == s2.term for p in (2, 3, 4))


@pytest.mark.parametrize("req", [
    {"op": "add_learner", "id": 1, "node": 0, "address": "127.0.0.1:1"},
    {"op": "add_learner", "id": 1, "node": 4, "address": "no port"},
    {"op": "add_learner", "id": 1, "node": 4, "address": "h:99999"},
    {"op": "add_learner", "id": 1, "node": 4, "address": "h:1", "key": "short"},
    {"op": "add_learner", "id": 1, "node": 4},
    {"op": "promote", "id": 1, "node": 1 << 63},
    {"op": "remove", "id": 1, "node": "2"},
    {"op": "transfer", "id": 1},
])
def test_membership_requests_are_validated_before_anything_sees_them(req: dict[str, object]) -> None:
    from zraft.transport import codec

    with pytest.raises(codec.ProtocolError):
        codec.decode(codec.encode_client(req), peer=False)


def test_a_membership_context_that_does_not_decode_is_refused() -> None:
    from zraft.transport import members

    good = {4: members.Member(4, "h:1", "")}
    assert members.decode(members.encode(good)) == good
    for bad in (b"\xc1", b"\x91\x93\x00\xa3h:1\xa0", b"\x91\x93\x04\xa4nope\xa0", b"\x81\x01\x02"):
        with pytest.raises(ValueError):
            members.decode(bad)


def test_an_installed_snapshot_forgets_the_configurations_of_the_log_it_replaced() -> None:
    """Issue 32: a follower whose log held a configuration entry from a deposed leader (adding learner 4, never
    committed) installs a snapshot that replaces that log. The discarded entry's configuration must be gone: not
    in force, and not in the node's own next snapshot (a restart from it would come up with the wrong members).
    The bug (the old configuration list kept) survived the suite and 2,800 seeds."""
    from zraft.core import Entry, EntryKind

    f = node(2, (1, 2, 3))
    stale = ClusterConfig((1, 2, 3), (4,))
    f.step(Message(MsgType.APPEND, 1, 2, 1, 0, 0, [Entry(1, 1, EntryKind.NOOP, b""),
                                                   Entry(2, 1, EntryKind.CONFIG, stale.encode())], 0))
    f.ready()
    assert f.config == stale  # in force once appended (diss. §4.1), not committed
    cfg = ClusterConfig((1, 2, 3))
    f.step(Message(MsgType.SNAPSHOT, 3, 2, 2, snapshot=Snapshot(5, 2, cfg, b"state at 5")))
    f.ready()
    assert f.config == cfg and f.config_at(5) == cfg
    f.step(Message(MsgType.APPEND, 3, 2, 2, 2, 5, [Entry(6, 2, EntryKind.NORMAL, b"x"),
                                                   Entry(7, 2, EntryKind.NORMAL, b"y")], 7))
    for _ in range(3):  # persisted, then applied
        f.ready()
    assert f.log.applied == 7
    snap = f.make_snapshot(7, b"state at 7")
    assert snap.config == cfg, f"the node's own snapshot records a discarded configuration: {snap.config}"
    assert f.config_at(7) == cfg and f.pending_config_index <= 5
