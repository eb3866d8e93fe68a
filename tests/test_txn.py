"""Transactions in the key-value state machine: compares, both branches, every operation and its result, one
revision per transaction, all or nothing, exactly once, bounds; and in a snapshot."""

from __future__ import annotations

import msgpack
import pytest

from zraft.client import txn as t
from zraft.statemachine import kv, kvtxn
from zraft.statemachine.kv import KVStore
from zraft.transport.requests import Compare, Put, Txn, TxnOp


def _store() -> KVStore:
    s = KVStore()
    for c in s.leader_commands():
        s.apply(s.applied + 1, c)
    return s


_seq = iter(range(1, 10**6))


def _txn(s: KVStore, compares: list[Compare], then: list[TxnOp], otherwise: list[TxnOp] | None = None,
         seq: int | None = None) -> dict[str, object]:
    """Apply a transaction as a leader would log it: its answer (with ``rev``)."""
    req = Txn(1, 7, next(_seq) if seq is None else seq, 1, tuple(compares), tuple(then), tuple(otherwise or ()))
    cmd = s.command(req)
    assert isinstance(cmd, bytes), cmd
    status = s.apply(s.applied + 1, cmd)[2]
    return {"status": status, "rev": s.rev, **(s.answer(req, status) or {})}


def _put(s: KVStore, key: bytes, value: bytes) -> int:
    cmd = s.command(Put(1, 8, next(_seq), 1, key, value))
    assert isinstance(cmd, bytes)
    s.apply(s.applied + 1, cmd)
    return s.rev


def test_compares_choose_the_branch_and_every_operation_answers() -> None:
    s = _store()
    r1 = _put(s, b"a", b"1")
    r2 = _put(s, b"b", b"2")
    a = _txn(s, [t.value("a") == b"1", t.version("b") == 1, t.mod_revision("b") > r1, t.create_revision("a") < r2,
                 t.version("none") == 0, t.value("b") != b"x"],
             [t.put("a", "10"), t.get("a"), t.delete("b"), t.delete("none"), t.get("b"), t.get_range(prefix="")],
             [t.get("a")])
    rev = r2 + 1
    assert a["succeeded"] is True and a["rev"] == rev == s.revision
    assert a["results"] == [None, [b"10", r1, rev, 2], 1, 0, None, [[[b"a", b"10", r1, rev, 2]], 1, False]]
    # The else branch, read-only: no new revision.
    b = _txn(s, [t.value("a") == b"1"], [t.put("a", "x")], [t.get("a"), t.get_range("a", "b")])
    assert b["succeeded"] is False and b["rev"] == rev == s.revision
    assert b["results"] == [[b"10", r1, rev, 2], [[[b"a", b"10", r1, rev, 2]], 1, False]]
    # A missing key's value compares false, whatever the operator; its revisions are 0.
    for c in (t.value("none") == b"", t.value("none") != b"x", t.value("none") < b"z", t.value("none") > b""):
        assert _txn(s, [c], [t.put("z", "1")])["succeeded"] is False
    assert _txn(s, [t.mod_revision("none") < 1, t.create_revision("none") == 0], [])["succeeded"] is True
    assert _txn(s, [t.value("a") > b"1", t.value("a") < b"2"], [])["succeeded"] is True  # bytewise
    assert _txn(s, [], [])["succeeded"] is True  # no compare: then


def test_a_transaction_is_one_revision_whatever_it_writes_and_sees_its_own_writes() -> None:
    s = _store()
    r0 = s.revision
    a = _txn(s, [], [t.put("k", "1"), t.put("k", "2"), t.get("k"), t.put("j", "x"), t.delete("j"), t.get("j")])
    assert a["rev"] == r0 + 1 == s.revision
    assert a["results"] == [None, None, [b"2", r0 + 1, r0 + 1, 2], None, 1, None]
    assert s.meta(b"k") == (b"2", r0 + 1, r0 + 1, 2) and b"j" not in s
    # Deletes of nothing change nothing: no revision.
    assert _txn(s, [], [t.delete("j"), t.delete_range(prefix="nothing/")])["rev"] == r0 + 1 == s.revision


