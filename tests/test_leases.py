"""Leases in the key-value state machine and the leader's lessor: grant, attach, revoke, expire (every attached key
deleted in one entry, at one revision), keys' own TTLs (Redis's), which writes keep a key's lease and which drop it,
transactions, limits, exactly once, snapshots taken while leases change; and the leader's deadlines (a new leader
extends every lease, a lease being expired takes no keepalive, expiry in bounded entries)."""

from __future__ import annotations

import copy
import io
from typing import Any

import msgpack
import pytest

from zraft.client import txn as t
from zraft.server.lessor import EXPIRE_KEYS, Lessor
from zraft.statemachine import kv, leases
from zraft.statemachine.kv import KVStore
from zraft.transport import requests as r
from zraft.transport.requests import ProtocolError, from_wire


def _store() -> KVStore:
    s = KVStore()
    for c in s.leader_commands():
        s.apply(s.applied + 1, c)
    return s


_seq = iter(range(1, 10**7))


def _do(s: KVStore, req: Any, seq: int | None = None) -> dict[str, Any]:
    """Apply a write as a leader would log it: its status, revision and answer."""
    n = next(_seq) if seq is None else seq
    req = req._replace(client=5, seq=n, ack=1)
    cmd = s.command(req)
    assert isinstance(cmd, bytes), cmd
    status = s.apply(s.applied + 1, cmd)[2]
    return {"status": status, "rev": s.rev, **(s.answer(req, status) or {})}


def _grant(s: KVStore, ttl_ms: int = 5000, lease: int = 0) -> int:
    a = _do(s, r.LeaseGrant(0, 0, 0, 0, ttl_ms, lease))
    assert a["status"] == kv.OK, a
    got: int = a["lease"]
    return got


def _put(s: KVStore, key: bytes, value: bytes = b"v", **opts: Any) -> dict[str, Any]:
    return _do(s, r.Put(0, 0, 0, 0, key, value, **opts))


def _expire(s: KVStore, *ids: int) -> None:
    s.apply(s.applied + 1, s.expire_command(list(ids)))


def test_a_lease_deletes_its_keys_at_one_revision_when_revoked_or_expired() -> None:
    s = _store()
    a, b = _grant(s), _grant(s, 3000)
    assert (a, b) == (1, 2)
    _put(s, b"a1", lease=a)
    _put(s, b"a2", lease=a)
    _put(s, b"b1", lease=b)
    _put(s, b"free")
    before = s.revision
    assert s.leases.state() == (3, {1: (5000, False, frozenset({b"a1", b"a2"})), 2: (3000, False, frozenset({b"b1"}))})
    assert _do(s, r.LeaseRevoke(0, 0, 0, 0, a))["status"] == kv.OK
    assert s.revision == before + 1 and sorted(s.to_dict()) == [b"b1", b"free"]
    assert _do(s, r.LeaseRevoke(0, 0, 0, 0, a))["status"] == kv.NO_LEASE
    _expire(s, b, 99)  # (99: not a lease; an expiry of a lease gone meanwhile changes nothing)
    assert s.revision == before + 2 and sorted(s.to_dict()) == [b"free"] and s.leases.state() == (3, {})
    _expire(s, b)
    assert s.revision == before + 2
    assert _put(s, b"x", lease=b)["error"] == "no_lease"
    assert b"x" not in s


def test_which_writes_keep_a_keys_lease() -> None:
    s = _store()
    lease = _grant(s)
    for k in (b"put", b"append", b"incr", b"keep", b"del", b"getdel", b"mset", b"set"):
        _put(s, k, b"1", lease=lease)
    _put(s, b"put", b"2")
    _do(s, r.Append(0, 0, 0, 0, b"append", b"2"))
    _do(s, r.Incr(0, 0, 0, 0, b"incr", 1))
    _put(s, b"keep", b"2", keep_ttl=True)
    _do(s, r.Delete(0, 0, 0, 0, b"del"))
    _do(s, r.GetDel(0, 0, 0, 0, b"getdel"))
    _do(s, r.MSet(0, 0, 0, 0, (b"mset", b"2")))
    _put(s, b"set", b"2", nx=False, xx=True)
    assert s.leases.table[lease].keys == {b"append", b"incr", b"keep"}
    assert s.leases.of_key == dict.fromkeys((b"append", b"incr", b"keep"), lease)
    _do(s, r.LeaseRevoke(0, 0, 0, 0, lease))
    assert sorted(s.to_dict()) == [b"mset", b"put", b"set"]


