"""The Redis commands a node serves: each handler turns its arguments into zraft requests (``s.native``) or
answers at once (``s.immediate``), and says how its requests' answers make its reply. ``COMMANDS`` is the table
(name -> arity, handler); the server (``server.py``) runs it."""

from __future__ import annotations

import fnmatch
import hmac
import os
import time
import zlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from zraft.core import Role
from zraft.server.redis import protocol as resp
from zraft.server.redis.conn import (
    AUTH_BURST,
    AUTH_PER_S,
    MAX_AUTH_FAILURES,
    MAX_KEYS_STORE,
    MAX_REPLY,
    VERSION,
    Conn,
    Pending,
)
from zraft.statemachine import kv
from zraft.statemachine.leases import MAX_TTL_MS
from zraft.transport import requests
from zraft.transport.codec import Err

UNSENT = (0, 0, 0, 0)
"""A native request's id and session (client, seq, ack) as a command makes it: ``RespServer.native`` sets them."""

if TYPE_CHECKING:
    from zraft.server.redis.server import RespServer

def failure(r: dict[str, Any], write: bool) -> bytes | None:
    """The Redis error for a failed native answer (None: it succeeded)."""
    if r.get("ok"):
        return None
    err = r.get("error", "")
    if err == Err.NOT_LEADER and write:
        ld = r.get("leader", 0)
        where = f"node {ld} ({r.get('leader_addr', '')})" if ld else "not known yet"
        return resp.error(f"READONLY You can't write against a read only replica. (zraft: the leader is {where})")
    if err in (Err.NOT_LEADER, Err.LEADER_CHANGED, Err.NO_LEADER, Err.BUSY):
        return resp.error(f"TRYAGAIN {r.get('message', err)}")
    if err == Err.TOO_LARGE:
        return resp.error(f"ERR string exceeds maximum allowed size ({r.get('message', '')})")
    return resp.error(f"ERR {err}: {r.get('message', '')}")


def first_failure(answers: list[dict[str, Any]], write: bool) -> bytes | None:
    for r in answers:
        bad = failure(r, write)
        if bad is not None:
            return bad
    return None


def blocked(c: Conn, name: bytes) -> bool:
    """Whether command ``name`` must wait: a read for the connection's unanswered writes, a write for its reads."""
    if name in READS:
        return bool(c.unfinished)
    if name in WRITES:
        return c.reads > 0
    return False


# ---------------------------------------------------------------------- the commands

def _ping(s: RespServer, c: Conn, a: list[bytes]) -> None:
    if len(a) > 2:
        s.immediate(c, resp.error("ERR wrong number of arguments for 'ping' command"))
    else:
        s.immediate(c, resp.PONG if len(a) == 1 else resp.bulk(a[1]))


def _echo(s: RespServer, c: Conn, a: list[bytes]) -> None:
    s.immediate(c, resp.bulk(a[1]))


def _select(s: RespServer, c: Conn, a: list[bytes]) -> None:
    s.immediate(c, resp.OK if a[1] == b"0" else resp.error("ERR DB index is out of range"))


def _quit(s: RespServer, c: Conn, a: list[bytes]) -> None:
    s.immediate(c, resp.OK)
    c.closing = True


def _auth(s: RespServer, c: Conn, a: list[bytes]) -> None:
    if len(a) not in (2, 3):
        s.immediate(c, resp.error("ERR wrong number of arguments for 'auth' command"))
        return
    if s.password is None:
        s.immediate(c, resp.error("ERR AUTH <password> called without any password configured for the default "
                                   "user. Are you sure your configuration is correct?"))
        return
    s.immediate(c, _check(s, c, a[1] if len(a) == 3 else b"default", a[-1]) or resp.OK)


_WRONGPASS = resp.error("WRONGPASS invalid username-password pair or user is disabled.")


