"""Revisions in the key-value state machine: the store's revision, each key's create/mod revision and version, when
they begin (a log entry every node applies at the same index), snapshots of them (format 5) and of the releases
before (which kept none), and range reads over the ordered index."""

from __future__ import annotations

import random

import msgpack
import pytest

from zraft.statemachine import kv
from zraft.statemachine.kv import KVStore


def _do(s: KVStore, op: int, seq: int, key: bytes, value: bytes = b"", client: int = 9) -> tuple[int, int]:
    """Apply one command in ``client``'s session: (status, the revision it answers with)."""
    status = s.apply(s.applied + 1, kv.encode_command(op, client, seq, 1, key, value))[2]
    return status, s.rev


def _begin(s: KVStore) -> None:
    for c in s.leader_commands():
        s.apply(s.applied + 1, c)


def test_revisions_begin_at_their_entry_and_every_change_advances_them_by_one() -> None:
    s = KVStore()
    assert _do(s, kv.PUT, 1, b"old", b"o") == (kv.OK, 0)  # before revisions: none kept, as the releases before
    assert s.revision == 0 and s.leader_commands()
    _begin(s)
    assert s.revision == 1 and s.leader_commands() == []
    assert s.meta(b"old") == (b"o", 1, 1, 1)  # written before they began
    assert _do(s, kv.PUT, 2, b"a", b"1") == (kv.OK, 2)
    assert s.meta(b"a") == (b"1", 2, 2, 1)
    assert _do(s, kv.PUT, 3, b"a", b"2") == (kv.OK, 3)
    assert _do(s, kv.APPEND, 4, b"a", b"+") == (kv.OK, 4)
    assert s.meta(b"a") == (b"2+", 2, 4, 3)
    assert _do(s, kv.PUT, 5, b"old", b"p") == (kv.OK, 5)
    assert s.meta(b"old") == (b"p", 1, 5, 2)
    assert _do(s, kv.DELETE, 6, b"a") == (kv.OK, 6) and s.meta(b"a") is None
    assert _do(s, kv.DELETE, 7, b"a") == (kv.NOT_FOUND, 6)  # nothing changed: the store's revision
    assert _do(s, kv.APPEND, 8, b"a", b"x") == (kv.OK, 7)
    assert s.meta(b"a") == (b"x", 7, 7, 1)  # made again: a new life
    pairs = msgpack.packb([b"m1", b"1", b"m2", b"2", b"a", b"y"])
    assert _do(s, kv.MSET, 9, b"", pairs) == (kv.OK, 8)  # one revision for the whole write
    assert [s.meta(k) for k in (b"m1", b"m2", b"a")] == [(b"1", 8, 8, 1), (b"2", 8, 8, 1), (b"y", 7, 8, 2)]
    assert _do(s, kv.INCRBY, 10, b"n", b"5") == (kv.OK, 9)
    assert _do(s, kv.INCRBY, 11, b"a", b"5") == (kv.NOT_INTEGER, 9)
    assert _do(s, kv.SET, 12, b"n", bytes([kv.SET_NX]) + b"0") == (kv.NOT_SET, 9)
    assert _do(s, kv.SET, 13, b"n", bytes([kv.SET_XX]) + b"0") == (kv.OK, 10)
    assert _do(s, kv.GETDEL, 14, b"n") == (kv.OK, 11)
    assert _do(s, kv.GETDEL, 15, b"n") == (kv.NOT_FOUND, 11)
    assert _do(s, kv.PUT, 16, b"k" * (kv.MAX_KEY_BYTES + 1), b"") == (kv.TOO_LARGE, 11)
    # A retry answers the revision its write was applied at, and changes nothing.
    assert _do(s, kv.PUT, 3, b"a", b"2") == (kv.OK, 3)
    assert _do(s, kv.INCRBY, 10, b"n", b"5") == (kv.OK, 9) and s.result == b"5"
    assert s.revision == 11 and s.get(b"a") == b"y"
    _begin(s)  # a second start (two leaders proposed it) changes nothing
    assert s.revision == 11


def _legacy_log(n: int, seed: int) -> list[bytes]:
    """``n`` writes of three clients of their own."""
    rng = random.Random(seed)
    out = []
    for i in range(1, n + 1):
        op = rng.choice([kv.PUT, kv.APPEND, kv.DELETE, kv.INCRBY])
        value = b"%d" % rng.randrange(9)
        out.append(kv.encode_command(op, 10 * seed + i % 3, i, i, b"k%d" % rng.randrange(30), value))
    return out


