"""The Redis protocol on a live 3-node cluster: redis-py (every command implemented, the type of every reply,
pipelines), redis-cli one-shot and piped, redis-benchmark, followers, and hostile input."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from clusterutil import leader_id, stop_cluster

from zraft import chaos, launch, resp, resp_server

ROOT = Path(__file__).resolve().parent.parent


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


def test_the_commands_and_their_reply_types(cluster: launch.Cluster) -> None:
    r = redis.Redis(port=port(leader(cluster)), socket_timeout=10)
    assert r.ping() is True
    assert r.echo(b"hi") == b"hi"
    assert r.set("k1", "v1") is True
    assert r.get("k1") == b"v1" and r.get("missing") is None
    assert r.append("k1", "23") == 4 and r.append("new", "abc") == 3
    assert r.strlen("k1") == 4 and r.strlen("missing") == 0
    assert r.mget("k1", "missing", "new") == [b"v123", None, b"abc"]
    assert r.exists("k1", "missing", "new", "k1") == 3
    assert r.delete("new", "missing") == 1 and r.exists("new") == 0
    assert r.dbsize() == 1
    r.set("user:1", "a")
    r.set("user:2", "b")
    assert sorted(r.keys("user:*")) == [b"user:1", b"user:2"] and len(r.keys("*")) == 3
    assert r.execute_command("SELECT", 0) is True
    assert r.client_setname("tester") is True and r.client_getname() == "tester"
    assert isinstance(r.client_id(), int)
    info = r.info()
    assert info["redis_version"] == "7.0.0" and info["role"] == "master" and info["zraft_role"] == "leader"
    assert info["db0"]["keys"] == 3
    assert set(r.info("replication")) >= {"role", "zraft_term", "zraft_commit_index"} and "redis_version" not in \
        r.info("replication")
    with pytest.raises(redis.ResponseError, match="unknown command 'NOPE'"):
        r.execute_command("NOPE", "x")
    with pytest.raises(redis.ResponseError, match="wrong number of arguments for 'get' command"):
        r.execute_command("GET")
    with pytest.raises(redis.ResponseError, match="EX, PX, EXAT, PXAT and KEEPTTL are not supported"):
        r.set("k", "v", ex=10)
    with pytest.raises(redis.ResponseError, match="exceeds maximum allowed size"):
        r.set("big", b"x" * (1 << 20) + b"y")
    with pytest.raises(redis.ResponseError, match="DB index is out of range"):
        r.execute_command("SELECT", 1)


def test_a_pipeline_is_answered_in_order(cluster: launch.Cluster) -> None:
    r = redis.Redis(port=port(leader(cluster)), socket_timeout=10)
    p = r.pipeline(transaction=False)
    for i in range(500):
        p.set(f"p{i}", str(i))
        p.append("plog", f"{i};")
        p.get(f"p{i}")
    out = p.execute()
    assert out[0::3] == [True] * 500
    assert out[2::3] == [str(i).encode() for i in range(500)]
    lengths = out[1::3]
    assert lengths == sorted(lengths) and len(set(lengths)) == 500  # each append saw all the ones before it
    assert r.get("plog") == "".join(f"{i};" for i in range(500)).encode()


def test_a_follower_serves_everything_reads_linearizable_and_writes_through_the_leader(
        cluster: launch.Cluster) -> None:
    ld = redis.Redis(port=port(leader(cluster)), socket_timeout=10)
    fw = redis.Redis(port=port(follower(cluster)), socket_timeout=10)
    for i in range(20):
        ld.set("seen", str(i))
        assert fw.get("seen") == str(i).encode()  # a read after an acknowledged write sees it, on any node
    assert fw.set("via", "follower") is True and ld.get("via") == b"follower"
    assert fw.append("via", "!") == 9 and fw.delete("via", "nope") == 1
    p = fw.pipeline(transaction=False)
    for i in range(100):  # each switch between writes and reads waits for the one before: a round trip or two
        p.append("fwlog", f"{i};")
        p.get("fwlog")
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


@pytest.mark.skipif(shutil.which("redis-benchmark") is None, reason="redis-benchmark is not installed")
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


def test_a_resp2_client(cluster: launch.Cluster) -> None:
    r = redis.Redis(port=port(leader(cluster)), socket_timeout=10, protocol=2)
    assert r.ping() is True and r.set("two", "2") is True and r.get("two") == b"2" and r.get("nope") is None
    assert r.mget("two", "nope") == [b"2", None] and r.info("server")["redis_version"] == "7.0.0"
    assert r.execute_command("HELLO", "2")[1] == b"redis"


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


def test_counters_conditional_sets_getdel_and_mset(cluster: launch.Cluster) -> None:
    for node in (leader(cluster), follower(cluster)):  # through the leader, and forwarded by a follower
        r = redis.Redis(port=port(node), socket_timeout=10)
        c = f"ctr{node.id}"
        assert r.incr(c) == 1 and r.incrby(c, 41) == 42 and r.decr(c) == 41 and r.decrby(c, 50) == -9
        assert r.get(c) == b"-9"
        r.set(f"txt{node.id}", "abc")
        with pytest.raises(redis.ResponseError, match="value is not an integer or out of range"):
            r.incr(f"txt{node.id}")
        with pytest.raises(redis.ResponseError, match="value is not an integer or out of range"):
            r.incrby(c, "1.5")
        r.set(f"max{node.id}", str(2**63 - 1))
        with pytest.raises(redis.ResponseError, match="increment or decrement would overflow"):
            r.incr(f"max{node.id}")
        k = f"cond{node.id}"
        assert r.set(k, "a", nx=True) is True and r.set(k, "b", nx=True) is None and r.get(k) == b"a"
        assert r.set(k, "c", xx=True) is True and r.set(f"none{node.id}", "d", xx=True) is None
        assert r.set(k, "e", get=True) == b"c" and r.set(f"new{node.id}", "f", get=True) is None
        assert r.setnx(k, "g") is False and r.setnx(f"nx{node.id}", "h") is True
        assert r.getdel(k) == b"e" and r.getdel(k) is None and r.exists(k) == 0
        assert r.mset({f"m{node.id}a": "1", f"m{node.id}b": "2"}) is True
        assert r.mget(f"m{node.id}a", f"m{node.id}b") == [b"1", b"2"]
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
    node = [sys.executable, "-m", "zraft.node", "--id", "1", "--peers", f"1=127.0.0.1:{launch.free_ports(1)[0]}",
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
