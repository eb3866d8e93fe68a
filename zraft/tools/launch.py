"""Start and stop a local cluster of node processes (used by launcher.py, the chaos module and the tests).

Each node is a fresh interpreter (``zraft node``) started with ``subprocess``: nothing is forked from a
process that holds a ZeroMQ context. The cluster is described in ``<data-dir>/cluster.json``: each node's id,
address, pid, data directory, log file and the command that starts it again.

A data directory holds one cluster, used by one launcher at a time: ``start`` takes an exclusive lock
(``<data-dir>/launcher.lock``, released when the cluster is stopped or the launcher dies), refuses a directory
whose nodes are still running (each node holds a lock on its own directory, see ``zraft.storage.datadir``) and
only then writes ``cluster.json``. The size of an existing cluster comes from its nodes' stored configuration,
never from the command line.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from zraft.storage import CorruptionError, datadir
from zraft.tools.launchdir import (
    CLUSTER_FILE,
    LaunchError,
    clear,
    lock_launcher,
    make_keys,
    node_dirs,
    running_nodes,
    stored_size,
)
from zraft.tools.procs import alive, free_ports, node_env, port_free, reap, signal_pid, tail

__all__ = [
    "CLUSTER_FILE", "CLUSTER_FILE_VERSION", "DEFAULT_BASE_PORT", "DEFAULT_DATA_DIR", "DEFAULT_NODES",
    "METRICS_PORT_OFFSET", "RESP_PORT_OFFSET", "WEB_PORT_OFFSET", "Cluster", "LaunchError", "NodeSpec", "alive",
    "free_ports", "load", "node_env", "running_nodes", "signal_pid", "start", "statuses", "stored_size",
    "wait_ready",
]
from zraft.transport.security import ClientKeys, KeysError, create_keypair, load_public

if TYPE_CHECKING:
    from zraft.client import Client

CLUSTER_FILE_VERSION = 1
DEFAULT_NODES = 5
DEFAULT_BASE_PORT = 5551
METRICS_PORT_OFFSET = 1000
"""The port scheme of a launcher-made cluster on one machine: node i listens on base-port + i - 1 (peers and
clients), serves metrics at that + ``METRICS_PORT_OFFSET``, the Redis protocol at that + ``RESP_PORT_OFFSET``; the
dashboard is at base-port + ``WEB_PORT_OFFSET``."""
WEB_PORT_OFFSET = 2000
RESP_PORT_OFFSET = 3000
DEFAULT_DATA_DIR = "./zraft-data"


_SAVE_LOCK = threading.Lock()


@dataclass
class NodeSpec:
    id: int
    address: str
    data_dir: str
    log: str
    argv: list[str]
    pid: int = 0
    public_key: str = ""
    """The node's CurveZMQ public key (Z85), in a secure cluster."""
    metrics: str = ""
    """HOST:PORT of its Prometheus metrics (``--metrics``), or empty."""
    resp: str = ""
    """HOST:PORT of its Redis-protocol port (``--resp``), or empty."""


