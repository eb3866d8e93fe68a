"""The Redis protocol on a live 3-node cluster: redis-py (every command implemented, the type of every reply,
pipelines) in RESP2 and RESP3 with each of its parsers (pure Python, and hiredis), the bytes of RESP3 replies,
redis-cli one-shot, piped, and in -2 and -3, redis-benchmark, followers, and hostile input."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from clusterutil import leader_id, stop_cluster, wait_until
from redis._parsers import _HiredisParser, _RESP2Parser, _RESP3Parser

from zraft.server.redis import conn as resp_server
from zraft.server.redis import protocol as resp
from zraft.tools import chaos, launch

ROOT = Path(__file__).resolve().parent.parent

try:
    import hiredis  # noqa: F401  (redis-py's C parser: in requirements.txt, so CI runs both parsers)

    HIREDIS = True
except ImportError:
    HIREDIS = False
_NO_HIREDIS = pytest.mark.skipif(not HIREDIS, reason="hiredis is not importable (pip install -r requirements.txt)")
KINDS = [pytest.param((2, "python"), id="resp2-python"), pytest.param((3, "python"), id="resp3-python"),
         pytest.param((2, "hiredis"), id="resp2-hiredis", marks=_NO_HIREDIS),
         pytest.param((3, "hiredis"), id="resp3-hiredis", marks=_NO_HIREDIS)]
"""redis-py's two protocols and its two parsers (redis-py picks hiredis by itself when it is installed: both are
named here, so each runs whatever else is installed)."""


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> tuple[int, str]:
    return request.param  # type: ignore[no-any-return]


def client(spec: launch.NodeSpec, kind: tuple[int, str], **kw: Any) -> redis.Redis:
    """A redis-py client of ``spec``'s Redis port in protocol ``kind[0]`` with parser ``kind[1]``."""
    proto, parser = kind
    cls = _HiredisParser if parser == "hiredis" else _RESP3Parser if proto == 3 else _RESP2Parser
    kw.setdefault("socket_timeout", 10)
    pool = redis.ConnectionPool(host="127.0.0.1", port=port(spec), protocol=proto, parser_class=cls, **kw)
    r = redis.Redis(connection_pool=pool)
    conn = pool.get_connection()
    try:
        assert type(conn._parser) is cls, conn._parser  # the parser asked for is the one in use
    finally:
        pool.release(conn)
    return r


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[launch.Cluster]:
    c = launch.start(3, str(tmp_path_factory.mktemp("resp") / "d"), ports=launch.free_ports(3),
                     resp_ports=launch.free_ports(3))
    try:
        yield c
    finally:
        stop_cluster(c)


def port(spec: launch.NodeSpec) -> int:
    return int(spec.resp.rpartition(":")[2])


def leader(c: launch.Cluster) -> launch.NodeSpec:
    return c.node(leader_id(c))


def follower(c: launch.Cluster) -> launch.NodeSpec:
    ld = leader_id(c)
    return next(n for n in c.nodes if n.id != ld)