def test_a_keys_own_ttl_is_a_lease_of_that_key_alone() -> None:
    s = _store()
    assert _do(s, r.Expire(0, 0, 0, 0, b"none", 1000))["found"] is False
    _put(s, b"k", ttl_ms=1000)
    (own,) = s.leases.table
    assert s.leases.table[own].solo and s.leases.of_key == {b"k": own}
    rev = s.revision
    assert _do(s, r.Expire(0, 0, 0, 0, b"k", 5000))["done"] is True  # a new TTL: a new lease, the old one dropped
    (again,) = s.leases.table
    assert again != own and s.leases.table[again].ttl_ms == 5000 and s.revision == rev  # the key did not change
    # Its own lease takes no other key, and is not a client's to keep alive or revoke.
    assert _put(s, b"other", lease=again)["error"] == "no_lease"
    assert _do(s, r.LeaseRevoke(0, 0, 0, 0, again))["status"] == kv.NO_LEASE
    assert _do(s, r.Expire(0, 0, 0, 0, b"k", None))["done"] is True  # PERSIST
    assert s.leases.table == {} and _do(s, r.Expire(0, 0, 0, 0, b"k", None))["done"] is False
    _put(s, b"k", ttl_ms=1000)
    _put(s, b"k", b"new")  # a plain write drops the TTL, as in Redis
    assert s.leases.table == {}
    assert _do(s, r.Expire(0, 0, 0, 0, b"k", 0))["done"] is True and b"k" not in s  # at most 0: deleted now
    assert s.revision == rev + 3


def test_transactions_attach_keys_all_or_nothing() -> None:
    s = _store()
    lease = _grant(s)
    _put(s, b"old", lease=lease)
    a = _do(s, r.Txn(0, 0, 0, 0, (), (t.put("k", "1", lease), t.delete("old"), t.put("plain", "1"))))
    assert a["succeeded"] and s.leases.table[lease].keys == {b"k"}
    # A put on a lease that is gone refuses the whole transaction: nothing changed, leases included.
    b = _do(s, r.Txn(0, 0, 0, 0, (), (t.put("k", "2"), t.put("j", "1", 777))))
    assert b["error"] == "no_lease" and s.get(b"k") == b"1" and s.leases.table[lease].keys == {b"k"}
    c = _do(s, r.Txn(0, 0, 0, 0, (), (t.put("k", "2"), t.delete_range("a", "z"), t.put("m", "3", lease))))
    assert c["succeeded"] and s.leases.of_key == {b"m": lease} and sorted(s.to_dict()) == [b"m"]
    with pytest.raises(ProtocolError, match="lease"):
        from_wire({"op": "txn", "id": 1, "client": 1, "seq": 1, "ack": 1, "then": [["put", b"k", b"v", -1]]})


def test_limits_and_a_retried_grant(monkeypatch: pytest.MonkeyPatch) -> None:
    s = _store()
    monkeypatch.setattr(leases, "MAX_KEYS_PER_LEASE", 2)
    monkeypatch.setattr(leases, "MAX_LEASES", 3)
    first = _do(s, r.LeaseGrant(0, 0, 0, 0, 4000), seq=1000)
    again = _do(s, r.LeaseGrant(0, 0, 0, 0, 4000), seq=1000)  # a retry: the same lease, not a second one
    assert first["lease"] == again["lease"] == 1 and len(s.leases) == 1
    assert _do(s, r.LeaseGrant(0, 0, 0, 0, 4000, 1))["error"] == "lease_exists"
    assert _grant(s, lease=40) == 40 and _grant(s) == 41  # ids asked for move the next free one past them
    assert _do(s, r.LeaseGrant(0, 0, 0, 0, 4000))["error"] == "lease_limit"
    assert _put(s, b"t", ttl_ms=5)["error"] == "lease_limit"
    _put(s, b"a", lease=1)
    _put(s, b"b", lease=1)
    assert _put(s, b"c", lease=1)["error"] == "lease_limit" and b"c" not in s
    assert _put(s, b"a", b"again", lease=1)["status"] == kv.OK  # a key it holds may be written again
    for bad in ({"ttl_ms": leases.MIN_LEASE_TTL_MS - 1}, {"ttl_ms": leases.MAX_TTL_MS + 1}, {"ttl_ms": "1"},
                {"ttl_ms": 5000, "lease": -1}):
        with pytest.raises(ProtocolError, match=r"ttl_ms|lease"):
            from_wire({"op": "lease_grant", "id": 1, "client": 1, "seq": 1, "ack": 1, **bad})
    with pytest.raises(ProtocolError, match="one of lease"):
        from_wire({"op": "put", "id": 1, "client": 1, "seq": 1, "ack": 1, "key": b"k", "value": b"v", "lease": 1,
                   "ttl_ms": 5})
    with pytest.raises(ProtocolError, match="a lease or a key"):
        from_wire({"op": "lease_ttl", "id": 1})
    # A malformed command from the log changes nothing, on every node alike.
    for op, value in ((kv.LEASE_GRANT, msgpack.packb([0, 1])), (kv.LEASE_GRANT, b"\xc1"),
                      (kv.LEASE_REVOKE, b"x"), (kv.EXPIRE, msgpack.packb("1"))):
        st = s.leases.state()
        assert s.apply(s.applied + 1, kv.encode_command(op, 9, next(_seq), 1, b"a", value))[2] in (
            kv.BAD_COMMAND, kv.NO_LEASE)
        assert s.leases.state() == st