def _check(s: RespServer, c: Conn, user: bytes, password: bytes) -> bytes | None:
    """None if ``user`` and ``password`` are right (the connection is then authenticated), else the error to answer.
    Wrong passwords are rate-limited: ``MAX_AUTH_FAILURES`` close the connection, and a source address past its
    allowance (``AUTH_BURST``, ``AUTH_PER_S``) is refused unchecked until the allowance grows back."""
    assert s.password is not None
    now = s.clock()
    left, then = s.auth_allowance.get(c.peer, (float(AUTH_BURST), now))
    left = min(float(AUTH_BURST), left + (now - then) * AUTH_PER_S)
    if left < 1.0:
        s.auth_allowance[c.peer] = (left, now)
        s.limiter.warn("auth_limited", "event=resp_auth_limited peer=%s: too many wrong passwords; refused unchecked",
                       c.peer)
        return resp.error("ERR too many wrong passwords from this address; try again in a few seconds")
    if user == b"default" and hmac.compare_digest(password, s.password):
        if not c.authed:
            c.authed = True
            del s.unauthed[c.fd]
        return None
    s.auth_allowance[c.peer] = (left - 1.0, now)
    s.auth_failures += 1
    c.auth_failures += 1
    s.limiter.warn("auth", "event=resp_auth_failed fd=%d peer=%s (a wrong password)", c.fd, c.peer)
    if c.auth_failures >= MAX_AUTH_FAILURES:
        c.closing = True  # closed once this answer is sent
    return _WRONGPASS


def _hello(s: RespServer, c: Conn, a: list[bytes]) -> None:
    i = 2
    while i < len(a):  # HELLO protover [AUTH username password] [SETNAME clientname]
        opt = a[i].upper()
        if opt == b"AUTH" and i + 2 < len(a):
            bad = _WRONGPASS if s.password is None else _check(s, c, a[i + 1], a[i + 2])
            if bad is not None:
                s.immediate(c, bad)
                return
            i += 3
        elif opt == b"SETNAME" and i + 1 < len(a):
            c.name = a[i + 1][:128]
            i += 2
        else:
            s.immediate(c, resp.error(f"ERR Syntax error in HELLO option '{a[i][:64].decode(errors='replace')}'"))
            return
    if not c.authed:
        s.immediate(c, resp.error("NOAUTH HELLO must be called with the client already authenticated, otherwise the "
                                   "HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client "
                                   "and select the RESP protocol version at the same time"))
        return
    proto = c.r.proto  # HELLO without a version: the one in use, unchanged
    if len(a) > 1:
        if not a[1].isdigit():
            s.immediate(c, resp.error("ERR Protocol version is not an integer or out of range"))
            return
        proto = int(a[1])
        if proto not in (2, 3):
            s.immediate(c, resp.error("NOPROTO unsupported protocol version"))
            return
    # From here on every reply of this connection is in the protocol asked for (the commands after HELLO in a
    # pipeline included: each command's reply is made with the protocol in use when it ran).
    c.r = resp.RESP3 if proto == 3 else resp.RESP2
    role = "master" if s.replica.raft.role is Role.LEADER else "replica"
    b = resp.bulk
    s.immediate(c, c.r.map([(b(b"server"), b(b"redis")), (b(b"version"), b(VERSION.encode())),
                             (b(b"proto"), resp.integer(proto)), (b(b"id"), resp.integer(c.num)),
                             (b(b"mode"), b(b"standalone")), (b(b"role"), b(role.encode())),
                             (b(b"modules"), resp.EMPTY_ARRAY)]))


def _client(s: RespServer, c: Conn, a: list[bytes]) -> None:
    sub = a[1].upper()
    if sub == b"SETNAME" and len(a) == 3:
        if any(ch <= 32 or ch > 126 for ch in a[2]):
            s.immediate(c, resp.error("ERR Client names cannot contain spaces, newlines or special characters."))
            return
        c.name = a[2][:128]
        s.immediate(c, resp.OK)
    elif sub == b"GETNAME" and len(a) == 2:
        s.immediate(c, c.r.bulk(c.name or None))
    elif sub == b"ID" and len(a) == 2:
        s.immediate(c, resp.integer(c.num))
    elif sub == b"SETINFO" and len(a) == 4:
        s.immediate(c, resp.OK)
    else:
        s.immediate(c, resp.error(f"ERR unknown subcommand '{a[1][:64].decode(errors='replace')}'. Try CLIENT HELP."))


