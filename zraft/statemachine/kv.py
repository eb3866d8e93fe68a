"""The replicated key-value state machine, with client sessions for exactly-once writes.

Pure and deterministic: every node applies the same commands in the same order and ends in the same state.
Keys and values are bytes. Writes (Put, Append, Delete) travel through the Raft log as commands; reads are
served from ``get`` once Raft says it is safe (ReadIndex) or, for stale reads, at once.

Exactly-once (Raft dissertation §6.3): each client has an id and numbers its requests 1, 2, 3, ...; each
command also carries the lowest sequence number whose reply the client may still need (``ack``). A session
keeps the replies of the client's requests from ``ack`` on, so a retried request gets the recorded reply
instead of being applied twice, even with many requests in flight. Sessions are part of the replicated state
(and of snapshots) and expire by log position -- a session unused for ``SESSION_EXPIRY_ENTRIES`` log entries is
dropped at a deterministic point -- never by a node's own clock. A request from an expired session is refused
(its outcome cannot be known), never applied.

Revisions (after etcd's v3 data model): the store has a **revision** that every write that changes it advances by
one (a multi-key write once), and every key carries its ``create_revision``, ``mod_revision`` and ``version``
(writes since it was made). A key's value in its shard is the bare ``bytes`` for a key last written before
revisions began (reported as revision 1, version 1), else the tuple ``(value, create, mod, version)``.

Revisions begin at a log entry, ``REVISIONS`` (revision 1), that a leader of this release proposes when it finds the
store without them (``leader_commands``): every node applies it at the same index, so every node agrees on every
key's revisions, whatever snapshot of an earlier release (which kept none) it started from. Before it the store
keeps no revisions (``revision`` 0), as the releases before did.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from zlib import crc32

import msgpack
from msgpack import unpackb
from sortedcontainers import SortedList

from zraft.statemachine import leases as lease_table
from zraft.statemachine.leases import MAX_TTL_MS, MIN_TTL_MS, Leases
from zraft.transport.requests import (
    CMPS,
    MAX_RANGE_BYTES,
    MAX_RANGE_KEYS,
    Append,
    Delete,
    Expire,
    GetDel,
    Incr,
    LeaseGrant,
    LeaseRevoke,
    MSet,
    Put,
    Range,
    Txn,
    Write,
)
from zraft.transport.requests import TXN_OPS as _TXN_OPS

if TYPE_CHECKING:
    from zraft.statemachine.kvsnapshot import SnapshotImage

MAX_KEY_BYTES = 1024
"""Keys longer than this are refused."""
MAX_VALUE_BYTES = 1 << 20
"""A value (after an Append, too) longer than this is refused."""
SESSION_EXPIRY_ENTRIES = 1_000_000
"""A client session unused for this many log entries expires."""
MAX_SESSIONS = 100_000
"""Most client sessions kept. One more makes the store drop the tenth of them idle longest (smallest last log
index), at the same log index on every node; their clients' later requests are refused as expired."""
MAX_REPLIES_PER_SESSION = 16_384
"""Most unacknowledged replies a session keeps (a client with more requests in flight than this, or one that never
advances its ack). One more drops the older half: retries of those are refused as expired, never applied twice."""
EXPIRY_CHECK_EVERY = 4096
"""Sessions are checked for expiry at every log index that is a multiple of this."""
SNAPSHOT_FORMAT = 6
"""Snapshot layout (``kvsnapshot.py`` writes and reads it): a stream of msgpack objects. First ``[6, applied,
key_count, session_count, revision, lease_count, next_lease_id, watching]``; then arrays ``[client, last_index,
ack, {seq: reply}, client, ...]`` of at most ``SNAPSHOT_CHUNK_SESSIONS`` sessions (a reply is a status, or
``[status, result]`` for the ops that have results; a status carries the write's revision: ``revision << 4 |
status``), ``session_count`` sessions in all; then arrays ``[lease_id, ttl_ms, solo, [key, ...], lease_id, ...]``,
``lease_count`` leases in all; then arrays ``[key, value, key, value, ...]`` of at most ``SNAPSHOT_CHUNK_PAIRS``
pairs or about ``SNAPSHOT_CHUNK_BYTES`` bytes, ``key_count`` pairs in all, a value being the bytes (a key last
written before revisions began) or ``[value, create_revision, mod_revision, version]``. Written once a lease was
ever granted (or a key given a TTL), or a client watched; before that, as the releases before wrote: format 5
(format 6 without leases and the watching flag: ``[5, applied, key_count, session_count, revision]``) once revisions
began, else format 4 once a session kept a result, else 3. Still read: format 5, format 4 (``[4, applied, key_count,
session_count]``, values alone, statuses without revisions), format 3 (format 4 with statuses only, no results),
format 2 (``[2, applied, key_count, sessions]`` with sessions a map client -> ``[last_index, ack, {seq: status}]``,
then the key arrays) and format 1 (one object: ``[1, applied, {key: value}, sessions]``)."""
SHARDS = 256
"""The store's keys live in this many hash tables (by ``crc32(key) >> SHARD_SHIFT``), so that no step of the event loop
walks or grows all of them at once: a snapshot image lists one table at a time, and a table that grows rehashes a
256th of the keys. One table of ten million keys stalled the loop 316 ms growing past 5.6 million keys, and 416 ms
listing its keys for a snapshot (bench/kv_bench.py); 256 of them, 4.8 ms and 16 ms."""
SHARD_SHIFT = 24
"""Key k lives in shard ``crc32(k) >> SHARD_SHIFT``: the top 8 bits of its CRC-32, the same on every node and in every
process (Python's own ``hash`` of bytes is salted per process). So the shards hold consecutive ranges of the CRC-32
order that Redis's SCAN follows (``zraft.server.redis``), and a SCAN call reads one shard, not the whole store.
CRC-32 is not keyed: a client that chooses its keys can crowd one shard, which then costs what one table for the
whole store cost before (pauses as it grows and when a snapshot lists it), never more."""