def test_leases_in_a_snapshot_taken_while_they_change() -> None:
    s = _store()
    a = _grant(s)
    _put(s, b"a", lease=a)
    _put(s, b"own", ttl_ms=100)
    _put(s, b"plain")
    img = s.begin_snapshot()
    moment = copy.deepcopy(s.state())
    b = _grant(s)
    _put(s, b"b", lease=b)
    _put(s, b"a2", lease=a)
    _expire(s, *s.leases.table)  # every lease of the moment, changed and dropped after it
    data = b"".join(img.chunks())
    s.end_snapshot()
    back = KVStore.restore(data)
    assert back.state() == moment
    assert KVStore.restore(s.snapshot()).state() == s.state()
    head = next(iter(msgpack.Unpacker(io.BytesIO(data), raw=False)))
    assert head[0] == 6 and head[5:] == [2, 3, False]
    # Without any lease ever, the snapshot is format 5, as the release before wrote.
    assert next(iter(msgpack.Unpacker(io.BytesIO(_store().snapshot()), raw=False)))[0] == 5


def test_a_snapshot_whose_leases_do_not_match_its_keys_is_refused() -> None:
    s = _store()
    _put(s, b"a", lease=_grant(s))
    data = s.snapshot()
    bad = data.replace(msgpack.packb([b"a"], use_bin_type=True), msgpack.packb([b"z"], use_bin_type=True), 1)
    assert bad != data
    with pytest.raises(ValueError, match="not in the store"):
        KVStore.restore(bad)


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_lessor_extends_leases_for_a_new_leader_and_expires_in_bounded_entries() -> None:
    s = _store()
    clock = _Clock()
    lessor = Lessor(clock, extension_s=1.0)
    big = _grant(s, 2000)
    for i in range(EXPIRE_KEYS + 5):
        _put(s, b"k%d" % i, lease=big)
    small = [_grant(s, 2000) for _ in range(3)]
    lessor.elected(s.applied + 1)
    assert lessor.keepalive(big)["error"] == "busy"  # not before its own term's first entry is applied
    lessor.promote(s.leases)
    clock.now += 2.5  # past every TTL, not past TTL + extension
    assert lessor.due() == []
    assert lessor.keepalive(small[0])["ttl_ms"] == 2000
    clock.now += 0.6
    due = lessor.due()
    assert due == [[big], small[1:]]  # the big lease alone in its entry; the one kept alive not yet
    assert lessor.keepalive(big)["error"] == "no_lease"  # being expired: no more time
    assert lessor.time_to_live(small[0], None)["remaining_ms"] == 1400
    for ids in due:
        s.apply(s.applied + 1, s.expire_command(ids))
    assert lessor.expiring == set() and set(s.leases.table) == {small[0]}
    new = _grant(s, 3000)  # granted while it leads: a deadline from now
    assert lessor.time_to_live(new, None)["remaining_ms"] == 3000
    lessor.stop()
    assert lessor.deadlines == {} and s.leases.granted is None and lessor.keepalive(new)["error"] == "busy"
