"""The wire format: msgpack over ZeroMQ, decoded with bounds and validation (see docs/PROTOCOL.md).

Two protocols share a node's ROUTER socket, told apart by the first element of the (msgpack array) payload:
  ["R", ...]  a Raft message between nodes
  ["S", ...]  a piece of a snapshot file, leader to follower; ["A", ...] the follower's acknowledgement
  ["C", ...]  a client request; the node answers ["C", ...] (a map inside)
Decoding never trusts the input: a payload over the size limit, that does not decode, or whose fields have the
wrong types raises ``ProtocolError`` with a sentence saying what is wrong; the node drops or answers it and goes
on.
"""

from __future__ import annotations

import enum
from typing import Any, NamedTuple

import msgpack

from zraft.core import MAX_TERM, ClusterConfig, Entry, EntryKind, Message, MsgType, Snapshot
from zraft.transport.requests import MAX_INT as MAX_INT  # re-exported: codec users need one import
from zraft.transport.requests import ProtocolError as ProtocolError
from zraft.transport.requests import Request, from_wire, to_wire

VERSION = 1
MAX_PEER_MESSAGE = 64 << 20
"""Largest message between nodes accepted (an AppendEntries batch or a snapshot chunk is far smaller)."""
MAX_SNAPSHOT_CHUNK = 8 << 20
"""Largest piece of a snapshot file in one ["S", ...] message."""
MAX_CLIENT_MESSAGE = (1 << 20) + (64 << 10)
"""Largest client request: a value at the limit (1 MiB) plus a key and the envelope."""
MAX_CLIENT_BATCH_MESSAGE = 4 << 20
"""Largest client frame holding a batch of requests."""
MAX_BATCH = 1024
"""Most requests (or answers) in one batch frame."""
HOOKED_CLIENT_FRAME = 256 << 10
"""Client frames larger than this are decoded counting their arrays and maps as they are built, so that a frame
of nothing but tiny containers (each byte a Python object of 50-60) is refused early instead of growing the node's
memory some 60-fold."""

_pack = msgpack.Packer(use_bin_type=True).pack
"""``msgpack.packb`` without a Packer made per call (see ``kv._pack``): the same bytes, a third of the time."""
_new_entry = tuple.__new__
"""``_new_entry(Entry, [index, term, kind, data])``: an Entry made in C, without the named tuple's ``__new__``
written in Python (``Entry(*e)`` took 0.23 us, this 0.13: a follower makes one per entry it receives)."""
_MSG_TYPES = frozenset(int(t) for t in MsgType)
_ENTRY_KINDS = frozenset(int(k) for k in EntryKind)
_CLIENT_TAG = b"\xa1C"  # the msgpack string "C" right after a client message's array header
CLIENT_TAG = _CLIENT_TAG
"""``payload[1:3] == CLIENT_TAG``: a client message (a request, or answers)."""


# ---------------------------------------------------------------------- Raft messages


def encode_raft(m: Message, cache: dict[tuple[int, int, int], bytes] | None = None) -> bytes:
    """``cache`` (the leader's, kept by its transport): the packed entries of recent APPENDs, so that the same
    entries going to several followers are packed once. Keyed by (first index, last index, last term): one leader
    makes at most one entry per index and term, and the Log Matching property makes the last entry's index and
    term name everything before it."""
    ents = m.entries
    if ents and cache is not None and m.snapshot is None:
        key = (ents[0].index, ents[-1].index, ents[-1].term)
        packed = cache.get(key)
        if packed is None:
            if len(cache) >= 64:
                cache.clear()
            packed = cache[key] = _pack(ents)
        ctx = m.context
        if ctx is not None and not isinstance(ctx, int):
            raise TypeError(f"a Raft message context must be an int on the wire, not {type(ctx).__name__}")
        # The same bytes as packing the whole message at once: a 14-array is one header byte (0x9e), then the
        # fields; the 8- and 5-arrays packed here lose their own header bytes.
        head: bytes = _pack(["R", VERSION, int(m.type), m.src, m.dst, m.term, m.log_term, m.index])
        tail: bytes = _pack([m.commit, m.reject, m.hint, ctx, None])
        return b"\x9e" + head[1:] + packed + tail[1:]
    snap = None
    if m.snapshot is not None:
        s = m.snapshot
        snap = [s.index, s.term, s.config.to_wire(), s.data if s.data is not None else b""]
    ctx = m.context
    if ctx is not None and not isinstance(ctx, int):
        raise TypeError(f"a Raft message context must be an int on the wire, not {type(ctx).__name__}")
    out: bytes = _pack(
        ["R", VERSION, int(m.type), m.src, m.dst, m.term, m.log_term, m.index, m.entries, m.commit, m.reject, m.hint,
         ctx, snap])
    return out


