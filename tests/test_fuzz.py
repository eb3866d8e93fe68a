"""Property-based fuzzing (hypothesis): the wire codec and the Raft core against hostile input.

- The codec: for any byte string, any msgpack value of any shape, and mutations of valid messages, ``decode``
  returns a message or raises ``ProtocolError``, nothing else; and so does the client's ``decode_replies``.
- The core: well-typed messages with adversarial field values, from members and strangers, never make ``step``
  raise; and a cluster that also receives them from outside its configuration stays safe and live.

The number of examples is bounded for CI (derandomized: the same examples every run). A longer campaign:
``ZRAFT_FUZZ_EXAMPLES=20000 ZRAFT_FUZZ_RANDOM=1 python -m pytest tests/test_fuzz.py``.
"""

from __future__ import annotations

import os
import types
import typing
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from raftutil import Network, new_raft

from zraft.core import MAX_TERM, ClusterConfig, Entry, Message, MsgType, Raft, Role, Snapshot
from zraft.transport import codec, requests

EXAMPLES = int(os.environ.get("ZRAFT_FUZZ_EXAMPLES", "300"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=not os.environ.get("ZRAFT_FUZZ_RANDOM"),
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large], database=None)

# ------------------------------------------------------------------------------------------------ codec

big_ints = st.one_of(st.integers(-(2**64), 2**64), st.sampled_from([0, 1, 2, MAX_TERM, MAX_TERM + 1, 2**63 - 1,
                                                                     2**64 - 1, -1]))
scalars = st.one_of(st.none(), st.booleans(), big_ints, st.floats(allow_nan=True), st.text(max_size=20),
                    st.binary(max_size=40), st.sampled_from(["R", "C", "S", "A", "op", "id", "key", "value",
                                                             *requests.OPS]))
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=16),
    st.dictionaries(st.one_of(st.text(max_size=8), st.sampled_from([
        "op", "id", "key", "value", "client", "seq", "ack", "stale", "len", "nx", "xx", "get", "by", "pairs", "node",
        "address", "index", "term", "offset", "length"])), inner, max_size=8)),
    max_leaves=60)


def _decodes_or_protocol_error(payload: bytes) -> None:
    try:
        kind, msg = codec.decode(payload)
    except codec.ProtocolError:
        return
    assert kind in ("raft", "snap_chunk", "snap_ack", "client", "client_batch")
    if kind == "raft":
        assert isinstance(msg, Message)
    elif kind == "client":
        _assert_well_typed(msg)
    elif kind == "client_batch":
        for r in msg:
            if not isinstance(r, codec.ProtocolError):
                _assert_well_typed(r)


def _assert_well_typed(r: object, top: bool = True) -> None:
    """A decoded request is one of the request records, each field of the type it declares (the node reads them
    without checking again; a transaction's compares and operations too), its unsigned fields in range."""
    assert not top or type(r) in requests.OP_OF
    assert isinstance(r, tuple)
    hints = typing.get_type_hints(type(r))
    for name, v in zip(type(r)._fields, r, strict=True):  # type: ignore[attr-defined]
        want = typing.get_origin(hints[name]) or hints[name]
        if want is types.UnionType:  # bytes | None, bytes | int
            assert type(v) in typing.get_args(hints[name]), (type(r).__name__, name, v)
            continue
        assert type(v) is want, (type(r).__name__, name, v)
        if want is tuple:
            item = typing.get_args(hints[name])[0]
            for x in v:
                assert type(x) is item, (name, x)
                if item is not bytes:
                    _assert_well_typed(x, top=False)
        if want is int and name != "by":
            assert 0 <= v <= codec.MAX_INT, (name, v)


def _replies_or_protocol_error(payload: bytes) -> None:
    try:
        replies = codec.decode_replies(payload)
    except codec.ProtocolError:
        return
    for r in replies:
        assert isinstance(r, dict) and type(r["id"]) is int and type(r["ok"]) is bool


@FUZZ
@given(st.binary(max_size=300))
def test_codec_any_bytes(payload: bytes) -> None:
    _decodes_or_protocol_error(payload)
    _replies_or_protocol_error(payload)


@FUZZ
@given(values)
def test_codec_any_msgpack_value(v: Any) -> None:
    try:
        payload = msgpack.packb(v, use_bin_type=True)
    except (OverflowError, ValueError, TypeError):
        return
    _decodes_or_protocol_error(payload)
    _replies_or_protocol_error(payload)
    for tag in ("R", "S", "A", "C"):
        p2 = msgpack.packb([tag, v], use_bin_type=True)
        _decodes_or_protocol_error(p2)
        _replies_or_protocol_error(p2)


