"""``run``: a whole chaos run -- a cluster, clients, the nemesis, then the heal, the checks (linearizable, every
acknowledged append exactly once) and the reports."""

from __future__ import annotations

import itertools
import json
import multiprocessing
import os
import random
import secrets
import threading
import time
from typing import Any

from zraft.tools.chaos import coordination
from zraft.tools.chaos.coordination import coord_client_proc
from zraft.tools.chaos.faults import LanNetwork, Network, best_effort, restart, resume
from zraft.tools.chaos.nemesis import LEADER_AFTER_HEAL_S, SPARE_NAMESPACES, membership_nemesis, run_nemesis
from zraft.tools.chaos.timeline import report_progress, watch_leaders, write_timeline
from zraft.tools.chaos.workload import client_proc, resp_client_proc, txn_client_proc
from zraft.tools.launch import Cluster

EXIT_PASS, EXIT_VIOLATION, EXIT_UNKNOWN = 0, 1, 3




def run(nodes: int, duration: float, seed: int, clients: int, out_dir: str, rate: float = 1.0,
        keys: int = 3, snapshot_every: int | None = None, quiet: bool = False, pipeline: int = 4,
        read_share: float = 0.35, check_timeout: float = 120.0, check_memory_mib: int = 1024,
        membership: bool = False, use_netns: bool = False, resp: bool = False, workload: str = "kv") -> int:
    """A chaos run: returns the process exit code: 0 when every check passed, 1 on a definite violation, 3 when
    the checker's budget ran out before it could decide (unknown). ``workload``: ``kv`` (appends, puts, deletes,
    gets) or ``txn`` (list-append transactions and compare-and-swap, ``workload.txn_client_proc``). See ``main``."""
    from zraft.client import txn
    from zraft.tools import check, launch, txncheck

    def say(line: str) -> None:
        if not quiet:
            print(line, flush=True)

    rng = random.Random(seed)
    os.makedirs(out_dir, exist_ok=True)
    data = os.path.join(out_dir, "data")
    snap_args = ["--snapshot-every", str(snapshot_every)] if snapshot_every else []
    password = None
    if resp:  # the Redis ports need a password off loopback (--netns); used in both modes alike
        password = secrets.token_urlsafe(16)
        pw_file = os.path.join(out_dir, "redis.pass")
        fd = os.open(pw_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(password + "\n")
        snap_args += ["--resp-password-file", os.path.abspath(pw_file)]
    lan = None
    if use_netns:  # nodes on their own addresses in network namespaces; faults cut on real TCP (nftables)
        from zraft.tools import netns

        # With --membership, spare namespaces for the nodes the membership nemesis adds (each under a new id).
        lan = netns.Lan(nodes + (SPARE_NAMESPACES if membership else 0), prefix="zrc")
        lan.up()
        try:
            c = launch.start(nodes, data, ports=[7000] * nodes, fresh=True, node_args=snap_args,
                             hosts=[lan.address(i) for i in range(1, nodes + 1)], wrap=lan.wrap,
                             resp_ports=[7001] * nodes if resp else None)
        except BaseException:
            lan.down()
            raise
        net: Network = LanNetwork(c, lan)
        spare_lan = lan

        def place(nid: int) -> tuple[str, int, list[str]]:
            if nid > spare_lan.n:
                raise launch.LaunchError(f"no namespace left for node {nid} (the LAN has {spare_lan.n})")
            return spare_lan.address(nid), 7000, spare_lan.wrap(nid)

        c.placement = place
    else:
        c = launch.start(nodes, data, ports=launch.free_ports(nodes), fresh=True, node_args=["--chaos", *snap_args],
                         resp_ports=launch.free_ports(nodes) if resp else None)
        net = Network(c)
    append_keys = [f"list{i}" for i in range(keys)]
    register_keys = [f"reg{i}" for i in range(keys)]
    events: list[dict[str, Any]] = []
    t0 = time.monotonic()
    until = t0 + duration
    ctx = multiprocessing.get_context("spawn")
    paths = [os.path.join(out_dir, f"client-{i}.jsonl") for i in range(clients)]
    try:
        # Half the clients pipeline (several requests in flight each), half send one at a time.
        if workload == "coord":
            with c.client(deadline=30.0) as cl:
                cl.enable_watches()  # (before the revision the watchers start from)
                start_revision = cl.put(b"chaos-start", b"1") + 1
            procs = [ctx.Process(target=coord_client_proc, args=(
                c.addresses, i + 1, seed * 1000 + i, until, start_revision, paths[i], c.client_keys(),
                lan.clients if lan is not None else None)) for i in range(clients)]
        elif workload == "txn":
            procs = [ctx.Process(target=txn_client_proc, args=(
                c.addresses, i + 1, seed * 1000 + i, until, append_keys, register_keys, paths[i], c.client_keys(),
                lan.clients if lan is not None else None)) for i in range(clients)]
        elif resp:  # every client through the Redis protocol, at any node
            procs = [ctx.Process(target=resp_client_proc, args=(
                [n.resp for n in c.nodes], i + 1, seed * 1000 + i, until, append_keys, register_keys, paths[i],
                pipeline if i % 2 else 1, read_share, lan.clients if lan is not None else None, password))
                for i in range(clients)]
        else:
            procs = [ctx.Process(target=client_proc, args=(
                c.addresses, i + 1, seed * 1000 + i, until, append_keys, register_keys, paths[i], c.client_keys(),
                pipeline if i % 2 else 1, read_share, lan.clients if lan is not None else None))
                for i in range(clients)]
        what = ("transactions: list-append and compare-and-swap" if workload == "txn" else
                "a third each: lock holders with fencing tokens, writers and watchers, lease keepers"
                if workload == "coord" else
                f"{clients // 2} pipelining {pipeline} requests{', through the Redis protocol' if resp else ''}")
        say(f"chaos run: {nodes} nodes, {duration:.0f} s, seed {seed}, {clients} clients ({what}), {keys} list keys "
            f"and {keys} register keys, out {out_dir}")
        for p in procs:
            p.start()
        stop_watch = threading.Event()
        leaders: list[tuple[float, int, int]] = []
        watcher = threading.Thread(target=watch_leaders, args=(c, stop_watch, leaders), daemon=True)
        watcher.start()
        stop_progress = threading.Event()
        reporter = threading.Thread(target=report_progress, args=(paths, leaders, stop_progress, t0, say),
                                    daemon=True)
        reporter.start()
        members = None
        if membership:
            members = threading.Thread(target=membership_nemesis, daemon=True, args=(
                c, random.Random(seed + 1), until, events, say, t0, (3, nodes + 2)))
            members.start()
        initial = [n.id for n in c.nodes]
        run_nemesis(c, rng, until, rate, events, say, t0, net)
        if members is not None:
            members.join(120)
        for p in procs:
            p.join(60 + (coordination.DRAIN_S + 10 if workload == "coord" else 0))
        stop_progress.set()
        reporter.join()
        say(f"  t={time.monotonic() - t0:6.1f} s  load done; healing everything")
        # Heal everything, then the cluster must elect a leader and answer.
        heal_start = time.monotonic()
        for n in c.nodes:
            best_effort(resume, c, n.id)
            best_effort(restart, c, n.id)
        net.heal()
        elected = None
        with c.client(deadline=15.0) as cl:
            final: dict[str, bytes | None] = {}
            cl.put(b"chaos-final", b"1")
            elected = time.monotonic() - heal_start
            stop_watch.set()
            watcher.join()
            finals = []
            for k in append_keys + register_keys:
                call = time.monotonic()
                final[k] = cl.get(k)
                if workload == "txn" and k in append_keys:
                    continue  # read again below, as the transaction checker reads lists
                finals.append(json.dumps({"client": 0, "op": "get", "key": k, "value": None, "output": None if
                                          final[k] is None else (final[k] or b"").decode(), "call": call,
                                          "return": time.monotonic(), "status": "ok"}) + "\n")
            protected = cl.get(coordination.PROTECTED) if workload == "coord" else None
            if workload == "coord":  # (in the history too: ``zraft check`` checks the file on its own)
                finals.append(json.dumps({"client": 0, "type": "lock", "event": "final", "value": None
                                          if protected is None else protected.decode()}) + "\n")
            if workload == "txn":  # the final lists, as one read-only transaction the checker places last
                call = time.monotonic()
                got = cl.txn([], [txn.get(k) for k in append_keys]).results
                finals.append(json.dumps({"type": "txn", "op": "txn", "client": 0, "call": call,
                                          "return": time.monotonic(), "status": "ok", "ops": [
                                              ["r", k, [] if kv is None else [
                                                  x for x in (kv.value or b"").decode().split(";") if x]]
                                              for k, kv in zip(append_keys, got, strict=True)]}) + "\n")
    finally:
        c.stop()
        if lan is not None:
            lan.down()
    snaps = _count_snapshot_events(c)
    # The history: every client's records and the final reads, copied line by line into history.jsonl and turned
    # into the checker's operations as they go; the records kept for the report drop their (large) read outputs.
    hist_path = os.path.join(out_dir, "history.jsonl")
    history: list[dict[str, Any]] = []
    loader = check.Loader()
    txns: list[txncheck.Txn] = []
    coord: list[dict[str, Any]] = []
    with open(hist_path, "w") as hf:
        for path in [*paths, None]:
            lines = _read_lines(path) if path else finals
            for line in lines:
                if not line.strip():
                    continue
                hf.write(line)
                h = json.loads(line)
                if h.get("type") in coordination.COORD_TYPES:
                    coord.append(h)
                    continue
                if h.get("type") == "txn":
                    txns.append(txncheck.Txn.from_json({**h, "status": {"ok": txncheck.OK, "fail": txncheck.FAIL}
                                                        .get(h["status"], txncheck.INFO)}))
                    history.append(h)
                    continue
                elif h["status"] != "fail":
                    loader.add(check.Op.from_json(h))
                h["output"] = None
                history.append(h)
            del lines
    ops = loader.ops
    say(f"checking {len(ops)} operations on {len(append_keys) + len(register_keys)} keys "
        f"(budget {check_timeout:.0f} s, {check_memory_mib} MiB)")
    t_check = time.monotonic()
    results = check.check(ops, check.Budget(check_timeout, check_memory_mib << 20),
                          None if quiet else check.print_progress)
    check_s = time.monotonic() - t_check
    problems = [f"key {r.key!r} is not linearizable: {r.explanation}" for r in results if r.ok is False]
    txn_result = txncheck.check(txns) if txns else None
    if txn_result is not None and not txn_result.ok:
        problems += [f"transactions: {a.kind}: {a.explanation}" for a in txn_result.anomalies[:10]]
    unknowns = [f"key {r.key!r}: {r.explanation}" for r in results if r.ok is None]
    coord_counts: dict[str, int] = {}
    if workload == "coord":
        coord_problems, coord_counts = coordination.check(coord, protected)
        problems += coord_problems
    # Every acknowledged append is in the final value exactly once; no append appears twice.
    for k in append_keys:
        parts = [x for x in (final[k] or b"").decode().split(";") if x]
        dup = {x for x in parts if parts.count(x) > 1}
        if dup:
            problems.append(f"{k}: appended more than once: {sorted(dup)[:5]}")
        acked = {h["value"].rstrip(";") for h in history if h["op"] == "append" and h["key"] == k
                 and h["status"] == "ok"}
        acked |= {str(e) for tx in txns if tx.status == txncheck.OK for f, key, e in tx.ops
                  if f == "append" and key == k}
        lost = acked - set(parts)
        if lost:
            problems.append(f"{k}: acknowledged appends missing at the end: {sorted(lost)[:5]}")
    bound = 15.0
    if elected is None or elected > bound:
        problems.append(f"no leader answered within {bound:.0f} s of the final heal")
    for e in events:
        if e["leader_after"] is None:
            problems.append(f"no leader within {LEADER_AFTER_HEAL_S:.0f} s after healing {e['fault']} "
                            f"at t={e['end'] - t0:.1f} s")
    changes = sum(1 for a, b in itertools.pairwise(leaders) if b[1] and (a[1], a[2]) != (b[1], b[2]))
    counts = {s: sum(1 for h in itertools.chain(history, coord) if h.get("status") == s and h["client"])
              for s in ("ok", "fail", "unknown")}
    where = (f"; nodes in network namespaces on 10.77.0.1-{nodes}, clients in their own at 10.77.0.100, network "
             "faults cut by nftables on the LAN's bridge (real TCP)")
    print(f"chaos run: {nodes} nodes, {duration:.0f} s, seed {seed}, {clients} clients" + (where if use_netns else ""))
    events.sort(key=lambda e: e["start"])
    for e in events:
        if "membership" in e:
            print(f"  t={e['start'] - t0:6.1f}-{e['end'] - t0:5.1f} s  {e['fault']:<15} {e['note']}  "
                  f"(nodes now {e['membership']})")
            continue
        after = "no leader!" if e["leader_after"] is None else f"leader {e['leader_after']:.2f} s after heal"
        print(f"  t={e['start'] - t0:6.1f}-{e['end'] - t0:5.1f} s  {e['fault']:<15} node {e['node']}  "
              f"({after})  {e['note']}")
    print(f"operations: {counts['ok']} ok, {counts['fail']} failed, {counts['unknown']} unknown; "
          f"faults injected: {len(events)}; leader changes seen: {changes}; a leader answered {elected:.2f} s after "
          f"the final heal" if elected is not None
          else "no leader after healing")
    print(f"snapshots taken: {snaps['taken']}, sent: {snaps['sent']}, installed: {snaps['installed']}")
    picture = os.path.join(out_dir, "timeline.html")
    seen = {i for e in events for i in e.get("membership", ())} | {ld for _, ld, _ in leaders if ld}
    write_timeline(picture, t0, time.monotonic(), sorted(set(initial) | {n.id for n in c.nodes} | seen), events,
                   leaders, history)
    print(f"history: {hist_path}")
    print(f"timeline (leaders, faults, latency): {picture}")
    print(f"checker: {check_s:.1f} s, " + ", ".join(f"{m} {sum(1 for r in results if r.method == m)} keys"
                                                   for m in ("list", "wgl")))
    if txn_result is not None:
        print(f"transactions: {txn_result.summary()}")
    if coord_counts:
        print("coordination: " + ", ".join(f"{k} {v}" for k, v in coord_counts.items()))
    for problem in problems:
        print(f"VIOLATION: {problem}")
    for u in unknowns:
        print(f"UNKNOWN: {u}")
    verdict = "FAIL" if problems else ("UNKNOWN" if unknowns else "PASS")
    print(f"summary: ops={sum(counts.values())} ok={counts['ok']} failed={counts['fail']} "
          f"unknown={counts['unknown']} faults={len(events)} leader_changes={changes} "
          f"snapshots_installed={snaps['installed']} violations={len(problems)} undecided_keys={len(unknowns)} "
          f"verdict={verdict}", flush=True)
    return EXIT_VIOLATION if problems else (EXIT_UNKNOWN if unknowns else EXIT_PASS)


def _read_lines(path: str) -> list[str]:
    with open(path) as f:
        return f.readlines()


def _count_snapshot_events(c: Cluster) -> dict[str, int]:
    """Snapshots the nodes took, sent and installed during the run (from their logs)."""
    counts = {"taken": 0, "sent": 0, "installed": 0}
    marks = {"taken": "event=snapshot index=", "sent": "event=snapshot_sent ", "installed": "event=snapshot_installed"}
    for n in c.nodes:
        try:
            with open(n.log, errors="replace") as f:
                for line in f:
                    for k, m in marks.items():
                        if m in line:
                            counts[k] += 1
        except OSError:
            pass
    return counts
