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
from dataclasses import dataclass
from typing import Any

from .log import CompactedError, RaftLog
from .progress import Progress, ReplState
from .readindex import ReadIndex
from .types import (
    CAMPAIGN_TRANSFER,
    MAX_TERM,
    NONE,
    ClusterConfig,
    ConfigChangeError,
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
)

_TYPES = frozenset(int(t) for t in MsgType)
_LEADER_TYPES = frozenset((MsgType.APPEND, MsgType.HEARTBEAT, MsgType.SNAPSHOT))
_FROM_ANY_LEADER = frozenset((MsgType.APPEND, MsgType.HEARTBEAT, MsgType.SNAPSHOT, MsgType.TIMEOUT_NOW))
"""What a node accepts from a node outside its configuration: a leader of a configuration it has not seen yet (a
lagging follower, or a node waiting to be added). Everything else from a non-member is dropped -- in particular
vote requests, so a removed node cannot disrupt the cluster (diss. §4.2.3)."""


class TransferInProgress(NotLeader):
    """A proposal made while the leader hands leadership over to ``leader`` (retry there shortly)."""

    def __init__(self, leader: int) -> None:
        super().__init__(leader)
        self.args = (f"leadership is being transferred to {leader}",)


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


@dataclass(frozen=True, slots=True)
class Options:
    election_ticks: int = 10
    """A follower that hears no leader for a random number of ticks in [election_ticks, 2*election_ticks)
    starts an election; a leader that has not heard from a quorum for election_ticks steps down."""
    heartbeat_ticks: int = 1
    pre_vote: bool = True
    check_quorum: bool = True
    max_msg_entries: int = 1024
    max_msg_bytes: int = 1 << 20
    max_inflight: int = 64
    """Unanswered appends per follower in steady state (the pipelining window)."""
    snapshot_timeout_ticks: int = 200
    """A follower that neither acknowledges nor fails a snapshot within this many ticks is probed again."""
    read_timeout_ticks: int = 0
    """A read that no leader has confirmed (or answered, when forwarded) within this many ticks fails, so the
    runtime can answer the client (0: twice the election timeout)."""
    promote_lag: int = 4096
    """A learner becomes a voter only once it has answered the leader (its progress is in steady replication) and
    its log is within this many entries of the leader's (diss. §4.2.1: a new voter that is far behind, or not
    reachable at all, would hold up commits while it catches up)."""

    def __post_init__(self) -> None:
        if self.heartbeat_ticks < 1 or self.election_ticks <= self.heartbeat_ticks:
            raise ValueError("need 1 <= heartbeat_ticks < election_ticks")
        if self.promote_lag < 0:
            raise ValueError("promote_lag must not be negative")
        if self.max_msg_entries < 1 or self.max_msg_bytes < 1 or self.max_inflight < 1:
            raise ValueError("message and window limits must be positive")


_RESP = {MsgType.VOTE: MsgType.VOTE_RESP, MsgType.PRE_VOTE: MsgType.PRE_VOTE_RESP}


