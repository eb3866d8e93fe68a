"""Redis transactions on zraft's: ``WATCH``/``UNWATCH``/``MULTI``/``EXEC``/``DISCARD``, and the commands that are
one transaction each (``GETSET``, ``MSETNX``).

``WATCH`` reads each key's ``mod_revision`` (0: absent) behind a read barrier, as any read. ``MULTI`` starts
queueing: each command after it is checked (arity, and whether a transaction can run it) and answered ``+QUEUED``,
or refused -- then ``EXEC`` answers ``-EXECABORT``. ``EXEC`` sends one zraft transaction: if every watched key
still has the ``mod_revision`` read when it was watched, run the queued commands' operations (one log entry, one
revision, all or nothing, exactly once however often the node retries it); its reply is the queued commands'
replies, or the null array when a watched key changed -- exact, where Redis's own may also fail on a write that
changed nothing. Commands a transaction cannot express (``INCR`` and friends, ``SET`` with options) are refused
inside ``MULTI`` with an error that says so.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from zraft.server.redis import protocol as resp
from zraft.server.redis.commands import UNSENT, _whole_store, failure
from zraft.server.redis.conn import Conn
from zraft.statemachine import kv
from zraft.transport import codec, requests
from zraft.transport.requests import Compare, Txn, TxnOp

if TYPE_CHECKING:
    from zraft.server.redis.server import RespServer

MAX_QUEUED_BYTES = codec.MAX_CLIENT_MESSAGE - (64 << 10)
"""The most bytes of arguments the commands queued after MULTI hold: EXEC sends them as one zraft request."""
Reply = Callable[[list[Any], resp.Replies], bytes]
"""A queued command's reply from its operations' results (and the protocol in use)."""


def _value(x: Any) -> bytes | None:
    """A get's result in a transaction's answer: [value, create, mod, version] or None."""
    return x[0] if type(x) is list and x and type(x[0]) is bytes else None


def _translate(a: list[bytes]) -> tuple[list[TxnOp], Reply] | str:
    """A queued command as transaction operations and how to make its reply, or why a transaction cannot run it."""
    name = a[0].upper()
    if name == b"GET" and len(a) == 2:
        return [TxnOp("get", a[1])], lambda r, rr: rr.bulk(_value(r[0]))
    if name == b"SET" and len(a) == 3:
        return [TxnOp("put", a[1], a[2])], lambda r, rr: resp.OK
    if name == b"GETSET" and len(a) == 3:
        return [TxnOp("get", a[1]), TxnOp("put", a[1], a[2])], lambda r, rr: rr.bulk(_value(r[0]))
    if name == b"GETDEL" and len(a) == 2:
        return [TxnOp("get", a[1]), TxnOp("delete", a[1])], lambda r, rr: rr.bulk(_value(r[0]))
    if name == b"APPEND" and len(a) == 3:
        return ([TxnOp("append", a[1], a[2]), TxnOp("get", a[1])],
                lambda r, rr: resp.integer(len(_value(r[1]) or b"")))
    if name == b"DEL" and len(a) >= 2:
        return [TxnOp("delete", k) for k in a[1:]], lambda r, rr: resp.integer(sum(x for x in r if type(x) is int))
    if name == b"MSET" and len(a) >= 3 and len(a) % 2 == 1:
        return [TxnOp("put", a[i], a[i + 1]) for i in range(1, len(a), 2)], lambda r, rr: resp.OK
    if name == b"MGET" and len(a) >= 2:
        return [TxnOp("get", k) for k in a[1:]], lambda r, rr: rr.bulks([_value(x) for x in r])
    if name == b"EXISTS" and len(a) >= 2:
        return [TxnOp("get", k) for k in a[1:]], lambda r, rr: resp.integer(sum(1 for x in r if x is not None))
    if name == b"STRLEN" and len(a) == 2:
        return [TxnOp("get", a[1])], lambda r, rr: resp.integer(len(_value(r[0]) or b""))
    if name == b"PING" and len(a) <= 2:
        echo = a[1] if len(a) == 2 else None
        return [], lambda r, rr: resp.PONG if echo is None else resp.bulk(echo)
    if name == b"SET":
        return "SET with options inside MULTI (zraft runs a transaction's commands without conditions of their own)"
    return f"{name.decode(errors='replace')} inside MULTI (a transaction runs GET, SET, GETSET, GETDEL, APPEND, " \
           f"DEL, MSET, MGET, EXISTS, STRLEN and PING)"


def queue(s: RespServer, c: Conn, a: list[bytes]) -> None:
    """A command sent after MULTI: queued (``+QUEUED``), or refused, which makes EXEC fail."""
    t = _translate(a)
    assert c.multi is not None
    if isinstance(t, str):
        c.multi_failed = True
        s.immediate(c, resp.error(f"ERR zraft does not run {t}"))
        return
    if len(c.multi) >= requests.MAX_TXN_OPS:
        c.multi_failed = True
        s.immediate(c, resp.error(f"ERR zraft runs at most {requests.MAX_TXN_OPS} commands in a transaction"))
        return
    if sum(len(x) for args in (*c.multi, a) for x in args) > MAX_QUEUED_BYTES:
        c.multi_failed = True  # (what is queued is held in memory until EXEC: bounded like one request)
        s.immediate(c, resp.error(f"ERR a transaction holds at most {MAX_QUEUED_BYTES} bytes of arguments"))
        return
    c.multi.append(a)
    s.immediate(c, resp.simple("QUEUED"))


def _multi(s: RespServer, c: Conn, a: list[bytes]) -> None:
    if c.multi is not None:
        s.immediate(c, resp.error("ERR MULTI calls can not be nested"))
        return
    c.multi = []
    c.multi_failed = False
    s.immediate(c, resp.OK)


def _discard(s: RespServer, c: Conn, a: list[bytes]) -> None:
    if c.multi is None:
        s.immediate(c, resp.error("ERR DISCARD without MULTI"))
        return
    c.multi = None
    c.watched = {}
    s.immediate(c, resp.OK)


def _unwatch(s: RespServer, c: Conn, a: list[bytes]) -> None:
    c.watched = {}
    s.immediate(c, resp.OK)


def _watch(s: RespServer, c: Conn, a: list[bytes]) -> None:
    if c.multi is not None:
        s.immediate(c, resp.error("ERR WATCH inside MULTI is not allowed"))
        return
    keys = a[1:]
    if len(c.watched) + len(keys) > requests.MAX_TXN_OPS:
        s.immediate(c, resp.error(f"ERR zraft watches at most {requests.MAX_TXN_OPS} keys per connection"))
        return

    def make(data: kv.KVStore) -> bytes:
        for k in keys:
            if k not in c.watched:  # (watched twice: the first moment counts, as in Redis)
                m = data.meta(k)
                c.watched[k] = 0 if m is None else m[2]
        return resp.OK

    _whole_store(s, c, make)


def _exec(s: RespServer, c: Conn, a: list[bytes]) -> None:
    queued, failed, watched = c.multi, c.multi_failed, c.watched
    c.multi, c.multi_failed, c.watched = None, False, {}
    if queued is None:
        s.immediate(c, resp.error("ERR EXEC without MULTI"))
        return
    if failed:
        s.immediate(c, resp.error("EXECABORT Transaction discarded because of previous errors."))
        return
    ops: list[TxnOp] = []
    replies: list[tuple[int, int, Reply]] = []
    for args in queued:
        t = _translate(args)
        assert not isinstance(t, str)  # checked when queued
        replies.append((len(ops), len(ops) + len(t[0]), t[1]))
        ops += t[0]
    if len(ops) > requests.MAX_TXN_OPS:
        s.immediate(c, resp.error(f"ERR the transaction holds {len(ops)} operations; zraft runs at most "
                                  f"{requests.MAX_TXN_OPS}"))
        return
    compares = tuple(Compare(k, "mod_revision", "=", rev) for k, rev in watched.items())
    rr = c.r
    reqs: list[requests.Request] = [Txn(*UNSENT, compares, tuple(ops))]

    def finish(ans: list[dict[str, Any]]) -> bytes:
        r = ans[0]
        bad = failure(r, True)
        if bad is not None:
            return bad
        if not r.get("succeeded"):
            return resp.NULL_ARRAY if rr.proto == 2 else resp.NULL3
        results = r.get("results", [])
        return resp.array([make(results[i:j], rr) for i, j, make in replies])

    s.native(c, reqs, finish)


def _getset(s: RespServer, c: Conn, a: list[bytes]) -> None:
    reqs: list[requests.Request] = [requests.Put(*UNSENT, a[1], a[2], get=True)]
    bulk = c.r.bulk

    def finish(ans: list[dict[str, Any]]) -> bytes:
        return failure(ans[0], True) or bulk(ans[0].get("value"))

    s.native(c, reqs, finish)


def _msetnx(s: RespServer, c: Conn, a: list[bytes]) -> None:
    if len(a) % 2 == 0:
        s.immediate(c, resp.error("ERR wrong number of arguments for 'msetnx' command"))
        return
    if (len(a) - 1) // 2 > requests.MAX_TXN_OPS:
        s.immediate(c, resp.error(f"ERR zraft's MSETNX takes at most {requests.MAX_TXN_OPS} pairs"))
        return
    keys = a[1::2]
    reqs: list[requests.Request] = [Txn(*UNSENT, tuple(Compare(k, "version", "=", 0) for k in keys),
                                        tuple(TxnOp("put", a[i], a[i + 1]) for i in range(1, len(a), 2)))]

    def finish(ans: list[dict[str, Any]]) -> bytes:
        return failure(ans[0], True) or resp.integer(1 if ans[0].get("succeeded") else 0)

    s.native(c, reqs, finish)


TXN_COMMANDS: dict[bytes, tuple[int, Callable[[RespServer, Conn, list[bytes]], None]]] = {
    b"MULTI": (1, _multi), b"EXEC": (1, _exec), b"DISCARD": (1, _discard), b"WATCH": (-2, _watch),
    b"UNWATCH": (1, _unwatch), b"GETSET": (3, _getset), b"MSETNX": (-3, _msetnx),
}
"""Name -> (arity, handler), as ``commands.COMMANDS``."""
IN_MULTI = frozenset((b"EXEC", b"DISCARD", b"MULTI", b"WATCH", b"QUIT"))
"""Commands run, not queued, after MULTI."""