class Op(enum.IntEnum):
    PUT = 1
    APPEND = 2
    DELETE = 3
    INCRBY = 4
    """``value``: the delta in decimal ASCII. The result: the new value, in decimal ASCII."""
    SET = 5
    """``value``: a flags byte (``SET_NX``, ``SET_XX``, ``SET_GET``) then the value. The result (``SET_GET``): the
    old value or None; status ``NOT_SET`` when NX/XX said no."""
    GETDEL = 6
    """The result: the value removed (None, status ``NOT_FOUND``, if there was none)."""
    MSET = 7
    """``key`` empty, ``value`` the msgpack array [key, value, key, value, ...]: all set in one step, or none."""
    REVISIONS = 8
    """No session (client 0): revisions begin here, at revision 1, if they had not (see the module docstring)."""
    TXN = 9
    """``key`` empty, ``value`` the msgpack array [compares, then, else]: a compare ``[key, target, cmp, operand]``
    and an operation ``[kind, key, arg, limit]`` as the request has them (``requests.Compare``, ``requests.TxnOp``;
    a put's ``limit`` is its lease). The result: msgpack ``[succeeded, results]``."""
    LEASE_GRANT = 10
    """``value`` the msgpack array [lease id (0: the next free one), ttl_ms]. The result: the id, in decimal ASCII."""
    LEASE_REVOKE = 11
    """``value`` the lease id, in decimal ASCII: the lease is dropped and its keys deleted, at one revision."""
    LEASE_EXPIRE = 12
    """No session (client 0; the leader's own, ``zraft.server.lessor``): ``value`` the msgpack array of the lease ids
    that expired: each dropped (if it still is there) and its keys deleted, all at one revision."""
    WATCHING = 14
    """No session (client 0; a leader's, when a client first watches): every node records its changes from here on
    (``KVStore.watching``)."""
    EXPIRE = 13
    """A key's own TTL (Redis's EXPIRE, PERSIST): ``value`` msgpack of the TTL in ms (at most 0: the key is deleted
    now) or nil (PERSIST: the TTL is dropped). Status ``NOT_FOUND`` without the key, ``NOT_SET`` for a PERSIST of a key
    without one. The key's value and revisions do not change."""


PUT, APPEND, DELETE, INCRBY, SET, GETDEL, MSET, REVISIONS, TXN = 1, 2, 3, 4, 5, 6, 7, 8, 9
LEASE_GRANT, LEASE_REVOKE, LEASE_EXPIRE, EXPIRE, WATCHING = 10, 11, 12, 13, 14
"""The ops as plain ints (what the log holds), for the hot path."""
_OP_VALUES = frozenset((PUT, APPEND, DELETE, INCRBY, SET, GETDEL, MSET, REVISIONS, TXN, WATCHING, LEASE_GRANT,
                        LEASE_REVOKE, LEASE_EXPIRE, EXPIRE))
RESULT_OPS = frozenset((INCRBY, SET, GETDEL, TXN, LEASE_GRANT))
"""Ops whose answer carries a result (``KVStore.result``), kept in the session for a retry."""
SET_NX, SET_XX, SET_GET, SET_LEASE, SET_TTL, SET_KEEP = 1, 2, 4, 8, 16, 32
"""A SET's flags. ``SET_LEASE``: attach the key to the lease whose id follows the flags byte (8 bytes, big-endian);
``SET_TTL``: give it its own TTL, in ms (8 bytes, big-endian, after the lease id if there is one); ``SET_KEEP``: keep
the lease (or TTL) it has (Redis's KEEPTTL). Without any of the three, a write detaches the key from its lease."""
OK, TOO_LARGE, SESSION_EXPIRED, BAD_COMMAND, NOT_FOUND, NOT_INTEGER, OVERFLOW, NOT_SET, RESULT_LOST = range(9)
NO_LEASE, LEASE_LIMIT, LEASE_EXISTS = 9, 10, 11
"""The statuses as plain ints."""
MAX_CACHED_RESULT = 64 << 10
"""A result longer than this (an old value) is not kept in the session: a retry is told ``RESULT_LOST``."""
MAX_MSET_PAIRS = 1024
INT64 = (-(1 << 63), (1 << 63) - 1)
MAX_DELETE_RANGE = 10_000
"""Most keys one delete_range of a transaction removes: a transaction whose delete_range holds more is refused
(``TOO_LARGE``, nothing changed), so that no one entry stalls every node's loop (delete in pieces instead)."""
T_PUT, T_DELETE, T_DELETE_RANGE, T_GET, T_RANGE, T_APPEND = _TXN_OPS
"""A transaction operation's kind, as the log holds it."""
V_VALUE = "value"
C_EQ, C_NE, C_LT, C_GT = CMPS
_META_INDEX = {"version": 3, "create_revision": 1, "mod_revision": 2}
"""Where a compare's target (other than the value) is in an entry's (value, create, mod, version)."""
_pack = msgpack.Packer(use_bin_type=True).pack
"""``msgpack.packb`` without making a Packer per call (463 ns -> 180 ns for a command). The Packer keeps no state
between calls (it resets, after errors too) and packs with the GIL held, so threads may share it."""