def test_the_commands_and_their_reply_types(cluster: launch.Cluster, kind: tuple[int, str]) -> None:
    r = client(leader(cluster), kind)
    k = f"{kind[0]}{kind[1]}:"  # each kind of client has keys of its own on the shared cluster
    before = r.dbsize()
    assert r.ping() is True
    assert r.echo(b"hi") == b"hi"
    assert r.set(k + "k1", "v1") is True
    assert r.get(k + "k1") == b"v1" and r.get(k + "missing") is None
    assert r.append(k + "k1", "23") == 4 and r.append(k + "new", "abc") == 3
    assert r.strlen(k + "k1") == 4 and r.strlen(k + "missing") == 0
    assert r.mget(k + "k1", k + "missing", k + "new") == [b"v123", None, b"abc"]
    assert r.exists(k + "k1", k + "missing", k + "new", k + "k1") == 3
    assert r.delete(k + "new", k + "missing") == 1 and r.exists(k + "new") == 0
    assert r.dbsize() == before + 1
    r.set(k + "user:1", "a")
    r.set(k + "user:2", "b")
    assert sorted(r.keys(k + "user:*")) == [(k + "user:1").encode(), (k + "user:2").encode()]
    assert len(r.keys(k + "*")) == 3 and len(r.keys("*")) == before + 3
    assert r.execute_command("SELECT", 0) is True
    assert r.client_getname() is None
    assert r.client_setname("tester") is True
    assert r.client_getname() == ("tester" if kind[0] == 2 else b"tester")  # redis-py decodes it in RESP2 only
    assert isinstance(r.client_id(), int)
    assert r.set(k + "k1", "x", nx=True) is None and r.getdel(k + "missing") is None
    assert r.set(k + "none", "x", xx=True) is None and r.set(k + "none", "x", get=True) is None
    assert r.config_get("appendfsync") == {"appendfsync": "always"} and r.config_get("nope") == {}
    assert r.config_get("append*") == {"appendfsync": "always", "appendonly": "yes"}
    assert r.command_count() > 20
    hello = r.execute_command("HELLO")  # without a version: what is in use, unchanged
    assert {(x.decode() if isinstance(x, bytes) else x): v for x, v in hello.items()}["proto"] == kind[0] \
        if isinstance(hello, dict) else hello[hello.index(b"proto") + 1] == kind[0]
    info = r.info()
    assert info["redis_version"] == "7.0.0" and info["role"] == "master" and info["zraft_role"] == "leader"
    assert info["db0"]["keys"] == before + 4
    assert set(r.info("replication")) >= {"role", "zraft_term", "zraft_commit_index"} and "redis_version" not in \
        r.info("replication")
    with pytest.raises(redis.ResponseError, match="unknown command 'NOPE'"):
        r.execute_command("NOPE", "x")
    with pytest.raises(redis.ResponseError, match="wrong number of arguments for 'get' command"):
        r.execute_command("GET")
    with pytest.raises(redis.ResponseError, match="invalid expire time in 'set' command"):
        r.set("k", "v", ex=-10)
    with pytest.raises(redis.ResponseError, match="exceeds maximum allowed size"):
        r.set("big", b"x" * (1 << 20) + b"y")
    with pytest.raises(redis.ResponseError, match="DB index is out of range"):
        r.execute_command("SELECT", 1)


def test_a_pipeline_is_answered_in_order(cluster: launch.Cluster, kind: tuple[int, str]) -> None:
    r = client(leader(cluster), kind)
    k = f"{kind[0]}{kind[1]}:"
    p = r.pipeline(transaction=False)
    for i in range(500):
        p.set(f"{k}p{i}", str(i))
        p.append(k + "plog", f"{i};")
        p.get(f"{k}p{i}")
        p.get(f"{k}nop{i}")
    out = p.execute()
    assert out[0::4] == [True] * 500
    assert out[2::4] == [str(i).encode() for i in range(500)] and out[3::4] == [None] * 500
    lengths = out[1::4]
    assert lengths == sorted(lengths) and len(set(lengths)) == 500  # each append saw all the ones before it
    assert r.get(k + "plog") == "".join(f"{i};" for i in range(500)).encode()


def test_a_follower_serves_everything_reads_linearizable_and_writes_through_the_leader(
        cluster: launch.Cluster, kind: tuple[int, str]) -> None:
    ld = client(leader(cluster), kind)
    fw = client(follower(cluster), kind)
    k = f"{kind[0]}{kind[1]}:"
    for i in range(20):
        ld.set(k + "seen", str(i))
        assert fw.get(k + "seen") == str(i).encode()  # a read after an acknowledged write sees it, on any node
    assert fw.set(k + "via", "follower") is True and ld.get(k + "via") == b"follower"
    assert fw.append(k + "via", "!") == 9 and fw.delete(k + "via", k + "nope") == 1 and fw.get(k + "via") is None
    assert fw.set(k + "nx", "1", nx=True) is True and fw.set(k + "nx", "2", nx=True) is None
    p = fw.pipeline(transaction=False)
    for i in range(100):  # each switch between writes and reads waits for the one before: a round trip or two
        p.append(k + "fwlog", f"{i};")
        p.get(k + "fwlog")
    out = p.execute()
    assert out[1::2][-1] == "".join(f"{i};" for i in range(100)).encode()
    assert all(len(v) == n for v, n in zip(out[1::2], out[0::2], strict=True))  # each get saw its own append
    assert fw.info("replication")["role"] == "slave"


@pytest.mark.skipif(shutil.which("redis-cli") is None, reason="redis-cli is not installed (redis-tools)")
def test_redis_cli_one_shot_and_piped(cluster: launch.Cluster) -> None:
    p = str(port(leader(cluster)))
    out = subprocess.run(["redis-cli", "-p", p, "set", "cli", "one"], capture_output=True, text=True, timeout=30)
    assert out.stdout == "OK\n", out
    piped = "append cli ,two\nget cli\nexists cli nope\nping\n"
    out = subprocess.run(["redis-cli", "-p", p], input=piped, capture_output=True, text=True, timeout=30)
    assert out.stdout.split("\n")[:4] == ["7", "one,two", "1", "PONG"], out