@dataclass
class Cluster:
    data_dir: str
    nodes: list[NodeSpec] = field(default_factory=list)
    procs: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)
    reaped: set[int] = field(default_factory=set)
    """Pids of our nodes that exited and were reaped: never signalled again (the pid may be reused)."""
    keys_dir: str | None = None
    """Where the cluster's CurveZMQ keys are (``zraft.transport.security``); None for an insecure cluster."""
    lock_fd: int | None = None
    """The launcher's lock on ``data_dir`` (None for a cluster found with ``load``): held until ``stop``."""
    node_args: list[str] = field(default_factory=list)
    """Extra arguments every node was started with (nodes added later get them too)."""
    reconfigured: bool = False
    """Nodes were added or removed since it was first launched: ``start`` brings back these nodes, as they are."""
    cluster_id: str = ""
    """The cluster's identity (``--cluster-id`` of every node); empty for a cluster made before identities."""
    placement: Callable[[int], tuple[str, int, list[str]]] | None = field(default=None, repr=False)
    """Where ``add_node`` puts node ``id``: (host, port, command prefix); default 127.0.0.1, a free port, none
    (``zraft.tools.chaos --netns`` places new nodes in the LAN's spare namespaces)."""

    @property
    def addresses(self) -> list[str]:
        return [n.address for n in self.nodes]

    @property
    def file(self) -> str:
        return os.path.join(self.data_dir, CLUSTER_FILE)

    def save(self) -> None:
        with _SAVE_LOCK:  # threads of one process (chaos --membership) save in turn
            tmp = self.file + ".tmp"
            with open(tmp, "w") as f:
                json.dump({"version": CLUSTER_FILE_VERSION, "keys": self.keys_dir, "node_args": self.node_args,
                           "cluster_id": self.cluster_id,
                           "reconfigured": self.reconfigured, "nodes": [asdict(n) for n in list(self.nodes)]}, f,
                          indent=2)
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.file)

    def client_keys(self) -> ClientKeys | None:
        if self.keys_dir is None:
            return None
        return ClientKeys.load(self.keys_dir, self.addresses, [n.id for n in self.nodes])

    def client(self, **kw: Any) -> Client:
        """A client of this cluster, with its keys when it is secure (``kw`` go to ``Client``)."""
        from zraft.client import Client

        return Client(self.addresses, keys=self.client_keys(), **kw)

    def node(self, node_id: int) -> NodeSpec:
        for n in self.nodes:
            if n.id == node_id:
                return n
        raise KeyError(f"no node {node_id} in {self.file} (nodes: {[n.id for n in self.nodes]})")

    def start_node(self, node_id: int) -> int:
        n = self.node(node_id)
        logf = os.fdopen(os.open(n.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600), "ab")  # the child gets
        # its own copy of the descriptor
        try:
            p = subprocess.Popen(n.argv, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 start_new_session=True, env=node_env())
        finally:
            logf.close()
        self.procs[node_id] = p
        n.pid = p.pid
        self.save()
        return p.pid

    def add_node(self, node_id: int | None = None, host: str = "127.0.0.1", wait: float = 120.0) -> NodeSpec:
        """Grow the cluster by one voter: start node ``node_id`` (default: one more than any id used so far) on a
        free port with ``--join``, add it as a learner, wait until it has caught up and promote it
        (``Client.add_node``). ``cluster.json`` names it from the start, so ``stop``, ``kill`` and ``restart`` know
        it."""
        if node_id is None:  # never an id used before (a removed node's data directory keeps its id)
            used = [int(os.path.basename(d)[5:]) for d in node_dirs(self.data_dir) if d.rsplit("-", 1)[-1].isdigit()]
            node_id = max([n.id for n in self.nodes] + used) + 1
        nid = node_id
        if nid < 1 or any(n.id == nid for n in self.nodes):
            raise LaunchError(f"node {nid} is already in {self.file}" if nid >= 1 else "node ids start at 1")
        if os.path.exists(os.path.join(self.data_dir, f"node-{nid}")):
            raise LaunchError(f"{self.data_dir}/node-{nid} exists (a removed node's data?): a new node needs a new "
                              "id, or move that directory aside")
        metrics = resp = ""
        if self.placement is not None:
            host, port, prefix = self.placement(nid)
        else:
            port, prefix = self._next_port(host), []
            metrics = self._offset_for(host, port, "metrics")
            resp = self._offset_for(host, port, "resp")
        ndir = os.path.join(self.data_dir, f"node-{nid}")
        pub = ""
        if self.keys_dir is not None:
            pub = create_keypair(self.keys_dir, f"node-{nid}").public.decode()
        join = ",".join(f"{n.id}={n.address}" for n in self.nodes)
        security_args = ["--keys", self.keys_dir] if self.keys_dir else ["--insecure"]
        argv = [*prefix, sys.executable, "-m", "zraft", "node", "--id", str(nid), "--join", join, "--address",
                f"{host}:{port}", "--data-dir", ndir, *(["--cluster-id", self.cluster_id] if self.cluster_id else []),
                *security_args, *(["--metrics", metrics] if metrics else []), *(["--resp", resp] if resp else []),
                *self.node_args]
        spec = NodeSpec(nid, f"{host}:{port}", ndir, os.path.join(self.data_dir, f"node-{nid}.log"), argv,
                        public_key=pub, metrics=metrics, resp=resp)
        self.nodes.append(spec)
        self.reconfigured = True
        self.save()
        self.start_node(nid)
        with self.client() as cl:
            cl.add_node(nid, spec.address, pub, timeout=wait)
        return spec

    def _next_port(self, host: str) -> int:
        """The port after the highest a node of this cluster uses (node 4 of 5551-5553 gets 5554), if free; else
        any free port. Ports in order stay out of the range the kernel hands out to outgoing connections."""
        used = [int(n.address.rsplit(":", 1)[1]) for n in self.nodes]
        for port in range(max(used, default=0) + 1, min(max(used, default=0) + 64, 65536)):
            if port not in used and port_free(host, port):
                return port
        return free_ports(1, host)[0]

    def _offset_for(self, host: str, port: int, what: str) -> str:
        """A new node's metrics (or Redis) address, at the same offset from its port as every other node's (none if
        they serve none, or that port is taken)."""
        offsets = {int(getattr(n, what).rsplit(":", 1)[1]) - int(n.address.rsplit(":", 1)[1]) for n in self.nodes
                   if getattr(n, what)}
        if len(offsets) != 1 or any(not getattr(n, what) for n in self.nodes):
            return ""
        mport = port + offsets.pop()
        return f"{host}:{mport}" if 0 < mport < 65536 and port_free(host, mport) else ""

    def remove_node(self, node_id: int, timeout: float = 5.0) -> None:
        """Remove node ``node_id`` from the configuration (the leader too), then stop its process and forget it:
        out of ``cluster.json``, its public key out of the key directory (no node admits it any more). Its data
        directory stays where it was."""
        spec = self.node(node_id)
        others = [n for n in self.nodes if n.id != node_id]
        if not others:
            raise LaunchError("cannot remove the last node of a cluster")
        with self.client() as cl:
            cl.remove_node(node_id)
        signal_pid(spec.pid, signal.SIGCONT)
        signal_pid(spec.pid, signal.SIGTERM)
        reap(spec.pid, self.procs.pop(node_id, None), time.monotonic() + timeout)
        self.nodes = others
        self.reconfigured = True
        if self.keys_dir is not None:
            for name in (f"node-{node_id}.key", f"node-{node_id}.key_secret"):
                try:
                    os.remove(os.path.join(self.keys_dir, name))
                except FileNotFoundError:
                    pass
        self.save()

    def sync(self) -> tuple[list[int], list[int]]:
        """Take in what other processes (the shell's add, remove and restart, the chaos module) changed in
        ``cluster.json``: new pids, nodes added, nodes removed (already stopped by whoever removed them). Returns
        the ids added and removed. A file that cannot be read changes nothing."""
        try:
            disk = load(self.file)
        except (LaunchError, OSError):
            return [], []
        on_disk = {n.id: n for n in disk.nodes}
        for n in self.nodes:
            d = on_disk.get(n.id)
            if d is not None and d.pid != n.pid:
                n.pid = d.pid
                self.procs.pop(n.id, None)
        known = {n.id for n in self.nodes}
        added = [n for n in disk.nodes if n.id not in known]
        removed = [n.id for n in self.nodes if n.id not in on_disk]
        if added or removed:
            self.nodes = [n for n in self.nodes if n.id in on_disk] + added
            self.reconfigured = self.reconfigured or disk.reconfigured
        return [n.id for n in added], removed

    def reap_exited(self) -> list[tuple[int, int, int]]:
        """Collect the nodes this process started that have exited: (node id, pid, exit code; negative: the
        signal that killed it) for each."""
        out = []
        for nid, proc in list(self.procs.items()):
            code = proc.poll()
            if code is not None:
                del self.procs[nid]
                self.reaped.add(proc.pid)
                out.append((nid, proc.pid, code))
        return out

    def stop(self, timeout: float = 5.0) -> None:
        """Stop every node: SIGTERM, then SIGKILL for any still running after ``timeout``."""
        self.sync()  # a node restarted (or added) by another process (the shell, the chaos module) is in the file
        live = [n for n in self.nodes if n.pid not in self.reaped]
        for n in live:
            signal_pid(n.pid, signal.SIGCONT)  # a paused node cannot handle SIGTERM
            signal_pid(n.pid, signal.SIGTERM)
        end = time.monotonic() + timeout
        for n in live:
            reap(n.pid, self.procs.get(n.id), end)
        self.release()

    def release(self) -> None:
        """Give up the launcher's lock on the data directory (``stop`` does this)."""
        if self.lock_fd is not None:
            os.close(self.lock_fd)
            self.lock_fd = None


