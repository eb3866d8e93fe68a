"""The launcher's data directory: the nodes' directories in it, their keys, the launcher's lock, what is stored
and running there, the cluster's identity, and clearing it for a fresh start."""

from __future__ import annotations

import os
import shutil

from zraft.storage import CorruptionError, datadir
from zraft.transport.security import create_keypair

CLUSTER_FILE = "cluster.json"
LAUNCHER_LOCK = "launcher.lock"


class LaunchError(Exception):
    pass


def make_keys(data_dir: str, n: int) -> str:
    """The cluster's key directory, with a pair for each of nodes 1..n and for the local client (made when
    missing; existing keys are kept), and that client allowed. Returns its path."""
    keys = os.path.join(data_dir, "keys")
    for name in [f"node-{i}" for i in range(1, n + 1)] + ["client"]:
        if not os.path.exists(os.path.join(keys, f"{name}.key_secret")):
            create_keypair(keys, name)
    allowed = os.path.join(keys, "clients")
    if not os.path.exists(os.path.join(allowed, "client.key")):
        os.makedirs(allowed, mode=0o700, exist_ok=True)
        shutil.copyfile(os.path.join(keys, "client.key"), os.path.join(allowed, "client.key"))
        os.chmod(os.path.join(allowed, "client.key"), 0o600)
    return keys


def lock_launcher(data_dir: str) -> int:
    try:
        return datadir.take_lock(os.path.join(data_dir, LAUNCHER_LOCK))
    except datadir.FileLocked as e:
        who = f"launcher pid {e.pid}" if e.pid else "another launcher"
        raise LaunchError(f"the cluster in {data_dir} is in use by {who}; stop it first (Ctrl-C in that "
                          "launcher) or use another --data-dir") from None


def node_dirs(data_dir: str) -> list[str]:
    try:
        names = os.listdir(data_dir)
    except FileNotFoundError:
        return []
    return sorted(os.path.join(data_dir, d) for d in names
                  if d.startswith("node-") and os.path.isdir(os.path.join(data_dir, d)))


def running_nodes(data_dir: str) -> list[tuple[str, int]]:
    """The node directories under ``data_dir`` that a running process holds, with its pid (0 if unknown)."""
    out = []
    for d in node_dirs(data_dir):
        pid = datadir.holder(d)
        if pid is not None:
            out.append((os.path.basename(d), pid))
    return out


def stored_size(data_dir: str) -> int:
    """How many voters the cluster stored in ``data_dir`` has (0: no node has a stored configuration yet).
    Raises ``LaunchError`` if its nodes disagree or the configuration is not the launcher's 1..n."""
    found: dict[tuple[int, ...], str] = {}
    for d in node_dirs(data_dir):
        try:
            m = datadir.read_meta(d)
        except CorruptionError as e:
            raise LaunchError(str(e)) from None
        if m is not None:
            found.setdefault(m.voters, d)
    if not found:
        return 0
    if len(found) > 1:
        raise LaunchError(f"the nodes in {data_dir} disagree about the cluster's members: " + "; ".join(
            f"{d} has voters {list(v)}" for v, d in found.items()))
    voters = next(iter(found))
    if voters != tuple(range(1, len(voters) + 1)):
        raise LaunchError(f"the cluster in {data_dir} has voters {list(voters)}, not 1..{len(voters)} as the "
                          "launcher makes them; start its nodes with zraft node")
    return len(voters)


def clear(data_dir: str) -> None:
    """Delete everything in ``data_dir`` but the launcher's lock (which the caller holds)."""
    for name in os.listdir(data_dir):
        if name == LAUNCHER_LOCK:
            continue
        p = os.path.join(data_dir, name)
        if os.path.isdir(p) and not os.path.islink(p):
            shutil.rmtree(p)
        else:
            os.remove(p)
