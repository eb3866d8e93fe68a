"""Disaster recovery for a node that lost its majority for good (``zraft node --force-new-cluster``): make it the
only member, keeping its log and snapshot, exactly once (a marker file says it was done)."""

from __future__ import annotations

import logging
import os

from zraft.core import ClusterConfig, Entry, EntryKind, HardState
from zraft.storage import CorruptionError, Storage, datadir
from zraft.transport import members

log = logging.getLogger("zraft.node")

FORCED_NAME = "FORCED"
"""Written by ``--force-new-cluster`` in the data directory: ``zraft-forced 1 <entry index>`` (format 1). A second
force after the membership changed is refused while it is there."""


def force_new_cluster_config(storage: Storage, node_id: int, address: str, key: str) -> None:
    """Disaster recovery (``--force-new-cluster``): make this node the only member, keeping its log and snapshot.

    A configuration entry naming this node alone is appended to its log (in its current term, after its last
    entry) and recorded durably before the node starts; as the only voter it then elects itself and commits it,
    with everything its log holds. Writes that only the lost nodes had may be gone, and entries this node had but
    that were never committed become committed: the price of going on without a majority. Grow the cluster
    again with the membership commands (``add_learner``/``promote``, the shell's ``add``)."""
    rec = storage.recovered
    configs = [e for e in rec.entries if e.kind == EntryKind.CONFIG]
    in_force = ClusterConfig.decode(configs[-1].data) if configs else \
        rec.snapshot.config if rec.snapshot is not None else None
    marker = os.path.join(storage.path, FORCED_NAME)
    forced_at = _read_forced(marker)
    if in_force is not None and in_force.voters == (node_id,) and not in_force.learners and forced_at:
        log.warning("node=%d event=force_new_cluster already the only member (forced at entry %d): nothing to do; "
                    "start it without --force-new-cluster", node_id, forced_at)
        return
    if forced_at and in_force is not None:
        others = [v for v in in_force.members if v != node_id]
        raise datadir.ConfigMismatch(
            f"node {node_id} was forced into a new cluster at entry {forced_at} and its membership has changed "
            f"since (voters {list(in_force.voters)}, learners {list(in_force.learners)}): forcing again would drop "
            f"node{'s' if len(others) > 1 else ''} {', '.join(map(str, others))} and whatever only they hold. Start it "
            f"without --force-new-cluster. If this cluster too has lost its majority for good, delete {marker} and "
            "force again.")
    hs = rec.hard_state
    last = rec.entries[-1] if rec.entries else None
    snap = rec.snapshot
    last_index = last.index if last is not None else (snap.index if snap is not None else 0)
    term = max(hs.term, last.term if last is not None else 0, snap.term if snap is not None else 0, 1)
    forced = ClusterConfig((node_id,), (), members.encode({node_id: members.Member(node_id, address, key)}))
    entry = Entry(last_index + 1, term, EntryKind.CONFIG, forced.encode())
    storage.save(HardState(term, hs.vote if term == hs.term else 0, hs.commit), [entry])
    rec.entries.append(entry)
    rec.hard_state = HardState(term, hs.vote if term == hs.term else 0, hs.commit)
    _write_forced(marker, entry.index)
    log.warning("node=%d event=force_new_cluster FORCED A NEW CLUSTER: this node is now its only member (entry "
                "%d). Writes acknowledged only by the lost nodes may be gone. Add nodes back with the membership "
                "commands.", node_id, entry.index)


def _read_forced(path: str) -> int:
    try:
        with open(path, "rb") as f:
            words = f.read(256).split()
    except FileNotFoundError:
        return 0
    if len(words) != 3 or words[0] != b"zraft-forced" or not words[1].isdigit() or not words[2].isdigit():
        raise CorruptionError(path, 0, f"not a zraft {FORCED_NAME} marker", f"delete {path} if no other zraft "
                              "version wrote it")
    if int(words[1]) != 1:
        raise CorruptionError(path, 0, f"{FORCED_NAME} marker format {int(words[1])} is newer than this zraft reads "
                              "(1)", "run the zraft version that wrote it")
    return int(words[2])


def _write_forced(path: str, index: int) -> None:
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, f"zraft-forced 1 {index}\n".encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dfd = os.open(os.path.dirname(path) or ".", os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
