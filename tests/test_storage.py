"""Durable storage: round trips, truncation, compaction, snapshots, torn tails, corruption, full disks and
failed fsyncs. Most tests run on FaultDisk (an in-memory disk that can crash, tear writes, fill up and fail
fsync); a few run on the real file system."""

from __future__ import annotations

import errno
import os
import random

import pytest

from zraft.core import ClusterConfig, Entry, HardState, Snapshot
from zraft.storage import CorruptionError, Storage, StorageError
from zraft.storage.disk import Pace
from zraft.storage.faultdisk import FaultDisk
from zraft.storage.records import zeros_from
from zraft.storage.snapshots import SnapshotFile, loaded

CFG = ClusterConfig((1, 2, 3))
D = "/data"


def ents(lo: int, hi: int, term: int = 1, size: int = 20, salt: str = "") -> list[Entry]:
    return [Entry(i, term, 0, (f"{salt}{i}:".encode() * size)[:size]) for i in range(lo, hi + 1)]


def reopen(disk: FaultDisk, segment_bytes: int = 1 << 16) -> Storage:
    return Storage(D, disk=disk, segment_bytes=segment_bytes)


def test_empty_directory_recovers_to_nothing() -> None:
    s = reopen(FaultDisk())
    r = s.recovered
    assert (r.hard_state, r.snapshot, r.entries, r.warnings) == (HardState(), None, [], [])


def test_round_trip() -> None:
    disk = FaultDisk()
    s = reopen(disk)
    s.save(HardState(2, 1, 3), ents(1, 5))
    s.save(HardState(2, 1, 5), ents(6, 7, term=2))
    r = reopen(disk).recovered
    assert r.hard_state == HardState(2, 1, 5)
    assert r.entries == ents(1, 5) + ents(6, 7, term=2)


def test_one_batch_is_one_fsync() -> None:
    disk = FaultDisk()
    s = reopen(disk)
    s.save(HardState(1, 1, 0), ents(1, 1))  # creates the first segment
    before = disk.syncs
    s.save(HardState(1, 1, 100), ents(2, 101))
    assert disk.syncs - before == 1


def test_a_commit_only_batch_is_written_without_an_fsync_and_made_durable_by_the_next_sync() -> None:
    disk = FaultDisk()
    s = reopen(disk)
    s.save(HardState(1, 1, 0), ents(1, 5))
    before = disk.syncs
    s.save(HardState(1, 1, 5), [], sync=False)  # Ready.must_sync is false: only the commit index moved
    assert disk.syncs == before
    disk.crash()
    assert reopen(disk).recovered.hard_state == HardState(1, 1, 0)  # lost, as allowed; the log is intact
    s = reopen(disk)
    s.save(HardState(1, 1, 3), [], sync=False)
    s.save(None, ents(6, 6))  # the next synced batch carries the earlier write with it
    disk.crash()
    r = reopen(disk).recovered
    assert (r.hard_state, r.entries) == (HardState(1, 1, 3), ents(1, 6))


def test_conflicting_suffix_is_replaced() -> None:
    disk = FaultDisk()
    s = reopen(disk)
    s.save(HardState(1, 0, 0), ents(1, 10))
    s.save(HardState(2, 0, 4), ents(5, 7, term=2, salt="new"))
    assert reopen(disk).recovered.entries == ents(1, 4) + ents(5, 7, term=2, salt="new")


def test_snapshot_compaction_deletes_whole_segments() -> None:
    disk = FaultDisk()
    s = reopen(disk, segment_bytes=1000)
    for lo in range(1, 400, 20):
        s.save(HardState(1, 1, lo + 19), ents(lo, lo + 19))
    segs_before = len(disk.listdir(f"{D}/log"))
    assert segs_before > 5
    snap = Snapshot(300, 1, CFG, b"state at 300")
    s.save_snapshot(snap)
    # The segments go one per tidy() (the loop's passes), oldest first; a crash before all are gone is fine.
    kept = len(disk.listdir(f"{D}/log"))  # nothing removed yet (the snapshot record may have begun a segment)
    assert kept >= segs_before and s.untidy
    r = reopen(disk).recovered
    assert loaded(r.snapshot) == snap and r.entries == ents(301, 400)
    removed = 0
    while s.untidy:
        s.tidy()
        removed += 1
        segs = sorted(disk.listdir(f"{D}/log"))
        assert len(segs) == kept - removed
        assert reopen(disk).recovered.entries == ents(301, 400)  # a crash here recovers the same
    assert len(disk.listdir(f"{D}/log")) < segs_before
    r = reopen(disk).recovered
    assert loaded(r.snapshot) == snap
    assert r.entries == ents(301, 400)
    assert r.hard_state.commit == 400


