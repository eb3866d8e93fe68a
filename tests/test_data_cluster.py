"""Revisions, range reads and transactions through a running cluster: what a client sees (every answer's revision,
a key's revisions, keys in order by prefix or range, limits, counts; compare-and-swap and transactions, once each
when retried), from followers too, and after every node restarts (from snapshots and the log)."""

from __future__ import annotations

import pytest
from clusterutil import stop_cluster, wait_until

from zraft.client import KeyValue, RequestRefused
from zraft.client import txn as t
from zraft.tools import launch
from zraft.tools.shell import Shell


def test_revisions_and_range_reads_through_a_cluster_and_a_restart(cluster: launch.Cluster) -> None:
    with cluster.client() as cl:
        first = cl.put("cfg/b", "2")
        assert first >= 2  # revisions began (at 1) when the first leader was elected
        assert cl.put("cfg/a", "1") == first + 1
        assert cl.append("cfg/b", "+") == first + 2
        assert cl.put("other", "x") == first + 3
        assert cl.delete("missing") == first + 3  # nothing changed
        r = cl.range(prefix="cfg/")
        assert [(kv.key, kv.value, kv.create_revision, kv.mod_revision, kv.version) for kv in r.kvs] == [
            (b"cfg/a", b"1", first + 1, first + 1, 1), (b"cfg/b", b"2+", first, first + 2, 2)]
        assert (r.count, r.more, r.revision) == (2, False, first + 3)
        for i in range(30):
            cl.put(f"cfg/n{i:02d}", str(i))
        r = cl.range(prefix="cfg/n", limit=10, keys_only=True)
        assert [kv.key for kv in r.kvs] == [b"cfg/n%02d" % i for i in range(10)] and r.count == 30 and r.more
        assert all(kv.value is None for kv in r.kvs)
        assert cl.range("cfg/n05", "cfg/n07").count == 2
        counted = cl.range(prefix="", count_only=True)
        assert counted.kvs == [] and counted.count == 33
        assert len(cl.prefix("cfg/n")) == 30
        with pytest.raises(RequestRefused, match="limit"):
            cl.range(prefix="cfg/", limit=10**6)
        rev = cl.put("cfg/a", "3")
        # A follower answers a stale range from what it has applied: it catches up to the write.
        wait_until(lambda: all(cl.range(prefix="cfg/a", stale=True).revision >= rev for _ in range(6)),
                   what="every node at the revision of the last write")
        shell = Shell(cl, cluster)
        out = shell.run("range cfg/ --limit 2")
        assert out == f"cfg/a: 3\ncfg/b: 2+\n(2 keys, 30 more not listed; revision {rev})"
        assert shell.run("range --from cfg/n28 --to cfg/n99") == f"cfg/n28: 28\ncfg/n29: 29\n(2 keys; revision {rev})"
        with pytest.raises(ValueError, match="usage: range"):
            shell.run("range")
    cluster.stop()
    cluster.release()
    again = launch.start(None, cluster.data_dir, ports=launch.free_ports(3))
    try:
        with again.client() as cl:
            r = cl.range(prefix="cfg/a")
            assert [(kv.value, kv.create_revision, kv.mod_revision, kv.version) for kv in r.kvs] == [
                (b"3", first + 1, rev, 2)]
            assert r.revision == rev and cl.put("after", "1") == rev + 1
    finally:
        stop_cluster(again)



def test_compare_and_swap_and_transactions_through_a_cluster(cluster: launch.Cluster) -> None:
    with cluster.client() as cl, cluster.client() as other:
        assert cl.cas("lock", None, "me") is True  # absent: taken
        assert other.cas("lock", None, "you") is False
        assert other.cas("lock", "me", "you") is True
        assert cl.get("lock") == b"you"
        rev = cl.put("config", "v1")
        r = cl.txn([t.value("config") == b"v1", t.mod_revision("config") == rev],
                   [t.put("config", "v2"), t.put("config/changed", "yes"), t.get("config")],
                   [t.get("config")])
        assert r.succeeded and r.revision == rev + 1
        assert r.results == [None, None, KeyValue(b"config", b"v2", rev, rev + 1, 2)]
        r = other.txn([t.mod_revision("config") == rev], [t.put("config", "stale")], [t.get_range(prefix="config")])
        assert not r.succeeded and r.revision == rev + 1
        assert [kv.key for kv in r.results[0].kvs] == [b"config", b"config/changed"] and r.results[0].count == 2
        r = cl.txn([], [t.delete_range(prefix="config"), t.delete("lock")])
        assert r.results == [2, 1] and cl.range(prefix="", count_only=True).count == 0
        with pytest.raises(RequestRefused, match="kind one of"):
            cl._session_call({"op": "txn", "then": [["incr", b"k"]]})
        # A transaction whose answer was lost is retried with the same sequence number: applied once.
        cl._seq += 1
        req = {"op": "txn", "if": [[b"n", "version", "=", 0]], "then": [["put", b"n", b"1"]],
               "else": [["get", b"n"]], "client": cl.client_id, "seq": cl._seq, "ack": cl._seq}
        first = cl._call(dict(req), write=True)
        again = cl._call(dict(req), write=True)
        assert first["succeeded"] is True and again["succeeded"] is True and again["rev"] == first["rev"]
        assert cl.range("n", "o").kvs[0].version == 1


def test_the_shell_s_cas_and_txn(cluster: launch.Cluster) -> None:
    with cluster.client() as cl:
        sh = Shell(cl, cluster)
        assert sh.run("cas lock (nil) me") == "OK"
        assert sh.run("cas lock (nil) you") == "(not swapped)"
        assert sh.run("cas lock me you") == "OK"
        rev = cl.put("j", "1")
        out = sh.run(f"txn if value(lock) = you mod(j) = {rev} version(none) = 0 then put k 2 append j +1 get j "
                     f"del lock range k else get k")
        assert out == f"then (revision {rev + 1})\nk: OK\nj: OK\nj: 1+1\nlock: 1 deleted\nk: 2", out
        assert sh.run(f"txn if mod(j) < {rev} then put k 3 else get k get none") == \
            f"else (revision {rev + 1})\nk: 2\nnone: (nil)"
        assert sh.run("txn then put solo 1").startswith("then (revision ")
        for bad in ("txn", "txn if value(k) = then get k", "txn if size(k) = 1 then get k", "txn then put k",
                    "txn if mod(k) < x then get k", "txn else get k", "txn then get k then get k", "cas k v"):
            with pytest.raises(ValueError, match="usage"):
                sh.run(bad)