@pytest.mark.skipif(shutil.which("redis-benchmark") is None, reason="redis-benchmark is not installed (redis-tools)")
def test_redis_benchmark_runs_to_the_end(cluster: launch.Cluster) -> None:
    """The issue's command: set, get and incr run; lpush (no lists in zraft) is reported as an error, no hang."""
    p = str(port(follower(cluster)))  # through a follower: writes forwarded to the leader
    out = subprocess.run(["redis-benchmark", "-p", p, "-t", "set,get,incr,lpush", "-n", "20000", "-q"],
                         capture_output=True, text=True, timeout=120)
    text = out.stdout.replace("\r", "\n") + out.stderr
    done = [x.split(":")[0].strip() for x in text.splitlines() if "requests per second" in x]
    assert done == ["SET", "GET", "INCR"], text[-2000:]
    assert "ERR unknown command 'LPUSH'" in text


def raw(p: int, data: bytes, wait: float = 5.0) -> bytes:
    """Send ``data`` on a fresh connection; everything the node answered until it closed or went quiet."""
    with socket.create_connection(("127.0.0.1", p), timeout=wait) as s:
        s.sendall(data)
        got = b""
        end = time.monotonic() + wait
        while time.monotonic() < end:
            try:
                chunk = s.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                return got + b"<closed>"
            got += chunk
            s.settimeout(0.5)
        return got


def test_hostile_input_gets_an_error_and_the_node_serves_everyone_else(cluster: launch.Cluster) -> None:
    p = port(leader(cluster))
    assert raw(p, b"*1000000\r\n") == b"-ERR Protocol error: invalid multibulk length\r\n<closed>"
    assert raw(p, b"*1\r\n$99999999\r\n") == b"-ERR Protocol error: invalid bulk length\r\n<closed>"
    assert raw(p, b"$3\r\nfoo\r\n").startswith(b"-ERR unknown command '$3'")
    assert raw(p, b"PING\r\nECHO hello\r\n") == b"+PONG\r\n$5\r\nhello\r\n"
    half = socket.create_connection(("127.0.0.1", p))  # half a command, then silence: it waits, nobody else does
    half.sendall(resp.command("SET", "k", b"v" * 1000)[:500])
    try:
        r = redis.Redis(port=p, socket_timeout=10)
        assert r.set("after", "ok") is True and r.get("after") == b"ok"
        half.sendall(resp.command("SET", "k", b"v" * 1000)[500:])
        assert half.recv(100) == b"+OK\r\n"
    finally:
        half.close()
    many = [socket.create_connection(("127.0.0.1", p)) for _ in range(50)]
    try:
        assert redis.Redis(port=p, socket_timeout=10).ping() is True
    finally:
        for s in many:
            s.close()


def test_launcher_prints_and_records_the_redis_ports(cluster: launch.Cluster) -> None:
    doc = launch.load(cluster.data_dir)
    assert all(n.resp and n.resp == m.resp for n, m in zip(doc.nodes, cluster.nodes, strict=True))
    assert Path(cluster.file).read_text().count('"resp"') == 3


def parse_replies(data: bytes) -> list[Any]:
    """Every reply in ``data``, strictly (lengths and CRLFs checked), typed: ("+", s), ("-", s), (":", n),
    ("$", bytes), ("_",) for null, ("$-1",) and ("*-1",) for RESP2's nulls, ("*", [...]), ("%", [(k, v), ...]),
    ("=", format, text)."""
    out: list[Any] = []
    pos = 0

    def one() -> Any:
        nonlocal pos
        eol = data.index(b"\r\n", pos)
        kind, head = chr(data[pos]), data[pos + 1:eol]
        pos = eol + 2
        if kind in "+-":
            return (kind, head.decode())
        if kind == ":":
            return (kind, int(head))
        if kind == "_":
            assert head == b""
            return ("_",)
        n = int(head)
        if n < 0:
            assert n == -1 and kind in "$*"
            return (kind + "-1",)
        if kind in "$=":
            body = data[pos:pos + n]
            assert len(body) == n and data[pos + n:pos + n + 2] == b"\r\n"
            pos += n + 2
            return ("$", body) if kind == "$" else ("=", body[:3], body[4:])
        if kind == "*":
            return ("*", [one() for _ in range(n)])
        assert kind == "%", kind
        return ("%", [(one(), one()) for _ in range(n)])

    while pos < len(data):
        out.append(one())
    return out