def decode_raft(body: list[Any]) -> Message:
    if len(body) != 14:
        raise ProtocolError(f"a Raft message has 14 fields, this one has {len(body)}")
    _, version, mtype, src, dst, term, log_term, index, entries, commit, reject, hint, ctx, snap = body
    if type(version) is not int or version != VERSION:
        raise ProtocolError(f"Raft protocol version {version!r:.40} is not supported (this node speaks {VERSION})")
    if type(mtype) is not int or mtype not in _MSG_TYPES:
        raise ProtocolError(f"unknown Raft message type {mtype!r:.40}")
    for name, v in (("src", src), ("dst", dst), ("term", term), ("log_term", log_term), ("index", index),
                    ("commit", commit), ("hint", hint)):
        _uint(name, v, MAX_TERM)
    if not isinstance(reject, bool):
        raise ProtocolError("field reject must be a boolean")
    if ctx is not None:
        _uint("context", ctx)
    if not isinstance(entries, list):
        raise ProtocolError("field entries must be an array")
    try:
        ents = [_new_entry(Entry, e) for e in entries if type(e) is list and len(e) == 4 and type(e[0]) is int
                and type(e[1]) is int and type(e[2]) is int and type(e[3]) is bytes
                and 0 < e[0] <= MAX_TERM and 0 < e[1] <= MAX_TERM and e[2] in _ENTRY_KINDS]
    except TypeError:
        ents = []
    if len(ents) != len(entries):
        raise ProtocolError("an entry must be [index, term, kind, data(bytes)]: positive index and term, a known "
                            "kind")
    snapshot = None
    if snap is not None:
        if not (isinstance(snap, list) and len(snap) == 4 and isinstance(snap[3], bytes)):
            raise ProtocolError("a snapshot must be [index, term, configuration, data(bytes)]")
        try:
            cfg = ClusterConfig.from_wire(snap[2])
        except ValueError as e:
            raise ProtocolError(f"bad snapshot configuration: {e}") from None
        snapshot = Snapshot(_uint("snapshot index", snap[0], MAX_TERM), _uint("snapshot term", snap[1], MAX_TERM),
                            cfg, snap[3])
    return Message(MsgType(mtype), src, dst, term, log_term, index, tuple(ents), commit, reject, hint, ctx, snapshot)


# ---------------------------------------------------------------------- snapshot transfer


class SnapChunk(NamedTuple):
    """``size`` bytes of the snapshot file (snap_index, snap_term) start at ``offset`` with ``data``."""

    src: int
    dst: int
    term: int
    snap_index: int
    snap_term: int
    size: int
    offset: int
    data: bytes


class SnapAck(NamedTuple):
    """The follower holds the first ``next_offset`` bytes; ``status`` is ACK_OK, ACK_GAP (send again from
    ``next_offset``), ACK_DONE (whole, verified and handed to Raft) or ACK_ERROR (unusable; start over)."""

    src: int
    dst: int
    term: int
    snap_index: int
    snap_term: int
    next_offset: int
    status: int


ACK_OK, ACK_GAP, ACK_DONE, ACK_ERROR = 0, 1, 2, 3


def encode_chunk(c: SnapChunk) -> bytes:
    out: bytes = _pack(["S", VERSION, *c])
    return out


def encode_ack(a: SnapAck) -> bytes:
    out: bytes = _pack(["A", VERSION, *a])
    return out