REQUESTS = [
    requests.Put(1, 5, 1, 1, b"k", b"v", nx=True, get=True), requests.Append(2, 5, 2, 1, b"k", b"v", length=True),
    requests.Delete(3, 5, 3, 1, b"k"), requests.Incr(4, 5, 4, 1, b"n", -3), requests.GetDel(5, 5, 5, 1, b"k"),
    requests.MSet(6, 5, 6, 1, (b"a", b"1", b"b", b"2")), requests.Get(7, b"k", stale=True), requests.Status(8),
    requests.Probe(9), requests.Members(10), requests.AddLearner(11, 4, "127.0.0.1:7004"), requests.Promote(12, 4),
    requests.Remove(13, 4), requests.Transfer(14, 2), requests.Backup(15), requests.BackupChunk(16, 9, 2, 0, 4096),
    requests.BackupEnd(17, 9, 2), requests.Range(18, b"a", b"b", 5, keys_only=True, count_only=True, stale=True),
    requests.Txn(19, 5, 7, 1, (requests.Compare(b"k", "value", "=", b"v"), requests.Compare(b"k", "version", ">", 2)),
                 (requests.TxnOp("put", b"k", b"w"), requests.TxnOp("delete_range", b"a", None),
                  requests.TxnOp("range", b"a", b"b", 3)),
                 (requests.TxnOp("get", b"k"), requests.TxnOp("put", b"k", b"v", 4))),
    requests.LeaseGrant(20, 5, 8, 1, 5000, lease=9), requests.LeaseRevoke(21, 5, 9, 1, 9),
    requests.LeaseKeepAlive(22, 9), requests.LeaseTTL(23, lease=9), requests.LeaseTTL(24, key=b"k"),
    requests.Expire(25, 5, 10, 1, b"k", None), requests.Expire(26, 5, 11, 1, b"k", -5),
    requests.Put(27, 5, 12, 1, b"k", b"v", lease=9), requests.Put(28, 5, 13, 1, b"k", b"v", xx=True, ttl_ms=100),
    requests.Put(29, 5, 14, 1, b"k", b"v", keep_ttl=True), requests.Watch(30, b"a", b"b", 7, prev_kv=True),
    requests.Watch(31, b"p", None, 0, False, True), requests.WatchAck(32, 30, 9), requests.WatchCancel(33, 30),
    requests.WatchStart(34)]
"""One request of every kind, with its options set."""


def test_every_request_kind_goes_to_the_wire_and_back_unchanged() -> None:
    assert {type(r) for r in REQUESTS} == set(requests.OP_OF)
    kind, got = codec.decode(codec.encode_requests(REQUESTS))
    assert kind == "client_batch" and got == REQUESTS
    for r in REQUESTS:
        assert codec.decode(codec.encode_client(requests.to_wire(r))) == ("client", r)


def _valid_bodies() -> list[list[Any]]:
    snap = Snapshot(5, 2, ClusterConfig((1, 2, 3)), b"data")
    raft = [msgpack.unpackb(codec.encode_raft(m)) for m in (
        Message(MsgType.APPEND, 1, 2, 3, 2, 7, (Entry(8, 3, 0, b"x"), Entry(9, 3, 1, b"")), 6),
        Message(MsgType.HEARTBEAT_RESP, 2, 1, 3, context=4),
        Message(MsgType.SNAPSHOT, 1, 2, 3, snapshot=snap))]
    chunk = msgpack.unpackb(codec.encode_chunk(codec.SnapChunk(1, 2, 3, 5, 2, 100, 0, b"abc")))
    ack = msgpack.unpackb(codec.encode_ack(codec.SnapAck(2, 1, 3, 5, 2, 3, codec.ACK_OK)))
    put = ["C", {"id": 1, "op": "put", "client": 5, "seq": 1, "ack": 1, "key": b"k", "value": b"v"}]
    batch = ["C", [put[1], {"id": 2, "op": "get", "key": b"k"}, {"id": 3, "op": "status"}]]
    every = ["C", [requests.to_wire(r) for r in REQUESTS]]
    reply = ["C", [{"id": 1, "ok": True, "rev": 7}, {"id": 2, "ok": True, "value": b"v", "found": True, "rev": 7},
                   {"id": 4, "ok": True, "rev": 9, "kvs": [[b"k", b"v", 2, 9, 3]], "count": 4, "more": True},
                   {"id": 3, "ok": False, "error": "not_leader", "message": "x", "leader": 2, "leader_addr": "a:1"}]]
    return [*raft, chunk, ack, put, batch, every, reply]


