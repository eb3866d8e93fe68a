"""The Redis protocol (RESP2): a bounded parser for client commands, and reply encoders.

A command is an array of bulk strings (``*2\\r\\n$3\\r\\nGET\\r\\n$1\\r\\nk\\r\\n``), or an inline line
(``PING\\r\\n``, what a person types into telnet). Everything a client sends is bounded before it is kept: at
most ``MAX_ARGS`` arguments, each at most ``MAX_BULK`` bytes, at most ``MAX_COMMAND`` bytes in all, header lines
at most 32 bytes, inline lines at most ``MAX_INLINE`` bytes. A frame that breaks a rule raises ``RespError``; the
server answers it with an error and closes the connection, as Redis does with a protocol error.
"""

from __future__ import annotations

from zraft import kv

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
    (and never more than ``MAX_COMMAND`` bytes of it)."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self._need = 0
        """Bytes the incomplete command at the start of ``buf`` needs before it is worth parsing again."""

    @property
    def pending(self) -> int:
        """Bytes received and not yet part of a complete command."""
        return len(self.buf)

    def feed(self, data: bytes) -> list[list[bytes]]:
        """Add ``data``; return the commands it completes (argument lists; an empty line yields none)."""
        buf = self.buf
        buf += data
        if len(buf) < self._need:
            return []
        self._need = 0
        out: list[list[bytes]] = []
        pos = 0
        n = len(buf)
        while pos < n:
            if buf[pos] == 0x2A:  # '*'
                got = self._array(buf, pos)
            else:
                got = self._inline(buf, pos)
            if got is None:
                break
            args, pos = got
            if args:
                out.append(args)
        if pos:
            del buf[:pos]
        if len(buf) > MAX_COMMAND:
            raise RespError("Protocol error: command too large")
        return out

    def _array(self, buf: bytearray, start: int) -> tuple[list[bytes], int] | None:
        count, pos = self._header(buf, start, 0x2A)
        if count is None:
            return None
        if count > MAX_ARGS or count < 0:
            raise RespError("Protocol error: invalid multibulk length")
        args: list[bytes] = []
        n = len(buf)
        for _ in range(count):
            if pos >= n:
                return None
            if buf[pos] != 0x24:  # '$'
                raise RespError(f"Protocol error: expected '$', got '{chr(buf[pos])}'")
            size, body = self._header(buf, pos, 0x24)
            if size is None:
                return None
            if size < 0 or size > MAX_BULK:
                raise RespError("Protocol error: invalid bulk length")
            end = body + size
            if end + 2 > n:
                if end + 2 - start > MAX_COMMAND:
                    raise RespError("Protocol error: command too large")
                self._need = end + 2 - start  # a large value arriving in pieces is parsed again once it is all here
                return None
            if buf[end:end + 2] != b"\r\n":
                raise RespError("Protocol error: bulk string not terminated by CRLF")
            args.append(bytes(buf[body:end]))
            pos = end + 2
        self._need = 0
        return args, pos

    def _header(self, buf: bytearray, pos: int, tag: int) -> tuple[int | None, int]:
        """The integer after ``tag`` at ``pos`` and where the line after it starts; (None, pos) if incomplete."""
        eol = buf.find(b"\r\n", pos, pos + MAX_HEADER)
        if eol < 0:
            if len(buf) - pos >= MAX_HEADER:
                raise RespError("Protocol error: too big " + ("mbulk" if tag == 0x2A else "bulk") + " count string")
            return None, pos
        text = bytes(buf[pos + 1:eol])
        if not text or not (text.isdigit() or (text[:1] == b"-" and text[1:].isdigit())):
            raise RespError("Protocol error: invalid " + ("multibulk" if tag == 0x2A else "bulk") + " length")
        return int(text), eol + 2

    def _inline(self, buf: bytearray, pos: int) -> tuple[list[bytes], int] | None:
        eol = buf.find(b"\n", pos, pos + MAX_INLINE)
        if eol < 0:
            if len(buf) - pos >= MAX_INLINE:
                raise RespError("Protocol error: too big inline request")
            return None
        line = bytes(buf[pos:eol]).rstrip(b"\r")
        if b'"' in line or b"'" in line:
            raise RespError("Protocol error: quoted inline arguments are not supported; send an array of bulk "
                            "strings")
        args = line.split()
        if len(args) > MAX_ARGS:
            raise RespError("Protocol error: invalid multibulk length")
        self._need = 0
        return args, eol + 1


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


def _line(s: str) -> bytes:
    return s.replace("\r", " ").replace("\n", " ").encode()


def command(*args: bytes | str) -> bytes:
    """A command as a client sends it (tests and tools)."""
    parts = [a.encode() if isinstance(a, str) else a for a in args]
    return b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%b\r\n" % (len(p), p) for p in parts)