def _command(s: RespServer, c: Conn, a: list[bytes]) -> None:
    sub = a[1].upper() if len(a) > 1 else b""
    if sub == b"COUNT":
        s.immediate(c, resp.integer(len(COMMANDS)))
    elif sub == b"DOCS":
        s.immediate(c, c.r.map([]))  # enough for redis-cli's hints (a map in RESP3, as Redis 7 answers)
    elif sub in (b"", b"INFO"):
        s.immediate(c, resp.EMPTY_ARRAY)
    else:
        s.immediate(c, resp.error(f"ERR unknown subcommand '{a[1][:64].decode(errors='replace')}'."))


_CONFIG = {b"save": b"", b"appendonly": b"yes", b"appendfsync": b"always", b"databases": b"1",
           b"notify-keyspace-events": b"AKE",
           b"timeout": b"0"}
"""What CONFIG GET reports: the settings clients and tools ask about, with what zraft does in their terms."""


def _config(s: RespServer, c: Conn, a: list[bytes]) -> None:
    if a[1].upper() == b"GET" and len(a) >= 3:  # CONFIG GET parameter [parameter ...]: glob patterns, as Redis 7
        found: dict[bytes, bytes] = {}
        known = {**_CONFIG, b"maxclients": b"%d" % s.max_clients}
        for pattern in a[2:]:
            pattern = pattern.lower()
            for name, value in known.items():
                if name == pattern or fnmatch.fnmatchcase(name, pattern):
                    found[name] = value
        s.immediate(c, c.r.map([(resp.bulk(k), resp.bulk(v)) for k, v in found.items()]))
    elif a[1].upper() == b"SET" and len(a) == 4 and a[2].lower() == b"notify-keyspace-events":
        s.immediate(c, resp.OK)  # (keyspace notifications are always on: notify.py)
    else:
        s.immediate(c, resp.error("ERR CONFIG: only CONFIG GET (and CONFIG SET notify-keyspace-events) is "
                                  "supported"))


def _info(s: RespServer, c: Conn, a: list[bytes]) -> None:
    st = s.replica.status()
    leader = st.get("role") == "leader"
    lines = ["# Server", f"redis_version:{VERSION}", "redis_mode:standalone", "zraft:1", f"process_id:{os.getpid()}",
             f"tcp_port:{s.address.rpartition(':')[2]}", f"zraft_node:{st['node']}",
             f"zraft_cluster_id:{st.get('cluster_id', '')}", "", "# Clients",
             f"connected_clients:{len(s.conns)}", f"maxclients:{s.max_clients}", "", "# Replication",
             f"role:{'master' if leader else 'slave'}", f"zraft_role:{st['role']}", f"zraft_term:{st['term']}",
             f"zraft_leader:{st['leader']}", f"zraft_leader_addr:{st.get('leader_addr', '')}",
             f"zraft_commit_index:{st['commit']}", f"zraft_applied_index:{st['applied']}",
             f"zraft_last_index:{st['last_index']}", f"zraft_snapshot_index:{st['snapshot_index']}",
             f"zraft_voters:{','.join(map(str, st.get('voters', [])))}", "", "# Keyspace"]
    if st["keys"]:
        lines.append(f"db0:keys={st['keys']},expires=0,avg_ttl=0")
    want = {x.lower() for x in a[1:]} - {b"all", b"everything", b"default"}
    if want:  # only the sections asked for
        sections = "\r\n".join(lines).split("\r\n\r\n")
        lines = [sec for sec in sections if sec[2:].split("\r\n")[0].lower().encode() in want]
        lines = ["\r\n\r\n".join(lines)] if lines else []
    s.immediate(c, c.r.verbatim(("\r\n".join(lines) + "\r\n").encode() if lines else b""))


def _get(s: RespServer, c: Conn, a: list[bytes]) -> None:
    key = a[1]
    bulk = c.r.bulk
    _whole_store(s, c, lambda data: bulk(data.get(key)))


def _mget(s: RespServer, c: Conn, a: list[bytes]) -> None:
    keys = a[1:]  # all read at one moment (one read barrier): an MSET is seen whole or not at all
    bulks = c.r.bulks

    def make(data: kv.KVStore) -> bytes:
        values = [data.get(k) for k in keys]
        return _too_large(sum(len(v) for v in values if v is not None)) or bulks(values)

    _whole_store(s, c, make)


def _exists(s: RespServer, c: Conn, a: list[bytes]) -> None:
    keys = a[1:]
    _whole_store(s, c, lambda data: resp.integer(sum(1 for k in keys if k in data)))