VALID = _valid_bodies()


def _replace(body: Any, path: list[int], v: Any) -> Any:
    """``body`` with the element at ``path`` (indexes into nested lists and maps' values) replaced by ``v``."""
    if not path:
        return v
    if isinstance(body, list) and body:
        i = path[0] % len(body)
        return [*body[:i], _replace(body[i], path[1:], v), *body[i + 1:]]
    if isinstance(body, dict) and body:
        k = sorted(body, key=str)[path[0] % len(body)]
        return {**body, k: _replace(body[k], path[1:], v)}
    return v


@FUZZ
@given(st.sampled_from(range(len(VALID))), st.lists(st.integers(0, 20), min_size=1, max_size=4), values)
def test_codec_valid_messages_with_one_field_replaced(which: int, path: list[int], v: Any) -> None:
    try:
        payload = msgpack.packb(_replace(VALID[which], path, v), use_bin_type=True)
    except (OverflowError, ValueError, TypeError):
        return
    _decodes_or_protocol_error(payload)
    _replies_or_protocol_error(payload)


@FUZZ
@given(st.sampled_from(range(len(VALID))), st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)),
                                                    min_size=1, max_size=6), st.integers(0, 10_000))
def test_codec_valid_messages_with_bytes_changed_or_cut(which: int, edits: list[tuple[int, int]], cut: int) -> None:
    buf = bytearray(msgpack.packb(VALID[which], use_bin_type=True))
    for at, b in edits:
        buf[at % len(buf)] = b
    _decodes_or_protocol_error(bytes(buf))
    _decodes_or_protocol_error(bytes(buf[: cut % (len(buf) + 1)]))
    _replies_or_protocol_error(bytes(buf))


# ------------------------------------------------------------------------------------------------- core

ints = st.one_of(st.integers(0, 12), st.integers(0, MAX_TERM + 5), st.sampled_from([MAX_TERM, MAX_TERM + 1,
                                                                                     2**63 - 1]))
entries = st.lists(st.builds(Entry, ints, ints, st.sampled_from([0, 1, 2]), st.binary(max_size=4)), max_size=4)
snapshots = st.one_of(st.none(), st.builds(Snapshot, ints, ints, st.just(ClusterConfig((1, 2, 3))),
                                           st.just(b"")))


def messages(srcs: st.SearchStrategy[int]) -> st.SearchStrategy[Message]:
    return st.builds(Message, st.sampled_from(list(MsgType)), srcs, st.sampled_from([1, 1, 1, 2, 9]), ints, ints,
                     ints, entries.map(tuple), ints, st.booleans(), ints, st.one_of(st.none(), ints), snapshots)


def _check_log(r: Raft) -> None:
    lg = r.log
    assert lg.snap_index <= lg.applied <= lg.commit <= lg.last_index
    for i, e in enumerate(lg.entries):
        assert e.index == lg.snap_index + 1 + i
    assert r.term <= MAX_TERM + 1


def _node_in_role(role: int) -> tuple[Network, Raft]:
    nodes = [new_raft(i, 3, pre_vote=True, check_quorum=True) for i in (1, 2, 3)]
    net = Network(*nodes)
    if role == 1:
        net.elect(1)
        net.propose(1, b"a", b"b")
    elif role == 2:
        net.elect(2)
        net.propose(2, b"a")
    elif role == 3:
        nodes[0].campaign()
    return net, nodes[0]


@FUZZ
@given(st.integers(0, 3), st.lists(st.one_of(messages(st.sampled_from([1, 2, 3, 0, 4, 99])),
                                             st.just("tick"), st.just("read"), st.just("propose")), max_size=25))
def test_core_never_raises_on_well_typed_messages(role: int, script: list[Any]) -> None:
    _, r = _node_in_role(role)
    for i, m in enumerate(script):
        if m == "tick":
            r.tick()
        elif m == "read":
            r.read_index(i)
        elif m == "propose":
            if r.role == Role.LEADER:
                r.propose([b"p%d" % i])
        else:
            r.step(m)
        rd = r.ready()
        _check_log(r)
        assert all(isinstance(x, Message) for x in rd.messages)


@FUZZ
@given(st.lists(st.tuples(st.integers(0, 2), messages(st.sampled_from([0, 4, 5, 99]))), max_size=30),
       st.integers(0, 1000))