def test_keeps_the_newest_two_snapshots() -> None:
    disk = FaultDisk()
    s = reopen(disk, segment_bytes=1000)
    s.save(HardState(1, 1, 50), ents(1, 50))
    for i in (10, 20, 30, 40):
        s.save_snapshot(Snapshot(i, 1, CFG, b"s%d" % i))
    while s.untidy:
        s.tidy()
    assert len(disk.listdir(f"{D}/snap")) == 2
    r = reopen(disk).recovered
    assert r.snapshot is not None and r.snapshot.index == 40
    assert r.entries == ents(41, 50)


def test_a_pinned_snapshot_outlives_newer_ones_until_unpinned() -> None:
    disk = FaultDisk()
    s = reopen(disk, segment_bytes=1000)
    s.save(HardState(1, 1, 50), ents(1, 50))
    s.save_snapshot(Snapshot(10, 1, CFG, b"s10"))
    pinned = f"{D}/snap/{10:016x}-{1:016x}.snap"
    s.pin(pinned)  # a backup is being read from it
    for i in (20, 30, 40):
        s.save_snapshot(Snapshot(i, 1, CFG, b"s%d" % i))
    while s.untidy:
        s.tidy()
    assert disk.exists(pinned) and len(disk.listdir(f"{D}/snap")) == 3
    s.unpin(pinned)
    while s.untidy:
        s.tidy()
    assert not disk.exists(pinned) and len(disk.listdir(f"{D}/snap")) == 2


def test_installed_snapshot_replaces_a_divergent_log() -> None:
    """An InstallSnapshot past the log (or with another term at its index) discards the whole log (Raft §7);
    entries that follow it in the same batch are kept."""
    disk = FaultDisk()
    s = reopen(disk)
    s.save(HardState(1, 0, 3), ents(1, 8))
    snap = Snapshot(20, 3, CFG, b"leader state")
    s.save(HardState(3, 0, 20), ents(21, 22, term=3), snapshot=snap)
    s.save(None, ents(23, 23, term=3))
    r = reopen(disk).recovered
    assert loaded(r.snapshot) == snap and r.entries == ents(21, 23, term=3)


def test_a_snapshot_whose_term_differs_at_its_index_drops_the_stale_suffix() -> None:
    """Issue 32: Raft §7 keeps the entries after a snapshot only if the log has the snapshot's last entry (same
    index *and term*). A leader's snapshot at index 5 of term 3, on a follower whose entries 1-8 are all of term 1:
    entries 6-8 are from a deposed leader and must not reappear after a restart (one survived the suite)."""
    disk = FaultDisk()
    s = reopen(disk)
    s.save(HardState(1, 0, 3), ents(1, 8))
    snap = Snapshot(5, 3, CFG, b"leader state at 5")
    s.save(HardState(3, 0, 5), [], snapshot=snap)
    r = reopen(disk).recovered
    assert loaded(r.snapshot) == snap and r.entries == [], [e.index for e in r.entries]
    s = reopen(disk)
    s.save(None, ents(6, 7, term=3))  # the leader's entries after it follow as usual
    assert reopen(disk).recovered.entries == ents(6, 7, term=3)


def test_a_stale_suffix_replaced_below_a_removed_segment_stays_replaced() -> None:
    """Found by the simulator's recovery check (issue 32): a node wrote entries 1-18 (term 4), then, in the next
    segment, 19 of a deposed leader (term 6); the new leader's 16-18 (term 8) replaced 16-19; a snapshot at 18
    removed the first segment. Replaying what is left, 16-18 fall below the base the removed segment leaves, and
    their truncation of 19 was skipped: entry 19 of term 6 came back after the snapshot of term 8."""
    disk = FaultDisk()
    s = reopen(disk, segment_bytes=300)
    s.save(HardState(4, 0, 15), ents(1, 18, term=4))
    s.save(HardState(6, 0, 15), ents(19, 19, term=6))  # in the second segment
    s.save(HardState(8, 0, 18), ents(16, 18, term=8))
    assert len(disk.listdir(f"{D}/log")) == 2
    snap = Snapshot(18, 8, CFG, b"state at 18")
    s.save_snapshot(snap)
    while s.untidy:
        s.tidy()
    assert len(disk.listdir(f"{D}/log")) == 1  # the first segment (entries up to 18) is gone
    r = reopen(disk).recovered
    assert loaded(r.snapshot) == snap and r.entries == [], [(e.index, e.term) for e in r.entries]


