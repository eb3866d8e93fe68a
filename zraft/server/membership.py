"""Membership changes and leadership transfers that clients ask a node for, and who the members are.

The core decides (``zraft.core.raft``: one voter at a time, only after an entry of the leader's term committed,
learners promoted once caught up); this module turns the clients' requests -- ``add_learner``, ``promote``,
``remove``, ``transfer``, ``members`` -- into the core's calls, answers each when its outcome is known (the
change's entry applied; the new leader leading; refused at once with the reason), and keeps the members'
addresses and keys (``zraft.transport.members``) for the node's connections. Requests are idempotent: asking for
what already holds is answered OK at once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from zraft.core import NONE, ClusterConfig, ConfigChangeError, NotLeader, Raft, Role
from zraft.transport import members
from zraft.transport.codec import Err
from zraft.transport.members import Member
from zraft.transport.requests import AddLearner, MemberChange, Promote, Transfer

log = logging.getLogger("zraft.replica")

Reply = Callable[[bytes, dict[str, Any], bool], None]
"""How an answer goes to a client: (identity, answer, batched)."""


@dataclass(slots=True)
class Waiter:
    """A client waiting for a membership change or a transfer."""

    identity: bytes
    req_id: int
    batched: bool


class Membership:
    def __init__(self, node_id: int, raft: Raft, addresses: dict[int, str], keys: dict[int, str], reply: Reply,
                 leader_info: Callable[[], dict[str, Any]]) -> None:
        """``addresses``: the replica's map of every node's address (updated here as configurations change);
        ``keys``: the bootstrap members' public keys."""
        self.id = node_id
        self.raft = raft
        self.addresses = addresses
        self.reply = reply
        self.leader_info = leader_info
        self.bootstrap = {i: Member(i, a, keys.get(i, "")) for i, a in addresses.items()}
        """The members the node was started with (a cluster that never changed its membership has no others)."""
        self.members: dict[int, Member] = {}
        """The members of the configuration in force, with their addresses and keys."""
        self.on_config: Callable[[dict[int, Member]], None] | None = None
        """Called with the members whenever the configuration in force changes (and at start): the node connects
        to new members and admits only their keys."""
        self.pending: dict[int, list[Waiter]] = {}
        """Membership changes waiting for their entry (by index) to commit."""
        self.transfer: tuple[int, int, Waiter] | None = None
        """A leadership transfer a client waits for: (target, the tick it was asked at, who asked)."""
        self.ticks = 0

    def config_changed(self, cfg: ClusterConfig) -> None:
        self.members = members.resolve(cfg, self.bootstrap)
        self.addresses.update((i, m.address) for i, m in self.members.items())
        if self.on_config is not None:
            self.on_config(self.members)

    def answer_members(self, identity: bytes, rid: int, batched: bool) -> None:
        """The leader's view: voters, learners, each member's address and match index, a change under way."""
        raft = self.raft
        cfg = raft.config
        rows = []
        for i in cfg.members:
            m = self.members.get(i)
            pr = raft.prs.get(i)
            match = raft.last_index if i == self.id else pr.match if pr is not None else 0
            rows.append([i, m.address if m else "", "voter" if i in cfg.voters else "learner", match])
        reply: dict[str, Any] = {"id": rid, "ok": True, "voters": list(cfg.voters), "learners": list(cfg.learners),
                                 "members": rows, "leader": self.id, "last_index": raft.last_index}
        if raft.pending_config_index > raft.commit_index:
            reply["pending_config_index"] = raft.pending_config_index
        if raft.transferee != NONE:
            reply["transferee"] = raft.transferee
        self.reply(identity, reply, batched)

    def change(self, identity: bytes, req: MemberChange, batched: bool) -> None:
        """add_learner / promote / remove / transfer, at the leader (the caller checked). Answered when the change
        commits (or the new leader leads); at once when there is nothing to do or it is refused."""
        raft, rid, node = self.raft, req.id, req.node
        cfg = raft.config
        ok = {"id": rid, "ok": True}
        try:
            if isinstance(req, Transfer):
                if node == self.id:
                    self.reply(identity, ok, batched)
                    return
                if self.transfer is not None:
                    raise ConfigChangeError(f"a transfer to node {self.transfer[0]} is under way", "busy")
                raft.transfer_leadership(node)
                log.info("node=%d event=transfer_leadership target=%d", self.id, node)
                self.transfer = (node, self.ticks, Waiter(identity, rid, batched))
                return
            if isinstance(req, AddLearner):
                new = Member(node, req.address, req.key)
                if node in cfg.members:
                    cur = self.members.get(node)
                    if cur is not None and cur.address == new.address:
                        self.reply(identity, ok, batched)
                        return
                    raise ConfigChangeError(f"node {node} is already a member, at {cur.address if cur else '?'}; "
                                            "remove it first to change its address")
                target = members.with_change(cfg, self.bootstrap, cfg.voters, (*cfg.learners, node), new)
            elif isinstance(req, Promote):
                if node in cfg.voters:
                    self.reply(identity, ok, batched)
                    return
                if node not in cfg.learners:
                    raise ConfigChangeError(f"node {node} is not a learner of this cluster: add it first")
                target = members.with_change(cfg, self.bootstrap, (*cfg.voters, node),
                                             tuple(v for v in cfg.learners if v != node))
            else:  # remove
                if node not in cfg.members:
                    self.reply(identity, ok, batched)
                    return
                target = members.with_change(cfg, self.bootstrap, tuple(v for v in cfg.voters if v != node),
                                             tuple(v for v in cfg.learners if v != node))
            index = raft.propose_config(target)
            log.info("node=%d event=config_proposed index=%d voters=%s learners=%s", self.id, index,
                     list(target.voters), list(target.learners))
        except ValueError as e:  # a configuration that cannot exist (too many members, ...)
            self.reply(identity, {"id": rid, "ok": False, "error": Err.CONFIG_REFUSED, "message": str(e)}, batched)
            return
        except ConfigChangeError as e:
            code = {"busy": Err.BUSY, "not_caught_up": Err.NOT_CAUGHT_UP}.get(e.code, Err.CONFIG_REFUSED)
            self.reply(identity, {"id": rid, "ok": False, "error": code, "message": str(e)}, batched)
            return
        except NotLeader:  # a transfer is under way
            self.reply(identity, {"id": rid, "ok": False, "error": Err.BUSY,
                                  "message": f"leadership is being transferred to node {raft.transferee}"}, batched)
            return
        self.pending.setdefault(index, []).append(Waiter(identity, rid, batched))

    def applied(self, index: int) -> None:
        """The configuration entry at ``index`` was applied: its requests are answered."""
        for w in self.pending.pop(index, ()):
            self.reply(w.identity, {"id": w.req_id, "ok": True}, w.batched)

    def leadership_lost(self) -> None:
        """This node stopped leading. A change already committed is answered when applied, even by a leader that
        just removed itself; the others' outcome is unknown."""
        commit = self.raft.commit_index
        for index in [i for i in self.pending if i > commit]:
            for w in self.pending.pop(index):
                self.reply(w.identity, {"id": w.req_id, "ok": False, "error": Err.LEADER_CHANGED,
                                        "message": "leadership changed; the membership change may or may not have "
                                        "been made: check members and retry", **self.leader_info()}, w.batched)

    def check_transfer(self) -> None:
        """Answer the transfer under way once its outcome is known: the target leads, or it did not take over."""
        assert self.transfer is not None  # the caller checked
        target, since, w = self.transfer
        raft = self.raft
        if raft.lead == target and raft.role != Role.LEADER:
            answer: dict[str, Any] = {"id": w.req_id, "ok": True}
        elif raft.role == Role.LEADER and raft.transferee == NONE:
            answer = {"id": w.req_id, "ok": False, "error": Err.TRANSFER_FAILED,
                      "message": f"node {target} did not take over within an election timeout"}
        elif raft.lead not in (NONE, target, self.id) or self.ticks - since > 3 * raft.opts.election_ticks:
            answer = {"id": w.req_id, "ok": False, "error": Err.TRANSFER_FAILED,
                      "message": f"node {target} did not take over; leader is {raft.lead or 'unknown'}"}
        else:
            return
        self.transfer = None
        self.reply(w.identity, answer, w.batched)