def load(data_dir_or_file: str) -> Cluster:
    path = data_dir_or_file
    if os.path.isdir(path):
        path = os.path.join(path, CLUSTER_FILE)
    try:
        with open(path) as f:
            doc = json.load(f)
        nodes = [NodeSpec(**n) for n in doc["nodes"]]
        keys = doc.get("keys")
        if keys is not None and not isinstance(keys, str):
            raise TypeError("keys must be a directory name")
        version = doc.get("version", 1)
        if type(version) is not int or version > CLUSTER_FILE_VERSION:
            raise LaunchError(f"{path} has format version {version!r:.20}; this zraft reads {CLUSTER_FILE_VERSION}: "
                              "a newer zraft wrote it (run that version)")
        node_args = doc.get("node_args", [])
        if not isinstance(node_args, list) or not all(isinstance(x, str) for x in node_args):
            raise TypeError("node_args must be a list of strings")
    except FileNotFoundError:
        raise LaunchError(f"{path} not found: start a cluster with `python launcher.py` first, or pass "
                          "--cluster FILE / --nodes HOST:PORT,...") from None
    except (ValueError, KeyError, TypeError) as e:
        raise LaunchError(f"{path} is not a zraft cluster file ({e})") from None
    cid = doc.get("cluster_id", "")
    if not isinstance(cid, str) or not datadir.valid_cluster_id(cid):
        raise LaunchError(f"{path} is not a zraft cluster file (bad cluster_id)")
    return Cluster(os.path.dirname(os.path.abspath(path)), nodes, keys_dir=keys, node_args=node_args,
                   reconfigured=doc.get("reconfigured") is True, cluster_id=cid)