def test_snapshot_inside_the_log_keeps_the_suffix() -> None:
    disk = FaultDisk()
    s = reopen(disk)
    s.save(HardState(1, 0, 5), ents(1, 8))
    s.save_snapshot(Snapshot(5, 1, CFG, b"x"))
    assert reopen(disk).recovered.entries == ents(6, 8)


@pytest.mark.parametrize("tear", ["prefix", "zeros"])
def test_torn_tail_is_cut_off_with_a_warning(tear: str) -> None:
    warned = 0
    for seed in range(30):
        disk = FaultDisk(seed)
        s = reopen(disk)
        s.save(HardState(1, 1, 10), ents(1, 10))
        # A batch whose write reached the disk only partly: its fsync never returned, so nothing in it was
        # acknowledged.
        disk.fail_syncs = 1
        with pytest.raises(StorageError):
            s.save(HardState(1, 1, 20), ents(11, 20, size=600))
        disk.crash(tear)
        r = reopen(disk).recovered
        assert r.entries[:10] == ents(1, 10)
        assert r.entries[10:] in ([], ents(11, 20, size=600))  # one record: all of the batch or none of it
        warned += bool(r.warnings)
        if r.warnings:
            assert "torn tail" in r.warnings[0]
        # The node goes on writing after the cut.
        s2 = reopen(disk)
        s2.save(HardState(1, 1, 10), ents(len(r.entries) + 1, 25, size=600))
        assert len(reopen(disk).recovered.entries) == 25
    assert warned >= 10  # most crashes left part of the batch behind, and it was cut off


def _segment(disk: FaultDisk) -> str:
    return f"{D}/log/{disk.listdir(f'{D}/log')[-1]}"


@pytest.mark.parametrize("last", [True, False])
def test_every_bit_flip_in_a_segment_is_detected(last: bool) -> None:
    """Flip each byte of a segment (one bit each) in turn: recovery must refuse to start, naming the file and
    offset, or (only where the data could be an unfinished write) cut a torn tail -- never return other data."""
    base = FaultDisk()
    s = reopen(base, segment_bytes=1500)
    for lo in range(1, 60, 6):
        s.save(HardState(1, 1, lo + 5), ents(lo, lo + 5, size=30))
    names = base.listdir(f"{D}/log")
    assert len(names) >= 2
    target = f"{D}/log/{names[-1] if last else names[0]}"
    good = base.read(target)
    want = reopen(base).recovered
    detected = 0
    for pos in range(len(good)):
        disk = base.clone()
        disk.flip_bit(target, pos)
        try:
            r = reopen(disk).recovered
        except CorruptionError as e:
            assert e.path == target and 0 <= e.offset <= pos
            detected += 1
            continue
        # Not refused: then it may only have lost a torn tail, never changed or invented an entry.
        assert last, f"flip at {pos} of a sealed segment went unnoticed"
        assert r.entries == want.entries[: len(r.entries)]
    assert detected == len(good) or last


def test_a_stray_byte_anywhere_in_megabytes_of_preallocated_space_is_detected() -> None:
    """The end of the data is where zeros begin that run to the end of the (last, preallocated) segment, found a
    MiB at a time: a non-zero byte anywhere after it, on either side of a MiB boundary or in the very last byte,
    is damage, not a torn write (which never leaves bytes megabytes past its start)."""
    base = FaultDisk()
    size = (3 << 20) + 7
    reopen(base, segment_bytes=size).save(HardState(1, 1, 5), ents(1, 5, size=30))
    target = _segment(base)
    good = base.read(target)
    assert len(good) == size
    end = len(good.rstrip(b"\0"))
    assert reopen(base).recovered.entries == ents(1, 5, size=30)
    for pos in (end + 40, (1 << 20) - 1, 1 << 20, (2 << 20) + 3, size - 1):
        disk = base.clone()
        disk.flip_bit(target, pos)
        with pytest.raises(CorruptionError) as e:
            reopen(disk)
        assert e.value.path == target and e.value.offset == end