def encode_command(op: int, client: int, seq: int, ack: int, key: bytes, value: bytes) -> bytes:
    """A command as the log holds it (``Command(...).encode()`` without the object)."""
    out: bytes = _pack([op, client, seq, ack, key, value])
    return out


class Status(enum.IntEnum):
    OK = 0
    TOO_LARGE = 1
    """The key or the resulting value is over its limit: nothing was changed."""
    SESSION_EXPIRED = 2
    """The client's session expired (or the request was already acknowledged): nothing was applied."""
    BAD_COMMAND = 3
    NOT_FOUND = 4
    """A delete of a key that was not there: done (nothing to remove), and said so (Redis's DEL counts them)."""
    NOT_INTEGER = 5
    """INCRBY of a value that is not a decimal 64-bit integer: nothing changed."""
    OVERFLOW = 6
    """INCRBY past the 64-bit range: nothing changed."""
    NOT_SET = 7
    """SET NX/XX whose condition did not hold: nothing changed (an answer, not an error)."""
    RESULT_LOST = 8
    """A retry of a write that was applied, whose result was too large to keep."""
    NO_LEASE = 9
    """The lease named does not exist (it expired, was revoked, or never was): nothing changed."""
    LEASE_LIMIT = 10
    """``leases.MAX_LEASES`` are held, or the lease has ``leases.MAX_KEYS_PER_LEASE`` keys: nothing changed."""
    LEASE_EXISTS = 11
    """A grant asked for a lease id that is taken: nothing changed."""


STATUS_TEXT: dict[int, str] = {
    TOO_LARGE: "key or value over the size limit",
    SESSION_EXPIRED: "client session expired; the outcome of this request is unknown",
    BAD_COMMAND: "malformed command",
    NOT_INTEGER: "value is not an integer or out of range",
    OVERFLOW: "increment or decrement would overflow",
    RESULT_LOST: "the write was applied; its result was too large to keep for a retry",
    NO_LEASE: "no such lease (it expired, was revoked, or never was)",
    LEASE_LIMIT: "too many leases, or too many keys on the lease",
    LEASE_EXISTS: "a lease with this id exists already",
}
"""The message of an error answer, by status."""


Entry = bytes | tuple[bytes, int, int, int]
"""A key's value in its shard: the bare value (last written before revisions began), or (value, create_revision,
mod_revision, version)."""


EVENT_FIELDS = 5
"""Items per change to a key in ``KVStore.events``, flat: its revision, the key, its entry after (None: deleted) and
before (None: it was absent), and whether it was deleted because its lease expired. The watch history packs each
loop pass's changes into one bytes object (``zraft.server.watches``), and drops these at once."""


def _event(rev: int, key: bytes, new: Entry | None, old: Entry | None, expired: bool = False) -> tuple[Any, ...]:
    """A change's ``EVENT_FIELDS`` items (``KVStore.events``)."""
    return rev, key, new, old, expired


def _written(old: Entry | None, value: bytes, rev: int) -> Entry:
    """A key's entry once ``value`` is written to it at revision ``rev`` (0: revisions have not begun)."""
    if not rev:
        return value
    if old is None:
        return value, rev, rev, 1
    if isinstance(old, tuple):
        return value, old[1], rev, old[3] + 1
    return value, 1, rev, 2


def _value(e: Entry) -> bytes:
    return e[0] if isinstance(e, tuple) else e


def meta_of(e: Entry) -> tuple[bytes, int, int, int]:
    """(value, create_revision, mod_revision, version) of an entry."""
    return e if isinstance(e, tuple) else (e, 1, 1, 1)


def _set_flags(req: Put) -> int:
    """A put's SET options as flags (``SET_NX`` ...)."""
    return (SET_NX if req.nx else 0) | (SET_XX if req.xx else 0) | (SET_GET if req.get else 0)


@dataclass(frozen=True, slots=True)
class Command:
    op: Op
    client: int
    seq: int
    ack: int
    key: bytes
    value: bytes = b""

    def encode(self) -> bytes:
        out: bytes = msgpack.packb([int(self.op), self.client, self.seq, self.ack, self.key, self.value],
                                   use_bin_type=True)
        return out

    @staticmethod
    def decode(data: bytes) -> Command:
        op, client, seq, ack, key, value = msgpack.unpackb(data, raw=False)
        return Command(Op(op), client, seq, ack, key, value)


