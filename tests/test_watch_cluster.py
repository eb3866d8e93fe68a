"""Watches through a running cluster: a watch of a prefix from a revision gets every change in it exactly once and
in order while writes go on -- across the death of the node serving it (the stream resumes on another node from
the next revision); a watch from now sees every write made after it returned; the shell's watch."""

from __future__ import annotations

import threading

import pytest
from clusterutil import wait_until

from zraft.client import Compacted
from zraft.tools import chaos, launch
from zraft.tools.shell import Shell


def test_a_watch_gets_every_change_once_in_order_across_a_node_death(cluster: launch.Cluster) -> None:
    with cluster.client() as cl, cluster.client() as writer:
        # No history is kept until a client first watches (writes are cheaper without): a watch from before then
        # is compacted. ``enable_watches`` starts it, on every node at once.
        before = cl.put("w/0", "-1")
        assert not any(st["status"]["watching"] for st in cl.status_all())
        began = cl.enable_watches()
        assert began > before
        wait_until(lambda: all(st.get("status", {}).get("watching") for st in cl.status_all()),
                   what="every node keeping the history")
        with pytest.raises(Compacted) as e:
            cl.watch(prefix="w/", start_revision=before)
        assert e.value.compact_revision == began
        start = cl.put("w/0", "0")
        expected: list[tuple[str, bytes, int]] = [("put", b"w/0", start)]
        stream = cl.watch(prefix="w/", start_revision=start, prev_kv=True)
        watched = cluster.nodes[stream._node].id  # (the node it watches on first)
        for i in range(1, 40):
            expected.append(("put", b"w/%d" % (i % 7), writer.put(f"w/{i % 7}", str(i))))
            writer.put(f"elsewhere/{i}", "x")  # outside the prefix: never sent
            if i % 5 == 0:
                expected.append(("delete", b"w/%d" % (i % 7), writer.delete(f"w/{i % 7}")))
            if i == 20:
                chaos.kill(cluster, watched)
        got: list[tuple[str, bytes, int]] = []
        while len(got) < len(expected):
            batch = stream.get(10.0)
            assert batch, f"no events for 10 s; have {len(got)} of {len(expected)}"
            got += [(e.type, e.key, e.mod_revision) for e in batch]
        assert got == expected
        assert stream.resumes >= 1  # it had to move off the node that died
        assert stream.get(1.5) == []  # nothing more
        stream.close()
        cluster.start_node(watched)


def test_a_watch_from_now_and_the_shell(cluster: launch.Cluster) -> None:
    with cluster.client() as cl:
        with cl.watch("solo") as one:
            rev = cl.put("solo", "1")
            cl.put("solo2", "x")
            (e,) = one.get(5.0)
            assert (e.type, e.key, e.value, e.mod_revision, e.version) == ("put", b"solo", b"1", rev, 1)
        lines: list[str] = []
        shell = Shell(cl, cluster, out=lines.append)
        result: list[str | None] = []
        t = threading.Thread(target=lambda: result.append(shell.run("watch sh/ --count 2")))
        t.start()
        wait_until(lambda: bool(lines), what="the shell watching")
        with cluster.client() as other:
            r1 = other.put("sh/a", "1")
            r2 = other.put("sh/a", "2")
        t.join(30)
        assert lines[1:] == [f"{r1} put sh/a = 1", f"{r2} put sh/a = 2 (was 1)"]
        assert result == [f"(2 events; last revision {r2})"]
