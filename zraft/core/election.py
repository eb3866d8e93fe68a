"""Elections (§5.2): the pre-vote (diss. §9.6), the campaign, counting votes, and how a node votes (Figure 2:
one vote per term, only for a log at least as up to date as its own, §5.4.1).

A part of ``Raft`` (``raft.py``; ``state.py`` says how the parts fit): its methods run on the one ``Raft`` object.
"""

from __future__ import annotations

from .state import RaftState
from .types import CAMPAIGN_TRANSFER, NONE, Message, MsgType, Role

_RESP = {MsgType.VOTE: MsgType.VOTE_RESP, MsgType.PRE_VOTE: MsgType.PRE_VOTE_RESP}


class ElectionRole(RaftState):
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
        # From any member, a voter or not in our configuration: a node that missed the configuration promoting the
        # candidate still votes, as Raft has it (who a vote goes to never touches safety; a disruptive removed node
        # is kept off by the leader lease above). Ignoring non-voters once left a cluster with no leader for good
        # (simulator seed 91): a node that still saw the candidate as a learner was the vote it needed.
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
