"""Watches on one node: the store's changes (every write, in revision order; none from a transaction refused), the
history they go into (bounded, whole revisions, ``compacted`` for a start before it), and the watchers served from
it: their ranges, each change once in order and one revision per message, progress when idle, acks that keep a
watch, and the cut-offs (behind its acks, history jumped, not acked)."""

from __future__ import annotations

from typing import Any

import pytest

from zraft.client import txn as t
from zraft.server import watches as wmod
from zraft.server.watches import Watches
from zraft.statemachine.kv import KVStore
from zraft.transport import requests as r


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


_seq = iter(range(1, 10**7))


def _store() -> KVStore:
    s = KVStore()
    for c in s.leader_commands():
        s.apply(s.applied + 1, c)
    s.events = []
    return s


def _do(s: KVStore, req: Any) -> int:
    n = next(_seq)
    cmd = s.command(req._replace(client=3, seq=n, ack=1))
    assert isinstance(cmd, bytes)
    return s.apply(s.applied + 1, cmd)[2]


def _put(s: KVStore, k: bytes, v: bytes = b"v", **kw: Any) -> None:
    _do(s, r.Put(0, 0, 0, 0, k, v, **kw))


class _Node:
    """A store and its watches, as a replica wires them."""

    def __init__(self) -> None:
        self.s = _store()
        self.clock = _Clock()
        self.sent: list[tuple[bytes, dict[str, Any]]] = []
        self.w = Watches(self.clock, lambda ident, msg: self.sent.append((ident, msg)))
        self.w.reset(self.s.revision)
        self.s.events = self.w.events  # (as the replica wires them)

    def pass_(self) -> None:
        self.w.applied(self.s.revision)
        self.w.send()
        self.w.seal()

    def got(self, ident: bytes = b"c", wid: int | None = None) -> list[dict[str, Any]]:
        out = [m for i, m in self.sent if i == ident and (wid is None or m["id"] == wid)]
        self.sent = [(i, m) for i, m in self.sent if not (i == ident and (wid is None or m["id"] == wid))]
        return out

    def events(self, ident: bytes = b"c", wid: int | None = None) -> list[tuple[str, bytes, int]]:
        return [(e[0], e[1], e[4]) for m in self.got(ident, wid) for e in m.get("events", [])]


def test_every_change_is_an_event_in_revision_order() -> None:
    s = _store()
    _put(s, b"a")
    _do(s, r.Append(0, 0, 0, 0, b"a", b"+"))
    _do(s, r.Delete(0, 0, 0, 0, b"a"))
    _do(s, r.Delete(0, 0, 0, 0, b"a"))  # nothing to delete: no change
    _do(s, r.MSet(0, 0, 0, 0, (b"m1", b"1", b"m2", b"2")))
    _do(s, r.Txn(0, 0, 0, 0, (), (t.put("x", "1"), t.delete("m1"), t.delete("none"))))
    _do(s, r.Txn(0, 0, 0, 0, (), (t.put("y", "1"), t.put("big", "x", 999))))  # refused (no lease 999): no events
    lease = int(s.result or 0) if _do(s, r.LeaseGrant(0, 0, 0, 0, 5000)) == 0 else 0
    _put(s, b"l", lease=lease)
    s.apply(s.applied + 1, s.expire_command([lease]))
    assert s.events is not None
    flat = s.events
    got = [(rev, k, None if new is None else new[0], None if old is None else old[0], expired)
           for rev, k, new, old, expired in (flat[i : i + 5] for i in range(0, len(flat), 5))]
    assert got == [(2, b"a", b"v", None, False), (3, b"a", b"v+", b"v", False), (4, b"a", None, b"v+", False),
                   (5, b"m1", b"1", None, False), (5, b"m2", b"2", None, False), (6, b"x", b"1", None, False),
                   (6, b"m1", None, b"1", False), (7, b"l", b"v", None, False), (8, b"l", None, b"v", True)]


def test_watchers_get_their_range_from_their_revision_once_and_in_order() -> None:
    n = _Node()
    _put(n.s, b"cfg/a")
    n.pass_()
    n.w.watch(b"c", r.Watch(1, b"cfg/", b"cfg0", start_revision=2))  # (a prefix: [cfg/, cfg0))
    n.w.watch(b"c", r.Watch(2, b"cfg/b"))  # one key, from the next revision
    n.w.watch(b"c", r.Watch(3, b"", whole=True, prev_kv=True))  # every key
    header = n.got()
    assert [(m["id"], m["watching"], m["rev"], m["n"]) for m in header] == [(1, True, 2, 0), (2, True, 2, 0),
                                                                           (3, True, 2, 0)]
    _put(n.s, b"cfg/b")
    _put(n.s, b"other")
    _do(n.s, r.MSet(0, 0, 0, 0, (b"cfg/b", b"2", b"cfg/c", b"3")))
    n.pass_()
    assert n.events(wid=1) == [("put", b"cfg/a", 2), ("put", b"cfg/b", 3), ("put", b"cfg/b", 5), ("put", b"cfg/c", 5)]
    assert n.events(wid=2) == [("put", b"cfg/b", 3), ("put", b"cfg/b", 5)]
    third = n.got(wid=3)
    assert [e[1] for m in third for e in m["events"]] == [b"cfg/b", b"other", b"cfg/b", b"cfg/c"]
    assert third[0]["events"][2][6] == b"v" and third[0]["n"] == 1  # its value before (prev_kv)
    n.pass_()
    assert n.got() == []  # nothing new, and not idle a second yet
    n.clock.now += wwait()
    n.pass_()
    assert {m["id"]: (m["events"], m["rev"], m["n"]) for m in n.got()} == {1: ([], 5, 2), 2: ([], 5, 2),
                                                                          3: ([], 5, 2)}


