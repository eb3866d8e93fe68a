"""Client requests as typed, immutable records: what a node reads from a client frame (docs/PROTOCOL.md).

The wire carries a msgpack map per request (``{"op": "put", "id": 7, ...}``); ``from_wire`` checks one field by
field and makes the record of its op, or raises ``ProtocolError`` saying what is wrong. Everything past the codec
(the replica, the state machine, membership, backups, the Redis bridge) works on these records and dispatches on
their type with ``match``: a field misspelt is a type error, not a silent ``None``. ``to_wire`` makes the map back
(the same fields a client sends: ``from_wire(to_wire(r)) == r``), for the in-process clients that build records.

The records are ``NamedTuple``s, as the core's ``Entry`` and ``Message`` are: immutable and typed like a frozen
dataclass, and made in a fifth of the time (0.45 us against 2.6 us for nine fields, measured with timeit here),
which matters on the path of every write. Unknown fields of a map are ignored, as they always were.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from zraft.core import MAX_TERM
from zraft.transport.members import check_address, check_key

MAX_INT = (1 << 63) - 1
"""Largest request id, client id, sequence number, offset."""
MAX_MSET_PAIRS = 1024
"""Most key/value pairs in one mset (a client frame's arrays hold at most 2,048 items)."""
MAX_BACKUP_CHUNK = 1 << 20
"""Most bytes of a backup file one ``backup_chunk`` answer carries."""
MAX_RANGE_KEYS = 10_000
"""Most keys one range answer lists (a ``limit`` of 0 means this many)."""
MIN_TTL_MS = 1
"""A key's own TTL may be as short as Redis allows (1 ms; the leader's tick decides when it goes)."""
MIN_LEASE_TTL_MS = 2_000
"""Shortest TTL of a granted lease: a keepalive must be able to reach a new leader within it (etcd's minimum is 1.5
election timeouts; ours is 1 s at most)."""
MAX_TTL_MS = 10 * 365 * 86_400_000
"""Longest TTL, of either kind: ten years."""
MAX_LEASE_ID = (1 << 63) - 1
MAX_RANGE_BYTES = 4 << 20
"""About the most bytes of keys and values one range answer carries (always at least one key): past it the answer
stops early and says ``more``."""


class ProtocolError(Exception):
    """A message that breaks the protocol. Its text says what was wrong, for the error reply or the log.
    ``req_id`` is the request's id when it could be read (0 otherwise), for the error answer."""

    def __init__(self, message: str, req_id: int = 0) -> None:
        super().__init__(message)
        self.req_id = req_id


# ---------------------------------------------------------------------- writes: through the log, in a session
# Every write names its session: ``client`` (the session id), ``seq`` (this write's number in it) and ``ack``
# (every write below it is answered). A retry carries the same three, and is answered without being applied again.


class Put(NamedTuple):
    """Set ``key`` to ``value``. With options it is Redis's SET: ``nx`` only if absent, ``xx`` only if present,
    ``get`` answer the old value; ``lease``: attach the key to this lease (deleted when it expires or is revoked);
    ``ttl_ms``: give it its own TTL (Redis's PX); ``keep_ttl``: keep the lease or TTL it has (KEEPTTL). Without
    those three a put detaches the key from its lease."""

    id: int
    client: int
    seq: int
    ack: int
    key: bytes
    value: bytes
    nx: bool = False
    xx: bool = False
    get: bool = False
    lease: int = 0
    ttl_ms: int = 0
    keep_ttl: bool = False


class Append(NamedTuple):
    """Append ``value`` to ``key``'s value; ``length``: answer with the value's new length (wire field ``len``)."""

    id: int
    client: int
    seq: int
    ack: int
    key: bytes
    value: bytes
    length: bool = False


class Delete(NamedTuple):
    id: int
    client: int
    seq: int
    ack: int
    key: bytes


class Incr(NamedTuple):
    """Add ``by`` (signed 64-bit) to the integer ``key`` holds (0 when absent)."""

    id: int
    client: int
    seq: int
    ack: int
    key: bytes
    by: int


class GetDel(NamedTuple):
    id: int
    client: int
    seq: int
    ack: int
    key: bytes


class MSet(NamedTuple):
    """Set every pair at once (one log entry): ``pairs`` is key, value, key, value, ..."""

    id: int
    client: int
    seq: int
    ack: int
    pairs: tuple[bytes, ...]


class LeaseGrant(NamedTuple):
    """Grant a lease of ``ttl_ms`` (``MIN_LEASE_TTL_MS`` to ``MAX_TTL_MS``); ``lease``: its id (0: the store picks the
    next free one). The answer says the id."""

    id: int
    client: int
    seq: int
    ack: int
    ttl_ms: int
    lease: int = 0


class LeaseRevoke(NamedTuple):
    """Drop a lease now, and delete every key attached to it (at one revision)."""

    id: int
    client: int
    seq: int
    ack: int
    lease: int


class Expire(NamedTuple):
    """Give ``key`` its own TTL of ``ttl_ms`` (at most 0: delete it now; None: drop its TTL or lease, Redis's
    PERSIST). The key's value and revisions do not change."""

    id: int
    client: int
    seq: int
    ack: int
    key: bytes
    ttl_ms: int | None


class Compare(NamedTuple):
    """A transaction's condition on ``key``: its ``target`` (``value``, ``version``, ``create_revision`` or
    ``mod_revision``; 0 for a key that is not there, whose value compares false whatever the operator) against
    ``operand`` (bytes for a value, an integer for the others) with ``cmp`` (``=``, ``!=``, ``<``, ``>``; values
    compare bytewise). On the wire: ``[key, target, cmp, operand]``."""

    key: bytes
    target: str
    cmp: str
    operand: bytes | int


class TxnOp(NamedTuple):
    """One operation of a transaction. On the wire: ``["put", key, value]``, ``["append", key, value]``, ``["delete",
    key]``, ``["delete_range", start, end]`` (``end`` nil: to the last key), ``["get", key]`` or ``["range", start,
    end, limit]``."""

    kind: str
    key: bytes
    arg: bytes | None = None
    """The value of a put or append; the end of a range or delete_range."""
    limit: int = 0
    """A range's limit (0: ``MAX_RANGE_KEYS``); a put's lease (0: none)."""


class Txn(NamedTuple):
    """If every compare holds, ``then``'s operations, else ``otherwise``'s (wire fields ``if``, ``then``, ``else``),
    in order (each sees the ones before), as one write: atomically, at one revision, once."""

    id: int
    client: int
    seq: int
    ack: int
    compares: tuple[Compare, ...]
    then: tuple[TxnOp, ...]
    otherwise: tuple[TxnOp, ...] = ()


TARGETS = ("value", "version", "create_revision", "mod_revision")
CMPS = ("=", "!=", "<", ">")
TXN_OPS = ("put", "delete", "delete_range", "get", "range", "append")
_TARGET_SET, _CMP_SET, _TXN_OP_SET = frozenset(TARGETS), frozenset(CMPS), frozenset(TXN_OPS)
MAX_TXN_OPS = 128
"""Most compares, and most operations in each branch, of one transaction."""


# ---------------------------------------------------------------------- reads and node operations


class Get(NamedTuple):
    """Read ``key``: linearizable, or at once from the receiving node's state when ``stale``."""

    id: int
    key: bytes
    stale: bool = False


class Range(NamedTuple):
    """The keys in ``[start, end)`` in key order (``end`` None: to the last key), with their values and revisions:
    at most ``limit`` (0: ``MAX_RANGE_KEYS``); ``keys_only`` without values, ``count_only`` just how many.
    Linearizable, or at once from the receiving node's state when ``stale``. On the wire ``prefix: true`` asks for
    the keys that start with ``key`` (``end`` is then ``prefix_end(key)``)."""

    id: int
    start: bytes
    end: bytes | None = None
    limit: int = 0
    keys_only: bool = False
    count_only: bool = False
    stale: bool = False


def prefix_end(prefix: bytes) -> bytes | None:
    """The first key after every key that starts with ``prefix`` (None: there is none, the range goes to the end)."""
    p = prefix.rstrip(b"\xff")
    return p[:-1] + bytes([p[-1] + 1]) if p else None


class LeaseKeepAlive(NamedTuple):
    """Renew a lease: the leader restarts its TTL from now (leader only; not logged). The answer says the TTL."""

    id: int
    lease: int


class LeaseTTL(NamedTuple):
    """A lease's TTL and the time it has left, as the leader sees it (leader only): of ``lease``, or of the lease
    ``key`` is attached to when ``key`` is given (Redis's TTL and PTTL)."""

    id: int
    lease: int = 0
    key: bytes | None = None


class Watch(NamedTuple):
    """Be sent every change to the keys in ``[start, end)`` (``end`` None: ``start`` alone; on the wire ``prefix:
    true`` makes it every key that starts with ``start``, and ``all: true`` every key) from ``start_revision`` (0:
    from the next one) on, in revision order, with each key's value before it if ``prev_kv``. The answers carry
    this request's id: first ``watching``, then batches of events (``docs/PROTOCOL.md``). Any node serves it, from
    what it has applied; it is kept while the client acks it (``WatchAck``)."""

    id: int
    start: bytes
    end: bytes | None = None
    start_revision: int = 0
    prev_kv: bool = False
    whole: bool = False
    """Every key from ``start`` on (``end`` ignored): a range to the last key."""


class WatchStart(NamedTuple):
    """Make the cluster keep a history of its changes for watches, if it does not yet (leader only; a watch on a
    node before that is answered ``busy``). ``zraft.client`` sends it before its first watch."""

    id: int


class WatchAck(NamedTuple):
    """The client has the events of watch ``watch`` (its request id) up to ``revision`` and wants more: renews the
    watch (a watch not acked for ``WATCH_EXPIRY_S`` is dropped)."""

    id: int
    watch: int
    revision: int


class WatchCancel(NamedTuple):
    id: int
    watch: int


class Status(NamedTuple):
    id: int


class Probe(NamedTuple):
    id: int


class Members(NamedTuple):
    id: int


class AddLearner(NamedTuple):
    """Add ``node`` at ``address`` as a learner; ``key``: its CurveZMQ public key (Z85), ``""`` without one."""

    id: int
    node: int
    address: str
    key: str = ""


class Promote(NamedTuple):
    id: int
    node: int


class Remove(NamedTuple):
    id: int
    node: int


class Transfer(NamedTuple):
    id: int
    node: int


class Backup(NamedTuple):
    id: int


class BackupChunk(NamedTuple):
    id: int
    index: int  # type: ignore[assignment]  # shadows tuple.index, as intended
    term: int
    offset: int
    length: int


class BackupEnd(NamedTuple):
    id: int
    index: int  # type: ignore[assignment]  # shadows tuple.index, as intended
    term: int


Write = Put | Append | Delete | Incr | GetDel | MSet | Txn | LeaseGrant | LeaseRevoke | Expire
"""A request that changes the store: it goes through the log, in a session."""
LeaderOnly = LeaseKeepAlive | LeaseTTL | WatchStart
WatchRequest = Watch | WatchAck | WatchCancel
"""A request only the leader answers, from what only it knows (when leases expire): not logged."""
MemberChange = AddLearner | Promote | Remove | Transfer
"""A request that changes the membership or moves leadership (leader only)."""
Request = (Write | LeaderOnly | WatchRequest | Get | Range | Status | Probe | Members | MemberChange | Backup
           | BackupChunk | BackupEnd)
WRITES = (Put, Append, Delete, Incr, GetDel, MSet, Txn, LeaseGrant, LeaseRevoke, Expire)
"""``isinstance(req, WRITES)``: a ``Write``."""
LEADER_ONLY = (LeaseKeepAlive, LeaseTTL, WatchStart)
"""``isinstance(req, LEADER_ONLY)``: a ``LeaderOnly``."""
KINDS: dict[str, type] = {
    "put": Put, "append": Append, "delete": Delete, "get": Get, "status": Status, "probe": Probe, "members": Members,
    "add_learner": AddLearner, "promote": Promote, "remove": Remove, "transfer": Transfer, "backup": Backup,
    "backup_chunk": BackupChunk, "backup_end": BackupEnd, "incr": Incr, "getdel": GetDel, "mset": MSet,
    "range": Range, "txn": Txn, "lease_grant": LeaseGrant, "lease_revoke": LeaseRevoke,
    "lease_keepalive": LeaseKeepAlive, "lease_ttl": LeaseTTL, "expire": Expire, "watch": Watch,
    "watch_ack": WatchAck, "watch_cancel": WatchCancel, "watch_start": WatchStart}
"""Every request type, by its wire ``op``."""
OPS = tuple(KINDS)
OP_OF: dict[type, str] = {t: op for op, t in KINDS.items()}
"""A request type's wire ``op``: ``OP_OF[type(req)]``."""
WRITE_OPS = frozenset(OP_OF[t] for t in WRITES)

_new = tuple.__new__
"""``_new(Put, (...))``: a record made in C, its fields already checked (the named tuple's ``__new__`` is Python)."""


# ---------------------------------------------------------------------- from and to the wire


def from_wire(req: dict[str, Any]) -> Request:
    """The record a request map asks for, or ``ProtocolError`` saying which field is wrong."""
    op = req.get("op")
    n = len(req)
    # The common cases, checked in one expression each: exactly the fields of a plain get, put, append or delete.
    if n == 3 and op == "get":
        i, k = req.get("id"), req.get("key")
        if type(i) is int and type(k) is bytes and 0 <= i <= MAX_INT:
            return _new(Get, (i, k, False))
    elif (n == 7 and (op == "put" or op == "append")) or (n == 6 and op == "delete"):
        c, q, a, i, k = req.get("client"), req.get("seq"), req.get("ack"), req.get("id"), req.get("key")
        if (type(c) is int and type(q) is int and type(a) is int and type(i) is int and type(k) is bytes
                and 0 < c <= MAX_INT and 0 < q <= MAX_INT and 0 < a <= MAX_INT and 0 <= i <= MAX_INT):
            if op == "delete":
                return _new(Delete, (i, c, q, a, k))
            v = req.get("value")
            if type(v) is bytes:
                return _new(Put, (i, c, q, a, k, v, False, False, False, 0, 0, False)) if op == "put" \
                    else _new(Append, (i, c, q, a, k, v, False))
    elif op == "txn":
        c, q, a, i = req.get("client"), req.get("seq"), req.get("ack"), req.get("id")
        if (type(c) is int and type(q) is int and type(a) is int and type(i) is int
                and 0 < c <= MAX_INT and 0 < q <= MAX_INT and 0 < a <= MAX_INT and 0 <= i <= MAX_INT):
            return _new(Txn, (i, c, q, a, tuple([_compare(x) for x in _list(req, "if")]),
                              tuple([_txn_op(x) for x in _list(req, "then")]),
                              tuple([_txn_op(x) for x in _list(req, "else")])))
    if type(op) is not str:
        raise ProtocolError("field op must be a string")
    kind: Any = KINDS.get(op)  # a request type: called below with the fields its op has
    if kind is None:
        raise ProtocolError(f"unknown op {op!r:.40}; expected one of {', '.join(OPS)}")
    rid = _uint(req, "id")
    for flag in ("nx", "xx", "get", "keep_ttl"):
        if flag in req and (op != "put" or type(req[flag]) is not bool):
            raise ProtocolError(f"field {flag} is a boolean option of put")
    if "stale" in req and (type(req["stale"]) is not bool):
        raise ProtocolError("field stale must be a boolean")
    if "len" in req and (type(req["len"]) is not bool):
        raise ProtocolError("field len must be a boolean")
    if kind in WRITES:
        session = _uint(req, "client"), _uint(req, "seq"), _uint(req, "ack")
        if 0 in session:
            raise ProtocolError("client, seq and ack start at 1")
        if kind is MSet:
            pairs = req.get("pairs")
            if (not isinstance(pairs, list) or not 0 < len(pairs) <= 2 * MAX_MSET_PAIRS or len(pairs) % 2
                    or not all(type(x) is bytes for x in pairs)):
                raise ProtocolError(f"field pairs must be a list of 1 to {MAX_MSET_PAIRS} key, value pairs (bin)")
            return MSet(rid, *session, tuple(pairs))
        if kind is Txn:
            return Txn(rid, *session, tuple(_compare(c) for c in _list(req, "if")),
                       tuple(_txn_op(o) for o in _list(req, "then")), tuple(_txn_op(o) for o in _list(req, "else")))
        if kind is LeaseGrant:
            return LeaseGrant(rid, *session, _ttl(req, MIN_LEASE_TTL_MS), _uint(req, "lease") if "lease" in req else 0)
        if kind is LeaseRevoke:
            return LeaseRevoke(rid, *session, _lease(req))
        key = _bin(req, "key")
        if kind is Put:
            if req.get("nx") is True and req.get("xx") is True:
                raise ProtocolError("nx and xx exclude each other")
            lease = _lease(req) if "lease" in req else 0
            ttl = _ttl(req, MIN_TTL_MS) if "ttl_ms" in req else 0
            keep = req.get("keep_ttl") is True
            if (lease > 0) + (ttl > 0) + keep > 1:
                raise ProtocolError("a put has one of lease, ttl_ms and keep_ttl at most")
            return Put(rid, *session, key, _bin(req, "value"), req.get("nx") is True, req.get("xx") is True,
                       req.get("get") is True, lease, ttl, keep)
        if kind is Expire:
            left = req.get("ttl_ms")
            if left is not None and (type(left) is not int or not -MAX_INT <= left <= MAX_TTL_MS):
                raise ProtocolError(f"field ttl_ms must be nil or an integer of at most {MAX_TTL_MS}")
            return Expire(rid, *session, key, left)
        if kind is Append:
            return Append(rid, *session, key, _bin(req, "value"), req.get("len") is True)
        if kind is Incr:
            by = req.get("by")
            if type(by) is not int or not -(1 << 63) <= by < 1 << 63:
                raise ProtocolError("field by must be a 64-bit signed integer")
            return Incr(rid, *session, key, by)
        return Delete(rid, *session, key) if kind is Delete else GetDel(rid, *session, key)
    if kind is Get:
        return Get(rid, _bin(req, "key"), req.get("stale") is True)
    if kind is LeaseKeepAlive:
        return LeaseKeepAlive(rid, _lease(req))
    if kind is Watch:
        return _watch(req, rid)
    if kind is WatchAck:
        return WatchAck(rid, _uint(req, "watch"), _uint(req, "revision"))
    if kind is WatchCancel:
        return WatchCancel(rid, _uint(req, "watch"))
    if kind is LeaseTTL:
        named = req.get("key")
        if named is not None and type(named) is not bytes:
            raise ProtocolError("field key must be nil or bytes (msgpack bin)")
        if (named is None) == ("lease" not in req):
            raise ProtocolError("lease_ttl names a lease or a key")
        return LeaseTTL(rid, _lease(req) if named is None else 0, named)
    if kind is Range:
        return _range(req, rid)
    if kind in (Promote, Remove, Transfer, AddLearner):
        node = req.get("node")
        if type(node) is not int or not 0 < node <= MAX_TERM:
            raise ProtocolError("field node must be a positive node id")
        if kind is not AddLearner:
            rec: Promote | Remove | Transfer = kind(rid, node)
            return rec
        try:
            address, public = check_address(req.get("address")), check_key(req.get("key", ""))
        except ValueError as e:
            raise ProtocolError(str(e)) from None
        return AddLearner(rid, node, address, public)
    if kind is BackupChunk:
        return BackupChunk(rid, _uint(req, "index"), _uint(req, "term"), _uint(req, "offset"),
                           _uint(req, "length", MAX_BACKUP_CHUNK))
    if kind is BackupEnd:
        return BackupEnd(rid, _uint(req, "index"), _uint(req, "term"))
    plain: Status | Probe | Members | Backup | WatchStart = kind(rid)  # nothing but the id
    return plain


_WIRE_NAMES: dict[tuple[type, str], str] = {(Append, "length"): "len", (Range, "start"): "key", (Txn, "compares"): "if",
                                            (Txn, "otherwise"): "else", (Watch, "start"): "key",
                                            (Watch, "whole"): "all"}
"""Record fields named otherwise on the wire."""


def to_wire(r: Request) -> dict[str, Any]:
    """The request map a client sends for ``r``: its op and fields, options only when set."""
    out: dict[str, Any] = {"op": OP_OF[type(r)]}
    defaults = type(r)._field_defaults
    for name, v in zip(r._fields, r, strict=True):
        if name in defaults and v == defaults[name]:
            continue
        out[_WIRE_NAMES.get((type(r), name), name)] = (
            [list(x) if isinstance(x, tuple) else x for x in v] if type(v) is tuple else v)
    return out


def with_session(r: Write, client: int, seq: int, ack: int) -> Write:
    """``r`` in session ``client`` as its write ``seq`` (every write below ``ack`` answered)."""
    return r._replace(client=client, seq=seq, ack=ack)


def _list(req: dict[str, Any], name: str) -> list[Any]:
    v = req.get(name, [])
    if type(v) is not list or len(v) > MAX_TXN_OPS:
        raise ProtocolError(f"field {name} must be a list of at most {MAX_TXN_OPS} items")
    return v


def _compare(c: Any) -> Compare:
    if type(c) is not list or len(c) != 4 or type(c[0]) is not bytes:
        raise ProtocolError("a compare is [key, target, cmp, operand]")
    key, target, cmp, operand = c
    if target not in _TARGET_SET or cmp not in _CMP_SET:
        raise ProtocolError(f"a compare's target is one of {', '.join(TARGETS)}; its cmp one of {' '.join(CMPS)}")
    if target == "value":
        if type(operand) is not bytes:
            raise ProtocolError("a value compare's operand must be bytes (msgpack bin)")
    elif type(operand) is not int or not 0 <= operand <= MAX_INT:
        raise ProtocolError(f"a {target} compare's operand must be an unsigned integer")
    return _new(Compare, (key, target, cmp, operand))


def _txn_op(o: Any) -> TxnOp:
    if type(o) is not list or not 2 <= len(o) <= 4 or o[0] not in _TXN_OP_SET or type(o[1]) is not bytes:
        raise ProtocolError(f"a transaction operation is [kind, key, ...] with kind one of {', '.join(TXN_OPS)}")
    kind, key = o[0], o[1]
    arg = o[2] if len(o) > 2 else None
    limit = o[3] if len(o) > 3 else 0
    if kind in ("put", "append") and type(arg) is not bytes:
        raise ProtocolError(f"a{'n' if kind == 'append' else ''} {kind} in a transaction is [\"{kind}\", key, value]")
    if arg is not None and type(arg) is not bytes:
        raise ProtocolError(f"the third item of a {kind} is bytes or nil")
    if kind in ("delete", "get") and arg is not None:
        raise ProtocolError(f"a {kind} in a transaction is [\"{kind}\", key]")
    if kind == "put":
        if type(limit) is not int or not 0 <= limit <= MAX_LEASE_ID:
            raise ProtocolError("a put's fourth item is its lease (0: none)")
    elif type(limit) is not int or not 0 <= limit <= MAX_RANGE_KEYS or (limit and kind != "range"):
        raise ProtocolError(f"a range's limit is 0 to {MAX_RANGE_KEYS}, and only a range has one")
    return _new(TxnOp, (kind, key, arg, limit))


def _watch(req: dict[str, Any], rid: int) -> Watch:
    start = _bin(req, "key")
    for flag in ("prefix", "prev_kv", "all"):
        if type(req.get(flag, False)) is not bool:
            raise ProtocolError(f"field {flag} must be a boolean")
    end = req.get("end")
    if end is not None and type(end) is not bytes:
        raise ProtocolError("field end must be bytes (msgpack bin) or nil")
    whole = req.get("all") is True
    if req.get("prefix"):
        if end is not None or whole:
            raise ProtocolError("a watch is of a key, a prefix, a range or all keys: one of them")
        end = prefix_end(start)
        whole = end is None
    if end is not None and end <= start:
        raise ProtocolError("a watch's range is empty: end must come after key")
    rev = _uint(req, "start_revision") if "start_revision" in req else 0
    return Watch(rid, start, None if whole else end, rev, req.get("prev_kv") is True, whole)


def _range(req: dict[str, Any], rid: int) -> Range:
    start = _bin(req, "key")
    for flag in ("keys_only", "count_only", "prefix"):
        if type(req.get(flag, False)) is not bool:
            raise ProtocolError(f"field {flag} must be a boolean")
    if req.get("prefix"):
        if req.get("end") is not None:
            raise ProtocolError("a range is a prefix or has an end, not both")
        end = prefix_end(start)
    else:
        end = req.get("end")
        if end is not None and type(end) is not bytes:
            raise ProtocolError("field end must be bytes (msgpack bin) or nil")
    limit = _uint(req, "limit", MAX_RANGE_KEYS) if "limit" in req else 0
    return Range(rid, start, end, limit, req.get("keys_only") is True, req.get("count_only") is True,
                 req.get("stale") is True)


def _lease(req: dict[str, Any]) -> int:
    v = req.get("lease")
    if type(v) is not int or not 0 < v <= MAX_LEASE_ID:
        raise ProtocolError("field lease must be a lease id (a positive integer)")
    return v


def _ttl(req: dict[str, Any], least: int) -> int:
    v = req.get("ttl_ms")
    if type(v) is not int or not least <= v <= MAX_TTL_MS:
        raise ProtocolError(f"field ttl_ms must be an integer from {least} to {MAX_TTL_MS} (milliseconds)")
    return v


def _uint(req: dict[str, Any], name: str, limit: int = MAX_INT) -> int:
    v = req.get(name)
    if type(v) is not int or not 0 <= v <= limit:
        what = type(v).__name__ if type(v) is not int else f"{v} (limit {limit})"
        raise ProtocolError(f"field {name} must be an unsigned integer, got {what}")
    return v


def _bin(req: dict[str, Any], name: str) -> bytes:
    v = req.get(name)
    if type(v) is not bytes:
        raise ProtocolError(f"field {name} must be bytes (msgpack bin)")
    return v