class Raft:
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

    def propose_config(self, new: ClusterConfig) -> int:
        """Append a membership change (leader only); returns its index. It is in force at once and done when that
        index commits. Raises ``NotLeader`` or ``ConfigChangeError`` (with the reason) when it may not be made
        now: see the module docstring for the rules."""
        if self.role != Role.LEADER:
            raise NotLeader(self.lead)
        if self.transferee != NONE:
            raise TransferInProgress(self.transferee)
        lg = self.log
        if lg.term(lg.commit) != self.term:
            raise ConfigChangeError("the leader has not committed an entry of its own term yet; retry shortly",
                                    "busy")
        if self.pending_config_index > lg.commit:
            raise ConfigChangeError(f"the configuration change at index {self.pending_config_index} is not "
                                    "committed yet; one change at a time", "busy")
        old = self.config
        if not new.voters:
            raise ConfigChangeError("a configuration needs at least one voter")
        if len(set(old.voters) ^ set(new.voters)) > 1:
            raise ConfigChangeError(f"voters {list(old.voters)} -> {list(new.voters)} changes more than one voter; "
                                    "add or remove one at a time")
        for v in set(new.voters) - set(old.voters):
            if v not in old.learners:
                raise ConfigChangeError(f"node {v} must join as a learner and catch up before it can vote")
            pr = self.prs[v]
            match = pr.match
            if pr.state != ReplState.REPLICATE or match + self.opts.promote_lag < lg.last_index:
                raise ConfigChangeError(f"learner {v} is not caught up (it has {match} of {lg.last_index} "
                                        f"entries; it may be at most {self.opts.promote_lag} behind)",
                                        "not_caught_up")
        index = lg.last_index + 1
        lg.append([Entry(index, self.term, EntryKind.CONFIG, new.encode())])
        self._configs.append((index, new))
        self._bcast_new = True
        self._set_config(new)
        return index

    def transfer_leadership(self, target: int) -> None:
        """Hand leadership to voter ``target`` (diss. §3.10). Proposals are refused until it is done or abandoned
        (after an election timeout). Raises ``NotLeader`` or ``ConfigChangeError``."""
        if self.role != Role.LEADER:
            raise NotLeader(self.lead)
        if target == self.id:
            return
        if target not in self.config.voters:
            what = "a learner" if target in self.config.learners else "not a member"
            raise ConfigChangeError(f"node {target} is {what}: leadership can only go to a voter")
        self.transferee = target
        self._transfer_elapsed = 0
        pr = self.prs[target]
        if pr.match == self.log.last_index:
            self._send(Message(MsgType.TIMEOUT_NOW, self.id, target, self.term))
        else:
            self._send_append(target, True)

    @property
    def pending_config_index(self) -> int:
        """The index of the CONFIG entry in force (0 if it came from a snapshot or the bootstrap)."""
        return self._configs[-1][0] if self._configs else 0

    def config_at(self, index: int) -> ClusterConfig:
        """The configuration in force at log index ``index`` (at or after the snapshot)."""
        for i, cfg in reversed(self._configs):
            if i <= index:
                return cfg
        return self._base_config

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

    def _set_config(self, cfg: ClusterConfig) -> None:
        """Put ``cfg`` in force (appended, truncated back to, or installed with a snapshot)."""
        if cfg == self.config:
            return
        self.config = cfg
        self._members = frozenset(cfg.members)
        self._config_changed = True
        if self.role != Role.LEADER:
            return
        nxt, mi = self.log.last_index + 1, self.opts.max_inflight
        for v in cfg.members:
            if v != self.id and v not in self.prs:
                self.prs[v] = Progress(nxt, mi)
        for v in [v for v in self.prs if v not in self._members]:
            del self.prs[v]
        if self.transferee != NONE and self.transferee not in cfg.voters:
            self.transferee = NONE
        # Fewer voters may make a quorum of what is already replicated or confirmed.
        if self._maybe_commit():
            self._bcast_commit = True
        if self.reads.pending:
            self._check_read_quorum()

    def _campaign(self, pre: bool, transfer: bool = False) -> None:
        if pre:
            # diss. §9.6: ask first whether we could win, without disturbing anyone's term.
            self.role = Role.PRE_CANDIDATE
            self.lead = NONE
            self.votes = {}
            term = self.term + 1
            t = MsgType.PRE_VOTE
        else:
            self._reset(self.term + 1)
            self.role = Role.CANDIDATE
            self.vote = self.id
            term = self.term
            t = MsgType.VOTE
        self.votes[self.id] = True
        if self._poll():
            return
        li, lt = self.log.last_index, self.log.last_term
        ctx = CAMPAIGN_TRANSFER if transfer else None
        for v in self.config.voters:
            if v != self.id:
                self._send(Message(t, self.id, v, term, log_term=lt, index=li, context=ctx))

    def _poll(self) -> bool:
        """Count the votes; act on a decision. Returns True when the election is decided."""
        granted = sum(1 for g in self.votes.values() if g)
        q = self.config.quorum
        if granted >= q:
            if self.role == Role.PRE_CANDIDATE:
                self._campaign(pre=False)
            else:
                self._become_leader()
            return True
        if len(self.votes) - granted > len(self.config.voters) - q:
            self._become_follower(self.term, NONE)
            return True
        return False

    def _handle_vote_request(self, m: Message) -> None:
        if m.src not in self.config.voters:
            return
        # Figure 2, RequestVote: at most one vote per term, first come first served, and only for a log at
        # least as up to date as ours (§5.4.1). A pre-vote for a later term does not bind us to anything.
        can_vote = (
            self.vote == m.src
            or (self.vote == NONE and self.lead == NONE)
            or (m.type == MsgType.PRE_VOTE and m.term > self.term)
        )
        resp = _RESP[MsgType(m.type)]
        if can_vote and self.log.is_up_to_date(m.index, m.log_term):
            self._send(Message(resp, self.id, m.src, m.term))
            if m.type == MsgType.VOTE:
                self.election_elapsed = 0
                self.vote = m.src
        else:
            self._send(Message(resp, self.id, m.src, self.term, reject=True))

    def _step_candidate(self, m: Message) -> None:
        t = m.type
        if t == MsgType.APPEND or t == MsgType.HEARTBEAT or t == MsgType.SNAPSHOT:
            # §5.2: a leader of our term exists; return to follower and serve it.
            self._become_follower(self.term, m.src)
            self._step_follower(m)
        elif (t == MsgType.PRE_VOTE_RESP and self.role == Role.PRE_CANDIDATE) or (
            t == MsgType.VOTE_RESP and self.role == Role.CANDIDATE
        ):
            if m.src in self.config.voters:
                self.votes.setdefault(m.src, not m.reject)
                self._poll()

    def _step_follower(self, m: Message) -> None:
        t = m.type
        if t in _LEADER_TYPES and self.lead != NONE and m.src != self.lead:
            self._drop(f"a second leader in term {self.term}", m)
            return
        if t == MsgType.APPEND:
            self.election_elapsed = 0
            self.lead = m.src
            self._handle_append(m)
        elif t == MsgType.HEARTBEAT:
            self.election_elapsed = 0
            self.lead = m.src
            self.log.commit = max(self.log.commit, min(m.commit, self.log.last_index))
            self._send(Message(MsgType.HEARTBEAT_RESP, self.id, m.src, self.term, context=m.context))
        elif t == MsgType.SNAPSHOT:
            self.election_elapsed = 0
            self.lead = m.src
            self._handle_snapshot(m)
        elif t == MsgType.TIMEOUT_NOW:
            # diss. §3.10: our leader hands over; campaign at once, without a pre-vote (it would be refused:
            # everyone still hears from the leader).
            if m.src == self.lead and self.id in self.config.voters:
                self._campaign(pre=False, transfer=True)
            else:
                self._drop("a TIMEOUT_NOW not from our leader, or to a non-voter", m)

    # ------------------------------------------------------------------ follower: replication

    def _handle_append(self, m: Message) -> None:
        lg = self.log
        ents = m.entries
        configs: dict[int, ClusterConfig] = {}
        if ents:
            # Entries follow m.index one by one, with terms that never decrease, from m.log_term to m.term.
            prev_term = m.log_term
            for i, e in enumerate(ents):
                if e.index != m.index + 1 + i or not prev_term <= e.term <= m.term:
                    self._drop("entries that do not follow one another", m)
                    return
                prev_term = e.term
                if e.kind == EntryKind.CONFIG:
                    try:
                        configs[e.index] = ClusterConfig.decode(e.data)
                    except ValueError:
                        self._drop("a configuration entry that does not decode", m)
                        return
        elif m.log_term > m.term:
            self._drop("an entry from a future term", m)
            return
        if m.index < lg.commit:
            # Everything up to our commit is settled; never touch it (a stale or duplicate append).
            self._send(Message(MsgType.APPEND_RESP, self.id, m.src, self.term, index=lg.commit))
            return
        if lg.matches(m.index, m.log_term):
            ents = m.entries
            last_new = m.index + len(ents)
            if ents:
                ci = lg.find_conflict(ents)
                if ci:
                    # §5.3: delete the conflicting entry and all that follow it, then append the new ones.
                    lg.truncate_and_append(list(ents[ci - ents[0].index :]))
                    if configs or (self._configs and self._configs[-1][0] >= ci):
                        # diss. §4.1: the last configuration in the log is in force, committed or not.
                        self._configs = [c for c in self._configs if c[0] < ci]
                        self._configs.extend((i, c) for i, c in configs.items() if i >= ci)
                        self._set_config(self._configs[-1][1] if self._configs else self._base_config)
            # Figure 2: commit = min(leaderCommit, index of last new entry).
            c = min(m.commit, last_new)
            if c > lg.commit:
                lg.commit = c
            self._send(Message(MsgType.APPEND_RESP, self.id, m.src, self.term, index=last_new))
            return
        # §5.3 with fast backtracking: tell the leader the last entry that could match, skipping a term per trip.
        hint, hint_term = lg.find_conflict_by_term(min(m.index, lg.last_index), m.log_term)
        self._send(Message(MsgType.APPEND_RESP, self.id, m.src, self.term, index=m.index, reject=True,
                           hint=hint, log_term=hint_term))

    def _handle_snapshot(self, m: Message) -> None:
        s = m.snapshot
        if s is None or not 0 < s.index <= MAX_TERM or not 0 < s.term <= m.term:
            self._drop("a snapshot without a valid index and term", m)
            return
        lg = self.log
        if s.index <= lg.commit:
            pass  # stale: we are already past it; committed entries stay
        elif lg.matches(s.index, s.term):
            lg.commit = s.index  # our log already holds it: just move commit forward
        else:
            lg.restore(s.index, s.term)
            self.snapshot = s
            self._base_config = s.config
            self._configs = []
            self._set_config(s.config)
            self._restored = s
        self._send(Message(MsgType.APPEND_RESP, self.id, m.src, self.term, index=lg.commit))

    # ------------------------------------------------------------------ leader

    def _tick_leader(self) -> None:
        self.heartbeat_elapsed += 1
        self.election_elapsed += 1
        if self.election_elapsed >= self.opts.election_ticks:
            self.election_elapsed = 0
            if self.opts.check_quorum:
                # diss. §6.2: a leader that has not heard from a quorum in an election timeout steps down.
                voters = self.config.voters
                active = (self.id in voters) + sum(1 for v, pr in self.prs.items() if pr.recent_active and v in voters)
                if active < self.config.quorum:
                    self._become_follower(self.term, NONE)
                    return
                for pr in self.prs.values():
                    pr.recent_active = False
        if self.transferee != NONE:
            self._transfer_elapsed += 1
            if self._transfer_elapsed >= self.opts.election_ticks:
                self.transferee = NONE  # diss. §3.10: the target did not take over in time; lead on
        for _peer, pr in self.prs.items():
            if pr.state == ReplState.SNAPSHOT:
                pr.snapshot_ticks += 1
                if pr.snapshot_ticks >= self.opts.snapshot_timeout_ticks:
                    pr.become_probe()
        # Reads no quorum confirmed in time: fail them (the client retries) rather than hold them forever.
        for pr_ in self.reads.expired(self._ticks):
            self._fail_read(pr_.context, pr_.origin)
        if self.heartbeat_elapsed >= self.opts.heartbeat_ticks:
            self.heartbeat_elapsed = 0
            last = self.log.last_index
            for pr in self.prs.values():
                # A pipelined follower that made no progress over a whole heartbeat interval lost messages:
                # probe it again from what it has acknowledged.
                if pr.state == ReplState.REPLICATE and pr.inflight and pr.match < last:
                    if pr.match == pr.match_at_last_heartbeat:
                        pr.become_probe()
                pr.match_at_last_heartbeat = pr.match
            # Reads still waiting ask again for the current round: its first heartbeats may have been lost.
            self._bcast_heartbeat(self.reads.round if self.reads.pending else 0)

    def _bcast_heartbeat(self, context: int) -> None:
        commit = self.log.commit
        for peer, pr in self.prs.items():
            self._send(Message(MsgType.HEARTBEAT, self.id, peer, self.term, commit=min(pr.match, commit),
                               context=context))

    def _step_leader(self, m: Message) -> None:
        t = m.type
        pr = self.prs.get(m.src)
        if pr is None:
            return
        if t == MsgType.APPEND_RESP:
            pr.recent_active = True
            self._handle_append_resp(m, pr)
        elif t == MsgType.HEARTBEAT_RESP:
            if m.context and (type(m.context) is not int or m.context > self.reads.round):
                self._drop("a confirmation of a read round we never started", m)
                return
            pr.recent_active = True
            pr.probe_sent = False
            if m.context and m.context > pr.read_ack:
                pr.read_ack = m.context
                self._check_read_quorum()
            if pr.match < self.log.last_index:
                self._send_append(m.src, True)
        elif t in _LEADER_TYPES:
            self._drop(f"a second leader in term {self.term} (we lead it)", m)

    def _handle_append_resp(self, m: Message, pr: Progress) -> None:
        if m.index > self.log.last_index:
            self._drop("an answer about entries past our last index", m)
            return
        if m.reject:
            hint = m.hint
            if m.log_term > 0:
                hint, _ = self.log.find_conflict_by_term(hint, m.log_term)
            if pr.maybe_decrease_to(m.index, hint):
                if pr.state == ReplState.REPLICATE:
                    pr.become_probe()
                self._send_append(m.src, True)
            return
        was_paused = pr.is_paused()
        if not (pr.maybe_update(m.index) or (pr.match == m.index and pr.state == ReplState.PROBE)):
            return
        if pr.state == ReplState.PROBE:
            pr.become_replicate()
        elif pr.state == ReplState.SNAPSHOT and pr.match >= pr.pending_snapshot:
            pr.become_probe()
            pr.become_replicate()
        if self._maybe_commit():
            self._bcast_commit = True
        elif was_paused:
            self._send_append(m.src, False)
        # Pipelining: keep the window full while there is something to send.
        while pr.next <= self.log.last_index and self._send_append(m.src, False):
            pass
        if m.src == self.transferee and pr.match == self.log.last_index:
            self._send(Message(MsgType.TIMEOUT_NOW, self.id, m.src, self.term))

    def _send_append(self, to: int, send_if_empty: bool) -> bool:
        pr = self.prs[to]
        if pr.is_paused():
            return False
        lg = self.log
        prev = pr.next - 1
        try:
            prev_term = lg.term(prev)
            ents = lg.slice(pr.next, pr.next + self.opts.max_msg_entries, self.opts.max_msg_bytes) \
                if pr.next <= lg.last_index else []
        except CompactedError:
            return self._send_snapshot(to, pr)
        if not ents:
            if not send_if_empty:
                return False
            if pr.state == ReplState.REPLICATE and pr.commit_sent >= lg.commit:
                return False  # it has our commit index already: an empty append would tell it nothing

        self._send(Message(MsgType.APPEND, self.id, to, self.term, log_term=prev_term, index=prev,
                           entries=tuple(ents), commit=lg.commit))
        pr.sent(ents[-1].index if ents else prev, lg.commit)
        return True

    def _send_snapshot(self, to: int, pr: Progress) -> bool:
        if not pr.recent_active:
            return False  # do not ship a snapshot to a node that may be down
        snap = self.snapshot
        assert snap is not None, "the log was compacted without a snapshot"
        self._send(Message(MsgType.SNAPSHOT, self.id, to, self.term, snapshot=snap))
        pr.become_snapshot(snap.index)
        return True

    def _maybe_commit(self) -> bool:
        lg = self.log
        # A leader outside the voters (removing itself) replicates but does not count itself (diss. §4.2.2).
        matches = sorted(
            (lg.last_index if v == self.id else self.prs[v].match for v in self.config.voters), reverse=True
        )
        mci = matches[self.config.quorum - 1]
        # §5.4.2 (Figure 8): only an entry of the leader's own term commits by counting replicas.
        if mci > lg.commit and lg.term(mci) == self.term:
            lg.commit = mci
            if self.reads.held:
                for ctx, origin in self.reads.take_held():
                    self._leader_read(ctx, origin)
            return True
        return False

    # ------------------------------------------------------------------ leader: reads (diss. §6.4)

    def _leader_read(self, context: Any, origin: int) -> None:
        lg, reads = self.log, self.reads
        if reads.full():
            self._fail_read(context, origin)
            return
        if lg.term(lg.commit) != self.term:
            # diss. §6.4 step 1: until an entry of this term commits, our commit index may be behind.
            reads.hold(context, origin)
            return
        if self.config.voters == (self.id,):
            self._release_read(context, lg.commit, origin)
            return
        # One heartbeat round confirms leadership for every read that arrived before it was sent.
        if reads.add(context, origin, lg.commit, self._ticks):
            self._bcast_heartbeat(reads.round)

    def _check_read_quorum(self) -> None:
        acks = sorted(
            (self.reads.round if v == self.id else self.prs[v].read_ack for v in self.config.voters),
            reverse=True,
        )
        for r in self.reads.confirmed(acks[self.config.quorum - 1]):
            self._release_read(r.context, r.index, r.origin)

    def _release_read(self, context: Any, index: int, origin: int) -> None:
        if origin == self.id:
            self.reads.waiting_apply.append(ReadState(context, index))
        else:
            self._send(Message(MsgType.READ_INDEX_RESP, self.id, origin, 0, index=index, context=context))

    def _abort_leader_reads(self) -> None:
        for ctx, origin in self.reads.abort():
            self._fail_read(ctx, origin)

    def _fail_read(self, context: Any, origin: int) -> None:
        if origin == self.id:
            self.reads.failed.append(context)
        else:
            self._send(Message(MsgType.READ_INDEX_RESP, self.id, origin, 0, reject=True, context=context))

    def _send(self, m: Message) -> None:
        self.msgs.append(m)

    def _drop(self, reason: str, m: Message) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1
        try:
            what = MsgType(m.type).name
        except ValueError:
            what = f"type {m.type!r:.20}"
        self.last_dropped = f"{reason}: {what} from {m.src!r:.20} in term {m.term!r:.24}"
