"""Locks and elections through a running cluster: one holder at a time, in the order the contenders came, with
fencing tokens that only grow; a holder whose lease expired (paused: its keepalives stopped) cannot write after the
next holder took over; an election's leader is observed as it changes (watching), and resigning passes it on."""

from __future__ import annotations

import threading

import pytest
from clusterutil import wait_until

from zraft.client import LockLost
from zraft.tools import launch
from zraft.tools.shell import Shell


def test_one_holder_at_a_time_with_growing_tokens(cluster: launch.Cluster) -> None:
    with cluster.client() as a, cluster.client() as b:
        first = a.lock("jobs", ttl=5)
        token = first.acquire()
        assert token > 0 and first.put("jobs/state", "a") > token
        order: list[str] = []
        second = b.lock("jobs", ttl=5)
        t = threading.Thread(target=lambda: (second.acquire(timeout=30), order.append("b")))
        t.start()
        # b queues behind a (a's key has the smaller create_revision): once it waits there, it has not the lock.
        wait_until(lambda: a.range(prefix="__lock/jobs/").count == 2, what="b queued")
        assert order == [] and not second.token
        order.append("a released")
        first.release()
        t.join(30)
        assert order == ["a released", "b"] and second.token > token
        with pytest.raises(LockLost):
            first.put("jobs/state", "late")  # a no longer holds it: no token to fence with
        token_b = second.token
        second.release()
        with pytest.raises(TimeoutError):
            with a.lock("jobs", ttl=5) as held:
                assert held.token > token_b
                b.lock("jobs", ttl=5).acquire(timeout=1.0)
        assert a.range(prefix="__lock/jobs/").count == 0  # every contender's key is gone


def test_a_paused_holder_cannot_write_after_its_lease_expired(cluster: launch.Cluster) -> None:
    with cluster.client() as a, cluster.client() as b:
        paused = a.lock("reg", ttl=2)
        old = paused.acquire()
        paused.put("reg/value", "from a")
        assert paused.keepalive is not None
        paused.keepalive.stop()  # a pauses (a GC pause, SIGSTOP): its keepalives stop, and its lease runs out
        successor = b.lock("reg", ttl=5)
        new = successor.acquire(timeout=30)
        assert new > old
        successor.put("reg/value", "from b")
        # a wakes up still believing it holds the lock: its fenced write is refused, whatever its token says.
        with pytest.raises(LockLost, match=f"token {old}"):
            paused.put("reg/value", "from a, late")
        assert a.get("reg/value") == b"from b"
        successor.release()


def test_an_election_is_observed_as_it_changes(cluster: launch.Cluster) -> None:
    with cluster.client() as a, cluster.client() as b, cluster.client() as watcher:
        ea, eb = a.election("svc"), b.election("svc")
        seen: list[bytes | None] = []
        done = threading.Event()

        def observe() -> None:
            for leader in watcher.election("svc").observe(timeout=20):
                seen.append(None if leader is None else leader[0])
                if len(seen) == 4:
                    done.set()
                    return

        t = threading.Thread(target=observe)
        t.start()
        wait_until(lambda: seen == [None], what="the observer's first view")
        token_a = ea.campaign("node-a")
        campaigning = threading.Thread(target=lambda: eb.campaign("node-b", timeout=30))
        campaigning.start()
        wait_until(lambda: seen == [None, b"node-a"], what="a observed leading")
        assert a.election("svc").leader() == (b"node-a", token_a)
        wait_until(lambda: a.range(prefix="__election/svc/").count == 2, what="b queued behind a")
        ea.resign()
        campaigning.join(30)
        eb.resign()
        assert done.wait(20) and seen == [None, b"node-a", b"node-b", None]
        t.join(5)


def test_the_shells_lock(cluster: launch.Cluster) -> None:
    with cluster.client() as cl:
        sh = Shell(cl, cluster)
        out = sh.run("lock sh --ttl 5 put shlocked v")
        assert out is not None and out.startswith("lock sh held with token ") and out.endswith("; put shlocked: OK")
        assert cl.get("shlocked") == b"v" and cl.range(prefix="__lock/sh/").count == 0
        assert sh.run("election svc2") == "(no leader)"