def _parse_int(b: bytes) -> int | None:
    """A decimal 64-bit integer as Redis writes it (no sign but '-', no spaces, no leading zeros), else None."""
    if not 0 < len(b) <= 20 or not (b.isdigit() or (b[:1] == b"-" and b[1:].isdigit() and len(b) > 1)):
        return None
    digits = b[1:] if b[:1] == b"-" else b
    if len(digits) > 1 and digits[:1] == b"0":
        return None
    n = int(b)
    return n if INT64[0] <= n <= INT64[1] and b != b"-0" else None


def check_limits(key: bytes, value: bytes = b"") -> str | None:
    """Why a request is over the limits, or None. Checked by clients and nodes before proposing."""
    if len(key) > MAX_KEY_BYTES:
        return f"key is {len(key)} bytes; the limit is {MAX_KEY_BYTES}"
    if len(value) > MAX_VALUE_BYTES:
        return f"value is {len(value)} bytes; the limit is {MAX_VALUE_BYTES}"
    return None


from zraft.statemachine.kvleases import LeasePart  # noqa: E402  (they read this module's names when they run)
from zraft.statemachine.kvtxn import TxnPart  # noqa: E402


@dataclass(slots=True)
class Session:
    last_index: int
    """The log index of the session's newest command (for expiry)."""
    ack: int = 1
    replies: dict[int, Any] = field(default_factory=dict)
    """seq -> reply of requests at or above ``ack``: the status, or [status, result] (``RESULT_OPS``)."""


