"""The Redis protocol (RESP2 and RESP3): a bounded parser for client commands, and reply encoders.

A command is an array of bulk strings (``*2\\r\\n$3\\r\\nGET\\r\\n$1\\r\\nk\\r\\n``), or an inline line
(``PING\\r\\n``, what a person types into telnet). Everything a client sends is bounded before it is kept: at
most ``MAX_ARGS`` arguments, each at most ``MAX_BULK`` bytes, at most ``MAX_COMMAND`` bytes in all, header lines
at most 32 bytes, inline lines at most ``MAX_INLINE`` bytes. A frame that breaks a rule raises ``RespError``; the
server answers it with an error and closes the connection, as Redis does with a protocol error.
"""

from __future__ import annotations

from zraft.statemachine import kv

MAX_ARGS = 16_384
"""Most arguments in one command (MSET/DEL/MGET of 8,192 keys)."""
MAX_BULK = kv.MAX_VALUE_BYTES + kv.MAX_KEY_BYTES
"""Longest single argument: a value at the store's limit (longer ones could never be stored)."""
MAX_COMMAND = 4 << 20
"""Most bytes in one command, arguments and framing included."""
MAX_INLINE = 64 << 10
MAX_HEADER = 32


class RespError(Exception):
    """The client broke the protocol; the message is Redis's wording where Redis has one."""


class Parser:
    """Feed it what the connection received; take the complete commands out. Keeps at most one incomplete command
    (and never more than ``MAX_COMMAND`` bytes of it). Parses ``bytes`` directly (one copy per argument); only an
    incomplete command's bytes are kept between calls."""

    def __init__(self) -> None:
        self.buf = b""
        self._need = 0
        """Bytes the incomplete command in ``buf`` needs before it is worth parsing again."""

    @property
    def pending(self) -> int:
        """Bytes received and not yet part of a complete command."""
        return len(self.buf)

    def feed(self, data: bytes) -> list[list[bytes]]:
        """Add ``data``; return the commands it completes (argument lists; an empty line yields none)."""
        if self.buf:
            data = self.buf + data
            if len(data) < self._need:
                if len(data) > MAX_COMMAND:
                    raise RespError("Protocol error: command too large")
                self.buf = data
                return []
        self._need = 0
        out: list[list[bytes]] = []
        pos = 0
        n = len(data)
        find = data.find
        while pos < n:
            if data[pos] != 0x2A:  # not '*': an inline command
                got = self._inline(data, pos)
                if got is None:
                    break
                args, pos = got
                if args:
                    out.append(args)
                continue
            eol = find(b"\r\n", pos, pos + MAX_HEADER)
            if eol < 0:
                if n - pos >= MAX_HEADER:
                    raise RespError("Protocol error: too big mbulk count string")
                break
            count = _number(data, pos + 1, eol, "multibulk")
            if not 0 <= count <= MAX_ARGS:
                raise RespError("Protocol error: invalid multibulk length")
            p = eol + 2
            args = []
            complete = True
            for _ in range(count):
                if p >= n:
                    complete = False
                    break
                if data[p] != 0x24:  # '$'
                    raise RespError(f"Protocol error: expected '$', got '{chr(data[p])}'")
                eol = find(b"\r\n", p, p + MAX_HEADER)
                if eol < 0:
                    if n - p >= MAX_HEADER:
                        raise RespError("Protocol error: too big bulk count string")
                    complete = False
                    break
                size = _number(data, p + 1, eol, "bulk")
                if not 0 <= size <= MAX_BULK:
                    raise RespError("Protocol error: invalid bulk length")
                body = eol + 2
                end = body + size
                if end + 2 > n:
                    if end + 2 - pos > MAX_COMMAND:
                        raise RespError("Protocol error: command too large")
                    self._need = end + 2 - pos  # a large value arriving in pieces is parsed once it is all here
                    complete = False
                    break
                if data[end] != 13 or data[end + 1] != 10:
                    raise RespError("Protocol error: bulk string not terminated by CRLF")
                args.append(data[body:end])
                p = end + 2
            if not complete:
                break
            if args:
                out.append(args)
            pos = p
        rest = data[pos:] if pos < n else b""
        if len(rest) > MAX_COMMAND:
            raise RespError("Protocol error: command too large")
        self.buf = rest
        return out

    def _inline(self, buf: bytes, pos: int) -> tuple[list[bytes], int] | None:
        eol = buf.find(b"\n", pos, pos + MAX_INLINE)
        if eol < 0:
            if len(buf) - pos >= MAX_INLINE:
                raise RespError("Protocol error: too big inline request")
            return None
        line = buf[pos:eol].rstrip(b"\r")
        if b'"' in line or b"'" in line:
            raise RespError("Protocol error: quoted inline arguments are not supported; send an array of bulk "
                            "strings")
        args = line.split()
        if len(args) > MAX_ARGS:
            raise RespError("Protocol error: invalid multibulk length")
        return args, eol + 1