def test_where_the_trailing_zeros_begin_across_mib_boundaries() -> None:
    mib = 1 << 20
    rng = random.Random(7)
    for n in (0, 1, 2, mib - 1, mib, mib + 1, 3 * mib + 5):
        marks = {0, n - 1, n - 2, n - mib, n - mib - 1, n - mib + 1, rng.randrange(n) if n else 0}
        for p in [None, *sorted(m for m in marks if 0 <= m < n)]:
            buf = bytearray(n)
            if p is not None:
                buf[p] = rng.randrange(1, 256)
                buf[: p // 2] = b"x" * (p // 2)
            assert zeros_from(bytes(buf)) == len(bytes(buf).rstrip(b"\0")), (n, p)


def test_every_bit_flip_in_a_snapshot_is_detected() -> None:
    base = FaultDisk()
    s = reopen(base)
    s.save(HardState(1, 1, 5), ents(1, 5))
    s.save_snapshot(Snapshot(5, 1, CFG, bytes(range(256)) * 2))
    name = base.listdir(f"{D}/snap")[-1]
    path = f"{D}/snap/{name}"
    good = base.read(path)
    for pos in range(len(good)):
        disk = base.clone()
        disk.flip_bit(path, pos)
        with pytest.raises(CorruptionError) as ei:
            reopen(disk)
        assert ei.value.path == path


def test_missing_segment_is_reported() -> None:
    disk = FaultDisk()
    s = reopen(disk, segment_bytes=500)
    for lo in range(1, 100, 5):
        s.save(HardState(1, 1, lo), ents(lo, lo + 4))
    names = disk.listdir(f"{D}/log")
    disk.remove(f"{D}/log/{names[1]}")
    with pytest.raises(CorruptionError, match="segment is missing") as ei:
        reopen(disk)
    assert names[1] in ei.value.path
    assert "move its data directory aside" in str(ei.value)


def test_gap_between_snapshot_and_log_is_reported() -> None:
    disk = FaultDisk()
    s = reopen(disk, segment_bytes=500)
    for lo in range(1, 100, 5):
        s.save(HardState(1, 1, lo + 4), ents(lo, lo + 4))
    s.save_snapshot(Snapshot(50, 1, CFG, b"x"))
    # Remove the snapshot marker's file: the log after it cannot be used.
    for n in disk.listdir(f"{D}/snap"):
        disk.remove(f"{D}/snap/{n}")
    with pytest.raises(CorruptionError, match="missing"):
        reopen(disk)


def test_full_disk_stops_writes_and_keeps_what_was_durable() -> None:
    disk = FaultDisk()
    s = reopen(disk)
    s.save(HardState(1, 1, 10), ents(1, 10))
    disk.space_left = 100
    # More than the rest of the preallocated segment: the write must grow the file, and the disk is full.
    with pytest.raises(StorageError, match="disk is full"):
        s.save(HardState(1, 1, 20), ents(11, 200, size=600))
    with pytest.raises(StorageError, match="must restart"):
        s.save(HardState(1, 1, 10), [])
    disk.space_left = None
    disk.crash("prefix")
    r = reopen(disk).recovered
    assert r.entries == ents(1, 10) and r.hard_state == HardState(1, 1, 10)


def test_full_disk_when_starting_a_segment() -> None:
    disk = FaultDisk()
    s = reopen(disk, segment_bytes=4096)
    s.save(HardState(1, 1, 10), ents(1, 10))
    disk.space_left = 1000
    with pytest.raises(StorageError, match="disk is full"):
        for lo in range(11, 1000, 10):
            s.save(HardState(1, 1, lo), ents(lo, lo + 9, size=100))
    disk.space_left = None
    disk.crash("zeros")
    assert reopen(disk).recovered.entries[:10] == ents(1, 10)


def test_failed_fsync_is_never_retried() -> None:
    disk = FaultDisk()
    s = reopen(disk)
    s.save(HardState(1, 1, 5), ents(1, 5))
    disk.fail_syncs = 1
    with pytest.raises(StorageError, match="I/O error"):
        s.save(HardState(1, 1, 10), ents(6, 10))
    # The next fsync would succeed, but the node may not go on as if the earlier data were durable.
    with pytest.raises(StorageError):
        s.save(HardState(1, 1, 10), ents(6, 10))
    disk.crash("lose")
    assert reopen(disk).recovered.entries == ents(1, 5)


def test_crash_keeps_exactly_what_was_synced() -> None:
    """Random batches, truncations and snapshots, crashing at random points: after each restart the log is
    exactly what the last successful save left (the FaultDisk loses every unsynced byte)."""
    rng = random.Random(1)
    for trial in range(100):
        disk = FaultDisk(trial)
        s = reopen(disk, segment_bytes=rng.choice((400, 2000, 1 << 20)))
        model: list[Entry] = []
        snap: Snapshot | None = None
        hs = HardState()
        term = 1
        for _ in range(rng.randint(1, 30)):
            op = rng.random()
            last = model[-1].index if model else (snap.index if snap else 0)
            if op < 0.15 and model:
                commit = hs.commit
                cut = rng.randint(max(commit + 1, model[0].index), last + 1)
                term += 1
                new = ents(cut, cut + rng.randint(0, 3), term=term, salt=f"t{trial}")
                model = [e for e in model if e.index < cut] + new
                hs = HardState(term, 0, commit)
                s.save(hs, new)
            elif op < 0.25 and model and hs.commit > (snap.index if snap else 0):
                idx = rng.randint(snap.index + 1 if snap else 1, hs.commit)
                t = next(e.term for e in model if e.index == idx)
                snap = Snapshot(idx, t, CFG, b"state%d" % idx)
                s.save_snapshot(snap)
                model = [e for e in model if e.index > idx]
            else:
                new = ents(last + 1, last + rng.randint(1, 8), term=term)
                model += new
                hs = HardState(term, 0, min(model[-1].index, hs.commit + rng.randint(0, 8)))
                s.save(hs, new)
        disk.crash(rng.choice(("lose", "prefix", "zeros")))
        r = reopen(disk).recovered
        assert r.entries == model, trial
        assert r.hard_state == hs
        assert loaded(r.snapshot) == snap


def test_real_files_round_trip(tmp_path: os.PathLike[str]) -> None:
    d = str(tmp_path)
    with Storage(d) as s:
        s.save(HardState(3, 2, 4), ents(1, 5))
        s.save_snapshot(Snapshot(4, 1, CFG, b"kv"))
    with Storage(d) as s:
        r = s.recovered
        assert r.hard_state == HardState(3, 2, 4) and r.entries == ents(5, 5) and r.snapshot is not None


def _segments(d: str) -> list[str]:
    return sorted(n for n in os.listdir(f"{d}/log") if n.endswith(".seg"))


def test_real_disk_removes_old_segments_in_a_thread_oldest_first(tmp_path: os.PathLike[str]) -> None:
    """On a real disk a segment a snapshot made unnecessary is unlinked by a thread (tens of ms for 64 MiB, which
    the event loop must not wait for): ``tidy_due`` is false while it runs, the segments left are always the
    newest ones in a row, and the log recovers the same at every step."""
    d = str(tmp_path)
    s = Storage(d, segment_bytes=1 << 14)
    for lo in range(1, 2000, 50):
        s.save(HardState(1, 1, lo + 49), ents(lo, lo + 49, size=100))
    before = _segments(d)
    assert len(before) > 5
    s.save_snapshot(Snapshot(1900, 1, CFG, b"state at 1900"))
    before = _segments(d)  # (the snapshot's record may have begun a segment)
    threads, first = 0, 1
    while s.untidy:
        assert s.tidy_due or s._remover is not None
        if not s.tidy_due:
            s._remover[0].join()  # type: ignore[index]
            continue
        s.tidy()
        if s._remover is not None:
            threads += 1
            assert not s._remover[0].is_alive() or not s.tidy_due
        seqs = [int(n[:-4], 16) for n in _segments(d)]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs))) and seqs[0] >= first  # the oldest go first
        first = seqs[0]
    after = _segments(d)
    assert threads == len(before) - len(after) > 0
    assert [n for n in sorted(os.listdir(f"{d}/log")) if not n.startswith("spare.")] == after  # no .removing
    s.close()
    with Storage(d) as s2:
        r = s2.recovered
        assert r.entries == ents(1901, 2000, size=100) and r.snapshot is not None and r.snapshot.index == 1900