def test_core_cluster_stays_safe_and_live_with_messages_from_strangers(bad: list[tuple[int, Message]],
                                                                       seed: int) -> None:
    nodes = [new_raft(i, 3, pre_vote=True, check_quorum=True, seed=seed + i) for i in (1, 2, 3)]
    net = Network(*nodes)
    net.elect(1 + seed % 3)
    leader = nodes[seed % 3]
    committed: list[Entry] = []
    for k, (target, m) in enumerate(bad):
        nodes[target].step(m._replace(dst=nodes[target].id))  # a stranger's message, addressed correctly
        if k % 3 == 0:
            net.propose(leader.id, b"w%d" % k)
        net.tick_all(1)
    net.tick_all(5)
    assert sum(1 for n in nodes if n.role == Role.LEADER) == 1
    assert leader.role == Role.LEADER  # strangers cannot depose it
    n = net.propose(leader.id, b"last")
    for r in nodes:
        _check_log(r)
        assert r.log.commit >= n
        assert not r.dropped or all("not from a member" in k for k in r.dropped)
        committed.append(r.log.entries[n - 1])
    assert committed[0] == committed[1] == committed[2]


def test_entries_packed_once_for_several_followers_give_the_same_bytes() -> None:
    """The leader packs the entries of an APPEND once and reuses them for every follower (``encode_raft``'s
    cache): each message is byte for byte what packing it whole gives, and decodes to the message sent."""
    cache: dict[tuple[int, int, int], bytes] = {}
    big = tuple(Entry(i, 3, 0, b"y" * i) for i in range(1, 300))
    for ents in ((), (Entry(5, 2, 1, b""),), big, big[10:], big[:-1]):
        for dst in (2, 3, 70_000):
            for ctx in (None, 7, 2**40):
                m = Message(MsgType.APPEND, 1, dst, 2**33, 2, 4, ents, 9, False, 0, ctx)
                packed = codec.encode_raft(m, cache)
                assert packed == codec.encode_raft(m)
                assert codec.decode(packed) == ("raft", m)
    assert len(cache) == 4  # one packing per distinct run of entries, not per follower


def test_a_range_is_a_prefix_or_has_an_end_and_its_fields_are_checked() -> None:
    def wire(**fields: Any) -> Any:
        return requests.from_wire({"op": "range", "id": 1, "key": b"cfg/", **fields})

    assert wire(prefix=True) == requests.Range(1, b"cfg/", b"cfg0")
    assert wire(prefix=True, key=b"a\xff\xff") == requests.Range(1, b"a\xff\xff", b"b")
    assert wire(prefix=True, key=b"") == requests.Range(1, b"", None)  # every key
    assert wire(end=b"cfh", limit=requests.MAX_RANGE_KEYS) == requests.Range(1, b"cfg/", b"cfh", 10_000)
    for bad, why in [({"prefix": True, "end": b"x"}, "not both"), ({"end": "x"}, "end must be bytes"),
                     ({"limit": requests.MAX_RANGE_KEYS + 1}, "limit must be"), ({"limit": -1}, "limit must be"),
                     ({"keys_only": 1}, "keys_only must be a boolean"), ({"key": None}, "key must be bytes")]:
        with pytest.raises(requests.ProtocolError, match=why):
            wire(**bad)


def test_a_transaction_s_compares_and_operations_are_checked() -> None:
    def wire(**fields: Any) -> Any:
        return requests.from_wire({"op": "txn", "id": 1, "client": 2, "seq": 3, "ack": 1, **fields})

    assert wire() == requests.Txn(1, 2, 3, 1, (), ())  # nothing asked: an empty transaction, applied as one
    assert wire(then=[["delete", b"k"]]).then == (requests.TxnOp("delete", b"k"),)
    for bad, why in [
            ({"if": [[b"k", "value", "=", 3]]}, "value compare's operand must be bytes"),
            ({"if": [[b"k", "version", "=", b"3"]]}, "operand must be an unsigned integer"),
            ({"if": [[b"k", "size", "=", 3]]}, "target is one of"), ({"if": [[b"k", "mod_revision", ">=", 3]]}, "cmp"),
            ({"if": [[b"k", "value", "="]]}, "a compare is"), ({"if": "x"}, "field if must be a list"),
            ({"then": [["put", b"k"]]}, "a put in a transaction"), ({"then": [["get", b"k", b"x"]]}, "a get in"),
            ({"then": [["incr", b"k"]]}, "kind one of"), ({"else": [["range", b"a", None, -1]]}, "limit"),
            ({"then": [["delete", b"k", None, 3]]}, "only a range has one"),
            ({"then": [["get", b"k"]] * (requests.MAX_TXN_OPS + 1)}, "at most 128")]:
        with pytest.raises(requests.ProtocolError, match=why):
            wire(**bad)