def test_resp3_replies_byte_for_byte(cluster: launch.Cluster) -> None:
    """After HELLO 3 the null is ``_``, HELLO, CONFIG GET and COMMAND DOCS are maps and INFO a verbatim string
    (Redis 7's types); HELLO 2 brings RESP2 back; a connection that never sent HELLO gets RESP2."""
    p = port(leader(cluster))
    redis.Redis(port=p, socket_timeout=10, protocol=2).set("r3", "v")
    assert raw(p, resp.command("GET", "r3:none") + resp.command("MGET", "r3", "r3:none")) == \
        b"$-1\r\n*2\r\n$1\r\nv\r\n$-1\r\n"
    cmds = [("HELLO", "3"), ("GET", "r3:none"), ("MGET", "r3", "r3:none"), ("SET", "r3", "w", "NX"),
            ("SET", "r3:none", "w", "XX", "GET"), ("GETDEL", "r3:none"), ("CLIENT", "GETNAME"),
            ("CONFIG", "GET", "appendfsync"), ("CONFIG", "GET", "nope"), ("COMMAND", "DOCS"), ("INFO", "keyspace"),
            ("HELLO",), ("HELLO", "2"), ("GET", "r3:none"), ("CONFIG", "GET", "appendonly"), ("INFO", "keyspace"),
            ("GET", "r3")]
    got = parse_replies(raw(p, b"".join(resp.command(*c) for c in cmds)))
    assert len(got) == len(cmds), got

    def hello(proto: int) -> list[tuple[Any, Any]]:
        return [(("$", b"server"), ("$", b"redis")), (("$", b"version"), ("$", b"7.0.0")),
                (("$", b"proto"), (":", proto)), (("$", b"id"), got[0][1][3][1]), (("$", b"mode"),
                ("$", b"standalone")), (("$", b"role"), ("$", b"master")), (("$", b"modules"), ("*", []))]

    keyspace = got[10][2]
    assert re.fullmatch(rb"# Keyspace\r\ndb0:keys=\d+,expires=0,avg_ttl=0\r\n", keyspace), keyspace
    assert got == [("%", hello(3)), ("_",), ("*", [("$", b"v"), ("_",)]), ("_",), ("_",), ("_",), ("_",),
                   ("%", [(("$", b"appendfsync"), ("$", b"always"))]), ("%", []), ("%", []), ("=", b"txt", keyspace),
                   ("%", hello(3)), ("*", [x for kv in hello(2) for x in kv]), ("$-1",),
                   ("*", [("$", b"appendonly"), ("$", b"yes")]), ("$", keyspace), ("$", b"v")]


@pytest.mark.skipif(shutil.which("redis-cli") is None, reason="redis-cli is not installed (redis-tools)")
def test_redis_cli_shows_the_same_values_in_resp2_and_resp3(cluster: launch.Cluster) -> None:
    p = str(port(follower(cluster)))
    piped = ("set cli3 one\nget cli3\nget cli3:none\nmget cli3 cli3:none\nset cli3 two nx\nset cli3 two get\n"
             "client getname\nconfig get append*\ninfo keyspace\nexists cli3\nscan 0 match cli3* count 1000\n")
    outs = [subprocess.run(["redis-cli", f"-{v}", "-p", p], input=piped, capture_output=True, text=True, timeout=30)
            for v in (2, 3)]
    assert outs[0].returncode == outs[1].returncode == 0, outs
    assert outs[0].stdout.split() == outs[1].stdout.split(), outs  # a map's pair is one line in -3, two in -2
    lines = outs[0].stdout.split("\n")
    assert lines[:7] == ["OK", "one", "", "one", "", "", "one"], lines