def test_delete_range_removes_the_range_and_a_range_too_large_changes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kv, "MAX_DELETE_RANGE", 5)
    s = _store()
    for i in range(8):
        _put(s, b"p/%d" % i, b"v")
    before = s.state()
    a = _txn(s, [], [t.put("q", "1"), t.delete_range(prefix="p/")])  # 8 keys: over the bound
    assert a["status"] == kv.TOO_LARGE and a["ok"] is False and s.state()[1:3] == before[1:3]
    assert list(s.index) == sorted(k for k in s.to_dict())
    a = _txn(s, [], [t.delete_range("p/2", "p/6"), t.get_range(prefix="p/")])
    assert a["results"][0] == 4 and [kv_[0] for kv_ in a["results"][1][0]] == [b"p/0", b"p/1", b"p/6", b"p/7"]
    assert list(s.index) == [b"p/0", b"p/1", b"p/6", b"p/7"]


def test_a_retried_transaction_is_answered_again_not_applied_again() -> None:
    s = _store()
    first = _txn(s, [t.version("c") == 0], [t.put("c", "1")], [t.get("c")], seq=1000)
    again = _txn(s, [t.version("c") == 0], [t.put("c", "1")], [t.get("c")], seq=1000)
    assert first == again and first["succeeded"] is True
    assert _txn(s, [t.version("c") == 0], [t.put("c", "1")], [t.get("c")])["succeeded"] is False
    restored = KVStore.restore(s.snapshot())
    assert restored.state() == s.state()
    assert _txn(restored, [t.version("c") == 0], [t.put("c", "1")], [t.get("c")], seq=1000) == first


def test_too_large_parts_are_refused_before_the_log_and_a_bad_command_applies_as_nothing() -> None:
    s = _store()
    big = b"v" * (kv.MAX_VALUE_BYTES + 1)
    for req in (Txn(1, 7, 1, 1, (), (t.put("k", big),)), Txn(1, 7, 1, 1, (t.value("k") == big,), ()),
                Txn(1, 7, 1, 1, (), (), (t.get(b"k" * (kv.MAX_KEY_BYTES + 1)),)),
                Txn(1, 7, 1, 1, (), (t.get_range("a", b"z" * (kv.MAX_KEY_BYTES + 1)),))):
        out = s.command(req)
        assert isinstance(out, tuple) and out[0] == "too_large", req
    before = s.state()
    for value in (msgpack.packb([[], [["incr", b"k", None, 0]], []]), msgpack.packb([[[b"k", [], "=", 3]], [], []]),
                  msgpack.packb([[[b"k", "value", "=", 3]], [], []]), msgpack.packb([[[b"k", "size", "=", 3]], [], []]),
                  msgpack.packb([[[b"k", "version", "~", 3]], [], []]),
                  msgpack.packb([[], [["put", b"k", None, 0]], []]), msgpack.packb([[], [["put", b"k", b"v"]], []]),
                  msgpack.packb([[], [["put", b"a", b"1", 0], ["range", b"a", None, -1]], []]),
                  b"\xc1", msgpack.packb([1, 2])):
        cmd = kv.encode_command(kv.TXN, 7, next(_seq), 1, b"", value)
        assert s.apply(s.applied + 1, cmd)[2] == kv.BAD_COMMAND
    assert s.state()[1:3] == before[1:3]


def test_a_big_read_in_a_transaction_is_bounded_and_not_kept_for_a_retry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kvtxn, "MAX_RANGE_BYTES", 1000)
    s = _store()
    for i in range(30):
        _put(s, b"r/%02d" % i, b"v" * 100)
    a = _txn(s, [], [t.get_range(prefix="r/"), t.get_range(prefix="r/")], seq=5000)
    first, second = a["results"]
    assert 1 <= len(first[0]) <= 10 and first[1] == 30 and first[2] is True
    assert len(second[0]) == 1 and second[2] is True  # the budget is the transaction's: at least one key each
    monkeypatch.setattr(kv, "MAX_CACHED_RESULT", 100)
    a = _txn(s, [], [t.get_range(prefix="r/")], seq=5001)
    assert a["succeeded"] is True
    assert _txn(s, [], [t.get_range(prefix="r/")], seq=5001)["status"] == kv.RESULT_LOST


def test_append_in_a_transaction_and_one_past_the_limit_undoes_the_rest() -> None:
    s = _store()
    a = _txn(s, [], [t.append("l", "1;"), t.append("l", "2;"), t.get("l")])
    assert a["results"][:2] == [None, None] and a["results"][2][0] == b"1;2;"
    _put(s, b"big", b"v" * (kv.MAX_VALUE_BYTES - 1))
    before = s.state()
    a = _txn(s, [], [t.append("l", "3;"), t.append("big", "vv")])
    assert a["status"] == kv.TOO_LARGE and s.state()[1:3] == before[1:3]
