"""The key-value state machine: operations, limits, exactly-once sessions, expiry, snapshots."""

from __future__ import annotations

import random
import zlib

import msgpack
import pytest

from zraft.statemachine import kv, kvsnapshot
from zraft.statemachine.kv import Command, KVStore, Op, Status


def run(store: KVStore, *cmds: Command) -> list[Status]:
    out = []
    for c in cmds:
        out.append(store.apply(store.applied + 1, c.encode())[2])
    return out


def test_put_append_delete_get() -> None:
    s = KVStore()
    assert run(s, Command(Op.APPEND, 1, 1, 1, b"k", b"a"), Command(Op.APPEND, 1, 2, 1, b"k", b"b")) == [Status.OK] * 2
    assert s.get(b"k") == b"ab"  # a missing key appends to the empty value
    run(s, Command(Op.PUT, 1, 3, 1, b"k", b"x"))
    assert s.get(b"k") == b"x"
    run(s, Command(Op.DELETE, 1, 4, 1, b"k"))
    assert s.get(b"k") is None


def test_retried_append_is_applied_once() -> None:
    s = KVStore()
    c = Command(Op.APPEND, 7, 1, 1, b"k", b"x")
    assert run(s, c, c, c) == [Status.OK] * 3
    assert s.get(b"k") == b"x"


def test_pipelined_requests_and_retries_out_of_order() -> None:
    s = KVStore()
    cmds = [Command(Op.APPEND, 3, q, 1, b"k", b"%d" % q) for q in range(1, 6)]
    run(s, *cmds[2:], *cmds[:2], *cmds)  # 3,4,5 then 1,2 then every one retried
    assert sorted(s.get(b"k") or b"") == sorted(b"34512")


def test_acknowledged_replies_are_forgotten() -> None:
    s = KVStore()
    run(s, *(Command(Op.PUT, 1, q, 1, b"k", b"v") for q in range(1, 100)))
    run(s, Command(Op.PUT, 1, 100, 100, b"k", b"w"))
    assert set(s.sessions[1].replies) == {100}  # ack passed 64: the answers below it are dropped
    assert run(s, Command(Op.APPEND, 1, 3, 100, b"k", b"!")) == [Status.SESSION_EXPIRED]
    assert s.get(b"k") == b"w"
    # A client that always acknowledges everything keeps at most about 64 answers, however long it runs.
    most = 0
    for q in range(101, 3000):
        run(s, Command(Op.PUT, 1, q, q, b"k", b"x"))
        most = max(most, len(s.sessions[1].replies))
    assert most <= 65


def test_limits() -> None:
    s = KVStore()
    big = b"x" * (kv.MAX_VALUE_BYTES + 1)
    assert run(s, Command(Op.PUT, 1, 1, 1, b"k" * (kv.MAX_KEY_BYTES + 1), b"v")) == [Status.TOO_LARGE]
    assert run(s, Command(Op.PUT, 1, 2, 1, b"k", big)) == [Status.TOO_LARGE]
    run(s, Command(Op.PUT, 1, 3, 1, b"k", b"x" * kv.MAX_VALUE_BYTES))
    assert run(s, Command(Op.APPEND, 1, 4, 1, b"k", b"y")) == [Status.TOO_LARGE]
    assert len(s.get(b"k") or b"") == kv.MAX_VALUE_BYTES
    assert kv.check_limits(b"k", big) is not None and kv.check_limits(b"k", b"v") is None


def test_sessions_expire_by_log_position(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kv, "SESSION_EXPIRY_ENTRIES", 100)
    monkeypatch.setattr(kv, "EXPIRY_CHECK_EVERY", 10)
    s = KVStore()
    run(s, Command(Op.PUT, 1, 1, 1, b"k", b"v"))
    for _ in range(200):
        s.apply_noop(s.applied + 1)
    assert 1 not in s.sessions
    # The client comes back with a later request: it cannot be told whether it applied, so it is refused.
    assert run(s, Command(Op.APPEND, 1, 2, 2, b"k", b"x")) == [Status.SESSION_EXPIRED]
    assert s.get(b"k") == b"v"


def test_snapshot_round_trip_keeps_sessions() -> None:
    rng = random.Random(1)
    s = KVStore()
    for q in range(1, 200):
        run(s, Command(rng.choice(list(Op)), rng.randrange(5), q, max(1, q - 10), b"k%d" % rng.randrange(9),
                       rng.randbytes(5)))
    t = KVStore.restore(s.snapshot())
    assert t.state() == s.state()
    # A retry after a restore from the snapshot is still answered from the session, not applied again.
    last = Command(Op.APPEND, 42, 1, 1, b"z", b"once")
    run(s, last)
    t = KVStore.restore(s.snapshot())
    run(t, last)
    assert t.get(b"z") == b"once"


