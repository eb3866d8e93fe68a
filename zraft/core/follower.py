"""The follower's side of Raft: taking APPENDs (§5.3: the consistency check, truncating a conflicting suffix,
never an entry below the commit index), heartbeats, snapshots from the leader, and TIMEOUT_NOW (diss. §3.10).

A part of ``Raft`` (``raft.py``; ``state.py`` says how the parts fit): its methods run on the one ``Raft`` object.
"""

from __future__ import annotations

from .state import RaftState
from .types import LEADER_MESSAGES, MAX_TERM, NONE, ClusterConfig, EntryKind, Message, MsgType


class FollowerRole(RaftState):
    def _step_follower(self, m: Message) -> None:
        t = m.type
        if t in LEADER_MESSAGES and self.lead != NONE and m.src != self.lead:
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
