"""Leases and TTLs through a running cluster: a lease kept alive outlives its TTL and its keys go when the keepalives
stop; revoking deletes its keys; a leader's death does not expire a lease kept alive (the new leader extends it);
Redis's EXPIRE family and SET's EX/PX/KEEPTTL with Redis's replies, through a follower too; the shell's lease
commands."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest
import redis
from clusterutil import leader_id, stop_cluster, wait_until

from zraft.client import Client, LeaseExpired
from zraft.tools import chaos, launch
from zraft.tools.shell import Shell


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[launch.Cluster]:
    c = launch.start(3, str(tmp_path_factory.mktemp("leases") / "d"), ports=launch.free_ports(3),
                     resp_ports=launch.free_ports(3))
    try:
        yield c
    finally:
        stop_cluster(c)


def _gone_after(cl: Client, key: str) -> float:
    """Seconds until ``key`` is deleted (polled)."""
    t0 = time.monotonic()
    wait_until(lambda: cl.get(key) is None, timeout=30, what=f"{key} deleted")
    return time.monotonic() - t0


def test_a_lease_lives_while_kept_alive_and_takes_its_keys_when_it_stops(cluster: launch.Cluster) -> None:
    with cluster.client() as cl:
        lease = cl.grant(2.0)
        cl.put("kept/a", "1", lease=lease)
        cl.put("kept/b", "2", lease=lease)
        info = cl.time_to_live(lease)
        assert info.lease == lease and info.ttl == 2.0 and 0 < info.remaining <= 2.0 and info.keys == 2
        kt = cl.key_ttl("kept/a")
        assert kt is not None and (kt.lease, kt.ttl, kt.keys) == (lease, 2.0, 2)
        end = time.monotonic() + 5.0  # more than twice the TTL
        sent = time.monotonic()
        while time.monotonic() < end:
            sent = time.monotonic()
            assert cl.keepalive(lease) == 2.0
            assert cl.get("kept/a") == b"1" and cl.get("kept/b") == b"2"
            time.sleep(0.3)
        # Once the keepalives stop, the keys go together, no sooner than the TTL after the last one was sent.
        wait_until(lambda: cl.get("kept/a") is None, timeout=30, what="the lease's keys deleted")
        assert time.monotonic() - sent >= 2.0 * 0.99
        assert cl.get("kept/b") is None
        with pytest.raises(LeaseExpired):
            cl.keepalive(lease)
        with pytest.raises(LeaseExpired):
            cl.put("late", "x", lease=lease)
        other = cl.grant(30)
        cl.put("rev/a", "1", lease=other)
        rev = cl.revoke(other)
        assert cl.get("rev/a") is None and cl.range(prefix="rev/").revision == rev
        with pytest.raises(LeaseExpired):
            cl.revoke(other)


def test_a_leaders_death_does_not_expire_a_lease_kept_alive(cluster: launch.Cluster) -> None:
    with cluster.client() as cl:
        lease = cl.grant(3.0)
        cl.put("held", "1", lease=lease)
        cl.keepalive(lease)
        old = leader_id(cluster)
        chaos.kill(cluster, old)
        try:
            # The next keepalive reaches the new leader (retried through the election): the lease is still there.
            assert cl.keepalive(lease) == 3.0
            assert cl.get("held") == b"1"
            assert leader_id(cluster) != old
        finally:
            cluster.start_node(old)
        cl.revoke(lease)


def test_keys_own_ttls(cluster: launch.Cluster) -> None:
    with cluster.client() as cl:
        cl.put("short", "1", ttl=0.3)
        assert 0 < cl.key_ttl("short").remaining <= 0.3  # type: ignore[union-attr]
        assert _gone_after(cl, "short") < 10
        cl.put("p", "1")
        assert cl.key_ttl("p") is None
        with pytest.raises(KeyError):
            cl.key_ttl("missing")
        assert cl.expire("p", 60) and 59 < cl.key_ttl("p").remaining <= 60  # type: ignore[union-attr]
        assert cl.expire("p", None) and cl.key_ttl("p") is None and not cl.expire("p", None)
        assert not cl.expire("missing", 5)
        assert cl.expire("p", 0) and cl.get("p") is None


def test_redis_expiry_commands_through_a_follower(cluster: launch.Cluster) -> None:
    ld = leader_id(cluster)
    spec = next(n for n in cluster.nodes if n.id != ld)
    assert spec.resp
    r = redis.Redis(host="127.0.0.1", port=int(spec.resp.rpartition(":")[2]), socket_timeout=10)
    assert r.set("rk", "v", px=300) is True
    assert 0 < r.pttl("rk") <= 300
    wait_until(lambda: r.get("rk") is None, timeout=30, what="SET PX's key expired")
    assert r.ttl("rk") == -2 and r.pttl("rk") == -2
    r.set("rk", "v")
    assert r.ttl("rk") == -1
    assert r.expire("rk", 100) is True and r.ttl("rk") == 100 and 99_000 < r.pttl("rk") <= 100_000
    assert r.append("rk", "w") == 2 and r.ttl("rk") == 100  # APPEND keeps the TTL, as in Redis
    assert r.set("rk", "x", keepttl=True) is True and r.ttl("rk") == 100
    assert r.set("rk", "y") is True and r.ttl("rk") == -1  # a plain SET drops it
    assert r.pexpire("rk", 50_000) is True and 49_000 < r.pttl("rk") <= 50_000
    assert r.persist("rk") is True and r.persist("rk") is False and r.ttl("rk") == -1
    assert r.expire("nokey", 10) is False and r.persist("nokey") is False
    assert r.expireat("rk", int(time.time()) + 1000) is True and 990 <= r.ttl("rk") <= 1000
    assert r.pexpireat("rk", int(time.time() * 1000) - 1) is True and r.get("rk") is None  # past: deleted now
    assert r.execute_command("SETEX", "se", 100, "v") is True and r.ttl("se") == 100
    assert r.psetex("pse", 100_000, "v") is True and 99_000 < r.pttl("pse") <= 100_000
    assert r.set("lock", "me", nx=True, px=30_000) is True and r.set("lock", "you", nx=True, px=30_000) is None
    assert r.set("exat", "v", exat=int(time.time()) + 500) is True and 490 <= r.ttl("exat") <= 500
    for bad, match in ((("SET", "k", "v", "EX", "0"), "invalid expire time"),
                       (("SET", "k", "v", "EX", "10", "KEEPTTL"), "syntax error"),
                       (("SET", "k", "v", "EX", "x"), "not an integer"), (("SETEX", "k", "-1", "v"), "invalid expire"),
                       (("EXPIRE", "k", "10", "NX"), "takes no options"),
                       (("EXPIRE", "k", str(1 << 62)), "invalid expire time")):
        with pytest.raises(redis.ResponseError, match=match):
            r.execute_command(*bad)
    r.close()


def test_the_shells_lease_commands(cluster: launch.Cluster) -> None:
    with cluster.client() as cl:
        sh = Shell(cl, cluster)
        out = sh.run("lease grant 30")
        assert out is not None and out.startswith("lease ") and "granted, TTL 30 s" in out
        lease = int(out.split()[1])
        assert sh.run(f"put sk v --lease {lease}") == "OK" and cl.key_ttl("sk").lease == lease  # type: ignore[union-attr]
        assert sh.run(f"lease keepalive {lease}") == f"lease {lease} kept alive: 30 s from now"
        assert (sh.run(f"lease ttl {lease}") or "").endswith("of 30 s; 1 key")
        assert sh.run("put own v --ttl 100") == "OK" and "left of 100 s" in (sh.run("ttl own") or "")
        assert sh.run("persist own") == "OK" and sh.run("ttl own") == "(no TTL)"
        assert sh.run("ttl none") == "(no such key)"
        assert sh.run("expire own 50") == "OK" and sh.run("expire none 5") == "(no such key)"
        assert (sh.run(f"lease revoke {lease}") or "").startswith(f"lease {lease} revoked") and cl.get("sk") is None
        with pytest.raises(LeaseExpired):
            sh.run(f"lease keepalive {lease}")
        with pytest.raises(ValueError, match="usage: lease"):
            sh.run("lease grant x")
        with pytest.raises(ValueError, match="usage: put"):
            sh.run("put k v --ttl soon")


@pytest.mark.parametrize("protocol", [2, 3])
def test_redis_keyspace_notifications_through_a_follower(cluster: launch.Cluster, protocol: int) -> None:
    """PSUBSCRIBE on a follower: set, del and expired events for the keys written through another node, in order, in
    RESP2 (subscribed mode takes only pub/sub commands) and RESP3 (push messages)."""
    ld = leader_id(cluster)
    follower = next(n for n in cluster.nodes if n.id != ld)
    leader = cluster.node(ld)
    assert follower.resp and leader.resp
    sub = redis.Redis(host="127.0.0.1", port=int(follower.resp.rpartition(":")[2]), socket_timeout=10,
                      protocol=protocol)
    w = redis.Redis(host="127.0.0.1", port=int(leader.resp.rpartition(":")[2]), socket_timeout=10)
    assert sub.config_set("notify-keyspace-events", "KEA") is True
    p = sub.pubsub()
    p.psubscribe(f"__keyspace@0__:n{protocol}/*")
    p.subscribe("__keyevent@0__:expired")
    got: list[tuple[str, bytes, bytes]] = []

    def drain() -> bool:
        m = p.get_message(timeout=0.2)
        while m is not None:
            if m["type"] in ("pmessage", "message"):
                got.append((m["type"], m["channel"], m["data"]))
            m = p.get_message(timeout=0.01)
        return False

    # The subscription made the cluster keep its history (the first subscriber anywhere does): then writes.
    wait_until(lambda: w.info("replication")["zraft_role"] and all(
        st.get("status", {}).get("watching") for st in _status(cluster)), what="the history kept")
    k = f"n{protocol}/a"
    w.set(k, "1")
    w.delete(k)
    w.set(k, "2", px=200)
    wait_until(lambda: drain() or len(got) >= 5, timeout=30, what="five notifications")
    space = f"__keyspace@0__:{k}".encode()
    assert got[:3] == [("pmessage", space, b"set"), ("pmessage", space, b"del"), ("pmessage", space, b"set")]
    assert set(got[3:]) == {("pmessage", space, b"expired"), ("message", b"__keyevent@0__:expired", k.encode())}
    if protocol == 2:  # a RESP2 connection that subscribed takes pub/sub commands only, as Redis's
        with socket.create_connection(("127.0.0.1", int(follower.resp.rpartition(":")[2])), timeout=10) as raw:
            raw.sendall(b"SUBSCRIBE x\r\nGET x\r\n")
            buf = b""
            while b"-ERR" not in buf or not buf.endswith(b"\r\n"):
                buf += raw.recv(4096)
            assert buf.startswith(b"*3\r\n$9\r\nsubscribe\r\n$1\r\nx\r\n:1\r\n-ERR Can't execute 'get'")
    p.close()
    sub.close()
    w.close()


def _status(cluster: launch.Cluster) -> list[dict[str, object]]:
    with cluster.client() as cl:
        return cl.status_all()