def _decode_chunk(body: list[Any]) -> SnapChunk:
    if len(body) != 10:
        raise ProtocolError(f"a snapshot chunk has 10 fields, this one has {len(body)}")
    if type(body[1]) is not int or body[1] != VERSION:
        raise ProtocolError(f"snapshot protocol version {body[1]!r:.40} is not supported "
                            f"(this node speaks {VERSION})")
    src, dst, term, index, snap_term, size, offset = (_uint(n, v, MAX_TERM) for n, v in zip(
        ("src", "dst", "term", "snap_index", "snap_term", "size", "offset"), body[2:9], strict=True))
    data = body[9]
    if not isinstance(data, bytes) or len(data) > MAX_SNAPSHOT_CHUNK:
        raise ProtocolError(f"snapshot chunk data must be bytes of at most {MAX_SNAPSHOT_CHUNK}")
    if offset + len(data) > size:
        raise ProtocolError("snapshot chunk runs past the file's size")
    return SnapChunk(src, dst, term, index, snap_term, size, offset, data)


def _decode_ack(body: list[Any]) -> SnapAck:
    if len(body) != 9:
        raise ProtocolError(f"a snapshot acknowledgement has 9 fields, this one has {len(body)}")
    if type(body[1]) is not int or body[1] != VERSION:
        raise ProtocolError(f"snapshot protocol version {body[1]!r:.40} is not supported "
                            f"(this node speaks {VERSION})")
    names = ("src", "dst", "term", "snap_index", "snap_term", "next_offset", "status")
    vals = [_uint(n, v, MAX_TERM) for n, v in zip(names, body[2:9], strict=True)]
    if vals[6] > ACK_ERROR:
        raise ProtocolError(f"unknown snapshot acknowledgement status {vals[6]}")
    return SnapAck(*vals)


# ---------------------------------------------------------------------- client requests and replies

class Err(enum.StrEnum):
    """The ``error`` codes of a failed reply (docs/PROTOCOL.md says what a client does with each). Members are
    ``str``: they go on the wire as the plain strings, and compare equal to them."""

    NOT_LEADER = "not_leader"
    LEADER_CHANGED = "leader_changed"
    NO_LEADER = "no_leader"
    BAD_REQUEST = "bad_request"
    TOO_LARGE = "too_large"
    SESSION_EXPIRED = "session_expired"
    BAD_COMMAND = "bad_command"
    BUSY = "busy"
    """A membership change or leadership transfer is under way (or the leader is new): retry shortly."""
    NOT_CAUGHT_UP = "not_caught_up"
    """The learner to promote is too far behind the leader: retry once it has caught up."""
    CONFIG_REFUSED = "config_refused"
    """A membership change that can never be made as asked (the message says why)."""
    TRANSFER_FAILED = "transfer_failed"
    """The target of a leadership transfer did not take over within an election timeout."""
    NO_LEASE = "no_lease"
    """The lease named expired, was revoked, or never was."""
    LEASE_LIMIT = "lease_limit"
    """Too many leases are held, or too many keys are attached to the lease."""
    LEASE_EXISTS = "lease_exists"
    """A grant asked for a lease id that is taken."""
    BACKUP_GONE = "backup_gone"
    """The backup file asked for is not open on this node (it expired after a silence, or the node restarted):
    start the backup again."""


