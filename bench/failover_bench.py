"""Failover time on loopback and on a real (namespace) network: from kill -9 of the leader, and from isolating the
leader, to the next acknowledged write. Root is needed for the namespace network (``zraft/tools/netns.py``).

    python bench/failover_bench.py [--trials 10] [--nodes 3]

On loopback the isolation is made inside the nodes (``--chaos`` control sockets, like ``zraft chaos``);
on the namespace network by nftables rules on the LAN's bridge (packets lost between the nodes). Prints the
median and max of each.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time

from zraft.tools import chaos, launch, netns


def wait_leader(c: launch.Cluster) -> int:
    while True:
        try:
            return chaos.leader(c)
        except chaos.ChaosError:
            time.sleep(0.02)


def trials(c: launch.Cluster, net: chaos.Network, count: int, how: str) -> list[float]:
    out = []
    with c.client(deadline=20.0, attempt_timeout=0.2) as cl:
        cl.put("f", "0")
        for i in range(count):
            ld = wait_leader(c)
            t0 = time.perf_counter()
            if how == "kill":
                chaos.kill(c, ld)
            else:
                net.partition([ld], [n.id for n in c.nodes if n.id != ld])
            cl.put("f", str(i))
            out.append(time.perf_counter() - t0)
            if how == "kill":
                chaos.restart(c, ld)
            else:
                net.heal()
            time.sleep(1.0)  # let the old leader rejoin before the next trial
    return out


def report(name: str, xs: list[float]) -> None:
    print(f"{name}: median {statistics.median(xs) * 1000:.0f} ms, max {max(xs) * 1000:.0f} ms over {len(xs)}",
          flush=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trials", type=int, default=10)
    p.add_argument("--nodes", type=int, default=3)
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as d:
        c = launch.start(a.nodes, f"{d}/lo", ports=launch.free_ports(a.nodes), node_args=["--chaos"])
        try:
            net = chaos.Network(c)
            report("loopback, kill -9 of the leader -> next write", trials(c, net, a.trials, "kill"))
            report("loopback, leader isolated (in the nodes) -> next write", trials(c, net, a.trials, "isolate"))
        finally:
            c.stop()
        why = netns.available()
        if why is not None:
            print(f"namespace network skipped: {why}")
            return 0
        lan = netns.Lan(a.nodes, prefix="zrb")
        lan.up()
        try:
            c = launch.start(a.nodes, f"{d}/ns", ports=[7000] * a.nodes,
                             hosts=[lan.address(i) for i in range(1, a.nodes + 1)], wrap=lan.wrap)
            try:
                lnet = chaos.LanNetwork(c, lan)
                report("namespace network, kill -9 of the leader -> next write", trials(c, lnet, a.trials, "kill"))
                report("namespace network, leader isolated (nftables) -> next write",
                       trials(c, lnet, a.trials, "isolate"))
            finally:
                c.stop()
        finally:
            lan.down()
    return 0


if __name__ == "__main__":
    sys.exit(main())
