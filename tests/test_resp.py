"""The RESP parser: commands come out whole however the bytes are split; hostile input is refused with a
RespError (never another exception), and the parser never keeps more than one bounded command."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zraft.server.redis import protocol as resp
from zraft.server.redis.protocol import Parser, RespError

args_st = st.lists(st.binary(max_size=40), min_size=1, max_size=6)


@given(st.lists(args_st, min_size=1, max_size=8), st.lists(st.integers(min_value=1, max_value=50), max_size=20))
@settings(max_examples=300, deadline=None)
def test_commands_come_out_whole_however_the_bytes_are_split(cmds: list[list[bytes]], cuts: list[int]) -> None:
    stream = b"".join(resp.command(*c) for c in cmds)
    p = Parser()
    got: list[list[bytes]] = []
    pos = 0
    for cut in cuts:
        got += p.feed(stream[pos:pos + cut])
        pos += cut
    got += p.feed(stream[pos:])
    assert got == cmds
    assert p.pending == 0


@given(st.binary(max_size=300))
@settings(max_examples=500, deadline=None)
def test_any_bytes_give_commands_or_a_resp_error(data: bytes) -> None:
    p = Parser()
    try:
        for i in range(0, len(data), 7):
            p.feed(data[i:i + 7])
    except RespError:
        return
    assert p.pending <= resp.MAX_COMMAND


def test_inline_commands() -> None:
    assert Parser().feed(b"PING\r\nGET k\nSET a b\r\n\r\n") == [[b"PING"], [b"GET", b"k"], [b"SET", b"a", b"b"]]


@pytest.mark.parametrize("frame, why", [
    (b"*1000000\r\n", "invalid multibulk length"),
    (b"*2\r\n$3\r\nGET\r\n:1\r\n", "expected '$'"),
    (b"*1\r\n$%d\r\n" % (resp.MAX_BULK + 1), "invalid bulk length"),
    (b"*1\r\n$-5\r\n", "invalid bulk length"),
    (b"*1\r\n$3\r\nGETxx", "not terminated by CRLF"),
    (b"*x\r\n", "invalid multibulk length"),
    (b"*" + b"1" * 40, "too big mbulk count string"),
    (b"A" * (resp.MAX_INLINE + 1), "too big inline request"),
])
def test_hostile_frames_are_refused(frame: bytes, why: str) -> None:
    with pytest.raises(RespError, match=re.escape(why)):
        Parser().feed(frame)


def test_a_large_value_in_pieces_and_the_command_limit() -> None:
    p = Parser()
    value = b"v" * resp.MAX_BULK
    frame = resp.command("SET", "k", value)
    for i in range(0, len(frame), 65536):
        out = p.feed(frame[i:i + 65536])
    assert out == [[b"SET", b"k", value]]
    many = resp.command("MSET", *[b"x" * 1000] * 4400)  # 4.4 MB: over the 4 MiB command limit
    with pytest.raises(RespError, match="command too large"):
        for i in range(0, len(many), 65536):
            Parser().feed(many[: i + 65536])


def test_replies() -> None:
    assert resp.bulk(None) == b"$-1\r\n" and resp.bulk(b"ab") == b"$2\r\nab\r\n"
    assert resp.error("ERR bad\r\nthing") == b"-ERR bad  thing\r\n"
    assert resp.bulks([b"a", None]) == b"*2\r\n$1\r\na\r\n$-1\r\n"
    assert resp.integer(-3) == b":-3\r\n"