def test_a_segment_the_thread_cannot_remove_stops_storage(tmp_path: os.PathLike[str],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    import zraft.storage.disk as diskmod

    d = str(tmp_path)
    s = Storage(d, segment_bytes=1 << 14)
    for lo in range(1, 1000, 50):
        s.save(HardState(1, 1, lo + 49), ents(lo, lo + 49, size=100))
    real_remove = diskmod.os.remove

    def remove(path: str) -> None:
        if path.endswith(".seg.removing"):
            raise OSError(errno.EIO, "Input/output error")
        real_remove(path)

    monkeypatch.setattr(diskmod.os, "remove", remove)
    s.save_snapshot(Snapshot(900, 1, CFG, b"state at 900"))
    with pytest.raises(StorageError, match="Input/output error"):
        while s.untidy:
            if s._remover is not None:
                s._remover[0].join()
            s.tidy()
    with pytest.raises(StorageError):  # and refuses to go on
        s.save(HardState(1, 1, 1001), ents(1001, 1001))


def test_a_crash_while_a_segment_is_removed_slowly_leaves_nothing_recovery_trips_on(
        tmp_path: os.PathLike[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """A segment is renamed to ``.removing`` (durably) before it is shortened a slice at a time: a crash midway
    leaves a file that recovery deletes, never a shortened segment in the log."""
    import zraft.storage.disk as diskmod

    d = str(tmp_path)
    s = Storage(d, segment_bytes=1 << 14)
    for lo in range(1, 1000, 50):
        s.save(HardState(1, 1, lo + 49), ents(lo, lo + 49, size=100))
    s.save_snapshot(Snapshot(900, 1, CFG, b"state at 900"))
    first = _segments(d)[0]
    monkeypatch.setattr(diskmod, "REMOVE_STEP_BYTES", 1 << 10)
    monkeypatch.setattr(diskmod, "REMOVE_PAUSE_S", 0.0)
    real_truncate, cuts = diskmod.os.truncate, []

    def crash_after_two(path: str, size: int) -> None:
        if len(cuts) == 2:
            raise OSError(errno.EIO, "the machine lost power here")
        cuts.append(size)
        real_truncate(path, size)

    monkeypatch.setattr(diskmod.os, "truncate", crash_after_two)
    with pytest.raises(OSError):
        s.disk.remove_slowly(f"{d}/log/{first}")
    assert cuts and first not in _segments(d) and f"{first}.removing" in os.listdir(f"{d}/log")
    assert os.path.getsize(f"{d}/log/{first}.removing") == cuts[-1]
    monkeypatch.undo()
    with Storage(d) as s2:  # what a restart finds
        r = s2.recovered
        assert r.entries == ents(901, 1000, size=100) and r.snapshot is not None and r.snapshot.index == 900
        assert not [n for n in os.listdir(f"{d}/log") if n.endswith(".removing")]


class _CountingPace(Pace):
    def __init__(self) -> None:
        super().__init__()
        self.waits: list[int] = []

    def wait(self, timeout: float | None = None) -> bool:
        self.waits.append(self.written)
        return super().wait(0)  # no real pause in the test


def test_preallocation_ahead_of_need_pauses_after_each_fsync_until_hurried(tmp_path: os.PathLike[str]) -> None:
    """Written at full speed, a 64 MiB segment held up the log's fsyncs for half a second; prepared ahead of need
    it pauses after each PREALLOC_SYNC_BYTES, saying how much it has written, and not once hurried."""
    from zraft.storage.disk import PREALLOC_SYNC_BYTES, OsDisk

    disk = OsDisk(fsync=True)
    ev = _CountingPace()
    disk.preallocate(os.path.join(str(tmp_path), "a"), 4 * PREALLOC_SYNC_BYTES, ev)
    assert ev.waits == [PREALLOC_SYNC_BYTES, 2 * PREALLOC_SYNC_BYTES, 3 * PREALLOC_SYNC_BYTES]  # not after the last
    assert os.path.getsize(os.path.join(str(tmp_path), "a")) == 4 * PREALLOC_SYNC_BYTES
    ev = _CountingPace()
    ev.set()
    disk.preallocate(os.path.join(str(tmp_path), "b"), 4 * PREALLOC_SYNC_BYTES, ev)
    assert len(ev.waits) == 3 and ev.is_set()  # wait() returns at once: it is set
    disk.preallocate(os.path.join(str(tmp_path), "c"), 2 * PREALLOC_SYNC_BYTES)  # no event: no pauses
    assert os.path.getsize(os.path.join(str(tmp_path), "c")) == 2 * PREALLOC_SYNC_BYTES


def _fill_until_spare(s: Storage) -> int:
    i = 1
    while s._spare is None:
        s.save(HardState(1, 1, i), ents(i, i, size=500))
        i += 1
    assert not s._spare[2].is_set()  # started at a quarter full, at its own pace
    return i


def test_a_spare_that_keeps_ahead_of_the_log_is_never_hurried(tmp_path: os.PathLike[str]) -> None:
    seg = 1 << 16  # one chunk: the real thread never reports progress, the test does
    s = Storage(str(tmp_path), segment_bytes=seg)
    i = _fill_until_spare(s)
    assert s._spare is not None
    pace = s._spare[2]
    while s._active is not None and s._active.size() < seg * 3 // 4:
        pace.written = min(seg, pace.written + 4096)  # the spare gains faster than the log
        s.save(HardState(1, 1, i), ents(i, i, size=500))
        i += 1
        assert not pace.is_set()
    s.close()


def test_a_spare_the_log_gains_on_is_hurried_before_three_quarters(tmp_path: os.PathLike[str]) -> None:
    seg = 1 << 16
    s = Storage(str(tmp_path), segment_bytes=seg)
    i = _fill_until_spare(s)
    assert s._spare is not None
    pace = s._spare[2]  # reports nothing written: the log gains on it with every save
    while not pace.is_set():
        s.save(HardState(1, 1, i), ents(i, i, size=500))
        i += 1
        assert s._active is not None and s._active.size() < seg * 3 // 4
    s.close()


def test_enospc_on_real_files_is_a_storage_error(tmp_path: os.PathLike[str], monkeypatch: pytest.MonkeyPatch) -> None:
    import zraft.storage.disk as diskmod

    def no_space(fd: int, data: object, offset: int) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    d = str(tmp_path)
    s = Storage(d)
    s.save(HardState(1, 1, 1), ents(1, 1))
    monkeypatch.setattr(diskmod.os, "pwrite", no_space)
    with pytest.raises(StorageError, match="disk is full"):
        s.save(HardState(1, 1, 2), ents(2, 2))


def test_snapshot_of_an_unknown_format_is_refused_with_a_clear_error() -> None:
    disk = FaultDisk()
    s = reopen(disk)
    s.save(HardState(1, 1, 5), ents(1, 5))
    s.save_snapshot(Snapshot(5, 1, CFG, b"state"))
    path = f"{D}/snap/{disk.listdir(f'{D}/snap')[-1]}"
    data = bytearray(disk.read(path))
    data[6:8] = b"09"  # a format from a future version
    disk.write_atomic(path, bytes(data), sync=True)
    with pytest.raises(CorruptionError,
                       match="format '09' is not one this zraft reads \\(01 and 02\\): a newer zraft wrote it") as ei:
        reopen(disk)
    assert ei.value.path == path


def test_streamed_snapshot_and_its_chunks() -> None:
    disk = FaultDisk()
    s = reopen(disk)
    s.save(HardState(1, 1, 9), ents(1, 9))
    w = s.snapshot_writer(9, 1, CFG)
    for i in range(10):
        w.write(b"%d" % i * 1000)
    snap = w.commit()
    s.save_snapshot(snap)
    r = reopen(disk).recovered
    assert r.snapshot is not None and (r.snapshot.index, r.snapshot.term) == (9, 1)
    assert isinstance(r.snapshot.data, SnapshotFile)
    assert list(r.snapshot.data.data_chunks(chunk=3000)) == [b"0" * 1000 + b"1" * 1000 + b"2" * 1000,
                                                             b"3" * 1000 + b"4" * 1000 + b"5" * 1000,
                                                             b"6" * 1000 + b"7" * 1000 + b"8" * 1000, b"9" * 1000]


def test_received_snapshot_is_verified_before_it_gets_its_name() -> None:
    src, dst = FaultDisk(), FaultDisk()
    a = reopen(src)
    a.save(HardState(1, 1, 9), ents(1, 9))
    a.save_snapshot(Snapshot(9, 1, CFG, bytes(range(256)) * 40))
    f = a.recovered.snapshot if a.recovered.snapshot else reopen(src).recovered.snapshot
    assert f is not None and isinstance(f.data, SnapshotFile)
    b = reopen(dst)
    rx = b.snapshot_receiver(9, 1, f.data.size)
    for off in range(0, f.data.size, 1000):
        rx.write(f.data.read_raw(off, 1000))
    got = rx.finish()
    assert loaded(got) == Snapshot(9, 1, CFG, bytes(range(256)) * 40)
    b.save(HardState(1, 0, 9), [], got)
    assert loaded(reopen(dst).recovered.snapshot) == loaded(got)
    # A corrupted copy is refused and never takes the snapshot's name.
    dst2 = FaultDisk()
    rx = reopen(dst2).snapshot_receiver(9, 1, f.data.size)
    raw = bytearray(f.data.read_raw(0, f.data.size))
    raw[100] ^= 1
    rx.write(bytes(raw))
    with pytest.raises(CorruptionError, match="checksum"):
        rx.finish()
    assert dst2.listdir(f"{D}/snap") == []


def test_crash_while_a_snapshot_is_written_or_received_leaves_the_old_state() -> None:
    disk = FaultDisk()
    s = reopen(disk)
    s.save(HardState(1, 1, 9), ents(1, 9))
    s.save_snapshot(Snapshot(5, 1, CFG, b"old"))
    w = s.snapshot_writer(9, 1, CFG)
    w.write(b"half of a new snapshot")
    rx = s.snapshot_receiver(20, 2, 1000)
    rx.write(b"x" * 10)
    disk.crash()
    r = reopen(disk).recovered
    assert loaded(r.snapshot) == Snapshot(5, 1, CFG, b"old") and r.entries == ents(6, 9)
    assert [n for n in disk.listdir(f"{D}/snap") if not n.endswith(".snap")] == []
    # A complete snapshot that no log record names yet (crash between writing it and recording it): removed.
    s = reopen(disk)
    w = s.snapshot_writer(9, 1, CFG)
    w.write(b"new")
    w.commit()
    disk.crash()
    r = reopen(disk).recovered
    assert loaded(r.snapshot) == Snapshot(5, 1, CFG, b"old")
    assert any("no log record refers to" in m for m in r.warnings)
    assert len(disk.listdir(f"{D}/snap")) == 1


def test_a_restart_right_after_compaction_at_every_segment_boundary_keeps_the_log() -> None:
    """Issue 32: segment cleanup off by one at the snapshot index (the segment holding index snapshot + 1 removed)
    survived the suite: nothing restarted a node right after compacting at each place a segment can end. For every
    snapshot index, once the compaction's files are gone, a restart has every entry after the snapshot."""
    n = 40
    boundaries = 0
    for k in range(1, n):
        disk = FaultDisk()
        s = reopen(disk, segment_bytes=200)  # two or three entries per segment: they end at every kind of index
        for i in range(1, n + 1):
            s.save(HardState(1, 1, i), ents(i, i))
        segs = len(disk.listdir(f"{D}/log"))
        s.save_snapshot(Snapshot(k, 1, CFG, b"state at %d" % k))
        while s.untidy:
            s.tidy()
        boundaries += len(disk.listdir(f"{D}/log")) < segs
        r = reopen(disk).recovered
        assert loaded(r.snapshot) == Snapshot(k, 1, CFG, b"state at %d" % k)
        assert r.entries == ents(k + 1, n), f"snapshot at {k}: entries after it lost"
    assert boundaries > n // 2  # most snapshot indexes removed some segments


@pytest.mark.parametrize("damage", ["cut", "zeros"])
def test_a_sealed_segment_cut_short_is_corruption_not_a_torn_tail(damage: str) -> None:
    """Issue 32: only the last segment can have a torn tail (a write a crash interrupted). An earlier, sealed
    segment that ends early -- cut short, or its end zero-filled -- lost acknowledged entries: recovery must stop
    and name the file, never cut it and go on without them."""
    for cut_back in (1, 7, 30, 80):
        disk = FaultDisk()
        s = reopen(disk, segment_bytes=400)
        for i in range(1, 61, 3):
            s.save(HardState(1, 1, i + 2), ents(i, i + 2))
        names = sorted(disk.listdir(f"{D}/log"))
        assert len(names) >= 3
        path = f"{D}/log/{names[1]}"  # sealed: segments follow it
        f = disk.files[path]
        end = len(bytes(f.data).rstrip(b"\0"))
        at = end - cut_back
        if damage == "cut":
            f.data = f.data[:at]
        else:
            f.data[at:end] = bytes(end - at)
        f.synced = bytes(f.data)
        with pytest.raises(CorruptionError) as e:
            reopen(disk)
        assert names[1] in str(e.value), e.value  # the damaged file is named
