"""Revisions and range reads through a running cluster: what a client sees (every answer's revision, a key's
revisions, keys in order by prefix or range, limits, counts), from followers too, and after every node restarts
(from snapshots and the log)."""

from __future__ import annotations

import pytest
from clusterutil import stop_cluster, wait_until

from zraft.client import RequestRefused
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