def wwait() -> float:
    return wmod.PROGRESS_S


def test_one_revision_goes_in_one_message_and_a_pass_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wmod, "BATCH_EVENTS", 3)
    monkeypatch.setattr(wmod, "SEND_PER_PASS", 5)
    n = _Node()
    n.w.watch(b"c", r.Watch(1, b"", whole=True))
    n.got()
    _do(n.s, r.MSet(0, 0, 0, 0, tuple(x for i in range(4) for x in (b"a%d" % i, b"v"))))  # 4 events at revision 2
    for i in range(6):
        _put(n.s, b"b%d" % i)
    n.pass_()
    first = n.got()
    assert [len(m["events"]) for m in first] == [4] and first[0]["rev"] == 2  # the whole revision, past the batch
    n.pass_()
    n.pass_()
    n.pass_()
    rest = n.got()
    assert [e[4] for m in rest for e in m["events"]] == [3, 4, 5, 6, 7, 8] and [m["n"] for m in rest] == [2, 3]


def test_a_start_before_the_history_is_compacted_and_a_jump_cuts_watchers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wmod, "HISTORY_EVENTS", 8)
    n = _Node()
    for i in range(12):
        _put(n.s, b"k%d" % i)
        n.pass_()  # (a pass's changes are one piece of the history: it drops whole passes)
    assert n.w.compact > 2 and n.w.count <= 8 and n.w.events == []
    n.w.watch(b"c", r.Watch(1, b"k1", start_revision=2))
    (refused,) = n.got()
    assert refused["error"] == "compacted" and refused["compact_revision"] == n.w.compact
    assert f"the oldest kept is {n.w.compact}" in refused["message"]
    n.w.watch(b"c", r.Watch(2, b"k11", start_revision=n.w.compact))
    n.pass_()
    assert n.events(wid=2) == [("put", b"k11", 13)]
    n.w.watch(b"c", r.Watch(3, b"zz"))  # nothing sent yet: it has not had revision 14
    n.got()
    n.w.reset(20)  # a snapshot installed at revision 20
    cut = n.got()
    assert sorted((m["id"], m["error"]) for m in cut) == [(2, "compacted"), (3, "compacted")]
    assert n.w.watchers == {}


def test_acks_keep_a_watch_and_a_watcher_that_falls_behind_is_cut(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wmod, "MAX_UNACKED_EVENTS", 5)
    n = _Node()
    n.w.watch(b"c", r.Watch(1, b"", whole=True))
    n.w.watch(b"d", r.Watch(1, b"", whole=True))
    n.got(b"c")
    n.got(b"d")
    for i in range(4):
        _put(n.s, b"k%d" % i)
    n.pass_()
    assert n.w.ack(b"c", 1, n.s.revision) and not n.w.ack(b"c", 99, 1)
    for i in range(4):
        _put(n.s, b"j%d" % i)
    n.pass_()
    assert [m.get("error") for m in n.got(b"c")] == [None, None]
    d = n.got(b"d")
    assert d[-1]["error"] == "watch_cut" and "behind its acks" in d[-1]["message"] and (b"d", 1) not in n.w.watchers
    # Not acked for WATCH_EXPIRY_S: dropped (its client went away).
    n.clock.now += wmod.WATCH_EXPIRY_S + 1
    n.pass_()
    assert n.w.watchers == {}
    assert n.w.cancel(b"c", 1) is False


def test_a_node_serves_a_bounded_number_of_watches(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wmod, "MAX_WATCHERS", 2)
    n = _Node()
    for i in range(3):
        n.w.watch(b"c", r.Watch(i + 1, b"k"))
    assert [m.get("error") for m in n.got()] == [None, None, "busy"]
    with pytest.raises(r.ProtocolError, match="empty"):
        r.from_wire({"op": "watch", "id": 1, "key": b"b", "end": b"a"})
    with pytest.raises(r.ProtocolError, match="one of them"):
        r.from_wire({"op": "watch", "id": 1, "key": b"b", "prefix": True, "all": True})
    assert r.from_wire({"op": "watch", "id": 1, "key": b"", "prefix": True}) == r.Watch(1, b"", None, 0, False, True)