def _strlen(s: RespServer, c: Conn, a: list[bytes]) -> None:
    key = a[1]
    _whole_store(s, c, lambda data: resp.integer(len(data.get(key) or b"")))


def _whole_store(s: RespServer, c: Conn, make: Callable[[kv.KVStore], bytes]) -> None:
    """A read: ``make(store)`` when a linearizable read barrier is served. Every read of a loop pass, of every
    connection, shares one barrier (one read index: one READ_INDEX from a follower, not one per GET); each is
    answered from the store as it is when the barrier is served -- in this process, with nothing applied in
    between -- a moment after every one of them was sent, before any was answered."""
    p = Pending(1, None, read=True)
    c.queue.append(p)
    c.reads += 1
    s.barrier_reads.append((c, p, make))


def _too_large(size: int) -> bytes | None:
    """The error for a reply of ``size`` bytes of values, if it is past ``MAX_REPLY`` (checked before it is made)."""
    if size <= MAX_REPLY:
        return None
    return resp.error(f"ERR the reply would hold {size} bytes; zraft sends at most {MAX_REPLY} in one reply")


def _dbsize(s: RespServer, c: Conn, a: list[bytes]) -> None:
    _whole_store(s, c, lambda data: resp.integer(len(data)))


def _keys(s: RespServer, c: Conn, a: list[bytes]) -> None:
    pattern = a[1]

    def make(data: kv.KVStore) -> bytes:
        n = len(data)
        if n > MAX_KEYS_STORE:
            return resp.error(f"ERR KEYS would read all {n} keys in one step of this node's event loop (it does for at "
                              f"most {MAX_KEYS_STORE}): use SCAN")
        keys: list[bytes | None] = list(data) if pattern == b"*" else \
            [k for k in data if fnmatch.fnmatchcase(k, pattern)]
        return _too_large(sum(len(k or b"") for k in keys)) or resp.bulks(keys)

    _whole_store(s, c, make)


def _scan(s: RespServer, c: Conn, a: list[bytes]) -> None:
    """SCAN cursor [MATCH pattern] [COUNT count] [TYPE type]. Keys are visited in the order of their CRC-32 (the same
    on every node, whatever was inserted or deleted): a cursor is the CRC to go on from, so a key present for the
    whole iteration is returned exactly once, on any node. The store's shards hold consecutive ranges of that order
    (``kv.SHARD_SHIFT``): a call returns the rest of the cursor's shard and as many whole shards after it as it takes
    to reach COUNT keys (COUNT is a hint in Redis too). A call costs the loop one shard's keys, not the store's (one
    sorted all ten million keys: 1.1 s per million, time enough for an election), and a full iteration is at most 256
    calls."""
    cursor = _arg_int(a[1])
    if cursor is None or not 0 <= cursor <= 1 << 32:
        s.immediate(c, resp.error("ERR invalid cursor"))
        return
    pattern, count, only_strings = b"*", 10, True
    i = 2
    while i < len(a):
        opt = a[i].upper()
        if i + 1 >= len(a):
            s.immediate(c, resp.error("ERR syntax error"))
            return
        if opt == b"MATCH":
            pattern = a[i + 1]
        elif opt == b"COUNT":
            n = _arg_int(a[i + 1])
            if n is None or n < 1:
                s.immediate(c, resp.error("ERR value is not an integer or out of range" if n is None else
                                           "ERR syntax error"))
                return
            count = n
        elif opt == b"TYPE":
            only_strings = a[i + 1].lower() == b"string"
        else:
            s.immediate(c, resp.error("ERR syntax error"))
            return
        i += 2
    start = cursor

    def make(data: kv.KVStore) -> bytes:
        if not only_strings:
            return resp.array([resp.bulk(b"0"), resp.EMPTY_ARRAY])
        shard = start >> kv.SHARD_SHIFT
        chosen: list[tuple[int, bytes]] = []
        while shard < kv.SHARDS and len(chosen) < count:
            chosen += sorted((h, k) for k in data.shards[shard] if (h := zlib.crc32(k)) >= start)
            shard += 1
        nxt = shard << kv.SHARD_SHIFT if shard < kv.SHARDS else 0
        keys: list[bytes | None] = [k for _, k in chosen if pattern == b"*" or fnmatch.fnmatchcase(k, pattern)]
        return resp.array([resp.bulk(b"%d" % nxt), resp.bulks(keys)])

    _whole_store(s, c, make)