def start(n: int | None, data_dir: str = DEFAULT_DATA_DIR, base_port: int = DEFAULT_BASE_PORT,
          host: str = "127.0.0.1", fresh: bool = False, ports: list[int] | None = None,
          node_args: list[str] | None = None, wait: float = 15.0, secure: bool = True,
          hosts: list[str] | None = None, wrap: Callable[[int], list[str]] | None = None,
          metrics_ports: list[int] | None = None, restore: str | None = None,
          resp_ports: list[int] | None = None) -> Cluster:
    """Start an n-node cluster (or bring back the one in ``data_dir``) and wait until every node answers.

    ``n=None`` means the size of the cluster already in ``data_dir``, or ``DEFAULT_NODES`` for a new one. Refuses
    (``LaunchError``, nothing changed) a data directory another launcher uses or whose nodes run, and an ``n`` that
    differs from the size of the cluster stored there. ``secure``: CurveZMQ keys for every node and one client,
    made in ``<data-dir>/keys`` when missing (``zraft.transport.security``); ``False`` runs without (loopback only).
    ``hosts``: node i's address is ``hosts[i-1]`` (instead of ``host`` for all); ``wrap(i)``: a command prefix that
    runs node i elsewhere (``zraft.tools.netns.Lan.wrap``: in its network namespace; ports are then not checked here).
    ``metrics_ports``: node i serves Prometheus metrics on its host at ``metrics_ports[i-1]`` (``--metrics``);
    ``resp_ports``: the Redis protocol at ``resp_ports[i-1]`` (``--resp``).
    ``restore``: a backup file the new cluster starts from (``zraft.statemachine.backup``): ``data_dir`` must hold no
    cluster; the new cluster gets a new id and its membership from ``n``, the backup's keys and client sessions."""
    if n is not None and n < 1:
        raise LaunchError("a cluster needs at least one node")
    data_dir = os.path.abspath(data_dir)
    os.makedirs(data_dir, mode=0o700, exist_ok=True)
    lock_fd = lock_launcher(data_dir)

    def plan(n: int | None, ports: list[int] | None) -> Cluster:
        running = running_nodes(data_dir)
        if running:
            pids = " ".join(str(pid) for _, pid in running if pid)
            held = ", ".join(f"{d} pid {pid or '?'}" for d, pid in running)
            raise LaunchError(
                f"the cluster in {data_dir} is running ({held}); "
                "stop it first (Ctrl-C in its launcher" + (f", or kill {pids}" if pids else "") + ") or use another "
                "--data-dir")
        if fresh:
            clear(data_dir)
        if restore is not None and (stored_size(data_dir) or os.path.exists(os.path.join(data_dir, CLUSTER_FILE))):
            raise LaunchError(f"--restore starts a new cluster, and {data_dir} already holds one: give an empty "
                              "--data-dir (or --fresh to delete this one first)")
        prev = _reconfigured(data_dir)
        if prev is not None:  # its membership changed at runtime: the nodes cluster.json names, as they are
            if n is not None and n != len(prev.nodes):
                raise LaunchError(f"the cluster in {data_dir} has {len(prev.nodes)} nodes now (nodes were added or "
                                  f"removed); start it without -n, or with -n {len(prev.nodes)}")
            for spec in prev.nodes:
                h, port_text = spec.address.rsplit(":", 1)
                if not port_free(h, int(port_text)):
                    raise LaunchError(f"port {port_text} on {h} (node {spec.id}) is in use; stop what listens "
                                      "there")
            c = Cluster(data_dir, prev.nodes, lock_fd=lock_fd, keys_dir=prev.keys_dir, node_args=prev.node_args,
                        reconfigured=True)
            c.save()
            return c
        size = stored_size(data_dir)
        if n is None:
            n = size or DEFAULT_NODES
        elif size and n != size:
            raise LaunchError(f"this data directory ({data_dir}) holds a {size}-node cluster; start it with -n {size}, "
                              "or grow it with the shell's add command once membership changes exist (or start "
                              "a new cluster with --fresh or another --data-dir)")
        ports = ports or [base_port + i for i in range(n)]
        if len(ports) != n:
            raise LaunchError(f"{n} nodes need {n} ports, got {len(ports)}")
        where = hosts or [host] * n
        if len(where) != n:
            raise LaunchError(f"{n} nodes need {n} hosts, got {len(where)}")
        if metrics_ports is not None and len(metrics_ports) != n:
            raise LaunchError(f"{n} nodes need {n} metrics ports, got {len(metrics_ports)}")
        for h, p in zip(where, ports, strict=True):
            if wrap is None and not port_free(h, p):
                raise LaunchError(f"port {p} on {h} is in use; stop what listens there or pass --base-port")
        if resp_ports is not None and len(resp_ports) != n:
            raise LaunchError(f"{n} nodes need {n} Redis ports, got {len(resp_ports)}")
        for h, p in zip(where, resp_ports or [], strict=False):
            if wrap is None and not port_free(h, p):
                raise LaunchError(f"Redis port {p} on {h} is in use; stop what listens there, pass another "
                                  "--base-port, or --no-resp")
        for h, p in zip(where, metrics_ports or [], strict=False):
            if wrap is None and not port_free(h, p):
                raise LaunchError(f"metrics port {p} on {h} is in use; stop what listens there, pass another "
                                  "--base-port, or --no-metrics")
        peers = ",".join(f"{i + 1}={where[i]}:{ports[i]}" for i in range(n))
        keys_dir = make_keys(data_dir, n) if secure else None
        security_args = ["--keys", keys_dir] if keys_dir else ["--insecure"]
        cid = secrets.token_hex(8) if restore is not None else _cluster_id(data_dir)
        c = Cluster(data_dir, lock_fd=lock_fd, keys_dir=keys_dir, node_args=list(node_args or []), cluster_id=cid)
        for i in range(n):
            nid = i + 1
            ndir = os.path.join(data_dir, f"node-{nid}")
            metrics = f"{where[i]}:{metrics_ports[i]}" if metrics_ports else ""
            resp = f"{where[i]}:{resp_ports[i]}" if resp_ports else ""
            argv = [*(wrap(nid) if wrap else []), sys.executable, "-m", "zraft", "node", "--id", str(nid), "--peers",
                    peers, "--data-dir", ndir, "--cluster-id", cid, *security_args,
                    *(["--metrics", metrics] if metrics else []), *(["--resp", resp] if resp else []),
                    *(node_args or [])]
            pub = load_public(os.path.join(keys_dir, f"node-{nid}.key")).decode() if keys_dir else ""
            c.nodes.append(NodeSpec(nid, f"{where[i]}:{ports[i]}", ndir, os.path.join(data_dir, f"node-{nid}.log"),
                                    argv, public_key=pub, metrics=metrics, resp=resp))
        c.save()
        return c

    def plan_restore(n: int | None, ports: list[int] | None) -> Cluster:
        from zraft.statemachine import backup

        assert restore is not None
        try:
            info = backup.inspect(restore, full=True)
        except backup.BackupError as e:
            raise LaunchError(str(e)) from None
        c = plan(n, ports)
        voters = tuple(spec.id for spec in c.nodes)
        try:
            for spec in c.nodes:
                backup.restore_into(spec.data_dir, restore, spec.id, voters, c.cluster_id)
        except (backup.BackupError, OSError) as e:
            for spec in c.nodes:
                shutil.rmtree(spec.data_dir, ignore_errors=True)
            raise LaunchError(f"restoring {restore} failed: {e}") from None
        print(f"launcher: restored {restore} ({info.describe()}) into a new cluster {c.cluster_id} of "
              f"{len(voters)} nodes", file=sys.stderr)
        return c

    try:
        c = plan(n, ports) if restore is None else plan_restore(n, ports)
    except BaseException:
        os.close(lock_fd)
        raise
    return _start_all(c, wait)


