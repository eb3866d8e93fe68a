"""Start a local zraft cluster and keep it running in the foreground.

    python launcher.py -n 5

Starts five node processes on 127.0.0.1 (ports 5551-5555), data under ./zraft-data, writes
./zraft-data/cluster.json (read by client_shell.py and zraft.tools.chaos), prints the nodes and who leads, then
reports leader changes until Ctrl-C or SIGTERM, which stops every node. Running it again on the same data
directory brings the same cluster back with its data (its size comes from the data directory: -n must match it
or be left out). A data directory serves one launcher at a time: a second launcher, or a launcher on a directory
whose nodes still run, is refused and changes nothing.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from typing import Any

from zraft.tools import launch


def table(c: launch.Cluster) -> str:
    st = launch.statuses(c)
    rows = [f"{'node':>4}  {'address':<21} {'pid':>7}  {'role':<13} {'term':>5} {'commit':>7}  log"]
    for spec in c.nodes:
        s = st.get(spec.id)
        if s is None:
            rows.append(f"{spec.id:>4}  {spec.address:<21} {spec.pid:>7}  {'(no answer)':<13}")
        else:
            rows.append(f"{spec.id:>4}  {spec.address:<21} {spec.pid:>7}  {s['role']:<13} {s['term']:>5} "
                        f"{s['commit']:>7}  {spec.log}")
    return "\n".join(rows)


def current_leader(c: launch.Cluster) -> tuple[int, int] | None:
    best = None
    for s in launch.statuses(c, timeout=0.3).values():
        if s and s.get("role") == "leader" and (best is None or s["term"] > best[1]):
            best = (s["node"], s["term"])
    return best


def exits(c: launch.Cluster) -> list[str]:
    """A line for each node this launcher started that has exited (reaped at once), saying how it ended."""
    lines = []
    for nid, pid, code in c.reap_exited():
        if code < 0:
            try:
                how = f"was killed by {signal.Signals(-code).name}"
            except ValueError:
                how = f"was killed by signal {-code}"
        else:
            how = f"exited with code {code}" + (f" (see {c.data_dir}/node-{nid}.log)" if code else "")
        lines.append(f"node {nid} (pid {pid}) {how}")
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-n", "--nodes", type=int,
                   help=f"how many nodes (default: the size of the cluster already in the data directory, or "
                        f"{launch.DEFAULT_NODES} for a new one); an existing cluster's size cannot be changed here")
    p.add_argument("--base-port", type=int, default=launch.DEFAULT_BASE_PORT,
                   help=f"node i listens on base-port + i - 1 (default {launch.DEFAULT_BASE_PORT})")
    p.add_argument("--host", default="127.0.0.1", help="address the nodes bind (default 127.0.0.1)")
    p.add_argument("--data-dir", default=launch.DEFAULT_DATA_DIR,
                   help=f"where the nodes keep their data and logs (default {launch.DEFAULT_DATA_DIR})")
    p.add_argument("--fresh", action="store_true", help="delete the data directory first and start empty")
    p.add_argument("--tick-ms", type=int, help="milliseconds per Raft tick (node default 50)")
    p.add_argument("--election-ticks", type=int, help="election timeout in ticks (node default 10)")
    p.add_argument("--heartbeat-ticks", type=int, help="heartbeat interval in ticks (node default 2)")
    p.add_argument("--insecure", action="store_true",
                   help="no CurveZMQ keys: anyone who reaches the ports can read and forge everything (by default "
                        "the launcher makes keys in DATA_DIR/keys and every connection is authenticated and "
                        "encrypted)")
    p.add_argument("--metrics-base-port", type=int,
                   help="node i serves Prometheus metrics at http://HOST:PORT/metrics with PORT = this + i - 1 "
                        f"(default: base-port + {launch.METRICS_PORT_OFFSET})")
    p.add_argument("--no-metrics", action="store_true", help="serve no metrics")
    p.add_argument("--resp-base-port", type=int,
                   help="node i serves the Redis protocol (redis-cli, redis-benchmark, any Redis client) on "
                        f"HOST:PORT with PORT = this + i - 1 (default: base-port + {launch.RESP_PORT_OFFSET})")
    p.add_argument("--no-resp", action="store_true", help="no Redis-protocol ports")
    p.add_argument("--resp-password-file", metavar="FILE",
                   help="Redis clients must AUTH with the password in FILE (mode 0600); needed for a non-loopback "
                        "--host unless --insecure")
    p.add_argument("--web", type=int, metavar="PORT",
                   help="serve the live dashboard on http://127.0.0.1:PORT (default: base-port + "
                        f"{launch.WEB_PORT_OFFSET}); the URL printed at start carries the token that the page's "
                        "buttons need")
    p.add_argument("--no-web", action="store_true", help="no dashboard")
    p.add_argument("--restore", metavar="FILE",
                   help="start a NEW cluster from a backup (client_shell.py backup FILE) in an empty --data-dir: "
                        "the backup's keys and client sessions, a new cluster id, membership from -n")
    p.add_argument("--unsafe-no-fsync", action="store_true",
                   help="UNSAFE: nodes do not fsync; a machine crash can lose acknowledged writes")
    a = p.parse_args(argv)
    node_args: list[str] = []
    for flag in ("tick_ms", "election_ticks", "heartbeat_ticks"):
        v = getattr(a, flag)
        if v is not None:
            node_args += [f"--{flag.replace('_', '-')}", str(v)]
    if a.unsafe_no_fsync:
        node_args.append("--unsafe-no-fsync")
    if a.resp_password_file:
        node_args += ["--resp-password-file", os.path.abspath(a.resp_password_file)]
    if not a.no_web:
        node_args.append("--chaos")  # the dashboard's isolate/heal buttons use the nodes' fault-control sockets
    try:
        try:
            stored = 0 if a.fresh or a.nodes else launch.stored_size(a.data_dir)
        except launch.LaunchError:
            # Nodes added or removed at runtime (cluster.json names them, with their ports), or a directory start()
            # will explain.
            stored = 0
        n = a.nodes or stored or launch.DEFAULT_NODES
        metrics_ports = None
        if not a.no_metrics:
            first = a.metrics_base_port or a.base_port + launch.METRICS_PORT_OFFSET
            metrics_ports = [first + i for i in range(n)]
        resp_ports = None
        if not a.no_resp:
            first = a.resp_base_port or a.base_port + launch.RESP_PORT_OFFSET
            resp_ports = [first + i for i in range(n)]
        c = launch.start(a.nodes, a.data_dir, a.base_port, a.host, a.fresh, node_args=node_args,
                         secure=not a.insecure, metrics_ports=metrics_ports, restore=a.restore,
                         resp_ports=resp_ports)
    except launch.LaunchError as e:
        print(f"launcher: {e}", file=sys.stderr)
        return 1

    board = None
    if not a.no_web:
        from zraft.tools.dashboard import Dashboard

        try:
            board = Dashboard(c, a.web if a.web is not None else a.base_port + launch.WEB_PORT_OFFSET)
        except OSError as e:
            c.stop()
            web = a.web or a.base_port + launch.WEB_PORT_OFFSET
            print(f"launcher: cannot serve the dashboard on port {web}: {e.strerror or e}; pass --web PORT or "
                  "--no-web", file=sys.stderr)
            return 1
        board.start()
    stopping = False

    def on_signal(signum: int, frame: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        deadline = time.monotonic() + 5
        ld = None
        while ld is None and time.monotonic() < deadline and not stopping:
            ld = current_leader(c)
            time.sleep(0.1)
        print(table(c))
        redis = [n.resp for n in c.nodes if n.resp]
        if redis:
            print(f"redis: {redis[0]}" + (f" ... {redis[-1]}" if len(redis) > 1 else "") + "   (redis-cli -p "
                  f"{redis[0].rpartition(':')[2]})")
        served = [n.metrics for n in c.nodes if n.metrics]
        if served:
            print(f"metrics: http://{served[0]}/metrics" + (f" ... http://{served[-1]}/metrics" if len(served) > 1
                                                            else ""))
        print(f"leader: node {ld[0]} (term {ld[1]})" if ld else "leader: none yet")
        if board is not None:
            print(f"dashboard: {board.url}")
        print(f"cluster file: {c.file}   shell: python client_shell.py   stop: Ctrl-C", flush=True)
        next_look = 0.0
        while not stopping:
            time.sleep(0.05)
            for line in exits(c):  # at once, so that a shell's `kill` sees the process gone
                print(f"{time.strftime('%H:%M:%S')} {line}", flush=True)
            if time.monotonic() < next_look:
                continue
            next_look = time.monotonic() + 0.5
            added, removed = c.sync()  # the shell's add and remove change cluster.json
            for nid in added:
                print(f"{time.strftime('%H:%M:%S')} node {nid} added ({c.node(nid).address})", flush=True)
            for nid in removed:
                print(f"{time.strftime('%H:%M:%S')} node {nid} removed", flush=True)
            now = current_leader(c)
            if now != ld and not stopping:
                print(f"{time.strftime('%H:%M:%S')} leader: " + (f"node {now[0]} (term {now[1]})" if now
                                                                  else "none"), flush=True)
                ld = now
    finally:
        print("stopping every node...", flush=True)
        if board is not None:
            board.close()
        c.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
