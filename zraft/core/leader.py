"""The leader's side of Raft: replication to each follower (§5.3: pipelined appends within a window, snapshots
for a follower behind the log's start), the commit rule (§5.4.2: only an entry of the leader's own term is
committed by counting), heartbeats, the CheckQuorum lease (diss. §6.2), and linearizable reads at the leader
(diss. §6.4, the read index kept in ``readindex.py``).

A part of ``Raft`` (``raft.py``; ``state.py`` says how the parts fit): its methods run on the one ``Raft`` object.
"""

from __future__ import annotations

from typing import Any

from .log import CompactedError
from .progress import Progress, ReplState
from .state import RaftState
from .types import LEADER_MESSAGES, NONE, Message, MsgType, ReadState


class LeaderRole(RaftState):
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
        elif t in LEADER_MESSAGES:
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
