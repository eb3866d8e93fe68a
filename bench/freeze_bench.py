"""A frozen link on a real (namespace) network: the link between the leader and one follower silently drops every
packet for a while (TCP hangs, ZeroMQ queues), a client keeps writing, then the link heals. Measured: how long
after the heal the follower has caught up, and what arrived late -- the follower's count of Raft messages from
the leader between the heal and the catch-up, and how many of them were stale (older term, or entries it had
committed already). Each freeze is run with ZeroMQ's TCP defaults and with zraft's settings
(``zraft.transport.zmq_transport.tune_tcp``). Root only (``zraft/tools/netns.py``).

    python bench/freeze_bench.py [--freeze 10,20] [--rounds 2]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

from zraft.tools import chaos, launch, netns


def wait_leader(c: launch.Cluster) -> int:
    end = time.monotonic() + 20
    while True:
        try:
            return chaos.leader(c)
        except chaos.ChaosError:
            if time.monotonic() > end:
                raise
            time.sleep(0.02)


def one(freeze: float, defaults: bool) -> dict[str, float]:
    if defaults:
        os.environ["ZRAFT_TCP_DEFAULTS"] = "1"
    else:
        os.environ.pop("ZRAFT_TCP_DEFAULTS", None)
    lan = netns.Lan(3, prefix="zrf")
    lan.up()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            c = launch.start(3, tmp, ports=[7000] * 3, hosts=[lan.address(i) for i in (1, 2, 3)], wrap=lan.wrap)
            try:
                ld = wait_leader(c)
                ids = [n.id for n in c.nodes]
                f = next(i for i in ids if i != ld)
                with c.client(deadline=15.0) as cl:
                    cl.put("warm", "up")
                    lan.cut({(ld, f), (f, ld)})
                    writes = 0
                    end = time.monotonic() + freeze
                    while time.monotonic() < end:
                        cl.append("frozen", "x")
                        writes += 1
                    before = cl.status(ids.index(f))["peer_in"].get(str(ld), [0, 0])
                    lan.heal()
                    t0 = time.monotonic()
                    last = cl.members()["last_index"]
                    while True:
                        st = cl.status(ids.index(f))
                        if st["commit"] >= last:
                            break
                        time.sleep(0.01)
                    caught = time.monotonic() - t0
                    after = st["peer_in"].get(str(ld), [0, 0])
                    return {"caught_up_s": caught, "late": after[0] - before[0], "stale": after[1] - before[1],
                            "writes": writes}
            finally:
                c.stop()
    finally:
        lan.down()
        os.environ.pop("ZRAFT_TCP_DEFAULTS", None)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--freeze", default="10,20", help="freeze lengths in seconds, comma-separated (default 10,20)")
    p.add_argument("--rounds", type=int, default=2, help="runs of each case (default 2)")
    a = p.parse_args()
    why = netns.available()
    if why:
        print(f"cannot build the namespace network: {why}", file=sys.stderr)
        return 2
    print("| freeze | TCP settings | caught up after heal (s) | messages from the leader until then | stale |")
    print("|---:|---|---:|---:|---:|")
    for freeze in (float(x) for x in a.freeze.split(",")):
        for defaults in (True, False):
            for _ in range(a.rounds):
                r = one(freeze, defaults)
                print(f"| {freeze:g} s | {'ZeroMQ defaults' if defaults else 'zraft (tune_tcp)'} | "
                      f"{r['caught_up_s']:.2f} | {r['late']} | {r['stale']} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