def decode(payload: bytes, max_bytes: int = MAX_PEER_MESSAGE, peer: bool = True) -> tuple[str, Any]:
    """Split an incoming payload: ("raft", Message), ("snap_chunk", SnapChunk), ("snap_ack", SnapAck),
    ("client", a ``requests`` record) or ("client_batch", [record or ProtocolError, ...]). Raises ``ProtocolError``
    for anything else, whatever the bytes. ``peer=False``: the sender is not a node of the cluster, and only
    client messages are taken from it (checked before decoding)."""
    n = len(payload)
    if n > max_bytes:
        raise ProtocolError(f"message of {n} bytes is over the limit of {max_bytes}")
    if payload[1:3] == _CLIENT_TAG:  # a client frame: its smaller limit holds before anything is decoded
        if n > MAX_CLIENT_BATCH_MESSAGE:
            raise ProtocolError(f"client message of {n} bytes is over the limit of {MAX_CLIENT_BATCH_MESSAGE}")
        body = _unpack_client(payload)
    elif not peer:
        raise ProtocolError("only the cluster's nodes send Raft and snapshot messages")
    else:
        try:
            body = msgpack.unpackb(payload, raw=False, strict_map_key=True, max_bin_len=max_bytes,
                                   max_str_len=1 << 16, max_array_len=1 << 20, max_map_len=64)
        except Exception as e:
            raise ProtocolError(f"message is not valid msgpack ({type(e).__name__})") from None
    if not isinstance(body, list) or not body or type(body[0]) is not str or body[0] not in ("R", "C", "S", "A"):
        raise ProtocolError('message must be an array starting with "R" (Raft), "S"/"A" (snapshot transfer) or '
                            '"C" (client)')
    if body[0] == "R":
        return "raft", decode_raft(body)
    if body[0] == "S":
        return "snap_chunk", _decode_chunk(body)
    if body[0] == "A":
        return "snap_ack", _decode_ack(body)
    if len(body) == 2 and isinstance(body[1], list):
        if not 0 < len(body[1]) <= MAX_BATCH:
            raise ProtocolError(f"a batch holds 1 to {MAX_BATCH} requests, this one {len(body[1])}")
        return "client_batch", [_validate_item(r) for r in body[1]]
    if n > MAX_CLIENT_MESSAGE:
        raise ProtocolError(f"client request of {n} bytes is over the limit of {MAX_CLIENT_MESSAGE}")
    if len(body) != 2 or not isinstance(body[1], dict):
        raise ProtocolError('a client message is ["C", {request map}] or ["C", [request map, ...]]')
    req = _validate_item(body[1])
    if isinstance(req, ProtocolError):
        raise req  # with the request's id, when it has one: the answer names it
    return "client", req


class _TooMany(Exception):
    pass


MAX_CLIENT_ARRAYS = 8192
"""Most arrays in one client frame over ``HOOKED_CLIENT_FRAME`` bytes: the envelope, a batch, an mset's pairs, a
transaction's compares and operations (one transaction holds at most 3 + 3 * ``MAX_TXN_OPS``); a batch of larger
transactions than that is sent in several frames."""


def _unpack_client(payload: bytes) -> Any:
    """Decode a client frame: at most ``MAX_CLIENT_ARRAYS`` arrays and MAX_BATCH maps (no valid request holds more),
    strings and binaries no longer than a frame may be."""
    kw: dict[str, Any] = {}
    if len(payload) > HOOKED_CLIENT_FRAME:
        counts = [0, 0]

        def on_list(x: list[Any]) -> list[Any]:
            counts[0] += 1
            if counts[0] > MAX_CLIENT_ARRAYS:
                raise _TooMany("arrays")
            return x

        def on_map(x: dict[str, Any]) -> dict[str, Any]:
            counts[1] += 1
            if counts[1] > MAX_BATCH:
                raise _TooMany("maps")
            return x

        kw = {"list_hook": on_list, "object_hook": on_map}
    try:
        return msgpack.unpackb(payload, raw=False, strict_map_key=True, max_bin_len=MAX_CLIENT_BATCH_MESSAGE,
                               max_str_len=1 << 12, max_array_len=2 * MAX_BATCH, max_map_len=16, **kw)
    except _TooMany as e:
        raise ProtocolError(f"client message holds more {e} than any valid one") from None
    except ValueError as e:  # msgpack's limits say which was passed
        raise ProtocolError(f"client message is not valid msgpack or passes a limit ({e!s:.100})") from None
    except Exception as e:
        raise ProtocolError(f"message is not valid msgpack ({type(e).__name__})") from None


def _validate_item(req: Any) -> Request | ProtocolError:
    """A batch's request, or the error to answer it with (the rest of the batch is still served)."""
    if not isinstance(req, dict):
        return ProtocolError("each request of a batch is a map")
    try:
        return from_wire(req)
    except ProtocolError as e:
        rid = req.get("id")
        e.req_id = rid if isinstance(rid, int) and not isinstance(rid, bool) and 0 <= rid <= MAX_INT else 0
        return e