class KVStore(TxnPart, LeasePart):
    """The store. Its transactions are ``kvtxn.TxnPart``, its lease commands ``kvleases.LeasePart``."""

    def __init__(self) -> None:
        self.shards: list[dict[bytes, Entry]] = [{} for _ in range(SHARDS)]
        """The keys and their entries (``Entry``): key ``k`` lives in ``shards[crc32(k) >> SHARD_SHIFT]``. Read with
        ``get``, ``meta``, ``in``, ``len`` and iteration (keys, in no particular order); written only by ``apply``."""
        self.index: SortedList = SortedList()
        """Every key, in order (range reads): about 8 bytes a key beside the tables, 0.6 us to add one and 1 us to
        remove one (``sortedcontainers``, measured with a million keys here)."""
        self.sessions: dict[int, Session] = {}
        self.leases = Leases()
        """The leases, and the keys attached to each (``zraft.statemachine.leases``)."""
        self.lease_keys = self.leases.of_key
        """``leases.of_key`` (the same dict, never replaced): read on the path of every write."""
        self.applied = 0
        self.revision = 0
        """The store's revision: advanced by one by every write that changes it; 0 until revisions begin."""
        self.rev = 0
        """The revision of the last command applied, for its answer: the one it made, or the store's when it
        changed nothing (a retry: the revision it made the first time)."""
        self._image: SnapshotImage | None = None
        self.result: bytes | None = None
        """The result of the last command applied (``RESULT_OPS``; None for the others)."""
        self.txn_out: list[Any] | None = None
        """The last transaction applied's ``[succeeded, results]`` (its ``result`` unpacked, for its answer); None
        when the last command was a retry answered from the session."""
        self.results = False
        """Whether a session ever kept a result (then snapshots are written in format 4, else 3)."""
        self._expiring = False
        self.watching = False
        """Whether the store records its changes (``events``): from a log entry (``WATCHING``) a leader proposes
        when a client first watches, at the same index on every node; until then writes pay nothing for watches."""
        self.watch_start = 1
        """The first revision whose changes it recorded (since it began, or was restored from a snapshot)."""
        self.event_sink: list[Any] | None = None
        """The list ``events`` becomes once watching (the replica gives its watch history)."""
        self.events: list[Any] | None = None
        """When a list (the node's watch history: ``zraft.server.watches``), every change to a key is appended to it,
        in order, as ``EVENT_FIELDS`` items."""
        self.trims = 0
        """Times a session forgot the answers below its client's ack (a statistic; not in snapshots)."""

    def get(self, key: bytes) -> bytes | None:
        e = self.shards[crc32(key) >> SHARD_SHIFT].get(key)
        return e[0] if isinstance(e, tuple) else e

    def meta(self, key: bytes) -> tuple[bytes, int, int, int] | None:
        """(value, create_revision, mod_revision, version) of ``key``, or None."""
        e = self.shards[crc32(key) >> SHARD_SHIFT].get(key)
        return None if e is None else meta_of(e)

    def __contains__(self, key: bytes) -> bool:
        return key in self.shards[crc32(key) >> SHARD_SHIFT]

    def __len__(self) -> int:
        return len(self.index)

    def __iter__(self) -> Iterator[bytes]:
        for shard in self.shards:
            yield from shard

    def to_dict(self, meta: bool = False) -> dict[bytes, Any]:
        """Every key and value in one dict (tests, comparisons); ``meta``: with their revisions (``meta_of``)."""
        out: dict[bytes, Any] = {}
        for shard in self.shards:
            for k, e in shard.items():
                out[k] = meta_of(e) if meta else _value(e)
        return out

    def set_data(self, data: dict[bytes, bytes]) -> None:
        """Replace every key and value (tests, benchmarks, format 1 snapshots): written before revisions began."""
        self.shards = [{} for _ in range(SHARDS)]
        for k, v in data.items():
            self.shards[crc32(k) >> SHARD_SHIFT][k] = v
        self.index = SortedList(data)

    def range(self, start: bytes, end: bytes | None, limit: int, max_bytes: int,
              values: bool = True) -> tuple[list[bytes], int]:
        """The keys in ``[start, end)`` in order (``end`` None: to the last key), at most ``limit`` of them and
        about ``max_bytes`` of keys and values (of keys alone if not ``values``; at least one key), and how many
        keys the range holds in all."""
        index = self.index
        lo = index.bisect_left(start)
        hi = len(index) if end is None else index.bisect_left(end)
        if hi <= lo:
            return [], 0
        keys: list[bytes] = []
        size = 0
        shards = self.shards
        for k in index.islice(lo, min(hi, lo + limit)):
            size += len(k)
            if values:
                e = shards[crc32(k) >> SHARD_SHIFT][k]
                size += len(e[0] if isinstance(e, tuple) else e)
            if keys and size > max_bytes:
                break
            keys.append(k)
        return keys, hi - lo

    # ------------------------------------------------------------------ the StateMachine seam (machine.py)

    def command(self, req: Write) -> bytes | tuple[str, str]:
        """The log command for a validated client write (put, append, delete, incr, getdel, mset; a put with
        ``nx``/``xx``/``get`` is a SET), or (error, message) when it is refused before it is logged."""
        value, flags, extra = b"", 0, b""
        if type(req) is Put:  # the common cases first, read as tuples (C speed: this runs for every write)
            _, client, seq, ack, key, value, nx, xx, get, lease, ttl, keep = req
            flags = (SET_NX if nx else 0) | (SET_XX if xx else 0) | (SET_GET if get else 0)
            if lease or ttl or keep:
                flags |= (SET_LEASE if lease else 0) | (SET_TTL if ttl else 0) | (SET_KEEP if keep else 0)
                extra = (lease.to_bytes(8, "big") if lease else b"") + (ttl.to_bytes(8, "big") if ttl else b"")
            kvop = SET if flags else PUT
        elif type(req) is Append:
            _, client, seq, ack, key, value, _ = req
            kvop = APPEND
        else:
            client, seq, ack = req.client, req.seq, req.ack
            match req:
                case Delete(key=key):
                    kvop = DELETE
                case Incr(key=key, by=by):
                    kvop, value = INCRBY, b"%d" % by
                case GetDel(key=key):
                    kvop = GETDEL
                case Txn():
                    return self._txn_command(req)
                case LeaseGrant(lease=lease, ttl_ms=ttl):
                    return encode_command(LEASE_GRANT, client, seq, ack, b"", _pack([lease, ttl]))
                case LeaseRevoke(lease=lease):
                    return encode_command(LEASE_REVOKE, client, seq, ack, b"", b"%d" % lease)
                case Expire(key=key, ttl_ms=left):
                    if len(key) > MAX_KEY_BYTES:
                        return "too_large", check_limits(key) or ""
                    return encode_command(EXPIRE, client, seq, ack, key, _pack(left))
                case MSet(pairs=pairs):
                    why = next((bad for i in range(0, len(pairs), 2)
                                if (bad := check_limits(pairs[i], pairs[i + 1]))), None)
                    if why:
                        return "too_large", why
                    return encode_command(MSET, client, seq, ack, b"", _pack(pairs))
                case _:
                    return "bad_request", f"{type(req).__name__} is not a write"
        if len(key) > MAX_KEY_BYTES or len(value) > MAX_VALUE_BYTES:
            why = check_limits(key, value)
            if why:
                return "too_large", why
        if flags:  # checked above without its flags byte
            value = bytes([flags]) + extra + value
        return encode_command(kvop, client, seq, ack, key, value)

    def answer(self, req: Write, status: int) -> dict[str, Any] | None:
        """What a write just applied did, for its answer (beside ``rev``, the revision it was applied at, which the
        caller adds from ``self.rev``): None for a bare success (a put or append without options); a delete says
        whether the key was there; an append asked for it (``length``) the value's length right after it; incr the
        new value; getdel the value removed; a put with options whether it set the value (and the old one, if
        asked)."""
        if status == OK and ((type(req) is Put and not (req[6] or req[7] or req[8]))  # nx, xx, get: none
                             or (type(req) is Append and not req[6])):  # length: not asked
            return None
        if status not in (OK, NOT_FOUND, NOT_SET):
            return {"ok": False, "error": Status(status).name.lower(), "message": STATUS_TEXT[status]}
        r: dict[str, Any] = {"ok": True}
        match req:
            case Delete():
                r["found"] = status == OK
            case Incr() | GetDel():
                r["value"] = self.result
            case LeaseGrant(ttl_ms=ttl):
                r["lease"], r["ttl_ms"] = int(self.result or b"0"), ttl
            case Expire():
                r["found"], r["done"] = status != NOT_FOUND, status == OK
            case Txn():
                out = self.txn_out if self.txn_out is not None else \
                    unpackb(self.result) if self.result is not None else None  # (a retry: from the session)
                if out is not None:
                    r["succeeded"], r["results"] = out
            case Put(get=get):
                r["done"] = status == OK
                if get:
                    r["value"] = self.result
            case Append(key=key, length=True):
                r["length"] = len(self.get(key) or b"")
        return r

    def query(self, req: Range) -> dict[str, Any]:
        """The answer to a read other than a get (a range), as of ``applied``: its fields beside the request id."""
        keys, count = self.range(req.start, req.end, 0 if req.count_only else req.limit or MAX_RANGE_KEYS,
                                 MAX_RANGE_BYTES, not req.keys_only)
        shards = self.shards
        kvs = []
        for k in keys:
            v, c, m, ver = meta_of(shards[crc32(k) >> SHARD_SHIFT][k])
            kvs.append([k, None if req.keys_only else v, c, m, ver])
        return {"ok": True, "rev": self.revision, "kvs": kvs, "count": count, "more": count > len(kvs)}

    def watch_command(self) -> bytes:
        """The command that makes every node keep a history of its changes from here on (for watches)."""
        return encode_command(WATCHING, 0, 0, 0, b"", b"")

    def leader_commands(self) -> list[bytes]:
        """What a new leader proposes at the start of its term: the start of revisions, if they have not begun."""
        return [] if self.revision else [encode_command(REVISIONS, 0, 0, 0, b"", b"")]

    def expire_command(self, lease_ids: list[int]) -> bytes:
        return encode_command(LEASE_EXPIRE, 0, 0, 0, b"", _pack(lease_ids))

    def counts(self) -> tuple[int, int]:
        return len(self), len(self.sessions)

    # ------------------------------------------------------------------ applying

    def apply(self, index: int, data: bytes) -> tuple[int, int, int]:
        """Apply the command at log ``index``. Returns (client, seq, status) for the node to answer with; the
        status is an int (compare with ``OK`` or make it a ``Status``); ``self.rev`` is the revision to answer with.
        The hot path of every node: written out in one function (sessions, then the operation) on purpose."""
        if index != self.applied + 1:
            raise ValueError(f"apply out of order: {index} after {self.applied}")
        self.applied = index
        self.result = None
        self.rev = self.revision
        if index % EXPIRY_CHECK_EVERY == 0:
            self._expire(index - 1)  # as if checked after the previous entry: this command's session is fresh
        try:
            op, client, seq, ack, key, value = unpackb(data)
            if not (type(key) is bytes and type(value) is bytes and op in _OP_VALUES and type(client) is int
                    and type(seq) is int and type(ack) is int):
                raise ValueError("bad command fields")
        except Exception:
            return 0, 0, BAD_COMMAND  # never proposed by a correct node; applied as a no-op everywhere
        if op == REVISIONS:
            if not self.revision:
                self.revision = self.rev = 1
            return 0, 0, OK
        if op == LEASE_EXPIRE:
            self._expire_leases(value, self._image)
            return 0, 0, OK
        if op == WATCHING:
            if not self.watching:
                self.watching = True
                self.watch_start = self.revision + 1
                self.events = self.event_sink
            return 0, 0, OK
        # Session (exactly-once).
        s = self.sessions.get(client)
        img = self._image
        if img is not None:
            img.save_session(client, s)
        if s is None:
            if ack > 1:
                # A client we have no session for, already past its first request: its session expired, and
                # whether its earlier requests applied can no longer be told. Refuse rather than risk a double.
                return client, seq, SESSION_EXPIRED
            s = self.sessions[client] = Session(index)
            if len(self.sessions) > MAX_SESSIONS:
                self._evict_sessions(client)
        s.last_index = index
        replies = s.replies
        if ack > s.ack:
            s.ack = ack
            # Forget the answers below ack once they are at least 64 and half of those kept: amortized O(1) per
            # command whatever the client's window (at every 64th ack, a window of 2,048 cost 32 copies per
            # command). An answer below ack is never consulted meanwhile: seq < ack is refused below. The first
            # key is the oldest kept (seqs arrive in order, and the dict is rebuilt, never trimmed from the front:
            # a dict that keeps losing its oldest keys makes finding the first one ever slower).
            if len(replies) >= 64:
                stale = ack - next(iter(replies))
                if stale >= 64 and 2 * stale >= len(replies):
                    replies = s.replies = {q: r for q, r in replies.items() if q >= ack}
                    self.trims += 1
        if seq < s.ack:
            return client, seq, SESSION_EXPIRED  # the client already saw this reply; a stray duplicate
        cached = replies.get(seq)
        if cached is not None:  # a retry: answer again, apply nothing
            if type(cached) is list:
                self.result = cached[1]
                cached = cached[0]
                self.txn_out = None
            self.rev = (cached >> 4) or self.revision  # (0: recorded before revisions began)
            return client, seq, cached & 15
        # The operation.
        status = OK
        if op > DELETE:
            status = self._apply_more(op, key, value, img)
            if op in RESULT_OPS:
                self.results = True
                r = self.result
                replies[seq] = ([status | self.rev << 4, r] if r is None or len(r) <= MAX_CACHED_RESULT
                                else [RESULT_LOST | self.rev << 4, None])
            else:
                replies[seq] = status | self.rev << 4
        elif len(key) > MAX_KEY_BYTES or len(value) > MAX_VALUE_BYTES:
            status = TOO_LARGE
        else:
            h = crc32(key) >> SHARD_SHIFT
            data_ = self.shards[h]
            old = data_.get(key)
            if img is not None and key not in img.before[h]:
                img.before[h][key] = old  # before the change (see SnapshotImage)
            rev = self.revision
            new: Entry | None = None
            if op == PUT:
                if not rev:
                    data_[key] = value
                elif type(old) is tuple:  # (the common case written out: 0.2 us a put less than _written)
                    rev = self.revision = self.rev = rev + 1
                    new = data_[key] = (value, old[1], rev, old[3] + 1)
                else:
                    rev = self.revision = self.rev = rev + 1
                    new = data_[key] = _written(old, value, rev)
                if old is None:
                    self.index.add(key)
                elif self.lease_keys:
                    self.leases.detach(key)  # (a plain put drops the key's lease or TTL, as in etcd and Redis)
            elif op == APPEND:
                if old is None:
                    if rev:
                        rev = self.revision = self.rev = rev + 1
                    new = data_[key] = _written(None, value, rev)
                    self.index.add(key)
                else:
                    old_value = old[0] if isinstance(old, tuple) else old
                    if len(old_value) + len(value) > MAX_VALUE_BYTES:
                        status = TOO_LARGE
                    else:
                        if rev:
                            rev = self.revision = self.rev = rev + 1
                        new = data_[key] = _written(old, old_value + value, rev)
            elif old is None:
                status = NOT_FOUND
            else:
                del data_[key]
                self.index.remove(key)
                if img is not None:
                    img.deleted(key)
                if self.lease_keys:
                    self.leases.detach(key)
                if rev:
                    rev = self.revision = self.rev = rev + 1
            events = self.events
            if events is not None and status == OK and rev:
                events += (rev, key, new, old, False)  # (``_event`` written out: this runs for every write)
        if op <= DELETE:
            replies[seq] = status | self.rev << 4
        if len(replies) > MAX_REPLIES_PER_SESSION:
            replies = s.replies = {q: r for q, r in replies.items() if q >= s.ack}  # those below ack first
            if len(replies) > MAX_REPLIES_PER_SESSION:
                keep = sorted(replies)[len(replies) - MAX_REPLIES_PER_SESSION // 2]
                s.replies = {q: r for q, r in replies.items() if q >= keep}
                s.ack = keep
        return client, seq, status

    def _put(self, h: int, key: bytes, value: bytes | None, img: SnapshotImage | None, keep: bool = False) -> None:
        """Write (``value`` None: delete) one key of shard ``h`` at the revision ``self.rev`` (0: revisions have not
        begun), saving its old entry for a snapshot image being taken. The key leaves its lease unless ``keep``
        (a write that keeps it: INCR, SET KEEPTTL)."""
        data = self.shards[h]
        old = data.get(key)
        if img is not None and key not in img.before[h]:
            img.before[h][key] = old
        if not keep and self.lease_keys:
            self.leases.detach(key)
        if value is None:
            if old is not None:
                del data[key]
                self.index.remove(key)
                if img is not None:
                    img.deleted(key)
                if self.events is not None and self.rev:
                    self.events += _event(self.rev, key, None, old, self._expiring)
            return
        new = data[key] = _written(old, value, self.rev)
        if old is None:
            self.index.add(key)
        if self.events is not None and self.rev:
            self.events += _event(self.rev, key, new, old)

    def _next_revision(self) -> None:
        """This command changes the store: it is applied at the next revision (once revisions began)."""
        if self.revision:
            self.revision = self.rev = self.revision + 1

    def _apply_more(self, op: int, key: bytes, value: bytes, img: SnapshotImage | None) -> int:
        """INCRBY, SET with flags, GETDEL, MSET: the status; ``self.result`` the result. Nothing changes unless the
        whole command succeeds."""
        if op == MSET:
            try:
                pairs = unpackb(value)
                ok = (type(pairs) is list and len(pairs) % 2 == 0 and 0 < len(pairs) <= 2 * MAX_MSET_PAIRS
                      and all(type(x) is bytes for x in pairs))
            except Exception:
                ok = False
            if not ok:
                return BAD_COMMAND
            if any(len(pairs[i]) > MAX_KEY_BYTES or len(pairs[i + 1]) > MAX_VALUE_BYTES
                   for i in range(0, len(pairs), 2)):
                return TOO_LARGE
            self._next_revision()
            for i in range(0, len(pairs), 2):
                k = pairs[i]
                self._put(crc32(k) >> SHARD_SHIFT, k, pairs[i + 1], img)
            return OK
        if op == TXN:
            return self._apply_txn(value, img)
        if op == LEASE_GRANT or op == LEASE_REVOKE:
            return self._grant_or_revoke(op, value, img)
        if len(key) > MAX_KEY_BYTES:
            return TOO_LARGE
        if op == EXPIRE:
            return self._key_ttl(key, value, img)
        h = crc32(key) >> SHARD_SHIFT
        e = self.shards[h].get(key)
        old = None if e is None else _value(e)
        if op == INCRBY:
            delta = _parse_int(value)
            cur = 0 if old is None else _parse_int(old)
            if delta is None or cur is None:
                return NOT_INTEGER
            new = cur + delta
            if not INT64[0] <= new <= INT64[1]:
                return OVERFLOW
            result = self.result = b"%d" % new
            self._next_revision()
            self._put(h, key, result, img, keep=True)  # (Redis's INCR keeps the key's TTL)
            return OK
        if op == SET:
            if not value:
                return BAD_COMMAND
            flags, new_value = value[0], value[1:]
            lease = ttl = 0
            if flags & SET_LEASE:
                lease, new_value = int.from_bytes(new_value[:8], "big"), new_value[8:]
            if flags & SET_TTL:
                ttl, new_value = int.from_bytes(new_value[:8], "big"), new_value[8:]
            if (flags & SET_KEEP and flags & (SET_LEASE | SET_TTL)) or (lease and ttl) or (
                    flags & SET_TTL and not MIN_TTL_MS <= ttl <= MAX_TTL_MS):
                return BAD_COMMAND
            if len(new_value) > MAX_VALUE_BYTES:
                return TOO_LARGE
            leases = self.leases
            if lease and not leases.room(lease, key):
                return LEASE_LIMIT if lease in leases.table and not leases.table[lease].solo else NO_LEASE
            if ttl and len(leases) >= lease_table.MAX_LEASES:
                return LEASE_LIMIT
            if flags & SET_GET:
                self.result = old
            if (flags & SET_NX and old is not None) or (flags & SET_XX and old is None):
                return NOT_SET
            self._next_revision()
            self._put(h, key, new_value, img, keep=bool(flags & SET_KEEP))
            if lease:
                leases.attach(key, lease)
            elif ttl:
                leases.attach(key, leases.grant(0, ttl, solo=True))
            return OK
        if op == GETDEL:
            self.result = old
            if old is None:
                return NOT_FOUND
            self._next_revision()
            self._put(h, key, None, img)
            return OK
        return BAD_COMMAND

    def _evict_sessions(self, keep: int) -> None:
        idle = sorted((s.last_index, c) for c, s in self.sessions.items() if c != keep)
        for _, c in idle[: MAX_SESSIONS // 10]:
            self._drop_session(c)

    def _drop_session(self, c: int) -> None:
        if self._image is not None:
            self._image.save_session(c, self.sessions[c])
        del self.sessions[c]

    def apply_noop(self, index: int) -> None:
        """An entry with no command (a leader's no-op)."""
        if index != self.applied + 1:
            raise ValueError(f"apply out of order: {index} after {self.applied}")
        self.applied = index
        if index % EXPIRY_CHECK_EVERY == 0:
            self._expire(index)

    def _expire(self, index: int) -> None:
        horizon = index - SESSION_EXPIRY_ENTRIES
        for c in [c for c, s in self.sessions.items() if s.last_index < horizon]:
            self._drop_session(c)

    # ------------------------------------------------------------------ snapshots

    def begin_snapshot(self) -> SnapshotImage:
        """An image of the store as it is now, to serialize while the store goes on (one at a time)."""
        if self._image is not None:
            raise RuntimeError("a snapshot image is already being taken")
        from zraft.statemachine.kvsnapshot import SnapshotImage  # (kvsnapshot imports this module)

        self._image = self.leases.image = SnapshotImage(self)
        return self._image

    def end_snapshot(self) -> None:
        """The image is written (or abandoned): stop saving old values for it."""
        self._image = self.leases.image = None

    def snapshot(self) -> bytes:
        img = self.begin_snapshot()
        try:
            return b"".join(img.chunks())
        finally:
            self.end_snapshot()

    @classmethod
    def restore(cls, blob: bytes) -> KVStore:
        return cls.restore_chunks([blob])

    @classmethod
    def restore_chunks(cls, chunks: Iterable[bytes]) -> KVStore:
        """Rebuild a store from a snapshot's bytes, given in pieces of any size."""
        from zraft.statemachine.kvsnapshot import restore_into  # (kvsnapshot imports this module)

        kv = cls()
        restore_into(kv, chunks)
        return kv

    def state(self) -> Any:
        """Everything that must agree across nodes (for tests)."""
        return (self.applied, self.revision, self.to_dict(meta=True),
                {c: (s.ack, s.replies) for c, s in self.sessions.items()}, self.leases.state(), self.watching)
