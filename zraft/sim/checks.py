"""The simulator's invariants, checked as the cluster runs (the cluster calls these from its probe and its clock)
and at the end: one leader per term, leader completeness, log matching and terms that never decrease, commit
never going back (nor below what a node made durable), CheckQuorum, what a restart would recover, damaged disks
refused, and, once healed, every member holding the same store and sessions. A broken one raises ``Violation``.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from zraft.core import ClusterConfig, Entry, EntryKind, Raft, Role
from zraft.server.settings import TICK_MS
from zraft.storage import records
from zraft.storage.records import CorruptionError

if TYPE_CHECKING:
    from .cluster import SimCluster
    from .node import SimNode

CONTACT_CHECK_MS = 100.0
CONTACT_WINDOWS = 3
"""With CheckQuorum, a leader that has heard from no quorum of its voters for this many election timeouts must
have stepped down (it checks once per election timeout, so two are the most it can take)."""


class Violation(AssertionError):
    """A safety or liveness property of Raft failed in the simulation."""


def check_recovery(c: SimCluster, node: SimNode) -> None:
    """What a restart would recover now (from a copy of the disk, every write in it) is exactly what the node
    holds: its snapshot, and its log entry for entry after it; and the snapshot's configuration is the one in
    force at its index. Checked after every compaction, snapshot taken and snapshot installed."""
    rep = node.replica
    assert rep is not None
    lg = rep.raft.log
    c.cov["recovery_checks"] += 1
    try:
        got = c.open_storage(node, node.disk.clone()).recovered
    except CorruptionError as e:
        raise Violation(f"node {node.id}: a restart now would fail: {e}") from None
    mark = (got.snapshot.index, got.snapshot.term) if got.snapshot is not None else (0, 0)
    if mark != (lg.snap_index, lg.snap_term):
        raise Violation(f"node {node.id}: a restart now would recover the snapshot at {mark}, it holds "
                        f"{(lg.snap_index, lg.snap_term)}")
    have = [(e.index, e.term) for e in got.entries]
    if have != [(e.index, e.term) for e in lg.entries]:
        raise Violation(f"node {node.id}: a restart now would recover entries {have[:3]}...{have[-3:]}, it holds "
                        f"{lg.snap_index + 1}-{lg.last_index}")
    # The configuration the node uses at each point of its log is the one its own log says: the last
    # configuration entry at or before it, else its snapshot's.
    base = rep.raft.snapshot.config if rep.raft.snapshot is not None and lg.snap_index else node.bootstrap
    for at in {lg.snap_index, lg.commit, lg.last_index}:
        want = next((ClusterConfig.decode(e.data) for e in reversed(lg.entries)
                     if e.index <= at and e.kind == EntryKind.CONFIG), base)
        got_cfg = rep.raft.config_at(at)
        if (set(got_cfg.voters), set(got_cfg.learners)) != (set(want.voters), set(want.learners)):
            raise Violation(f"node {node.id}: at index {at} it uses voters {list(got_cfg.voters)} learners "
                            f"{list(got_cfg.learners)}; its log says voters {list(want.voters)} learners "
                            f"{list(want.learners)}")
    if got.snapshot is not None:
        cfgs = [i for i in c.config_entries if i <= mark[0]]
        want = c.config_entries[max(cfgs)] if cfgs else node.bootstrap
        have_cfg = got.snapshot.config
        if want.members and (set(have_cfg.voters), set(have_cfg.learners)) != (set(want.voters),
                                                                              set(want.learners)):
            raise Violation(f"node {node.id}: its snapshot at {mark[0]} records voters {list(have_cfg.voters)} "
                            f"learners {list(have_cfg.learners)}; in force there: voters {list(want.voters)} "
                            f"learners {list(want.learners)}")


def damage_probe(c: SimCluster, node: SimNode) -> None:
    """Damage a copy of a stopped node's disk as bad media or a careless copy would -- a sealed log segment
    (one a later segment follows) cut short, its end zero-filled, or one bit flipped -- and open it: recovery
    must refuse it (``CorruptionError``) or recover exactly what the undamaged disk holds. Only the last
    segment may end in a torn write."""
    log_dir = f"{node.path}/log"
    names = sorted(n for n in node.disk.listdir(log_dir) if n.endswith(".seg"))
    if len(names) < 2:
        return
    disk = node.disk.clone()
    name = c.rng.choice(names[:-1])
    path = f"{log_dir}/{name}"
    f = disk.files[path]
    end = len(bytes(f.data).rstrip(b"\0"))
    how = c.rng.choice(("cut", "zeros", "flip"))
    # Not at a record boundary: a sealed segment cut cleanly between two records cannot be told from one
    # that ends there (what is lost shows as a gap in the log instead).
    bounds = {off for off, _ in records.scan(path, bytes(f.data), True)[0]} | {end}
    places = [i for i in range(max(0, end - 200), end) if how == "flip" or i not in bounds]
    if not places:
        return
    at = c.rng.choice(places)
    if how == "cut":
        f.data = f.data[:at]
    elif how == "zeros":
        f.data[at:end] = bytes(end - at)
    else:
        f.data[at] ^= 1 << c.rng.randrange(8)
    f.synced = bytes(f.data)
    try:
        got = c.open_storage(node, disk).recovered
    except CorruptionError as e:
        if name not in str(e):
            raise Violation(f"node {node.id}: sealed log segment {name} damaged ({how} at byte {at} of {end}), "
                            f"and recovery blamed something else: {e}") from None
        c.cov["damage_detected"] += 1
        return
    undamaged = c.open_storage(node, node.disk.clone()).recovered
    raise Violation(f"node {node.id}: sealed log segment {name} damaged ({how} at byte {at} of {end}) was "
                    f"accepted: it recovers {len(got.entries)} entries up to "
                    f"{got.entries[-1].index if got.entries else '-'} (undamaged: {len(undamaged.entries)})")


def check_leader_contact(c: SimCluster) -> None:
    """CheckQuorum (diss. §6.2): a leader that has not heard from a quorum of its voters (learners do not
    count) for ``CONTACT_WINDOWS`` election timeouts must have stepped down."""
    c.at(CONTACT_CHECK_MS, lambda: check_leader_contact(c))
    timeout = c.options.election_ticks * TICK_MS
    for node in c.nodes.values():
        r = node.raft
        if r is None or r.role != Role.LEADER or c.now - c.lead_since.get(node.id, 0.0) < timeout:
            continue
        voters = set(r.config.voters)
        for window in (timeout, CONTACT_WINDOWS * timeout):
            recent = {p for p in r.config.members if p != node.id
                      and c.now - c.last_heard.get((node.id, p), -window) < window}
            if (node.id in voters) + len(recent & voters) >= r.config.quorum:
                break
            if window == timeout:
                if recent - voters and (node.id, r.term) not in c.contact_reported:
                    c.contact_reported.add((node.id, r.term))
                    c.cov["learner_only_contact"] += 1
            elif c.options.check_quorum and c.now - max(c.lead_since[node.id],
                                                             c.config_since.get(node.id, 0.0)) >= window:
                # (Under this configuration for the whole window: a leader that just removed itself counted
                # its own vote until then.)
                raise Violation(f"CheckQuorum: leader {node.id} of term {r.term} still leads, having heard "
                                f"from {sorted(recent)} only (voters {list(r.config.voters)}) in {window:.0f} ms")


def check_new_leader(c: SimCluster, node_id: int, r: Raft) -> None:
    other = c.leaders.get(r.term)
    if other is not None and other != node_id:
        raise Violation(f"two leaders in term {r.term}: {other} and {node_id}")
    c.leaders[r.term] = node_id
    c.lead_since[node_id] = c.now
    if c.read_new_leaders and c.rng.random() < c.read_new_leaders:
        # A read at once, before the new leader's first entry commits (its commit index may be behind what
        # the last leader acknowledged): it must wait, never be served at the old commit index.
        if r.log.commit < r.log.last_index:
            c.cov["read_at_new_leader"] += 1
        c.at(0.0, functools.partial(c.read_now, node_id))
    c.note(f"node {node_id} leads term {r.term}")
    if node_id not in r.config.voters:
        raise Violation(f"node {node_id} leads term {r.term} but is not a voter of its configuration "
                        f"{list(r.config.voters)}")
    # Leader completeness (§5.4): "If a log entry is committed in a given term, then that entry will be present
    # in the logs of the leaders for all higher-numbered terms." A leader of an older term elected late (its
    # votes arrived after the others moved on) may lack entries committed since: it cannot commit anything.
    lg = r.log
    for index, (term, _) in c.committed.items():
        if index > lg.snap_index and lg.term(index) != term and r.term > c.commit_term[index]:
            raise Violation(f"leader {node_id} of term {r.term} lacks entry {index} (term {term}), committed "
                            f"by term {c.commit_term[index]}")


def check_entries(c: SimCluster, node_id: int, r: Raft, entries: list[Entry]) -> None:
    # Log matching (§5.3): same index and term means same command and same preceding entry; by induction
    # the logs are identical up to there.
    prev_term = r.log.term(entries[0].index - 1) if entries[0].index - 1 >= r.log.snap_index else -1
    seen = c.entries_seen
    for e in entries:
        key = (e.index, e.term)
        known = seen.get(key)
        if known is None:
            seen[key] = (e.data, e.kind, prev_term)
        elif known[:2] != (e.data, e.kind) or (-1 not in (prev_term, known[2]) and known[2] != prev_term):
            raise Violation(f"log matching: node {node_id} has a different entry at index {e.index} term {e.term}")
        if e.term < prev_term:
            raise Violation(f"node {node_id}: entry {e.index} of term {e.term} follows one of term {prev_term}")
        prev_term = e.term


def check_converged(c: SimCluster) -> None:
    """All live members hold the same store and sessions; every acknowledged direct write is in it once."""
    live = [n for n in c.members() if n.up and n.replica is not None]
    ref = live[0].replica
    assert ref is not None
    for n in live[1:]:
        rep = n.replica
        assert rep is not None
        if (rep.machine.applied != ref.machine.applied or rep.machine.revision != ref.machine.revision
                or rep.machine.to_dict(meta=True) != ref.machine.to_dict(meta=True)):
            raise Violation(f"nodes {live[0].id} and {n.id} differ at the end (applied {ref.machine.applied} vs "
                            f"{rep.machine.applied}, revision {ref.machine.revision} vs {rep.machine.revision})")
        if rep.machine.sessions != ref.machine.sessions:
            raise Violation(f"nodes {live[0].id} and {n.id} hold different client sessions at the end")
    for key, ops in c.acked.items():
        final = (ref.machine.get(key.encode()) or b"").decode().split(";")[:-1]
        lost = set(ops) - set(final)
        if lost:
            raise Violation(f"acknowledged writes to {key!r} missing at the end: {sorted(lost)[:5]}")
        if len(set(final)) != len(final):
            raise Violation(f"a command was applied twice to {key!r}")


def check_log_terms(node_id: int, r: Raft, when: str) -> None:
    """A log's terms never decrease along it, from its snapshot on (each leader appends in its own term after
    entries of earlier ones): stale entries behind a newer snapshot would show as a term going down."""
    lg = r.log
    term = lg.snap_term
    for e in lg.entries:
        if e.term < term:
            raise Violation(f"node {node_id} {when}: entry {e.index} of term {e.term} follows term {term} "
                            f"(snapshot at {lg.snap_index}, term {lg.snap_term})")
        term = e.term