def encode_client(msg: dict[str, Any]) -> bytes:
    out: bytes = _pack(["C", msg])
    return out


def encode_client_batch(msgs: list[dict[str, Any]]) -> bytes:
    out: bytes = _pack(["C", msgs])
    return out


def encode_requests(reqs: list[Request]) -> bytes:
    """A batch frame of request records, as a client sends it (``requests.to_wire``)."""
    out: bytes = _pack(["C", [to_wire(r) for r in reqs]])
    return out


REPLY_FIELDS: dict[str, tuple[type, ...]] = {
    "id": (int,), "ok": (bool,), "value": (bytes, type(None)), "found": (bool,), "error": (str,),
    "message": (str,), "leader": (int,), "leader_addr": (str,), "node": (int,), "address": (str,), "role": (str,),
    "term": (int,), "commit": (int,), "applied": (int,), "last_index": (int,), "snapshot_index": (int,),
    "kv_applied": (int,), "keys": (int,), "sessions": (int,), "log_entries": (int,), "log_bytes": (int,),
    "disk_bytes": (int,), "segments": (int,), "match": (dict,), "last_snapshot": (dict,),
    "snapshot_in_progress": (bool,), "snapshot_sending": (dict,), "snapshot_receiving": (list,),
    "dropped_messages": (int,), "last_dropped": (str,), "bad_frames": (int,),
    "pending_reads": (int,), "pending_writes": (int,), "voters": (list,), "learners": (list,),
    "members": (list,), "pending_config_index": (int,), "transferee": (int,), "vote": (int,), "sent": (dict,),
    "peer_in": (dict,), "cluster_id": (str,), "index": (int,), "size": (int,), "offset": (int,), "data": (bytes,),
    "length": (int,), "done": (bool,), "rev": (int,), "revision": (int,), "kvs": (list,), "count": (int,),
    "more": (bool,), "lease": (int,), "ttl_ms": (int,), "remaining_ms": (int,), "events": (list,),
    "watching": (bool,), "n": (int,), "compact_revision": (int,),
}
"""The type of each field a node's reply may hold (others are ignored by this client). A reply with a field of
another type is malformed: the client trusts nothing it receives."""


def decode_replies(payload: bytes) -> list[dict[str, Any]]:
    """Client side: decode a node's frame, which holds one answer or a batch of them. A malformed frame raises
    ``ProtocolError``; malformed answers in a batch are left out (their requests time out and are retried)."""
    try:
        body = msgpack.unpackb(payload, raw=False, strict_map_key=True)
    except Exception as e:
        raise ProtocolError(f"reply is not valid msgpack ({type(e).__name__})") from None
    if isinstance(body, list) and len(body) == 2 and body[0] == "C":
        if isinstance(body[1], dict):
            if not _valid_reply(body[1]):
                raise ProtocolError(f"malformed reply {body[1]!r:.200}")
            return [body[1]]
        if isinstance(body[1], list):
            return [r for r in body[1] if _valid_reply(r)]
    raise ProtocolError('a reply is ["C", {reply map}] or ["C", [reply map, ...]]')


def _valid_reply(r: Any) -> bool:
    if not isinstance(r, dict) or "id" not in r or "ok" not in r:
        return False
    for k, v in r.items():
        want = REPLY_FIELDS.get(k)
        if want is not None and (type(v) not in want or (type(v) is int and not 0 <= v <= MAX_INT)):
            return False
    return True


def decode_reply(payload: bytes) -> dict[str, Any]:
    """Client side: decode a node's reply (one answer)."""
    replies = decode_replies(payload)
    if len(replies) != 1:
        raise ProtocolError('a reply is ["C", {reply map}]')
    return replies[0]


def _uint(name: str, v: Any, limit: int = MAX_INT) -> int:
    if type(v) is not int or not 0 <= v <= limit:
        what = type(v).__name__ if type(v) is not int else f"{v} (limit {limit})"
        raise ProtocolError(f"field {name} must be an unsigned integer, got {what}")
    return v