def _set(s: RespServer, c: Conn, a: list[bytes]) -> None:
    """SET key value [NX|XX] [GET] [EX s|PX ms|EXAT t|PXAT t|KEEPTTL]: a TTL is the key's own lease
    (``expiry.py``)."""
    opts = set()
    ttl = 0
    i = 3
    while i < len(a):
        opt = a[i].upper()
        if opt in (b"NX", b"XX", b"GET", b"KEEPTTL"):
            opts.add(opt)
        elif opt in (b"EX", b"PX", b"EXAT", b"PXAT") and i + 1 < len(a) and not ttl:
            n = _arg_int(a[i + 1])
            if n is None:
                s.immediate(c, resp.error("ERR value is not an integer or out of range"))
                return
            if n <= 0:
                s.immediate(c, resp.error("ERR invalid expire time in 'set' command"))
                return
            ms = n * (1000 if opt in (b"EX", b"EXAT") else 1)
            if opt in (b"EXAT", b"PXAT"):
                ms -= time.time_ns() // 1_000_000
            if ms > MAX_TTL_MS:
                s.immediate(c, resp.error("ERR invalid expire time in 'set' command (zraft keeps a TTL of at most "
                                          "ten years)"))
                return
            ttl = max(ms, 1)  # (a time already past: the key goes at the leader's next tick)
            i += 1
        else:
            s.immediate(c, resp.error("ERR syntax error"))
            return
        i += 1
    if (b"NX" in opts and b"XX" in opts) or (ttl and b"KEEPTTL" in opts):
        s.immediate(c, resp.error("ERR syntax error"))
        return
    conditional, get = b"NX" in opts or b"XX" in opts, b"GET" in opts
    reqs: list[requests.Request] = [requests.Put(*UNSENT, a[1], a[2], b"NX" in opts, b"XX" in opts, get,
                                                 ttl_ms=ttl, keep_ttl=b"KEEPTTL" in opts)]
    rr = c.r  # the protocol in use now: a HELLO later in the pipeline does not change this command's reply

    def finish(ans: list[dict[str, Any]]) -> bytes:
        r = ans[0]
        bad = failure(r, True)
        if bad is not None:
            return bad
        if get:
            return rr.bulk(r.get("value"))
        return resp.OK if not conditional or r.get("done", True) else rr.null

    s.native(c, reqs, finish)


def _setnx(s: RespServer, c: Conn, a: list[bytes]) -> None:
    reqs: list[requests.Request] = [requests.Put(*UNSENT, a[1], a[2], nx=True)]

    def finish(ans: list[dict[str, Any]]) -> bytes:
        return failure(ans[0], True) or resp.integer(1 if ans[0].get("done") else 0)

    s.native(c, reqs, finish)


def _incr_by(s: RespServer, c: Conn, key: bytes, by: int | None) -> None:
    if by is None:
        s.immediate(c, resp.error("ERR value is not an integer or out of range"))
        return
    reqs: list[requests.Request] = [requests.Incr(*UNSENT, key, by)]

    def finish(ans: list[dict[str, Any]]) -> bytes:
        r = ans[0]
        if r.get("error") == "not_integer":
            return resp.error("ERR value is not an integer or out of range")
        if r.get("error") == "overflow":
            return resp.error("ERR increment or decrement would overflow")
        return failure(r, True) or resp.integer(int(r.get("value") or b"0"))

    s.native(c, reqs, finish)


def _arg_int(b: bytes) -> int | None:
    try:
        n = int(b)
    except ValueError:
        return None
    return n if -(1 << 63) <= n < 1 << 63 and b.strip() == b and not b.startswith(b"+") else None


def _incr(s: RespServer, c: Conn, a: list[bytes]) -> None:
    _incr_by(s, c, a[1], 1)


def _decr(s: RespServer, c: Conn, a: list[bytes]) -> None:
    _incr_by(s, c, a[1], -1)


def _incrby(s: RespServer, c: Conn, a: list[bytes]) -> None:
    _incr_by(s, c, a[1], _arg_int(a[2]))


