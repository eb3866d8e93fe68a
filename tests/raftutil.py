"""Helpers for driving Raft cores by hand: build nodes, collect their messages, deliver them."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable

from zraft.core import ClusterConfig, Entry, HardState, Message, MsgType, Options, Raft, ReadState, Ready, Role

ELECTION = 10
HEARTBEAT = 1


def new_raft(node_id: int, n: int = 3, *, pre_vote: bool = False, check_quorum: bool = False,
             entries: Iterable[Entry] = (), hard_state: HardState | None = None, seed: int | None = None,
             **opts: int) -> Raft:
    """A node of an n-node cluster. PreVote and CheckQuorum are off unless asked for, so that each test sees
    the plain rule of the paper it checks."""
    o = Options(election_ticks=ELECTION, heartbeat_ticks=HEARTBEAT, pre_vote=pre_vote, check_quorum=check_quorum,
                **opts)
    ents = list(entries)
    hs = hard_state or HardState()
    return Raft(node_id, ClusterConfig(tuple(range(1, n + 1))), random.Random(node_id if seed is None else seed),
                o, hs, None, ents)


def ready(r: Raft) -> Ready:
    return r.ready()


def msgs(r: Raft) -> list[Message]:
    """Carry out the node's ready batch and return the messages it sends."""
    return r.ready().messages


def msgs_of(r: Raft, t: MsgType) -> list[Message]:
    return [m for m in msgs(r) if m.type == t]


def tick_until_election(r: Raft) -> None:
    for _ in range(2 * ELECTION):
        r.tick()
        if r.role != Role.FOLLOWER:
            return
    raise AssertionError("no election within 2 election timeouts")


def become_leader(r: Raft) -> None:
    """Make ``r`` leader through a real election: campaign, then grant it every vote."""
    r.campaign()
    for _ in range(2):  # a pre-vote round, then a vote round
        if r.role == Role.LEADER:
            break
        for m in msgs(r):
            if m.type in (MsgType.PRE_VOTE, MsgType.VOTE):
                resp = MsgType.PRE_VOTE_RESP if m.type == MsgType.PRE_VOTE else MsgType.VOTE_RESP
                r.step(Message(resp, m.dst, r.id, m.term))
    assert r.role == Role.LEADER


def ents(*terms: int, start: int = 1) -> list[Entry]:
    """Entries with the given terms at consecutive indexes from ``start``."""
    return [Entry(start + i, t, 0, f"e{start + i}t{t}".encode()) for i, t in enumerate(terms)]


class Network:
    """Delivers messages between cores until nothing moves (etcd's test network)."""

    def __init__(self, *rafts: Raft) -> None:
        self.peers = {r.id: r for r in rafts}
        self.dropped: set[tuple[int, int]] = set()
        self.filter: Callable[[Message], bool] | None = None
        self.delivered: list[Message] = []
        self.read_states: dict[int, list[ReadState]] = {i: [] for i in self.peers}

    def _drain(self, r: Raft) -> list[Message]:
        rd = r.ready()
        self.read_states[r.id].extend(rd.read_states)
        return rd.messages

    def add(self, r: Raft) -> None:
        """A node joins the network (e.g. one waiting to be added to the configuration)."""
        self.peers[r.id] = r
        self.read_states[r.id] = []

    def cut(self, a: int, b: int) -> None:
        self.dropped |= {(a, b), (b, a)}

    def isolate(self, i: int) -> None:
        for j in self.peers:
            if j != i:
                self.cut(i, j)

    def recover(self) -> None:
        self.dropped = set()

    def send(self, *initial: Message) -> None:
        queue = list(initial)
        for r in self.peers.values():
            queue.extend(self._drain(r))
        while queue:
            m = queue.pop(0)
            if (m.src, m.dst) in self.dropped or (self.filter and not self.filter(m)):
                continue
            r = self.peers.get(m.dst)
            if r is None:
                continue
            self.delivered.append(m)
            r.step(m)
            queue.extend(self._drain(r))

    def settle(self) -> None:
        self.send()

    def elect(self, i: int) -> None:
        self.peers[i].campaign()
        self.settle()
        assert self.peers[i].role == Role.LEADER, f"node {i} did not win"

    def propose(self, i: int, *datas: bytes) -> int:
        idx = self.peers[i].propose(list(datas))
        self.settle()
        return idx

    def tick_all(self, n: int = 1) -> None:
        for _ in range(n):
            for r in self.peers.values():
                r.tick()
            self.settle()