def _number(data: bytes, start: int, end: int, what: str) -> int:
    """The decimal integer in ``data[start:end]`` (a header: at most 30 characters). Python's ``int`` also takes
    spaces, a '+' and underscores; harmless here (the length must still match the bytes that follow)."""
    try:
        return int(data[start:end])
    except ValueError:
        raise RespError(f"Protocol error: invalid {what} length") from None


# ---------------------------------------------------------------------- replies

OK = b"+OK\r\n"
PONG = b"+PONG\r\n"
NULL = b"$-1\r\n"
NULL_ARRAY = b"*-1\r\n"
EMPTY_ARRAY = b"*0\r\n"


def simple(s: str) -> bytes:
    return b"+" + _line(s) + b"\r\n"


def error(s: str) -> bytes:
    """An error reply: ``s`` starts with its code (``ERR``, ``WRONGTYPE``, ``NOAUTH``, ...)."""
    return b"-" + _line(s) + b"\r\n"


def integer(n: int) -> bytes:
    return b":%d\r\n" % n


def bulk(b: bytes | None) -> bytes:
    if b is None:
        return NULL
    return b"$%d\r\n%b\r\n" % (len(b), b)


def array(items: list[bytes]) -> bytes:
    """An array of already encoded replies."""
    return b"*%d\r\n%b" % (len(items), b"".join(items))


def bulks(items: list[bytes | None]) -> bytes:
    return array([bulk(x) for x in items])


class Replies:
    """The encoders whose output depends on the connection's protocol (``HELLO 2`` / ``HELLO 3``): the null reply,
    maps and verbatim strings. Everything else (simple strings, errors, integers, bulk strings, arrays) is written the
    same in both. ``RESP2`` and ``RESP3`` are the two instances; a connection holds the one it asked for."""

    __slots__ = ("null", "proto")

    def __init__(self, proto: int) -> None:
        self.proto = proto
        self.null = NULL if proto == 2 else NULL3
        """A missing value: RESP2's null bulk string ``$-1``, RESP3's null ``_`` (used for null arrays too)."""

    def bulk(self, b: bytes | None) -> bytes:
        if b is None:
            return self.null
        return b"$%d\r\n%b\r\n" % (len(b), b)

    def bulks(self, items: list[bytes] | list[bytes | None]) -> bytes:
        null = self.null
        return b"*%d\r\n%b" % (len(items), b"".join(null if x is None else b"$%d\r\n%b\r\n" % (len(x), x)
                                                      for x in items))

    def map(self, pairs: list[tuple[bytes, bytes]]) -> bytes:
        """A map of already encoded keys and values: RESP3's ``%``; in RESP2 the flat array key, value, key, ...
        (what Redis sends for HELLO, CONFIG GET and the like)."""
        body = b"".join(k + v for k, v in pairs)
        return b"%%%d\r\n%b" % (len(pairs), body) if self.proto == 3 else b"*%d\r\n%b" % (2 * len(pairs), body)

    def verbatim(self, text: bytes) -> bytes:
        """Text meant for a person (INFO): RESP3's verbatim string of format ``txt``, RESP2's bulk string."""
        if self.proto == 3:
            return b"=%d\r\ntxt:%b\r\n" % (len(text) + 4, text)
        return bulk(text)


NULL3 = b"_\r\n"
RESP2 = Replies(2)
RESP3 = Replies(3)


def _line(s: str) -> bytes:
    return s.replace("\r", " ").replace("\n", " ").encode()


def command(*args: bytes | str) -> bytes:
    """A command as a client sends it (tests and tools)."""
    parts = [a.encode() if isinstance(a, str) else a for a in args]
    return b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%b\r\n" % (len(p), p) for p in parts)
