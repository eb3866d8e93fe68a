"""A node's data directory as a whole: who may use it, and which cluster it belongs to.

    <data-dir>/LOCK        exclusive ``flock`` held by the node process for its whole life; holds its pid
    <data-dir>/node.meta   the node's identity: its id and the cluster's voters, written when the directory is
                           created (format below)

**One process per directory.** A node takes the lock before it reads anything else in the directory and keeps
the descriptor open until it exits; the kernel releases it on any exit, ``kill -9`` included, so there is no
stale lock to clean up. A second process gets ``DataDirLocked`` with the directory and the holder's pid.

**The configuration comes from the directory, not the command line.** Membership is fixed when a cluster is
created: the node that creates a directory records the voters it was started with, and every later start must
be given the same ones. Starting old nodes with a larger peer list (plus empty new nodes) would let a stale node
and the empty ones form a majority that lacks committed entries, so that is refused (``ConfigMismatch``) unless
the operator says ``force=True`` (``--force-peers``, a documented recovery tool). Addresses are not part of the
configuration: a node that moved to another host or port is still the same member. When membership changes
exist, the log and snapshots will carry later configurations; this file stays the one the cluster began with.

``node.meta`` layout: ``b"ZRMETA01"`` then one record in the log's record format (``records.frame``: length,
checksums, msgpack payload ``{"node": id, "voters": [ids...]}``). It is written to a temporary file, fsynced and
renamed, so it is either the old content or the new.
"""

from __future__ import annotations

import errno
import fcntl
import os
from dataclasses import dataclass

import msgpack

from . import records as rec
from .records import CorruptionError

LOCK_NAME = "LOCK"
META_NAME = "node.meta"
META_MAGIC = b"ZRMETA01"
MAX_META_BYTES = 1 << 16
MAX_VOTERS = 1024


class DataDirLocked(Exception):
    """Another process holds the data directory."""


class ConfigMismatch(Exception):
    """The command line disagrees with the configuration stored in the data directory."""


@dataclass(frozen=True)
class Meta:
    node: int
    voters: tuple[int, ...]
    cluster: str = ""
    """The cluster's identity (``--cluster-id``; empty: a cluster made before identities, or without one)."""


MAX_CLUSTER_ID = 64


def valid_cluster_id(cid: str) -> bool:
    return len(cid) <= MAX_CLUSTER_ID and all(c.isascii() and (c.isalnum() or c in "-_.") for c in cid)


def _mkdir_private(path: str) -> None:
    os.makedirs(path, mode=0o700, exist_ok=True)


class FileLocked(Exception):
    """Another process holds the lock file; ``pid`` is what it wrote there (0 if nothing readable)."""

    def __init__(self, path: str, pid: int) -> None:
        super().__init__(f"{path} is locked by process {pid or '?'}")
        self.path = path
        self.pid = pid


def take_lock(lock_path: str) -> int:
    """Take an exclusive ``flock`` on ``lock_path`` (created 0600) without waiting and write our pid into it;
    returns the descriptor, which holds the lock until it is closed or the process exits (any exit: the kernel
    releases it). Raises ``FileLocked`` naming the holder."""
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        os.close(fd)
        if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise
        raise FileLocked(lock_path, _read_pid(lock_path)) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def lock(path: str) -> int:
    """Take the exclusive lock on data directory ``path`` (created if missing) for the rest of this process's
    life; returns the descriptor, which must stay open. Raises ``DataDirLocked`` naming the holder's pid."""
    _mkdir_private(path)
    lock_path = os.path.join(path, LOCK_NAME)
    try:
        return take_lock(lock_path)
    except FileLocked as e:
        who = f"process {e.pid}" if e.pid else "another process"
        raise DataDirLocked(f"data directory {os.path.abspath(path)} is in use by {who} (it holds "
                            f"{lock_path}); stop that node first, or give this one another --data-dir") from None


