"""The key-value store's snapshots (format in ``kv.SNAPSHOT_FORMAT``): the image taken while the store goes on,
serialized in chunks, and a store rebuilt from a snapshot's bytes (every format this version reads)."""

from __future__ import annotations

import gc
import itertools
from collections.abc import Iterable, Iterator
from typing import Any
from zlib import crc32

import msgpack
from sortedcontainers import SortedList

from zraft.statemachine.kv import (
    SHARD_SHIFT,
    SHARDS,
    SNAPSHOT_FORMAT,
    Entry,
    KVStore,
    Session,
)
from zraft.statemachine.leases import MAX_LEASE_ID, MAX_TTL_MS, Lease

SNAPSHOT_CHUNK_SESSIONS = 1024
SNAPSHOT_CHUNK_PAIRS = 1024
SNAPSHOT_CHUNK_BYTES = 4 << 20
"""The most sessions, key/value pairs and (about) bytes in one msgpack array of a snapshot."""
WALK_KEYS = 1024
"""Keys the image takes from the index at a time."""
_pack = msgpack.Packer(use_bin_type=True).pack
"""As ``kv._pack``: the same bytes, without a Packer made per call."""


class SnapshotImage:
    """The store as it was at one log index, serialized in chunks while the store goes on changing.

    Taking it costs the event loop a list of the session ids and a count of the keys. Afterwards the store saves
    the old value of each key the first time a write touches it (copy-on-write, per key: ``None`` for a key that
    did not exist), in ``before[shard]``. ``chunks()`` -- a generator the event loop advances between applies, on
    the same thread -- walks the store's ordered index (``KVStore.index``), a batch of keys at a time from just
    after the last key it wrote (``passed``), so that the keys go out in key order and a restore sorts them in
    linear time. For each it reads the live value and then prefers the saved one; a saved ``None`` means the key
    was made after the moment and is left out. A key deleted ahead of the walk (``deleted``) is not in the index
    when the walk gets there: it is kept in ``ahead`` and written at the end, with its saved value, unless the walk
    met it (made again).
    """

    def __init__(self, kv: KVStore) -> None:
        self.applied = kv.applied
        self.revision = kv.revision
        self.clients = list(kv.sessions)
        self.results = kv.results
        self._sessions = kv.sessions
        leases = kv.leases
        self._leases = leases.table
        self.lease_ids = list(leases.table)
        self.next_lease = leases.next_id
        self.watching = kv.watching
        self.leases_before: dict[int, tuple[int, bool, list[bytes]] | None] = {}
        """Leases as they were, saved by the store before it first changes (or drops) each (as sessions)."""
        self.sessions_before: dict[int, list[Any] | None] = {}
        """Sessions as they were, saved by the store before it first changes (or drops) each: copy-on-write, as
        for keys, so taking the image copies no session table (up to 100,000 sessions) in the loop."""
        self._shards = kv.shards
        self._index = kv.index
        self.key_count = len(kv)
        self.before: list[dict[bytes, Entry | None]] = [{} for _ in range(SHARDS)]
        self.passed: bytes | None = None
        """The last key the walk wrote (None: none yet)."""
        self.ahead: set[bytes] = set()
        """Keys deleted ahead of the walk since the image's moment (see the class docstring)."""

    def deleted(self, key: bytes) -> None:
        """The store just deleted ``key`` (after saving its old value, if it was the first change)."""
        if self.passed is None or key > self.passed:
            self.ahead.add(key)

    def leftovers(self, small: int) -> list[Any]:
        before = self.before
        if sum(map(len, before)) <= small:
            return []
        self.before = []
        return [[d] for d in before]

    def save_lease(self, lease_id: int, lease: Lease | None) -> None:
        """The store is about to change (or make, or drop) a lease: keep it as it is now."""
        if lease_id not in self.leases_before:
            self.leases_before[lease_id] = None if lease is None else (lease.ttl_ms, lease.solo, sorted(lease.keys))

    def save_session(self, client: int, s: Session | None) -> None:
        """The store is about to change (or create, or drop) ``client``'s session: keep it as it is now."""
        if client not in self.sessions_before:
            self.sessions_before[client] = None if s is None else [s.last_index, s.ack, dict(s.replies)]

    def chunks(self) -> Iterator[bytes]:
        # Format 5 once revisions began, else 4 once the store has kept a result, else 3: the releases before read
        # the older two, so a rolling upgrade works as long as the new commands wait until every node runs this
        # release (and revisions begin once a leader of this release is elected).
        leases = bool(self.lease_ids) or self.next_lease > 1
        if leases or self.watching:  # (format 6: a release before leases and watches never wrote one)
            yield _pack([SNAPSHOT_FORMAT, self.applied, self.key_count, len(self.clients), self.revision,
                         len(self.lease_ids), self.next_lease, self.watching])
        elif self.revision:
            yield _pack([5, self.applied, self.key_count, len(self.clients), self.revision])
        else:
            yield _pack([4 if self.results else 3, self.applied, self.key_count, len(self.clients)])
        live, saved = self._sessions, self.sessions_before
        sess: list[Any] = []
        for c in self.clients:
            s = live.get(c)
            sv = None if s is None else [s.last_index, s.ack, dict(s.replies)]
            if c in saved:  # after reading the live session (see the class docstring)
                sv = saved[c]
            assert sv is not None, "a session of the image was lost"
            sess += (c, sv[0], sv[1], sv[2])
            if len(sess) >= 4 * SNAPSHOT_CHUNK_SESSIONS:
                yield _pack(sess)
                sess = []
        if sess:
            yield _pack(sess)
        if leases:
            yield from self._lease_chunks()
        out: list[Any] = []
        size = 0
        count = 0
        shards, before, index, ahead = self._shards, self.before, self._index, self.ahead
        while True:
            if self.passed is None:
                batch = list(index.islice(0, WALK_KEYS))
            else:
                batch = list(itertools.islice(index.irange(self.passed, inclusive=(False, True)), WALK_KEYS))
            if not batch:
                break
            for k in batch:  # (a yield below lets the store change: a key of the batch may be gone by its turn)
                h = crc32(k) >> SHARD_SHIFT
                kept = before[h]
                if k in kept:
                    e = kept[k]
                    ahead.discard(k)
                else:
                    e = shards[h].get(k)
                self.passed = k
                if e is None:  # made after the image's moment
                    continue
                out.append(k)
                out.append(e)
                size += len(k) + len(e[0] if isinstance(e, tuple) else e)
                if len(out) >= 2 * SNAPSHOT_CHUNK_PAIRS or size >= SNAPSHOT_CHUNK_BYTES:
                    count += len(out) >> 1
                    yield _pack(out)
                    out = []
                    size = 0
        for k in sorted(ahead):  # deleted ahead of the walk and not met again: as they were
            e = before[crc32(k) >> SHARD_SHIFT].get(k)
            if e is not None:
                out.append(k)
                out.append(e)
        count += len(out) >> 1
        if count != self.key_count:
            raise RuntimeError(f"snapshot image: {count} keys serialized, {self.key_count} at its moment")
        if out:
            yield _pack(out)


    def _lease_chunks(self) -> Iterator[bytes]:
        live, saved = self._leases, self.leases_before
        out: list[Any] = []
        size = 0
        for i in self.lease_ids:
            if i in saved:
                lv = saved[i]
            else:
                ls = live[i]
                lv = (ls.ttl_ms, ls.solo, sorted(ls.keys))
            assert lv is not None, "a lease of the image was lost"
            out += (i, lv[0], lv[1], lv[2])
            size += 16 + sum(map(len, lv[2]))
            if len(out) >= 4 * SNAPSHOT_CHUNK_SESSIONS or size >= SNAPSHOT_CHUNK_BYTES:
                yield _pack(out)
                out = []
                size = 0
        if out:
            yield _pack(out)


