"""The Raft consensus algorithm as a pure, deterministic state machine (sans-I/O).

Inputs: ``tick()`` (one unit of logical time), ``step(message)`` (a message from a peer), ``propose(datas)``
(new commands, leader only), ``read_index(context)`` (a linearizable read), ``compact(snapshot)`` and
``report_snapshot(peer, ok)``. Output: ``ready()``, one batch of work for the runtime. The core does no I/O,
reads no clock and uses no global randomness: the random number generator is injected, so the same inputs
always give the same outputs.

The persistence contract (etcd-io/raft's, stated plainly):
  Everything in a ``Ready`` -- its snapshot, its entries and its hard state -- must be durable before any of
  its messages is sent, and before the runtime feeds the core anything else. Entries replace any stored entry
  at the same or a higher index (a conflicting suffix is truncated). Committed entries are applied, and reads
  served, only after that. A node that breaks this can vote twice in a term or lose acknowledged writes.
  When ``Ready.must_sync`` is false the only change is the commit index: it may be written without an fsync,
  because nothing sent promises it and a node that restarts with an older commit index learns it again from
  the leader (etcd-io/raft's ``MustSync``).

One exception (diss. §10.2.1): a leader's APPEND, HEARTBEAT and SNAPSHOT messages may be sent before the batch
is durable, so the leader writes its log while the followers write theirs. The leader counts its own log as
persisted when it appends: that is safe because the runtime makes the batch durable before it feeds the core
anything else -- in particular the followers' answers that could let the entry commit.

Membership changes (diss. chapter 4) are single-server changes (§4.1): each CONFIG entry adds or removes at most
one voter (any number of learners), so every quorum of the old voters overlaps every quorum of the new ones and
no joint configuration is needed. A configuration is in force on a node as soon as its entry is in the node's log,
committed or not (and falls back if the entry is truncated). Two rules make this safe: one change at a time (the
leader refuses a change while the last one is uncommitted), and the 2015 fix (Ongaro, raft-dev, "bug in
single-server membership changes"): a leader proposes a change only after an entry of its own term has committed,
so a change it appends can never race a change from an earlier term that it has not seen committed. We chose this
over joint consensus because each step is one entry with one rule, which is what the simulator can check
exhaustively and what a reader can verify; growing or shrinking by several nodes is a sequence of steps.
Learners (non-voting members) receive the log but never count toward an election, a commit or a read quorum; a
learner becomes a voter only once it is within ``Options.promote_lag`` entries of the leader's log.
A leader that removes itself keeps leading, without counting itself, until the change commits, then steps down
(§4.2.2). Leadership transfer (§3.10): the leader stops taking proposals, brings the target up to date, and sends
it TIMEOUT_NOW; the target campaigns at once, and voters grant that vote despite the CheckQuorum lease. The
transfer is abandoned after an election timeout.

Rules are cited as in the extended Raft paper (§5.x) and Ongaro's dissertation (diss. §x).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from .election import ElectionRole
from .follower import FollowerRole
from .leader import LeaderRole
from .log import RaftLog
from .membership import MembershipRole
from .options import Options
from .progress import Progress, ReplState
from .readindex import ReadIndex
from .types import (
    CAMPAIGN_TRANSFER,
    MAX_TERM,
    NONE,
    ClusterConfig,
    Entry,
    EntryKind,
    HardState,
    Message,
    MsgType,
    NotLeader,
    ReadState,
    Ready,
    Role,
    Snapshot,
    SoftState,
    TransferInProgress,
)

__all__ = ["Options", "Raft", "TransferInProgress"]

_TYPES = frozenset(int(t) for t in MsgType)
_FROM_ANY_LEADER = frozenset((MsgType.APPEND, MsgType.HEARTBEAT, MsgType.SNAPSHOT, MsgType.TIMEOUT_NOW))
"""What a node accepts from a node outside its configuration: a leader of a configuration it has not seen yet (a
lagging follower, or a node waiting to be added). Everything else from a non-member is dropped -- in particular
vote requests, so a removed node cannot disrupt the cluster (diss. §4.2.3)."""


TERM_RESERVE = 1 << 40
TERM_LIMIT = MAX_TERM - TERM_RESERVE
"""Terms up to here are taken from any message, however far ahead of ours (a node back from a long absence, or
restored from an old backup, must be able to follow the others). The last ``TERM_RESERVE`` terms below ``MAX_TERM``
(past which no node can campaign) are entered a step at a time: a message whose term is above ``TERM_LIMIT`` and
more than ``TERM_STEP`` past ours is dropped and counted, and our term moves toward it (to ``TERM_LIMIT``, or one
step on). So no message leaves a cluster fewer than a trillion elections, and honest nodes still converge on one
term after a forgery (docs/PROTOCOL.md, "Terms")."""
TERM_STEP = 1 << 8
"""How far past our term a message may take us inside the reserve (honest nodes with pre-vote run a few elections
apart at most). Running the reserve out takes 2**32 forged messages."""


class Raft(ElectionRole, FollowerRole, LeaderRole, MembershipRole):
    """One Raft node's state and its inputs and outputs. The roles' parts of the algorithm are in the mixins:
    ``election.py`` (§5.2), ``follower.py`` and ``leader.py`` (§5.3, §5.4, diss. §6), ``membership.py`` (diss. §3.10,
    chapter 4)."""

    def __init__(
        self,
        node_id: int,
        config: ClusterConfig,
        rng: random.Random,
        options: Options | None = None,
        hard_state: HardState | None = None,
        snapshot: Snapshot | None = None,
        entries: Sequence[Entry] = (),
        applied: int | None = None,
    ) -> None:
        """Build a node from what its storage holds (nothing, for a new node).

        ``applied`` is the index the state machine already reflects (default: the snapshot's index); committed
        entries after it are handed out again in the first ``Ready``.
        """
        self.id = node_id
        self.rng = rng
        self.opts = options or Options()
        hs = hard_state or HardState()
        if snapshot is not None:
            config = snapshot.config
        self._base_config = config
        """The configuration before the first CONFIG entry in the log (the snapshot's, or the bootstrap one)."""
        self._configs: list[tuple[int, ClusterConfig]] = [
            (e.index, ClusterConfig.decode(e.data)) for e in entries if e.kind == EntryKind.CONFIG]
        """The CONFIG entries in the log after the snapshot, oldest first: the last one is in force."""
        self.config = self._configs[-1][1] if self._configs else config
        self._members = frozenset(self.config.members)
        self._config_changed = False
        self.transferee = NONE
        """The node a leadership transfer is handing over to (leader only; NONE: no transfer)."""
        self._transfer_elapsed = 0
        self.snapshot = snapshot
        snap_index = snapshot.index if snapshot else 0
        snap_term = snapshot.term if snapshot else 0
        commit = max(hs.commit, snap_index)
        self.log = RaftLog(snap_index, snap_term, list(entries), commit,
                           snap_index if applied is None else applied)
        self.term = hs.term
        self.vote = hs.vote
        self.lead = NONE
        self.role = Role.FOLLOWER
        self.prs: dict[int, Progress] = {}
        self.votes: dict[int, bool] = {}
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.randomized_timeout = 0
        self._reset_randomized_timeout()
        self.msgs: list[Message] = []
        self._prev_hard = HardState(self.term, self.vote, self.log.commit)
        self._prev_soft = SoftState(self.lead, self.role)
        self._restored: Snapshot | None = None
        self._bcast_new = False
        self._bcast_commit = False
        self.reads = ReadIndex(self.opts.read_timeout_ticks or 2 * self.opts.election_ticks)
        """Linearizable reads (diss. §6.4), both sides: ``readindex.py``."""
        self._ticks = 0
        self.dropped: dict[str, int] = {}
        """Messages dropped because they are impossible from an honest member (forged or buggy), by reason."""
        self.last_dropped = ""

    # ------------------------------------------------------------------ inputs

    def tick(self) -> None:
        self._ticks += 1
        if self.reads.forwarded:
            self.reads.expire_forwarded(self._ticks)
        if self.role == Role.LEADER:
            self._tick_leader()
        else:
            self.election_elapsed += 1
            if self.election_elapsed >= self.randomized_timeout and self.id in self.config.voters:
                self.election_elapsed = 0
                self._campaign(pre=self.opts.pre_vote)

    def campaign(self, pre_vote: bool | None = None) -> None:
        """Start an election now (tests and tools). Only a voter campaigns. ``pre_vote=False`` skips the pre-vote
        round, as a node does whose pre-vote round has just succeeded (the simulator's rival candidates)."""
        if self.role != Role.LEADER and self.id in self.config.voters:
            self._campaign(pre=self.opts.pre_vote if pre_vote is None else pre_vote)

    def propose(self, datas: Sequence[bytes]) -> int:
        """Append commands to the leader's log; returns the index of the first. Raises ``NotLeader``."""
        if self.role != Role.LEADER:
            raise NotLeader(self.lead)
        if self.transferee != NONE:
            raise TransferInProgress(self.transferee)
        first = self.log.last_index + 1
        term = self.term
        self.log.append([Entry(first + i, term, EntryKind.NORMAL, d) for i, d in enumerate(datas)])
        self._bcast_new = True
        if self.config.voters == (self.id,):
            self._maybe_commit()
        return first

    def read_index(self, context: Any) -> None:
        """Ask for a linearizable read. ``context`` comes back in ``Ready.read_states`` (serve it) or
        ``Ready.failed_reads`` (no leader could confirm it: retry elsewhere)."""
        if self.role == Role.LEADER:
            self._leader_read(context, self.id)
        elif self.lead != NONE and self.reads.forward(context, self.lead, self._ticks):
            self._send(Message(MsgType.READ_INDEX, self.id, self.lead, 0, context=context))
        else:
            self.reads.failed.append(context)

    def make_snapshot(self, index: int, data: Any) -> Snapshot:
        """Describe a snapshot of the state machine taken at ``index`` (which it has applied)."""
        if not self.log.snap_index <= index <= self.log.applied:
            raise ValueError(f"snapshot index {index} is outside [{self.log.snap_index}, {self.log.applied}]")
        return Snapshot(index, self.log.term(index), self.config_at(index), data)

    def compact(self, snapshot: Snapshot) -> None:
        """The runtime has made ``snapshot`` durable: drop the log prefix it covers; send it to laggards."""
        if snapshot.index <= self.log.snap_index:
            return
        self.log.compact(snapshot.index, snapshot.term)
        self.snapshot = snapshot
        self._base_config = snapshot.config
        self._configs = [c for c in self._configs if c[0] > snapshot.index]

    def report_snapshot(self, peer: int, ok: bool) -> None:
        """The runtime finished (``ok``) or gave up sending a snapshot to ``peer``."""
        pr = self.prs.get(peer)
        if self.role != Role.LEADER or pr is None or pr.state != ReplState.SNAPSHOT:
            return
        if not ok:
            pr.pending_snapshot = 0
        pr.become_probe()
        pr.probe_sent = True  # wait for the follower's answer or the next heartbeat

    def step(self, m: Message) -> None:
        """Take a message from a peer. A message no honest member could send (from outside the configuration, for
        another node, with a term or index out of range, a second leader in one term, an acknowledgement past our
        log, ...) is dropped and counted in ``dropped``: the core never trusts, and never asserts on, what a
        message says."""
        t = m.type
        if (t not in _TYPES or m.dst != self.id or m.src == self.id or type(m.src) is not int
                or not (0 < m.src <= MAX_TERM and 0 <= m.term <= MAX_TERM and 0 <= m.index <= MAX_TERM
                        and 0 <= m.log_term <= MAX_TERM and 0 <= m.commit <= MAX_TERM and 0 <= m.hint <= MAX_TERM)):
            self._drop("not from a member, not for us, or out of range", m)
            return
        if m.src not in self._members:
            if t not in _FROM_ANY_LEADER:
                self._drop("not from a member", m)
                return
            if self.lead not in (NONE, m.src) and (self.role == Role.LEADER
                                                   or self.election_elapsed < self.opts.election_ticks):
                # A leader we do not know of can be legitimate only once ours is gone (it was elected in a
                # configuration we have not seen yet); until then it is a removed node or a forgery.
                self._drop("not from a member, while our leader is live", m)
                return
        if t == MsgType.READ_INDEX:  # local messages carry no term (as in etcd)
            if self.role == Role.LEADER:
                self._leader_read(m.context, m.src)
            else:
                self._send(Message(MsgType.READ_INDEX_RESP, self.id, m.src, 0, reject=True, context=m.context))
            return
        if t == MsgType.READ_INDEX_RESP:
            reads = self.reads
            try:
                asked = reads.forwarded.get(m.context)
            except TypeError:  # an unhashable context
                asked = None
            if asked is None:
                return  # late: it timed out or its leader was replaced, and the read failed already
            if asked[0] != m.src:
                self._drop("an answer to a read we forwarded to another node", m)
                return
            del reads.forwarded[m.context]
            if m.reject:
                reads.failed.append(m.context)
            else:
                reads.waiting_apply.append(ReadState(m.context, m.index))
            return

        if m.term > TERM_LIMIT and m.term > self.term + TERM_STEP:
            # Deep in the reserve and far past us: no real history produces this (a forgery meant to run the terms
            # out). The message is dropped; our term moves toward it, at most to the reserve's start or a step on,
            # so honest nodes still converge after a forgery, and no message takes anyone near MAX_TERM.
            self._drop("a term jump into the reserve no real history produces", m)
            to = max(TERM_LIMIT, self.term + TERM_STEP)
            if to > self.term:
                elapsed, timeout = self.election_elapsed, self.randomized_timeout
                self._become_follower(to, NONE)
                self.election_elapsed, self.randomized_timeout = elapsed, timeout
            return
        if m.term > self.term:
            if t == MsgType.VOTE or t == MsgType.PRE_VOTE:
                # diss. §4.2.3 / §9.6: while we have heard from a leader within the election timeout, ignore
                # (pre)votes, so a node rejoining from a partition cannot depose a healthy leader.
                if (self.opts.check_quorum and self.lead != NONE and self.election_elapsed < self.opts.election_ticks
                        and not (t == MsgType.VOTE and m.context == CAMPAIGN_TRANSFER)):
                    return
            if t == MsgType.PRE_VOTE or (t == MsgType.PRE_VOTE_RESP and not m.reject):
                pass  # a pre-vote is made for a future term and never changes ours (diss. §9.6)
            else:
                # Figure 2, all servers: a newer term makes us a follower in it.
                leader = m.src if t in (MsgType.APPEND, MsgType.HEARTBEAT, MsgType.SNAPSHOT) else NONE
                elapsed, timeout = self.election_elapsed, self.randomized_timeout
                self._become_follower(m.term, leader)
                if leader == NONE:
                    # Figure 2, followers: the election timer restarts only on hearing from the current leader,
                    # on granting a vote or on starting an election -- not on merely seeing a newer term. Else
                    # nodes with stale logs, campaigning in turn, keep resetting the timers of the up-to-date
                    # nodes (whose votes they cannot get), and no one who could win ever stands.
                    self.election_elapsed, self.randomized_timeout = elapsed, timeout
        elif m.term < self.term:
            if t == MsgType.APPEND or t == MsgType.HEARTBEAT:
                # A stale leader (e.g. back from a partition): tell it our term so it steps down. Needed with
                # PreVote/CheckQuorum, where our term may otherwise never reach it.
                self._send(Message(MsgType.APPEND_RESP, self.id, m.src, self.term))
            elif t == MsgType.PRE_VOTE:
                self._send(Message(MsgType.PRE_VOTE_RESP, self.id, m.src, self.term, reject=True))
            return  # Figure 2: reject requests with a stale term; ignore stale responses

        if t == MsgType.VOTE or t == MsgType.PRE_VOTE:
            self._handle_vote_request(m)
        elif self.role == Role.LEADER:
            self._step_leader(m)
        elif self.role == Role.FOLLOWER:
            self._step_follower(m)
        else:
            self._step_candidate(m)

    # ------------------------------------------------------------------ output

    def has_ready(self) -> bool:
        lg = self.log
        return bool(
            self.msgs or self._restored or self._bcast_new or self._bcast_commit or self._config_changed
            or lg.unstable_from <= lg.last_index or lg.applied < lg.commit
            or self.reads.has_ready()
            or self.term != self._prev_hard.term or self.vote != self._prev_hard.vote
            or lg.commit != self._prev_hard.commit
            or self.lead != self._prev_soft.leader or self.role != self._prev_soft.role
        )

    def ready(self) -> Ready:
        """Hand out everything the runtime must do now (see the module docstring for the order)."""
        if self._bcast_new or self._bcast_commit:
            send_if_empty = self._bcast_commit
            self._bcast_new = self._bcast_commit = False
            if self.role == Role.LEADER:
                for peer in self.prs:
                    self._send_append(peer, send_if_empty)
        if (self.role == Role.LEADER and self.id not in self.config.voters
                and self.log.commit >= self.pending_config_index):
            # diss. §4.2.2: a leader that removed itself (or became a learner) steps down once that commits.
            self._become_follower(self.term, NONE)
        rd = Ready()
        lg = self.log
        if self._restored is not None:
            rd.snapshot = self._restored
            self._restored = None
        rd.entries = lg.unstable()
        prev = self._prev_hard
        if self.term != prev.term or self.vote != prev.vote:
            rd.hard_state = self._prev_hard = HardState(self.term, self.vote, lg.commit)
            rd.must_sync = True
        elif lg.commit != prev.commit:
            rd.hard_state = self._prev_hard = HardState(self.term, self.vote, lg.commit)
        if rd.entries or rd.snapshot is not None:
            rd.must_sync = True
        prev_soft = self._prev_soft
        if self.lead != prev_soft.leader or self.role != prev_soft.role:
            rd.soft_state = self._prev_soft = SoftState(self.lead, self.role)
        rd.messages = self.msgs
        self.msgs = []
        rd.committed_entries = lg.next_committed()
        reads = self.reads
        if reads.waiting_apply or reads.failed:
            rd.read_states, rd.failed_reads = reads.ready(lg.applied)
        if self._config_changed:
            rd.config = self.config
            self._config_changed = False
        reads.pass_done()
        return rd

    def hard_state(self) -> HardState:
        return HardState(self.term, self.vote, self.log.commit)

    # The view the runtime around the core needs, without reaching into the log.

    @property
    def snapshot_index(self) -> int:
        """The index the log was last compacted at (0 before the first snapshot)."""
        return self.log.snap_index

    @property
    def commit_index(self) -> int:
        return self.log.commit

    @property
    def last_index(self) -> int:
        return self.log.last_index

    def status(self) -> dict[str, Any]:
        lg = self.log
        st: dict[str, Any] = {
            "id": self.id, "role": self.role.name.lower(), "term": self.term, "leader": self.lead, "vote": self.vote,
            "commit": lg.commit, "applied": lg.applied, "last_index": lg.last_index,
            "snapshot_index": lg.snap_index, "voters": list(self.config.voters),
            "learners": list(self.config.learners),
        }
        if self.pending_config_index > lg.commit:
            st["pending_config_index"] = self.pending_config_index
        if self.role == Role.LEADER:
            st["match"] = {p: pr.match for p, pr in self.prs.items()}
            if self.transferee != NONE:
                st["transferee"] = self.transferee
        if self.dropped:
            st["dropped_messages"] = sum(self.dropped.values())
            st["last_dropped"] = self.last_dropped
        return st

    # ------------------------------------------------------------------ roles

    def _reset(self, term: int) -> None:
        if term != self.term:
            self.term = term
            self.vote = NONE
        self.lead = NONE
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self._reset_randomized_timeout()
        self.votes = {}
        if self.role == Role.LEADER:
            self._abort_leader_reads()
        self.transferee = NONE
        if self.reads.forwarded:  # their leader may be gone: fail them now, the client retries with the next one
            self.reads.fail_forwarded()
        self.prs = {}

    def _reset_randomized_timeout(self) -> None:
        e = self.opts.election_ticks
        self.randomized_timeout = e + self.rng.randrange(e)

    def _become_follower(self, term: int, leader: int) -> None:
        self._reset(term)
        self.role = Role.FOLLOWER
        self.lead = leader

    def _become_leader(self) -> None:
        assert self.role == Role.CANDIDATE
        self._reset(self.term)
        self.role = Role.LEADER
        self.lead = self.id
        nxt = self.log.last_index + 1
        mi = self.opts.max_inflight
        self.prs = {v: Progress(nxt, mi) for v in self.config.members if v != self.id}
        self.reads.new_term()
        # §5.4.2 / diss. §6.4: a no-op of our own term, so that earlier entries commit and reads become safe.
        self.log.append([Entry(nxt, self.term, EntryKind.NOOP, b"")])
        self._bcast_new = True
        if self.config.voters == (self.id,):
            self._maybe_commit()

    # ------------------------------------------------------------------ follower: replication

    # ------------------------------------------------------------------ leader

    # ------------------------------------------------------------------ leader: reads (diss. §6.4)

    def _send(self, m: Message) -> None:
        self.msgs.append(m)

    def _drop(self, reason: str, m: Message) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1
        try:
            what = MsgType(m.type).name
        except ValueError:
            what = f"type {m.type!r:.20}"
        self.last_dropped = f"{reason}: {what} from {m.src!r:.20} in term {m.term!r:.24}"