def _decrby(s: RespServer, c: Conn, a: list[bytes]) -> None:
    n = _arg_int(a[2])
    _incr_by(s, c, a[1], None if n is None or n == -(1 << 63) else -n)


def _getdel(s: RespServer, c: Conn, a: list[bytes]) -> None:
    reqs: list[requests.Request] = [requests.GetDel(*UNSENT, a[1])]
    bulk = c.r.bulk

    def finish(ans: list[dict[str, Any]]) -> bytes:
        return failure(ans[0], True) or bulk(ans[0].get("value"))

    s.native(c, reqs, finish)


def _mset(s: RespServer, c: Conn, a: list[bytes]) -> None:
    if len(a) % 2 == 0:
        s.immediate(c, resp.error("ERR wrong number of arguments for 'mset' command"))
        return
    if len(a) - 1 > 2 * requests.MAX_MSET_PAIRS:
        s.immediate(c, resp.error(f"ERR zraft's MSET takes at most {requests.MAX_MSET_PAIRS} pairs"))
        return
    reqs: list[requests.Request] = [requests.MSet(*UNSENT, tuple(a[1:]))]  # one log entry: all pairs, or none

    def finish(ans: list[dict[str, Any]]) -> bytes:
        return failure(ans[0], True) or resp.OK

    s.native(c, reqs, finish)


def _append(s: RespServer, c: Conn, a: list[bytes]) -> None:
    reqs: list[requests.Request] = [requests.Append(*UNSENT, a[1], a[2], length=True)]

    def finish(ans: list[dict[str, Any]]) -> bytes:
        return failure(ans[0], True) or resp.integer(ans[0].get("length", 0))

    s.native(c, reqs, finish)


def _del(s: RespServer, c: Conn, a: list[bytes]) -> None:
    reqs: list[requests.Request] = [requests.Delete(*UNSENT, k) for k in a[1:]]

    def finish(ans: list[dict[str, Any]]) -> bytes:
        return first_failure(ans, True) or resp.integer(sum(1 for r in ans if r.get("found", True)))

    s.native(c, reqs, finish)


COMMANDS: dict[bytes, tuple[int, Callable[[RespServer, Conn, list[bytes]], None]]] = {
    b"PING": (-1, _ping), b"ECHO": (2, _echo), b"SELECT": (2, _select), b"QUIT": (-1, _quit),
    b"HELLO": (-1, _hello), b"CLIENT": (-2, _client), b"COMMAND": (-1, _command), b"CONFIG": (-2, _config),
    b"INFO": (-1, _info), b"DBSIZE": (1, _dbsize), b"KEYS": (2, _keys), b"GET": (2, _get), b"MGET": (-2, _mget),
    b"EXISTS": (-2, _exists), b"STRLEN": (2, _strlen), b"SET": (-3, _set), b"APPEND": (3, _append),
    b"DEL": (-2, _del), b"SETNX": (3, _setnx), b"INCR": (2, _incr), b"DECR": (2, _decr), b"INCRBY": (3, _incrby),
    b"DECRBY": (3, _decrby), b"GETDEL": (2, _getdel), b"MSET": (-3, _mset), b"AUTH": (-2, _auth),
    b"SCAN": (-2, _scan),
}
"""Name -> (arity, handler): arity n means exactly n words (the name included), -n at least n."""
BEFORE_AUTH = frozenset((b"AUTH", b"HELLO", b"PING", b"QUIT"))
RETRY = frozenset((Err.NOT_LEADER, Err.LEADER_CHANGED, Err.NO_LEADER, Err.BUSY))
READS = frozenset((b"GET", b"MGET", b"EXISTS", b"STRLEN", b"DBSIZE", b"KEYS", b"SCAN", b"WATCH", b"TTL", b"PTTL"))
WRITES = frozenset((b"SET", b"APPEND", b"DEL", b"SETNX", b"INCR", b"DECR", b"INCRBY", b"DECRBY", b"GETDEL",
                     b"MSET", b"EXEC", b"GETSET", b"MSETNX", b"EXPIRE", b"PEXPIRE", b"EXPIREAT", b"PEXPIREAT",
                     b"PERSIST", b"SETEX", b"PSETEX"))
"""The commands that read the store (held back after a write of the same connection until it is answered)."""