def test_snapshot_of_unknown_format_is_refused() -> None:
    import msgpack

    with pytest.raises(ValueError, match="format 9"):
        KVStore.restore(msgpack.packb([9, 0, {}, {}]))
    with pytest.raises(ValueError, match="does not decode"):
        KVStore.restore(b"\xc1garbage")


def _random_writes(s: KVStore, rng: random.Random, n: int, keys: int = 300) -> None:
    for _ in range(n):
        op = rng.choice([Op.PUT, Op.APPEND, Op.APPEND, Op.DELETE])
        seq = s.applied + 1  # one client, in order: every command applies
        status = run(s, Command(op, 1, seq, seq, b"k%d" % rng.randrange(keys), b"%d," % rng.randrange(99)))
        assert status == [Status.OK] or (op == Op.DELETE and status == [Status.NOT_FOUND])


def _restored_state(blob_chunks: list[bytes]) -> object:
    return KVStore.restore_chunks(blob_chunks).state()


def test_snapshot_image_is_the_state_when_it_was_taken_despite_later_writes() -> None:
    rng = random.Random(5)
    s = KVStore()
    _random_writes(s, rng, 2000)
    want = KVStore.restore(s.snapshot()).state()
    img = s.begin_snapshot()
    pieces = img.chunks()
    first = [next(pieces)]  # the header, then interleave: serialize a little, write a little
    _random_writes(s, rng, 500)
    rest = list(pieces)
    s.end_snapshot()
    assert _restored_state(first + rest) == want
    assert s.state() != want  # the store did move on


def _any_writes(s: KVStore, rng: random.Random, n: int, keys: int) -> None:
    """Every kind of write, on few enough keys that they are made, deleted and made again."""
    for _ in range(n):
        k = b"k%d" % rng.randrange(keys)
        op = rng.choice([kv.PUT, kv.APPEND, kv.DELETE, kv.DELETE, kv.INCRBY, kv.SET, kv.GETDEL, kv.MSET, kv.TXN])
        value = b"%d" % rng.randrange(99)
        if op == kv.SET:
            value = bytes([rng.choice([0, kv.SET_NX, kv.SET_XX, kv.SET_GET])]) + value
        elif op == kv.MSET:
            k, value = b"", msgpack.packb([b"k%d" % rng.randrange(keys) if i % 2 == 0 else value for i in range(6)])
        elif op == kv.TXN:  # deletes, a small delete_range and puts in one step; now and then one that is undone
            a = b"k%d" % rng.randrange(keys)
            ops = [["delete", b"k%d" % rng.randrange(keys), None, 0], ["delete_range", a, a + b"\x01", 0],
                   ["put", b"k%d" % rng.randrange(keys), value, 0]]
            if rng.random() < 0.2:
                ops.append(["range", b"", None, -1])  # malformed: everything before it is undone
            k, value = b"", msgpack.packb([[], ops, []])
        status = s.apply(s.applied + 1, kv.encode_command(op, 1, s.applied + 1, s.applied + 1, k, value))[2]
        assert status in (kv.OK, kv.NOT_FOUND, kv.NOT_SET, kv.NOT_INTEGER, kv.BAD_COMMAND)