def holder(path: str) -> int | None:
    """The pid of the process holding data directory ``path``'s lock (0 if it did not say), or None if no process
    holds it. Briefly takes and drops the lock when it is free."""
    lock_path = os.path.join(path, LOCK_NAME)
    try:
        fd = os.open(lock_path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise
        return _read_pid(lock_path) or 0
    finally:
        os.close(fd)  # also drops a lock taken above
    return None


def _read_pid(lock_path: str) -> int:
    try:
        with open(lock_path, "rb") as f:
            text = f.read(32).strip()
        return int(text) if text.isdigit() else 0
    except OSError:
        return 0


def read_meta(path: str) -> Meta | None:
    """The identity stored in data directory ``path``; None if it has none (a new directory, or one written by a
    zraft older than this file). Damage raises ``CorruptionError``."""
    meta_path = os.path.join(path, META_NAME)
    try:
        with open(meta_path, "rb") as f:
            buf = f.read(MAX_META_BYTES + 1)
    except FileNotFoundError:
        return None
    if len(buf) > MAX_META_BYTES:
        raise CorruptionError(meta_path, 0, f"file is larger than {MAX_META_BYTES} bytes", _META_ADVICE)
    if not buf.startswith(META_MAGIC):
        raise CorruptionError(meta_path, 0, "not a zraft node.meta file (bad magic)", _META_ADVICE)
    body = buf[len(META_MAGIC):]
    try:
        records, end, _ = rec.scan(meta_path, body, last_segment=False)
    except CorruptionError as e:
        raise CorruptionError(meta_path, len(META_MAGIC) + e.offset, e.what, _META_ADVICE) from None
    if len(records) != 1 or end != len(body):
        raise CorruptionError(meta_path, len(META_MAGIC), "expected exactly one record", _META_ADVICE)
    doc = records[0][1]
    # rec.scan insists on a list whose first element is an int: [1, node, voters] or [2, node, voters, cluster id]
    if isinstance(doc, list) and doc and type(doc[0]) is int and doc[0] > 2:
        raise CorruptionError(meta_path, len(META_MAGIC), f"format {doc[0]} is newer than this zraft reads (1 and "
                              "2): it was written by a newer zraft", "run the zraft version that wrote it")
    try:
        if isinstance(doc, list) and doc and doc[0] == 2 and len(doc) == 4:
            _, node, voters, cluster = doc
            version = 1 if isinstance(cluster, str) and cluster and valid_cluster_id(cluster) else -1
        else:
            version, node, voters = doc
            cluster = ""
        ok = (version == 1 and type(node) is int and 0 < node < 2**63 and isinstance(voters, list)
              and len(voters) <= MAX_VOTERS and all(type(v) is int and 0 < v < 2**63 for v in voters)
              and len(set(voters)) == len(voters) and (node in voters or not voters))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise CorruptionError(meta_path, len(META_MAGIC), f"unexpected contents {doc!r:.200}", _META_ADVICE)
    return Meta(node, tuple(sorted(voters)), cluster)


_META_ADVICE = ("this file names the node and its cluster; if the rest of the data directory is intact, restore "
                "it from a backup, or move the data directory aside and restart the node empty so it catches up "
                "from the leader")


def write_meta(path: str, meta: Meta) -> None:
    """Store ``meta`` in data directory ``path`` durably (temporary file, fsync, rename, fsync the directory)."""
    _mkdir_private(path)
    meta_path = os.path.join(path, META_NAME)
    doc = [2, meta.node, list(meta.voters), meta.cluster] if meta.cluster else [1, meta.node, list(meta.voters)]
    data = META_MAGIC + rec.frame(msgpack.packb(doc))
    tmp = meta_path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, meta_path)
    dfd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def check_config(path: str, node_id: int, voters: tuple[int, ...], has_state: bool, force: bool = False,
                 managed: bool = False, cluster: str = "") -> tuple[Meta, str | None]:
    """Compare the command line's node id and voters with what data directory ``path`` stores, recording them if
    it stores nothing yet. Returns the configuration to run with and a warning to log, if any. Raises
    ``ConfigMismatch`` when they disagree (unless ``force``: then the command line replaces what is stored).

    ``has_state``: the directory already holds a log or snapshots (a directory from an older zraft, which had no
    ``node.meta``: its configuration is taken from the command line and recorded, with a warning).
    ``managed``: the log or snapshot holds a configuration made by a membership change: that is the membership,
    and the command line's peer list (the one the cluster was started with, or today's) is not compared.
    Empty ``voters``: a node started with ``--join``, waiting to be added.
    ``cluster``: the cluster id the command line names (``--cluster-id``; empty: none named). A directory that
    belongs to another cluster is refused; one without an id takes the named one; with none named, the stored
    one (if any) is the node's."""
    stored = read_meta(path)
    if stored is not None and stored.cluster and cluster and stored.cluster != cluster:
        raise ConfigMismatch(
            f"data directory {os.path.abspath(path)} belongs to cluster {stored.cluster}, not {cluster}: a node "
            "never joins another cluster with its old data (move the directory aside to start an empty node, or "
            "give the right --cluster-id)")
    cluster = cluster or (stored.cluster if stored is not None else "")
    want = Meta(node_id, tuple(sorted(voters)), cluster)
    if stored is not None and not stored.cluster and cluster and stored.node == node_id:
        stored = Meta(stored.node, stored.voters, cluster)  # it gets its cluster's id now
        write_meta(path, stored)
    if stored is None:
        write_meta(path, want)
        if has_state:
            return want, (f"{path} has data but no {META_NAME} (written by an older zraft): recorded node "
                          f"{node_id} with voters {list(want.voters)} from the command line")
        return want, None
    if stored == want:
        return stored, None
    if managed and stored.node == node_id:
        return stored, None
    if stored.node != node_id:
        what = f"belongs to node {stored.node}, not node {node_id}"
    else:
        what = (f"holds a {len(stored.voters)}-node cluster with voters {list(stored.voters)}, but the peer list "
                f"names {list(want.voters)}")
    if force:
        write_meta(path, want)
        return want, (f"--force-peers: data directory {path} {what}; replaced the stored configuration with the "
                      "command line's (acknowledged writes can be lost if the other nodes disagree)")
    raise ConfigMismatch(
        f"data directory {os.path.abspath(path)} {what}. A cluster's membership comes from its own data, never "
        f"from the command line: start node {stored.node} with --peers naming exactly nodes "
        f"{', '.join(map(str, stored.voters))} (addresses may change), or move the directory aside to start an "
        "empty node. Recovery only: --force-peers replaces the stored configuration.")