def test_kill_the_leader_while_writing_through_a_follower(tmp_path: Path) -> None:
    """Writes through a follower go on after the leader is killed (-9): the follower retries them with the same
    session and sequence numbers at the new leader, so every acknowledged append is there exactly once, in order."""
    c = launch.start(3, str(tmp_path / "d"), ports=launch.free_ports(3), resp_ports=launch.free_ports(3))
    try:
        ld = leader_id(c)
        fw = next(n for n in c.nodes if n.id != ld)
        r = redis.Redis(port=port(fw), socket_timeout=30)
        acked: list[int] = []
        failed = 0
        killed_at = None
        for i in range(400):
            if i == 100:
                chaos.kill(c, ld)
                killed_at = time.monotonic()
            try:
                r.append("log", f"{i};")
                acked.append(i)
            except redis.ResponseError:
                failed += 1  # TRYAGAIN after the deadline: may or may not have been applied
        assert killed_at is not None and len(acked) >= 390, (len(acked), failed)
        survivors = [n for n in c.nodes if n.id != ld]
        values = [redis.Redis(port=port(n), socket_timeout=10).get("log") for n in survivors]
        assert values[0] == values[1] and values[0] is not None
        got = [int(x) for x in values[0].decode().split(";")[:-1]]
        assert len(got) == len(set(got)), "an append was applied twice"
        assert [x for x in got if x in set(acked)] == acked, "an acknowledged append is missing or out of order"
    finally:
        stop_cluster(c)


def test_counters_conditional_sets_getdel_and_mset(cluster: launch.Cluster, kind: tuple[int, str]) -> None:
    for node in (leader(cluster), follower(cluster)):  # through the leader, and forwarded by a follower
        r = client(node, kind)
        pre = f"{kind[0]}{kind[1]}:"
        c = f"{pre}ctr{node.id}"
        assert r.incr(c) == 1 and r.incrby(c, 41) == 42 and r.decr(c) == 41 and r.decrby(c, 50) == -9
        assert r.get(c) == b"-9"
        r.set(f"{pre}txt{node.id}", "abc")
        with pytest.raises(redis.ResponseError, match="value is not an integer or out of range"):
            r.incr(f"{pre}txt{node.id}")
        with pytest.raises(redis.ResponseError, match="value is not an integer or out of range"):
            r.incrby(c, "1.5")
        r.set(f"{pre}max{node.id}", str(2**63 - 1))
        with pytest.raises(redis.ResponseError, match="increment or decrement would overflow"):
            r.incr(f"{pre}max{node.id}")
        k = f"{pre}cond{node.id}"
        assert r.set(k, "a", nx=True) is True and r.set(k, "b", nx=True) is None and r.get(k) == b"a"
        assert r.set(k, "c", xx=True) is True and r.set(f"{pre}none{node.id}", "d", xx=True) is None
        assert r.set(k, "e", get=True) == b"c" and r.set(f"{pre}new{node.id}", "f", get=True) is None
        assert r.setnx(k, "g") is False and r.setnx(f"{pre}nx{node.id}", "h") is True
        assert r.getdel(k) == b"e" and r.getdel(k) is None and r.exists(k) == 0
        assert r.mset({f"{pre}m{node.id}a": "1", f"{pre}m{node.id}b": "2"}) is True
        assert r.mget(f"{pre}m{node.id}a", f"{pre}m{node.id}b") == [b"1", b"2"]
        with pytest.raises(redis.ResponseError, match="syntax error"):
            r.execute_command("SET", k, "v", "NX", "XX")
        with pytest.raises(redis.ResponseError, match="wrong number of arguments for 'mset'"):
            r.execute_command("MSET", "a", "1", "b")


def test_mset_is_atomic_under_concurrent_mgets(cluster: launch.Cluster) -> None:
    import threading

    keys = [f"atom{i}" for i in range(20)]
    w = redis.Redis(port=port(leader(cluster)), socket_timeout=10)
    w.mset({k: "0" for k in keys})
    stop = threading.Event()
    seen: list[list[bytes | None]] = []

    def read(p: int) -> None:
        r = redis.Redis(port=p, socket_timeout=10)
        while not stop.is_set():
            seen.append(r.mget(keys))

    readers = [threading.Thread(target=read, args=(port(n),)) for n in cluster.nodes]
    for t in readers:
        t.start()
    try:
        for gen in range(1, 60):
            w.mset({k: str(gen) for k in keys})
    finally:
        stop.set()
        for t in readers:
            t.join(10)
    assert len(seen) > 30
    torn = [v for v in seen if len(set(v)) != 1]
    assert not torn, torn[:3]  # every MGET saw one MSET whole, never parts of two


