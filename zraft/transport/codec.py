"""The wire format: msgpack over ZeroMQ, decoded with bounds and validation (see docs/PROTOCOL.md).

Two protocols share a node's ROUTER socket, told apart by the first element of the (msgpack array) payload:
  ["R", ...]  a Raft message between nodes
  ["C", ...]  a client request; the node answers ["C", ...] (a map inside)
Decoding never trusts the input: a payload over the size limit, that does not decode, or whose fields have the
wrong types raises ``ProtocolError`` with a sentence saying what is wrong; the node drops or answers it and goes
on.
"""

from __future__ import annotations

from typing import Any

import msgpack

from zraft.core import ClusterConfig, Entry, Message, MsgType, Snapshot

VERSION = 1
MAX_PEER_MESSAGE = 1 << 30
"""Largest Raft message accepted (a whole snapshot travels in one until snapshots are chunked)."""
MAX_CLIENT_MESSAGE = (1 << 20) + (64 << 10)
"""Largest client request: a value at the limit (1 MiB) plus a key and the envelope."""
MAX_INT = (1 << 63) - 1

_MSG_TYPES = {int(t) for t in MsgType}


class ProtocolError(Exception):
    """A message that breaks the protocol. Its text says what was wrong, for the error reply or the log."""


# ---------------------------------------------------------------------- Raft messages


def encode_raft(m: Message) -> bytes:
    snap = None
    if m.snapshot is not None:
        s = m.snapshot
        snap = [s.index, s.term, list(s.config.voters), s.data if s.data is not None else b""]
    ctx = m.context
    if ctx is not None and not isinstance(ctx, int):
        raise TypeError(f"a Raft message context must be an int on the wire, not {type(ctx).__name__}")
    out: bytes = msgpack.packb(
        ["R", VERSION, int(m.type), m.src, m.dst, m.term, m.log_term, m.index, m.entries, m.commit, m.reject, m.hint,
         ctx, snap],
        use_bin_type=True,
    )
    return out


def decode_raft(body: list[Any]) -> Message:
    if len(body) != 14:
        raise ProtocolError(f"a Raft message has 14 fields, this one has {len(body)}")
    _, version, mtype, src, dst, term, log_term, index, entries, commit, reject, hint, ctx, snap = body
    if version != VERSION:
        raise ProtocolError(f"Raft protocol version {version!r} is not supported (this node speaks {VERSION})")
    if mtype not in _MSG_TYPES:
        raise ProtocolError(f"unknown Raft message type {mtype!r}")
    for name, v in (("src", src), ("dst", dst), ("term", term), ("log_term", log_term), ("index", index),
                    ("commit", commit), ("hint", hint)):
        _uint(name, v)
    if not isinstance(reject, bool):
        raise ProtocolError("field reject must be a boolean")
    if ctx is not None:
        _uint("context", ctx)
    if not isinstance(entries, list):
        raise ProtocolError("field entries must be an array")
    ents = []
    for e in entries:
        if not (isinstance(e, list) and len(e) == 4 and isinstance(e[3], bytes)):
            raise ProtocolError("an entry must be [index, term, kind, data(bytes)]")
        ents.append(Entry(_uint("entry index", e[0]), _uint("entry term", e[1]), _uint("entry kind", e[2]), e[3]))
    snapshot = None
    if snap is not None:
        if not (isinstance(snap, list) and len(snap) == 4 and isinstance(snap[2], list)
                and isinstance(snap[3], bytes)):
            raise ProtocolError("a snapshot must be [index, term, voters, data(bytes)]")
        try:
            cfg = ClusterConfig(tuple(_uint("voter", v) for v in snap[2]))
        except ValueError as e:
            raise ProtocolError(f"bad snapshot configuration: {e}") from None
        snapshot = Snapshot(_uint("snapshot index", snap[0]), _uint("snapshot term", snap[1]), cfg, snap[3])
    return Message(MsgType(mtype), src, dst, term, log_term, index, tuple(ents), commit, reject, hint, ctx, snapshot)


# ---------------------------------------------------------------------- client requests and replies

CLIENT_OPS = ("put", "append", "delete", "get", "status", "probe")


def decode(payload: bytes, max_bytes: int = MAX_PEER_MESSAGE) -> tuple[str, Any]:
    """Split an incoming payload: ("raft", Message) or ("client", request map)."""
    if len(payload) > max_bytes:
        raise ProtocolError(f"message of {len(payload)} bytes is over the limit of {max_bytes}")
    try:
        body = msgpack.unpackb(payload, raw=False, strict_map_key=True, max_bin_len=max_bytes,
                               max_str_len=1 << 16, max_array_len=1 << 20, max_map_len=64)
    except Exception as e:
        raise ProtocolError(f"message is not valid msgpack ({type(e).__name__})") from None
    if not isinstance(body, list) or not body or body[0] not in ("R", "C"):
        raise ProtocolError('message must be an array starting with "R" (Raft) or "C" (client)')
    if body[0] == "R":
        return "raft", decode_raft(body)
    if len(payload) > MAX_CLIENT_MESSAGE:
        raise ProtocolError(f"client request of {len(payload)} bytes is over the limit of {MAX_CLIENT_MESSAGE}")
    if len(body) != 2 or not isinstance(body[1], dict):
        raise ProtocolError('a client message is ["C", {request map}]')
    return "client", validate_request(body[1])


def validate_request(req: dict[str, Any]) -> dict[str, Any]:
    op = req.get("op")
    if op not in CLIENT_OPS:
        raise ProtocolError(f"unknown op {op!r}; expected one of {', '.join(CLIENT_OPS)}")
    _uint("id", req.get("id"))
    if op in ("put", "append", "delete"):
        for f in ("client", "seq", "ack"):
            _uint(f, req.get(f))
        if req["client"] == 0 or req["seq"] == 0 or req["ack"] == 0:
            raise ProtocolError("client, seq and ack start at 1")
    if op in ("put", "append", "delete", "get"):
        if not isinstance(req.get("key"), bytes):
            raise ProtocolError("field key must be bytes (msgpack bin)")
    if op in ("put", "append") and not isinstance(req.get("value"), bytes):
        raise ProtocolError("field value must be bytes (msgpack bin)")
    if "stale" in req and not isinstance(req["stale"], bool):
        raise ProtocolError("field stale must be a boolean")
    return req


def encode_client(msg: dict[str, Any]) -> bytes:
    out: bytes = msgpack.packb(["C", msg], use_bin_type=True)
    return out


def decode_reply(payload: bytes) -> dict[str, Any]:
    """Client side: decode a node's reply."""
    try:
        body = msgpack.unpackb(payload, raw=False)
    except Exception as e:
        raise ProtocolError(f"reply is not valid msgpack ({type(e).__name__})") from None
    if not (isinstance(body, list) and len(body) == 2 and body[0] == "C" and isinstance(body[1], dict)):
        raise ProtocolError('a reply is ["C", {reply map}]')
    reply: dict[str, Any] = body[1]
    return reply


def _uint(name: str, v: Any) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v <= MAX_INT:
        raise ProtocolError(f"field {name} must be an unsigned integer, got {type(v).__name__}")
    return v