def restore_into(kv: KVStore, chunks: Iterable[bytes]) -> None:
    """Fill the empty ``kv`` from a snapshot's bytes, given in pieces of any size (``ValueError`` if they do not
    decode). The garbage collector is off meanwhile: a key's revisions are a tuple, which the collector tracks, and
    its collections over millions of them made a restore of 2,000,000 keys 4.3 s instead of 2.9."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        _restore(kv, chunks)
    finally:
        if enabled:
            gc.enable()


def _restore(kv: KVStore, chunks: Iterable[bytes]) -> None:
    # Arrays as tuples: a key's [value, create, mod, version] is then its entry as it is, not copied.
    up = msgpack.Unpacker(raw=False, strict_map_key=False, max_buffer_size=1 << 30, use_list=False)
    it = iter(chunks)

    def objects() -> Iterator[Any]:
        for piece in it:
            up.feed(piece)
            yield from up

    try:
        objs = objects()
        head = next(objs)
        if head[0] == 1:  # format 1: everything in one object
            _, kv.applied, data1, sessions = head
            if not isinstance(data1, dict) or any(type(k) is not bytes or type(v) is not bytes
                                                  for k, v in data1.items()):
                raise ValueError("bad header or data")
            kv.set_data(data1)
        elif head[0] in (2, 3, 4, 5, SNAPSHOT_FORMAT):
            n_leases = 0
            if head[0] == 2:
                _, kv.applied, count, sessions = head
            else:
                if head[0] >= 5:
                    if head[0] == 5:
                        _, kv.applied, count, n_sessions, kv.revision = head
                    else:
                        _, kv.applied, count, n_sessions, kv.revision, n_leases, kv.leases.next_id, kv.watching = head
                        if type(kv.watching) is not bool:
                            raise ValueError(f"bad watching flag {kv.watching!r:.20}")
                        kv.watch_start = kv.revision + 1
                        if type(kv.leases.next_id) is not int or not 0 < kv.leases.next_id <= MAX_LEASE_ID:
                            raise ValueError(f"bad next lease id {kv.leases.next_id!r:.20}")
                    if type(kv.revision) is not int or kv.revision < 0 or (head[0] == 5 and not kv.revision):
                        raise ValueError(f"bad revision {kv.revision!r:.20}")
                else:
                    _, kv.applied, count, n_sessions = head
                sessions = {}
                while len(sessions) < _int(n_sessions):
                    arr = next(objs)
                    for i in range(0, len(arr), 4):
                        sessions[arr[i]] = arr[i + 1 : i + 4]
                if len(sessions) != n_sessions:
                    raise ValueError(f"it holds {len(sessions)} sessions, its header says {n_sessions}")
                table = kv.leases.table
                while len(table) < _int(n_leases):
                    arr = next(objs)
                    for i in range(0, len(arr), 4):
                        lid, ttl, solo, lkeys = arr[i : i + 4]
                        if (type(lid) is not int or not 0 < lid <= MAX_LEASE_ID or type(ttl) is not int
                                or not 0 < ttl <= MAX_TTL_MS or type(solo) is not bool or type(lkeys) is not tuple
                                or any(type(k) is not bytes for k in lkeys) or (solo and len(lkeys) != 1)):
                            raise ValueError("a lease is not [id, ttl_ms, solo, [key, ...]]")
                        table[lid] = Lease(ttl, set(lkeys), solo)
                if len(table) != n_leases:
                    raise ValueError(f"it holds {len(table)} leases, its header says {n_leases}")
            shards = kv.shards
            keys: list[bytes] = []
            revision = kv.revision
            for arr in objs:
                if type(arr) is not tuple:
                    raise ValueError("keys and values are not an array")
                ks = arr[0::2]
                for k, v in zip(ks, arr[1::2], strict=True):  # (inline: this runs for every key of millions)
                    if type(k) is not bytes:
                        raise ValueError("a key is not bytes")
                    if type(v) is not bytes and (
                            type(v) is not tuple or len(v) != 4 or type(v[0]) is not bytes or type(v[1]) is not int
                            or type(v[2]) is not int or type(v[3]) is not int
                            or not 0 < v[1] <= v[2] <= revision or v[3] < 1):
                        raise ValueError("a value is neither bytes nor [value, create_revision, mod_revision, "
                                         "version]")
                    shards[crc32(k) >> SHARD_SHIFT][k] = v
                keys += ks
            kv.index = SortedList(keys)
            if len(kv.index) != count or sum(map(len, shards)) != count:
                raise ValueError(f"it holds {sum(map(len, shards))} keys, its header says {count}")
            of_key = kv.leases.of_key
            for lid, lease in kv.leases.table.items():
                for k in lease.keys:
                    if k in of_key or k not in shards[crc32(k) >> SHARD_SHIFT]:
                        raise ValueError(f"key {k!r:.40} of lease {lid} is not in the store, or on two leases")
                    of_key[k] = lid
        else:
            raise ValueError(f"state machine snapshot format {head[0]!r:.20} is not one this version reads "
                             f"(1 to {SNAPSHOT_FORMAT}): a newer zraft wrote it")
        kv.results = head[0] >= 4
        kv.sessions = {_int(c): Session(_int(v[0]), _int(v[1]), {_int(q): _reply(r) for q, r in v[2].items()})
                       for c, v in sessions.items()}
        if type(kv.applied) is not int:
            raise ValueError("bad header or data")
    except ValueError as e:
        if "format" in str(e):
            raise
        raise ValueError(f"state machine snapshot does not decode ({e})") from None
    except Exception as e:
        raise ValueError(f"state machine snapshot does not decode ({e!r})") from None


def _reply(r: Any) -> Any:
    """A session's recorded reply from a snapshot: a status, or [status, result]."""
    if type(r) is tuple and len(r) == 2 and (r[1] is None or type(r[1]) is bytes):
        return [_int(r[0]), r[1]]
    return _int(r)


def _int(v: Any) -> int:
    if type(v) is not int:
        raise ValueError(f"expected an integer, got {type(v).__name__}")
    return v