def test_snapshot_image_is_its_moment_whatever_writes_land_between_its_pieces(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Small pieces, so that writes land between the listing of one shard and the next, and inside a shard's keys:
    # keys made, deleted, deleted and made again, in shards listed and not yet listed.
    monkeypatch.setattr(kvsnapshot, "SNAPSHOT_CHUNK_PAIRS", 2)
    for seed in range(25):
        # The walk takes a few keys from the index at a time (or all): keys deleted ahead of it, made again
        # behind it or ahead of it, between its batches and inside one.
        monkeypatch.setattr(kvsnapshot, "WALK_KEYS", 3 if seed % 3 else 1024)
        rng = random.Random(seed)
        s = KVStore()
        _any_writes(s, rng, 1, keys=800)
        if seed % 2:  # with revisions (format 5), and without (3 and 4)
            s.apply(2, s.leader_commands()[0])
        _any_writes(s, rng, 3000, keys=800)
        want = KVStore.restore(s.snapshot()).state()
        img = s.begin_snapshot()
        out = []
        for piece in img.chunks():
            out.append(piece)
            _any_writes(s, rng, rng.randrange(12), keys=800)
        s.end_snapshot()
        assert len(out) > 150  # writes landed between the pieces, many times
        assert _restored_state(out) == want, seed
        assert s.state() != want  # the store did move on


def test_a_snapshot_image_that_lost_a_key_fails_rather_than_writing_a_short_snapshot() -> None:
    s = KVStore()
    run(s, *(Command(Op.PUT, 1, i, i, b"k%d" % i, b"v") for i in range(1, 100)))
    img = s.begin_snapshot()
    pieces = img.chunks()
    next(pieces)
    img.key_count += 1  # as if the copy-on-write had missed a key
    with pytest.raises(RuntimeError, match="99 keys serialized, 100 at its moment"):
        list(pieces)


def test_snapshot_restores_from_pieces_of_any_size_and_refuses_unknown_formats() -> None:
    s = KVStore()
    run(s, *(Command(Op.PUT, 1, i, i, b"k%d" % i, b"v" * i) for i in range(1, 200)))
    blob = s.snapshot()
    pieces = [blob[i : i + 7] for i in range(0, len(blob), 7)]
    assert KVStore.restore_chunks(pieces).state() == s.state()
    import msgpack

    with pytest.raises(ValueError, match="format 9 is not one this version reads"):
        KVStore.restore(msgpack.packb([9, 0, 0, {}]))
    with pytest.raises(ValueError, match="does not decode"):
        KVStore.restore(blob[: len(blob) // 2])
    old = msgpack.packb([1, s.applied, s.to_dict(), {}])  # format 1 is still read
    assert KVStore.restore(old).to_dict() == s.to_dict()


@pytest.mark.parametrize("window", [2048, 9000])
def test_a_client_with_many_writes_in_flight_keeps_every_unacknowledged_answer_in_bounded_memory(window: int) -> None:
    """Answers below ack are dropped in bulk, at most about as many as are kept (amortized O(1) per write); a
    window over half of MAX_REPLIES_PER_SESSION drops those before any unacknowledged answer."""
    s = KVStore()
    n = 30_000
    most = 0
    for q in range(1, n + 1):
        assert s.apply(q, kv.encode_command(kv.APPEND, 7, q, max(1, q - window), b"k", b"x"))[2] == kv.OK
        assert s.sessions[7].ack == max(1, q - window)  # no unacknowledged answer was dropped to make room
        most = max(most, len(s.sessions[7].replies))
    assert window < most <= 2 * window + 64
    ack = n - window
    i = n
    for q in (ack, ack + 1, n - 1, n):  # every unacknowledged write: answered from the session, not applied again
        i += 1
        assert s.apply(i, kv.encode_command(kv.APPEND, 7, q, ack, b"k", b"x")) == (7, q, kv.OK)
    i += 1
    assert s.apply(i, kv.encode_command(kv.APPEND, 7, ack - 1, ack, b"k", b"x"))[2] == kv.SESSION_EXPIRED
    assert len(s.get(b"k") or b"") == n


def test_a_session_that_never_advances_its_ack_keeps_a_bounded_number_of_answers() -> None:
    from zraft.statemachine import kv

    s = KVStore()
    for i in range(1, 100_001):  # 100,000 writes, ack stuck at 1
        assert s.apply(i, kv.encode_command(kv.APPEND, 7, i, 1, b"k", b"x"))[2] == kv.OK
    sess = s.sessions[7]
    assert len(sess.replies) <= kv.MAX_REPLIES_PER_SESSION
    assert len(s.get(b"k") or b"") == 100_000  # every write applied once
    # A retry of a recent write is answered from the session, not applied again; one whose answer was dropped
    # is refused as expired (outcome unknown to the client), never applied twice.
    n = 100_001
    assert s.apply(n, kv.encode_command(kv.APPEND, 7, 100_000, 1, b"k", b"x")) == (7, 100_000, kv.OK)
    assert s.apply(n + 1, kv.encode_command(kv.APPEND, 7, 5, 1, b"k", b"x"))[2] == kv.SESSION_EXPIRED
    assert len(s.get(b"k") or b"") == 100_000


def test_sessions_are_capped_idle_longest_dropped_first_the_same_on_every_node() -> None:
    from zraft.statemachine import kv

    a, b = KVStore(), KVStore()
    idx = 0
    for c in range(1, kv.MAX_SESSIONS + 2):
        idx += 1
        cmd = kv.encode_command(kv.PUT, c, 1, 1, b"k%d" % (c % 10), b"v")
        a.apply(idx, cmd)
        b.apply(idx, cmd)
        if c == 50_000:  # client 1 comes back: it is no longer among the idle longest
            idx += 1
            for s in (a, b):
                s.apply(idx, kv.encode_command(kv.PUT, 1, 2, 2, b"k", b"v"))
    assert len(a.sessions) <= kv.MAX_SESSIONS and a.state() == b.state()
    assert len(a.sessions) == kv.MAX_SESSIONS + 1 - kv.MAX_SESSIONS // 10
    assert 1 in a.sessions and 2 not in a.sessions and 10_001 not in a.sessions and 10_002 in a.sessions
    assert kv.MAX_SESSIONS + 1 in a.sessions
    idx += 1
    assert a.apply(idx, kv.encode_command(kv.PUT, 2, 2, 2, b"k", b"v"))[2] == kv.SESSION_EXPIRED


def test_snapshot_image_sessions_are_copied_on_write_new_changed_and_dropped_ones_too() -> None:
    from zraft.statemachine import kv

    rng = random.Random(11)
    s = KVStore()
    idx = 0

    def write(client: int, seq: int, ack: int) -> None:
        nonlocal idx
        idx += 1
        s.apply(idx, kv.encode_command(kv.APPEND, client, seq, ack, b"k%d" % rng.randrange(50), b"x"))

    for c in range(1, 3001):
        for q in range(1, 4):
            write(c, q, 1)
    want = KVStore.restore(s.snapshot()).state()
    img = s.begin_snapshot()
    pieces = img.chunks()
    first = [next(pieces), next(pieces)]  # the header and the first sessions
    for c in range(1, 3001, 7):  # changed sessions (ack moves, replies dropped), new ones
        write(c, 4, 4)
    for c in range(5000, 5100):
        write(c, 1, 1)
    s._drop_session(2999)  # as expiry or eviction would
    rest = list(pieces)
    s.end_snapshot()
    assert _restored_state(first + rest) == want
    assert s.state() != want


def test_snapshot_format_2_is_still_read() -> None:
    import msgpack

    old = [msgpack.packb([2, 7, 2, {5: [6, 1, {1: 0}]}]), msgpack.packb([b"a", b"1", b"b", b"2"])]
    kv2 = KVStore.restore_chunks(old)
    assert kv2.applied == 7 and kv2.to_dict() == {b"a": b"1", b"b": b"2"}
    assert kv2.sessions[5].last_index == 6 and kv2.sessions[5].replies == {1: 0}


def test_a_delete_says_whether_the_key_was_there_and_a_retry_gets_the_same_answer() -> None:
    s = KVStore()
    assert run(s, Command(Op.PUT, 1, 1, 1, b"k", b"v")) == [Status.OK]
    gone = Command(Op.DELETE, 1, 2, 1, b"k", b"")
    missing = Command(Op.DELETE, 1, 3, 1, b"k", b"")
    assert run(s, gone, missing, gone, missing) == [Status.OK, Status.NOT_FOUND, Status.OK, Status.NOT_FOUND]
    assert s.get(b"k") is None


def _raw_put(s: KVStore, key: bytes, value: bytes) -> None:
    """A value the commands could not have made (for the error paths)."""
    shard = s.shards[zlib.crc32(key) >> kv.SHARD_SHIFT]
    if key not in shard:
        s.index.add(key)
    shard[key] = value


def _do(s: KVStore, op: int, seq: int, key: bytes, value: bytes = b"") -> tuple[int, bytes | None]:
    status = s.apply(s.applied + 1, kv.encode_command(op, 9, seq, 1, key, value))[2]
    return status, s.result


def test_incrby_set_with_flags_getdel_mset_and_their_retries() -> None:
    s = KVStore()
    assert _do(s, kv.INCRBY, 1, b"n", b"5") == (kv.OK, b"5")
    assert _do(s, kv.INCRBY, 2, b"n", b"-7") == (kv.OK, b"-2")
    assert _do(s, kv.INCRBY, 1, b"n", b"5") == (kv.OK, b"5")  # a retry: the first answer, nothing applied again
    assert s.get(b"n") == b"-2"
    _raw_put(s, b"t", b"12 ")
    assert _do(s, kv.INCRBY, 3, b"t", b"1") == (kv.NOT_INTEGER, None) and s.get(b"t") == b"12 "
    for bad in (b"012", b"-0", b"+1", b"", b"1.5", b"99999999999999999999"):
        _raw_put(s, b"b", bad)
        assert _do(s, kv.INCRBY, 4 + len(bad), b"b", b"1")[0] == kv.NOT_INTEGER, bad
    _raw_put(s, b"max", b"%d" % (2**63 - 1))
    assert _do(s, kv.INCRBY, 30, b"max", b"1") == (kv.OVERFLOW, None)
    flags = bytes([kv.SET_NX | kv.SET_GET])
    assert _do(s, kv.SET, 31, b"x", flags + b"a") == (kv.OK, None) and s.get(b"x") == b"a"
    assert _do(s, kv.SET, 32, b"x", flags + b"b") == (kv.NOT_SET, b"a") and s.get(b"x") == b"a"
    assert _do(s, kv.SET, 33, b"y", bytes([kv.SET_XX]) + b"c") == (kv.NOT_SET, None) and s.get(b"y") is None
    assert _do(s, kv.SET, 34, b"x", bytes([kv.SET_XX | kv.SET_GET]) + b"d") == (kv.OK, b"a")
    assert _do(s, kv.GETDEL, 35, b"x") == (kv.OK, b"d") and s.get(b"x") is None
    assert _do(s, kv.GETDEL, 36, b"x") == (kv.NOT_FOUND, None)
    assert _do(s, kv.GETDEL, 35, b"x") == (kv.OK, b"d")  # a retry
    pairs = msgpack.packb([b"m1", b"1", b"m2", b"2"])
    assert _do(s, kv.MSET, 37, b"", pairs)[0] == kv.OK and (s.get(b"m1"), s.get(b"m2")) == (b"1", b"2")
    too_big = msgpack.packb([b"m3", b"3", b"m4", b"v" * (kv.MAX_VALUE_BYTES + 1)])
    assert _do(s, kv.MSET, 38, b"", too_big)[0] == kv.TOO_LARGE and s.get(b"m3") is None  # all or nothing
    assert _do(s, kv.MSET, 39, b"", msgpack.packb([b"odd"]))[0] == kv.BAD_COMMAND
    big = b"v" * (kv.MAX_CACHED_RESULT + 1)
    _raw_put(s, b"big", big)
    assert _do(s, kv.GETDEL, 40, b"big") == (kv.OK, big)
    assert _do(s, kv.GETDEL, 40, b"big") == (kv.RESULT_LOST, None)  # too large to keep for a retry
    # Every reply survives a snapshot (format 4: statuses and [status, result]).
    t = KVStore.restore(s.snapshot())
    assert t.state() == s.state()
    assert _do(t, kv.INCRBY, 2, b"n", b"-7") == (kv.OK, b"-2")


def test_snapshots_stay_in_format_3_until_a_result_is_kept() -> None:
    s = KVStore()
    run(s, Command(Op.PUT, 1, 1, 1, b"k", b"v"))
    up = msgpack.Unpacker()
    up.feed(s.snapshot())
    assert next(up)[0] == 3  # what the previous release reads
    _do(s, kv.INCRBY, 1, b"n", b"1")
    up = msgpack.Unpacker()
    up.feed(s.snapshot())
    assert next(up)[0] == 4
    t = KVStore.restore(s.snapshot())
    up = msgpack.Unpacker()
    up.feed(t.snapshot())
    assert next(up)[0] == 4


@pytest.mark.parametrize("window", [64, 65, 100, 512])
def test_the_oldest_unacknowledged_answer_survives_every_trim(window: int) -> None:
    """Issue 32: a trim that dropped the answer of seq == ack (the oldest request the client has not seen
    answered) survived the suite and 2,800 seeds, because no client kept 64+ requests in flight. After every write
    of a client with ``window`` in flight, a retry of its oldest unanswered request is answered from the session,
    never applied again."""
    from zraft.statemachine import kv

    s = KVStore()
    i = 0
    applied = 0
    for q in range(1, 3000):
        ack = max(1, q - window + 1)
        i += 1
        assert s.apply(i, kv.encode_command(kv.APPEND, 7, q, ack, b"k", b"x")) == (7, q, kv.OK)
        applied += 1
        i += 1  # the client times out on its oldest and sends it again
        assert s.apply(i, kv.encode_command(kv.APPEND, 7, ack, ack, b"k", b"x")) == (7, ack, kv.OK)
        assert len(s.get(b"k") or b"") == applied, f"the retry of seq {ack} (= ack) was applied again"
