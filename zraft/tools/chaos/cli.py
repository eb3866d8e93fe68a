"""``zraft chaos``: the command line of a chaos run."""

from __future__ import annotations

import argparse
import logging

from zraft.tools.chaos.nemesis import SPARE_NAMESPACES
from zraft.tools.chaos.runner import run


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(
        "A chaos run: start a fresh cluster, run concurrent clients (append with unique values, put, delete, get) "
        "while a seeded nemesis kills, pauses and partitions nodes, heal, read every key, and check the history "
        "is linearizable, every acknowledged append is present exactly once, and a leader returns after healing. "
        "Exit code 0: passed; 1: a definite violation; 3: the checker's budget ran out (unknown)."))
    p.add_argument("--nodes", type=int, default=5, help="cluster size (default 5)")
    p.add_argument("--duration", type=float, default=60.0, help="seconds of faults and load (default 60)")
    p.add_argument("--seed", type=int, default=0, help="nemesis and client seed (default 0)")
    p.add_argument("--clients", type=int, default=8,
                   help="client processes (default 8); every other one pipelines --pipeline requests")
    p.add_argument("--keys", type=int, default=3, help="list keys (appends) and as many register keys (default 3)")
    p.add_argument("--pipeline", type=int, default=4, help="requests in flight per pipelining client (default 4)")
    p.add_argument("--reads", type=float, default=0.35,
                   help="fraction of reads, 0-1: 0.9 is read-heavy, 0.1 write-heavy (default 0.35)")
    p.add_argument("--check-timeout", type=float, default=120.0,
                   help="seconds the linearizability check may take; past it undecided keys are unknown "
                        "(exit code 3) (default 120)")
    p.add_argument("--check-memory", type=int, default=1024,
                   help="MiB the checker's search may use for one key (default 1024)")
    p.add_argument("-q", "--quiet", action="store_true", help="no live progress; only the report at the end")
    p.add_argument("--rate", type=float, default=1.0, help="fault rate multiplier (default 1: about one fault "
                                                           "every 3 s)")
    p.add_argument("--out", help="where to write data, history and report (default ./zraft-chaos-SEED)")
    p.add_argument("--membership", action="store_true",
                   help="a second nemesis adds, removes (the leader too) and replaces nodes and transfers leadership "
                        "every few seconds, between 3 and --nodes + 2 nodes, while the other faults go on")
    p.add_argument("--netns", action="store_true",
                   help="run the nodes in Linux network namespaces on their own addresses (10.77.0.1, ...) and cut "
                        "the network with nftables on real TCP instead of inside the nodes (root; iproute2, "
                        "nftables; see zraft/tools/netns.py)")
    p.add_argument("--resp", action="store_true",
                   help="drive the clients through the Redis protocol (redis-py, at any node) instead of zraft's "
                        "own, so that the Redis path is checked for linearizability too")
    p.add_argument("--workload", choices=("kv", "txn", "coord"), default="kv",
                   help="kv: appends, puts, deletes and gets (the default); txn: list-append transactions after "
                        "Elle's, checked strictly serializable (zraft.tools.txncheck: G0, G1a-c, G-single, G2, "
                        "lost or duplicated appends), and compare-and-swap on registers, checked linearizable; "
                        "coord: a third of the clients take a lock and write with its fencing token (some pause "
                        "past their lease), a third write and watch a prefix, a third keep leases alive; checked: "
                        "tokens never go down, no gap, duplicate or reordering in any watch, no lease gone while "
                        "promised (zraft.tools.chaos.coordination)")
    p.add_argument("--snapshot-every", type=int, help="nodes snapshot and compact after this many entries (default: "
                                                      "the node's default); small values exercise snapshots")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if not 0 <= a.reads <= 1 or a.clients < 1 or a.keys < 1 or a.pipeline < 1:
        p.error("need --clients, --keys, --pipeline >= 1 and 0 <= --reads <= 1")
    if a.workload != "kv" and a.resp:
        p.error(f"--workload {a.workload} runs through zraft's own client; not with --resp")
    if a.netns:
        from zraft.tools import netns

        why = netns.available()
        if why is not None:
            p.error(f"--netns: {why}")
        if a.membership and a.nodes + SPARE_NAMESPACES > 99:
            p.error(f"--netns --membership: at most {99 - SPARE_NAMESPACES} nodes")
    return run(a.nodes, a.duration, a.seed, a.clients, a.out or f"./zraft-chaos-{a.seed}", a.rate, a.keys,
               a.snapshot_every, a.quiet, a.pipeline, a.reads, a.check_timeout, a.check_memory, a.membership,
               a.netns, a.resp, a.workload)