def test_nodes_that_start_from_snapshots_of_an_earlier_release_at_different_indexes_agree_on_every_revision() -> None:
    # Entries 1-300 were applied by a release without revisions, which took its snapshots at different indexes
    # on different nodes; then a leader of this release began revisions, and the writes went on.
    log = _legacy_log(300, seed=1)
    log.append(KVStore().leader_commands()[0])
    log += _legacy_log(200, seed=2)
    states = []
    for cut in (0, 40, 150, 300):
        old = KVStore()
        for i, c in enumerate(log[:cut], 1):
            old.apply(i, c)
        s = KVStore.restore(old.snapshot())  # format 3 or 4: values alone
        for i, c in enumerate(log[cut:], cut + 1):
            s.apply(i, c)
        assert s.revision > 1
        states.append(s.state())
    assert all(st == states[0] for st in states)


@pytest.mark.parametrize("cut", [5, 60])
def test_a_snapshot_keeps_every_revision_format_5(cut: int) -> None:
    s = KVStore()
    log = _legacy_log(cut, seed=3)
    for c in log:
        s.apply(s.applied + 1, c)
    _begin(s)
    for c in _legacy_log(100, seed=4):
        s.apply(s.applied + 1, c)
    blob = s.snapshot()
    up = msgpack.Unpacker()
    up.feed(blob)
    assert next(up) == [5, s.applied, len(s), len(s.sessions), s.revision]
    t = KVStore.restore(blob)
    assert t.state() == s.state() and list(t.index) == sorted(s.to_dict())
    assert _do(t, kv.PUT, 999, b"k1", b"z") == _do(s, kv.PUT, 999, b"k1", b"z")
    assert t.state() == s.state()


def _format5(entries: list[object], revision: int = 10) -> bytes:
    return msgpack.packb([5, 1, len(entries) // 2, 0, revision]) + msgpack.packb(entries)


@pytest.mark.parametrize("bad", [
    [b"v", 3, 2, 1],  # made after its last change
    [b"v", 1, 11, 1],  # a revision past the store's
    [b"v", 0, 1, 1],
    [b"v", 1, 1, 0],  # version 0
    [b"v", 1, 1],
    ["v", 1, 1, 1],
    7,
])
def test_a_snapshot_whose_revisions_cannot_be_is_refused(bad: object) -> None:
    assert KVStore.restore(_format5([b"k", [b"v", 1, 2, 2]])).meta(b"k") == (b"v", 1, 2, 2)
    with pytest.raises(ValueError, match="does not decode"):
        KVStore.restore(_format5([b"k", bad]))
    with pytest.raises(ValueError, match="does not decode"):
        KVStore.restore(msgpack.packb([5, 1, 0, 0, 0]))  # format 5 has revisions


def test_range_reads_keys_in_order_with_limits_and_counts() -> None:
    s = KVStore()
    _begin(s)
    rng = random.Random(7)
    keys = [b"p/%03d" % i for i in range(200)] + [b"a", b"p", b"p0", b"q", b"\xff"]
    rng.shuffle(keys)
    for i, k in enumerate(keys, 1):
        _do(s, kv.PUT, i, k, b"v" * (i % 7))
    _do(s, kv.DELETE, 999, b"p/100")
    in_p = sorted(k for k in keys if k.startswith(b"p/") and k != b"p/100")
    assert s.range(b"p/", b"p0", 1000, 1 << 20) == (in_p, 199)
    assert s.range(b"p/", b"p0", 10, 1 << 20) == (in_p[:10], 199)
    assert s.range(b"p/050", b"p/060", 1000, 1 << 20) == (in_p[50:60], 10)
    assert s.range(b"p", None, 1000, 1 << 20)[0][-2:] == [b"q", b"\xff"]
    assert s.range(b"r", b"s", 1000, 1 << 20) == ([], 0)
    assert s.range(b"z", b"a", 1000, 1 << 20) == ([], 0)
    got, count = s.range(b"", None, 1000, 20)  # about 20 bytes of keys and values, but at least one key
    assert 1 <= len(got) < 10 and count == len(s)
    assert s.range(b"", None, 1000, 0)[0] == [b"a"]