def _start_all(c: Cluster, wait: float) -> Cluster:
    try:
        for spec in c.nodes:
            c.start_node(spec.id)
        wait_ready(c, wait)
    except BaseException:
        c.stop(timeout=2.0)
        raise
    return c


def wait_ready(c: Cluster, timeout: float) -> None:
    """Wait until every node answers a status request; a node that exits is reported with its log's end."""
    from zraft.client import Client, Unavailable

    end = time.monotonic() + timeout
    with Client(c.addresses, attempt_timeout=0.3, keys=c.client_keys()) as cl:
        for i, spec in enumerate(c.nodes):
            while True:
                p = c.procs.get(spec.id)
                if p is not None and p.poll() is not None:
                    raise LaunchError(f"node {spec.id} exited with code {p.returncode} at start:\n"
                                      f"{tail(spec.log)}")
                try:
                    cl.status(i)
                    break
                except Unavailable:
                    if time.monotonic() > end:
                        raise LaunchError(f"node {spec.id} did not answer within {timeout:.0f} s; "
                                          f"see {spec.log}") from None


def statuses(c: Cluster, timeout: float = 0.5) -> dict[int, dict[str, Any] | None]:
    """Each node's status answer, or None for a node that gave none within ``timeout`` (all asked at once)."""
    from zraft.client import Client

    nodes = list(c.nodes)  # another thread may add or remove nodes meanwhile (chaos --membership)
    keys = None
    if c.keys_dir is not None:
        try:
            keys = ClientKeys.load(c.keys_dir, [n.address for n in nodes], [n.id for n in nodes])
        except KeysError:  # a node removed meanwhile (its key is gone): the caller looks again later
            return {n.id: None for n in nodes}
    with Client([n.address for n in nodes], attempt_timeout=timeout, keys=keys) as cl:
        # All at once: a stopped or paused node costs ``timeout`` once, not once per node.
        return {spec.id: st for spec, st in zip(nodes, cl.status_many(timeout), strict=True)}


def _cluster_id(data_dir: str) -> str:
    """The identity of the cluster in ``data_dir``: from its cluster.json, else from a node's data directory,
    else a new one (a new cluster)."""
    try:
        cid = load(data_dir).cluster_id
        if cid:
            return cid
    except LaunchError:
        pass
    for d in node_dirs(data_dir):
        try:
            meta = datadir.read_meta(d)
        except CorruptionError:
            continue  # the node itself will say what is wrong when it starts
        if meta is not None and meta.cluster:
            return meta.cluster
    return secrets.token_hex(8)


def _reconfigured(data_dir: str) -> Cluster | None:
    """The cluster described in ``data_dir``'s cluster.json if nodes were added or removed since its launch."""
    if not os.path.exists(os.path.join(data_dir, CLUSTER_FILE)):
        return None
    c = load(data_dir)
    return c if c.reconfigured else None
