"""Redis's key expiry on zraft's leases: ``EXPIRE``, ``PEXPIRE``, ``EXPIREAT``, ``PEXPIREAT``, ``PERSIST``, ``TTL``,
``PTTL``, ``SETEX``, ``PSETEX`` (and ``SET``'s ``EX``/``PX``/``EXAT``/``PXAT``/``KEEPTTL``, in ``commands.py``).

A key's TTL is a lease of its own (``zraft.statemachine.leases``): the leader decides when it runs out, by its
clock, and the key is deleted through the log -- on every node at the same index, never by a follower's clock.
``TTL`` and ``PTTL`` ask the leader (forwarded from a follower) for the time left. An absolute time (``EXPIREAT``,
``EXAT``) is made relative by the clock of the node the client is connected to, as a Redis replica would.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from zraft.server.redis import protocol as resp
from zraft.server.redis.commands import UNSENT, _arg_int, failure
from zraft.server.redis.conn import Conn
from zraft.statemachine.leases import MAX_TTL_MS
from zraft.transport import requests

if TYPE_CHECKING:
    from zraft.server.redis.server import RespServer

NOT_INTEGER = "ERR value is not an integer or out of range"


def ttl_ms(amount: bytes, unit_ms: int, absolute: bool, command: str) -> int | str:
    """A TTL argument in ms from now (``amount`` in seconds or ms; an absolute Unix time when ``absolute``), at most
    0 for a time already past (the key is deleted now, as Redis does); or the error."""
    n = _arg_int(amount)
    if n is None:
        return NOT_INTEGER
    ms = n * unit_ms - (time.time_ns() // 1_000_000 if absolute else 0)
    if ms > MAX_TTL_MS:
        return f"ERR invalid expire time in '{command}' command (zraft keeps a TTL of at most ten years)"
    return max(ms, 0)


def _expire_cmd(unit_ms: int, absolute: bool, name: str) -> Callable[[RespServer, Conn, list[bytes]], None]:
    def handler(s: RespServer, c: Conn, a: list[bytes]) -> None:
        if len(a) > 3:
            s.immediate(c, resp.error(f"ERR zraft's {name.upper()} takes no options (NX, XX, GT, LT)"))
            return
        ms = ttl_ms(a[2], unit_ms, absolute, name)
        if isinstance(ms, str):
            s.immediate(c, resp.error(ms))
            return
        reqs: list[requests.Request] = [requests.Expire(*UNSENT, a[1], ms)]

        def finish(ans: list[dict[str, Any]]) -> bytes:
            return failure(ans[0], True) or resp.integer(1 if ans[0].get("done") else 0)

        s.native(c, reqs, finish)

    return handler


def _persist(s: RespServer, c: Conn, a: list[bytes]) -> None:
    reqs: list[requests.Request] = [requests.Expire(*UNSENT, a[1], None)]

    def finish(ans: list[dict[str, Any]]) -> bytes:
        return failure(ans[0], True) or resp.integer(1 if ans[0].get("done") else 0)

    s.native(c, reqs, finish)


def _ttl_cmd(unit_ms: int) -> Callable[[RespServer, Conn, list[bytes]], None]:
    def handler(s: RespServer, c: Conn, a: list[bytes]) -> None:
        reqs: list[requests.Request] = [requests.LeaseTTL(0, 0, a[1])]

        def finish(ans: list[dict[str, Any]]) -> bytes:
            r = ans[0]
            if r.get("error") == "no_lease":  # expired between the two lookups: the key is going
                return resp.integer(-2)
            bad = failure(r, False)
            if bad is not None:
                return bad
            if r.get("found") is not True:
                return resp.integer(-2)
            left = r.get("remaining_ms")
            if not r.get("lease") or type(left) is not int:
                return resp.integer(-1)
            return resp.integer(left if unit_ms == 1 else (left + 500) // 1000)

        s.native(c, reqs, finish)

    return handler


def _setex_cmd(unit_ms: int, name: str) -> Callable[[RespServer, Conn, list[bytes]], None]:
    def handler(s: RespServer, c: Conn, a: list[bytes]) -> None:
        n = _arg_int(a[2])
        if n is None:
            s.immediate(c, resp.error(NOT_INTEGER))
            return
        if not 0 < n * unit_ms <= MAX_TTL_MS:
            s.immediate(c, resp.error(f"ERR invalid expire time in '{name}' command"))
            return
        reqs: list[requests.Request] = [requests.Put(*UNSENT, a[1], a[3], ttl_ms=n * unit_ms)]

        def finish(ans: list[dict[str, Any]]) -> bytes:
            return failure(ans[0], True) or resp.OK

        s.native(c, reqs, finish)

    return handler


EXPIRY_COMMANDS: dict[bytes, tuple[int, Callable[[RespServer, Conn, list[bytes]], None]]] = {
    b"EXPIRE": (-3, _expire_cmd(1000, False, "expire")), b"PEXPIRE": (-3, _expire_cmd(1, False, "pexpire")),
    b"EXPIREAT": (-3, _expire_cmd(1000, True, "expireat")), b"PEXPIREAT": (-3, _expire_cmd(1, True, "pexpireat")),
    b"PERSIST": (2, _persist), b"TTL": (2, _ttl_cmd(1000)), b"PTTL": (2, _ttl_cmd(1)),
    b"SETEX": (4, _setex_cmd(1000, "setex")), b"PSETEX": (4, _setex_cmd(1, "psetex")),
}
