"""Nodes on their own addresses in network namespaces (a virtual LAN, zraft/tools/netns.py), faults cut on real TCP
with nftables. Skipped, with the reason, where namespaces cannot be made (not root, no iproute2 or nftables);
CI runs as root and installs both."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from clusterutil import leader_id, stop_cluster, wait_until

from zraft.tools import launch, netns

ROOT = Path(__file__).resolve().parent.parent
why = netns.available()
pytestmark = pytest.mark.skipif(why is not None, reason=why or "")


@pytest.fixture
def lan_cluster(tmp_path: Path) -> Iterator[tuple[netns.Lan, launch.Cluster]]:
    lan = netns.Lan(3, prefix="zrt")
    lan.up()
    try:
        c = launch.start(3, str(tmp_path / "data"), ports=[7000] * 3,
                         hosts=[lan.address(i) for i in (1, 2, 3)], wrap=lan.wrap)
        try:
            yield lan, c
        finally:
            stop_cluster(c)
    finally:
        lan.down()


def test_three_nodes_on_three_addresses_serve_the_tour(lan_cluster: tuple[netns.Lan, launch.Cluster]) -> None:
    lan, c = lan_cluster
    assert [n.address for n in c.nodes] == ["10.77.0.1:7000", "10.77.0.2:7000", "10.77.0.3:7000"]
    nodes = ",".join(c.addresses)
    assert c.keys_dir is not None
    # The shell runs in the clients' namespace (10.77.0.100): it reaches the nodes over the LAN only.
    r = subprocess.run([*lan.client_wrap(), sys.executable, "client_shell.py", "--nodes", nodes, "--keys",
                        c.keys_dir],
                       input="put greeting hello\nappend greeting , world\nget greeting\nleader\n",
                       capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert r.returncode == 0, r.stderr
    out = r.stdout.splitlines()
    assert out[:3] == ["OK", "OK", "hello, world"] and out[3] in ("1", "2", "3")


def test_isolating_the_leader_on_the_network_elects_another_and_the_old_one_steps_down(
        lan_cluster: tuple[netns.Lan, launch.Cluster]) -> None:
    lan, c = lan_cluster
    old = leader_id(c)
    with c.client() as cl:
        cl.put("k", "before")
    t0 = time.monotonic()
    lan.isolate(old)
    idx = [n.id for n in c.nodes].index(old)
    with c.client(deadline=15.0) as cl:
        cl.put("k", "during")  # the majority elects a new leader and takes writes
        elected = time.monotonic() - t0

        def stepped_down() -> bool:
            return cl.status(idx)["role"] != "leader"  # CheckQuorum: no majority heard from in a timeout

        wait_until(stepped_down, timeout=5.0, what=f"node {old} to step down")
    assert leader_id(c) != old
    assert elected < 5.0  # an election timeout is 0.5-1 s; the documented bound is a few of them
    lan.heal()
    with c.client(deadline=15.0) as cl:
        assert cl.get("k") == b"during"
        cl.put("k", "after")
        last = cl.members()["last_index"]

        def rejoined() -> bool:  # the old leader follows again and has everything
            st = cl.status(idx)
            return st["role"] == "follower" and st["commit"] >= last

        wait_until(rejoined, timeout=10.0, what=f"node {old} to rejoin")


def test_chaos_run_on_a_real_network_passes(tmp_path: Path) -> None:
    """zraft chaos --netns: partitions, bridges, one-way cuts and packet loss made with nftables on the
    nodes' TCP connections (not inside the nodes), with kills and pauses; the history checks."""
    out = tmp_path / "chaos"
    r = subprocess.run([sys.executable, "-m", "zraft", "chaos", "--netns", "--nodes", "3", "--duration", "15",
                        "--seed", "3", "--clients", "4", "--quiet", "--out", str(out)],
                       capture_output=True, text=True, cwd=ROOT, timeout=300)
    last = r.stdout.strip().splitlines()[-1] if r.stdout.strip() else ""
    assert r.returncode == 0, r.stdout + r.stderr
    assert last.startswith("summary:") and "verdict=PASS" in last and "violations=0" in last
    assert int(last.split("faults=")[1].split()[0]) >= 3
    assert "(nftables)" in r.stdout or any(f" {k} " in r.stdout for k in ("split", "bridge", "one_way",
                                                                          "isolate_leader"))
    assert int(last.split(" ok=")[1].split()[0]) > 1000
    assert subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.count("zrc-") == 0


def test_a_frozen_link_and_a_one_way_cut_break_nothing(lan_cluster: tuple[netns.Lan, launch.Cluster]) -> None:
    """The link between the leader and one follower freezes for 10 s (packets silently dropped both ways: TCP
    hangs, ZeroMQ queues), then a one-way cut for 3 s, while a client writes. The follower cannot depose the
    leader (PreVote, and the third node still hears from the leader), nothing acknowledged is lost, and when the
    link heals the follower catches up promptly: the stalled connection was dropped and made again
    (``tune_tcp``) rather than left to TCP's backoff, which took 4 s after a 10 s freeze; whatever arrives late
    is harmless (terms and indexes), and little of it is stale."""
    lan, c = lan_cluster
    ld = leader_id(c)
    follower = next(n.id for n in c.nodes if n.id != ld)
    ids = [n.id for n in c.nodes]
    acked: list[str] = []
    with c.client(deadline=15.0) as cl:
        term = cl.status(ids.index(ld))["term"]
        for cut, seconds in (({(ld, follower), (follower, ld)}, 10.0), ({(ld, follower)}, 3.0)):
            lan.cut(cut)
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                v = f"{len(acked)};"
                cl.append("frozen", v)
                acked.append(v[:-1])
            if seconds == 10.0:
                before = cl.status(ids.index(follower))["peer_in"][str(ld)]
            lan.heal()
            if seconds == 10.0:  # the freeze: the follower catches up well before TCP's backoff would retry
                frozen_last = cl.members()["last_index"]
                t0 = time.monotonic()

                def caught_up_after_freeze(target: int = frozen_last) -> bool:
                    return bool(cl.status(ids.index(follower))["commit"] >= target)

                wait_until(caught_up_after_freeze, timeout=30.0, what=f"node {follower} to catch up")
                took = time.monotonic() - t0
                after = cl.status(ids.index(follower))["peer_in"][str(ld)]
                assert took < 2.5, f"caught up {took:.2f} s after the link healed"
                assert after[1] - before[1] <= 5, (before, after)  # messages with nothing new: few, if any
        last = cl.members()["last_index"]

        def caught_up() -> bool:
            st = cl.status(ids.index(follower))
            return st["commit"] >= last and st["leader"] == ld

        wait_until(caught_up, timeout=30.0, what=f"node {follower} to catch up after the heal")
        statuses = [cl.status(i) for i in range(len(ids))]
        assert all(s["term"] == term and s["leader"] == ld for s in statuses), statuses
        got = (cl.get("frozen") or b"").decode().split(";")[:-1]
    assert got == acked
    assert len(acked) > 100