def test_a_password_protects_the_redis_port(tmp_path: Path) -> None:
    pw = tmp_path / "redis.pass"
    pw.write_text("s3cret-words\n")
    pw.chmod(0o600)
    c = launch.start(1, str(tmp_path / "d"), ports=launch.free_ports(1), resp_ports=launch.free_ports(1),
                     node_args=["--resp-password-file", str(pw)])
    try:
        p = port(c.nodes[0])
        assert raw(p, b"PING\r\nGET k\r\n") == b"+PONG\r\n-NOAUTH Authentication required.\r\n"  # PING only
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=p, socket_timeout=10, protocol=2).get("k")
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=p, socket_timeout=10, password="wrong", protocol=2).ping()
        good = redis.Redis(port=p, socket_timeout=10, password="s3cret-words")  # RESP3: HELLO 3 AUTH default ...
        assert good.set("k", "v") is True and good.get("k") == b"v"
        assert redis.Redis(port=p, socket_timeout=10, username="default", password="s3cret-words",
                           protocol=2).get("k") == b"v"
    finally:
        stop_cluster(c)
    pw.chmod(0o644)
    node = [sys.executable, "-m", "zraft", "node", "--id", "1", "--peers", f"1=127.0.0.1:{launch.free_ports(1)[0]}",
            "--data-dir", str(tmp_path / "e")]
    out = subprocess.run([*node, "--resp", "127.0.0.1:1", "--resp-password-file", str(pw)], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "can be read by others (mode 644): chmod 600" in out.stderr, out.stderr
    out = subprocess.run([*node, "--resp", "0.0.0.0:1"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "is not a loopback address: give --resp-password-file" in out.stderr, out.stderr


def test_scan_returns_every_key_present_throughout_exactly_once(cluster: launch.Cluster) -> None:
    r = redis.Redis(port=port(leader(cluster)), socket_timeout=10)
    fw = redis.Redis(port=port(follower(cluster)), socket_timeout=10)
    stable = {f"scan:s{i}".encode() for i in range(700)}
    r.mset({k: b"1" for k in stable})
    r.mset({f"scan:gone{i}": "1" for i in range(200)})
    seen: list[bytes] = []
    cursor, calls, node = 0, 0, r
    while True:
        cursor, keys = node.scan(cursor, match="scan:*", count=50)
        seen += keys
        calls += 1
        node = fw if node is r else r  # a cursor works on any node
        r.mset({f"scan:new{calls}-{j}": "1" for j in range(20)})  # keys come and go during the iteration
        r.delete(*[f"scan:gone{calls * 10 + j}" for j in range(10)])
        if cursor == 0:
            break
    got = [k for k in seen if k in stable]
    assert sorted(got) == sorted(stable)  # all of them, none twice
    assert all(k.startswith(b"scan:") for k in seen) and 1 < calls <= 256
    assert set(r.scan_iter(match="scan:s1*", count=10)) == {k for k in stable if k.startswith(b"scan:s1")}
    assert r.scan(0, _type="hash") == (0, [])
    with pytest.raises(redis.ResponseError, match="invalid cursor"):
        r.execute_command("SCAN", "x")


def test_a_scan_call_reads_a_shard_of_the_store_not_all_of_it(cluster: launch.Cluster) -> None:
    # Every call used to sort the whole store (1.1 s per million keys, in the event loop): now one shard at a time.
    r = redis.Redis(port=port(leader(cluster)), socket_timeout=10)
    for lo in range(0, 20_000, 1000):
        r.mset({f"big:{i}": "1" for i in range(lo, lo + 1000)})
    total = r.dbsize()
    cursor, keys = r.scan(0, count=10)
    assert 10 <= len(keys) < 4 * total // 256 and cursor != 0  # a shard or two: about a 256th of the store
    seen: list[bytes] = list(keys)
    calls = 1
    while cursor != 0:
        cursor, keys = r.scan(cursor, count=10)
        seen += keys
        calls += 1
    assert calls <= 256 and len(seen) == len(set(seen)) == total


def test_keys_is_refused_on_a_store_too_large_to_walk_in_one_step(cluster: launch.Cluster) -> None:
    r = redis.Redis(port=port(follower(cluster)), socket_timeout=10)
    assert len(r.keys("*")) == r.dbsize() <= resp_server.MAX_KEYS_STORE
    big = redis.Redis(port=port(leader(cluster)), socket_timeout=10)
    pipe = big.pipeline(transaction=False)
    for lo in range(0, resp_server.MAX_KEYS_STORE + 1, 1000):
        pipe.mset({f"many:{i}": "1" for i in range(lo, lo + 1000)})
    pipe.execute()
    n = r.dbsize()
    assert n > resp_server.MAX_KEYS_STORE
    with pytest.raises(redis.ResponseError, match=f"KEYS would read all {n} keys .* use SCAN"):
        r.keys("many:1*")
    assert r.ping() and r.scan(0, match="many:1*", count=100)[1]  # the connection and SCAN go on


def _closed(s: socket.socket) -> bool:
    """Whether the node closed ``s`` (what it sent before, e.g. a timeout error, is read and dropped)."""
    try:
        while True:
            chunk = s.recv(4096)
            if not chunk:
                return True
    except (BlockingIOError, TimeoutError):
        return False
    except OSError:
        return True


def test_connections_that_hold_a_slot_for_nothing_are_closed(cluster: launch.Cluster) -> None:
    """1,100 connections that sent ``*`` and stopped once held every slot 12 s later (new clients: max number of
    clients reached). Now a connection holding half a command is closed after HALF_SENT_S of silence, and one
    that sends no command within FIRST_COMMAND_S too; an authenticated client that is merely idle is kept."""
    p = port(leader(cluster))
    idle = socket.create_connection(("127.0.0.1", p))
    idle.sendall(b"PING\r\n")
    assert idle.recv(100) == b"+PONG\r\n"
    began = time.monotonic()
    half = [socket.create_connection(("127.0.0.1", p)) for _ in range(300)]
    for s in half:
        s.sendall(b"*")
    mute = [socket.create_connection(("127.0.0.1", p)) for _ in range(20)]
    for s in half + mute:
        s.setblocking(False)
    try:
        assert redis.Redis(port=p, socket_timeout=10, protocol=2).ping() is True  # others are served meanwhile
        wait_until(lambda: all(_closed(s) for s in half + mute), timeout=resp_server.HALF_SENT_S + 10,
                   what="the node to close the connections that hold a slot for nothing")
        assert time.monotonic() - began >= min(resp_server.HALF_SENT_S, resp_server.FIRST_COMMAND_S) - 1
        idle.sendall(b"PING\r\n")  # idle longer than those limits, but it did send a command: kept
        assert idle.recv(100) == b"+PONG\r\n"
    finally:
        for s in [idle, *half, *mute]:
            s.close()


def test_unauthenticated_connections_and_password_guessing_are_bounded(tmp_path: Path) -> None:
    """With a password: connections that never authenticate keep at most MAX_UNAUTHED slots (one more closes the
    oldest) and are closed after AUTH_S; wrong passwords close a connection after MAX_AUTH_FAILURES, and a source
    address is refused unchecked once past its allowance, until it grows back."""
    pw = tmp_path / "redis.pass"
    pw.write_text("s3cret-words\n")
    pw.chmod(0o600)
    c = launch.start(1, str(tmp_path / "d"), ports=launch.free_ports(1), resp_ports=launch.free_ports(1),
                     node_args=["--resp-password-file", str(pw)])
    socks: list[socket.socket] = []
    try:
        p = port(c.nodes[0])
        for _ in range(200):
            s = socket.create_connection(("127.0.0.1", p))
            s.setblocking(False)
            socks.append(s)
        good = redis.Redis(port=p, socket_timeout=10, password="s3cret-words", protocol=2)
        assert good.set("k", "v") is True  # a real client is never crowded out
        wait_until(lambda: sum(not _closed(s) for s in socks) <= resp_server.MAX_UNAUTHED, what="the oldest closed")
        wait_until(lambda: all(_closed(s) for s in socks), timeout=resp_server.AUTH_S + 10,
                   what="the unauthenticated connections closed")
        assert good.get("k") == b"v"
        wrong = resp.command("AUTH", "guess") * 10
        assert raw(p, wrong) == b"-WRONGPASS invalid username-password pair or user is disabled.\r\n" * \
            resp_server.MAX_AUTH_FAILURES + b"<closed>"
        t0 = time.monotonic()
        guessers = [socket.create_connection(("127.0.0.1", p), timeout=5) for _ in range(10)]
        for g in guessers:  # 40 guesses at once from one address, then the right password at once
            g.sendall(resp.command("AUTH", "guess") * 4)
        right = socket.create_connection(("127.0.0.1", p), timeout=5)
        right.sendall(resp.command("AUTH", "s3cret-words"))
        answers = b""
        for g in guessers:
            got = b""
            while got.count(b"\r\n") < 4:
                got += g.recv(4096)
            answers += got
            g.close()
        allowed = resp_server.AUTH_BURST + resp_server.AUTH_PER_S * (time.monotonic() - t0) + 1
        assert b"too many wrong passwords" in answers and answers.count(b"WRONGPASS") <= allowed, answers[:300]
        assert b"too many wrong passwords" in right.recv(4096)  # refused unchecked, even the right one
        right.close()

        def allowed_again() -> bool:
            return raw(p, resp.command("AUTH", "s3cret-words") + resp.command("GET", "k"), wait=2) == \
                b"+OK\r\n$1\r\nv\r\n"

        wait_until(allowed_again, timeout=10, what="the address's allowance to grow back")
    finally:
        for s in socks:
            s.close()
        stop_cluster(c)



def test_watch_multi_exec_discard_getset_and_msetnx(cluster: launch.Cluster, kind: tuple[int, str]) -> None:
    tag = f"tx{kind[0]}{kind[1]}"
    for spec in (leader(cluster), follower(cluster)):  # a follower forwards the transaction to the leader
        r = client(spec, kind)
        other = client(spec, kind)
        k, n = f"{tag}{spec.id}:k", f"{tag}{spec.id}:n"
        assert r.getset(k, "1") is None and r.getset(k, "2") == b"1"
        assert r.msetnx({n: "a", f"{n}2": "b"}) is True
        assert r.msetnx({n: "c", f"{n}3": "d"}) is False and r.get(f"{n}3") is None  # all or none
        # MULTI/EXEC: every command queued, then run as one transaction.
        with r.pipeline(transaction=True) as p:
            p.set(k, "x").get(k).append(k, "yz").getset(k, "new").delete(k, "missing").mget(n, f"{n}2").exists(n)
            assert p.execute() == [True, b"x", 3, b"xyz", 1, [b"a", b"b"], 1]
        # WATCH: a watched key changed by another client before EXEC: EXEC is nil, nothing done.
        with r.pipeline(transaction=True) as p:
            p.watch(n)
            assert p.get(n) == b"a"  # (immediate mode after WATCH)
            other.set(n, "changed")
            p.multi()
            p.set(n, "mine")
            with pytest.raises(redis.WatchError):
                p.execute()
        assert r.get(n) == b"changed"
        # Unchanged since WATCH (a write by the watcher's own transaction is fine): applied.
        with r.pipeline(transaction=True) as p:
            p.watch(n, f"{tag}{spec.id}:absent")
            p.multi()
            p.set(n, "mine").set(f"{tag}{spec.id}:absent", "now")
            assert p.execute() == [True, True]
        assert r.get(n) == b"mine"
        # A command a transaction cannot run: refused when queued, and EXEC aborts; nothing applied.
        raw = socket.create_connection(("127.0.0.1", port(spec)), timeout=10)
        try:
            raw.sendall(resp.command("MULTI") + resp.command("SET", n, "no") + resp.command("INCR", n)
                        + resp.command("EXEC") + resp.command("EXEC") + resp.command("DISCARD")
                        + resp.command("MULTI") + resp.command("SET", n, "no") + resp.command("DISCARD")
                        + resp.command("MULTI") + resp.command("MULTI") + resp.command("WATCH", n)
                        + resp.command("EXEC"))
            want = (b"+OK\r\n+QUEUED\r\n-ERR zraft does not run INCR inside MULTI (a transaction runs GET, SET, "
                    b"GETSET, GETDEL, APPEND, DEL, MSET, MGET, EXISTS, STRLEN and PING)\r\n"
                    b"-EXECABORT Transaction discarded because of previous errors.\r\n-ERR EXEC without MULTI\r\n"
                    b"-ERR DISCARD without MULTI\r\n+OK\r\n+QUEUED\r\n+OK\r\n+OK\r\n"
                    b"-ERR MULTI calls can not be nested\r\n-ERR WATCH inside MULTI is not allowed\r\n*0\r\n")
            got = b""
            while len(got) < len(want):
                chunk = raw.recv(65536)
                assert chunk, got
                got += chunk
            assert got == want
        finally:
            raw.close()
        assert r.get(n) == b"mine"
        # What MULTI queues is bounded like one request: past it, refused, and EXEC aborts.
        with r.pipeline(transaction=True) as p:
            p.set(n, "x" * (600 << 10)).set(n, "y" * (600 << 10))
            with pytest.raises(redis.ResponseError, match=r"EXECABORT|at most"):
                p.execute()
        assert r.get(n) == b"mine"
        r.close()
        other.close()
