"""Membership changes (diss. chapter 4, single-server changes: ``raft.py``'s docstring gives the rules) and
leadership transfer (diss. §3.10): proposing a configuration, the configuration in force at an index, and putting
a configuration into force as its entry enters (or leaves) the log.

A part of ``Raft`` (``raft.py``; ``state.py`` says how the parts fit): its methods run on the one ``Raft`` object.
"""

from __future__ import annotations

from .progress import Progress, ReplState
from .state import RaftState
from .types import (
    NONE,
    ClusterConfig,
    ConfigChangeError,
    Entry,
    EntryKind,
    Message,
    MsgType,
    NotLeader,
    Role,
    TransferInProgress,
)


class MembershipRole(RaftState):
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
