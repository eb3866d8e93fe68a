"""Leases: the replicated part (what every node applies the same way) -- which leases exist, their TTLs, and the
keys attached to each. When a lease is revoked or expires, its keys are deleted in the same log entry.

A lease holds no time. When it expires is decided by the leader alone (``zraft.server.lessor``), from its own
clock and the keepalives it received, and committed through the log as a ``LEASE_EXPIRE`` command: a follower's
clock never deletes anything, and every node deletes the same keys at the same index.

Two kinds share the table: a lease granted to a client (etcd's), which any number of keys may be attached to and
which lives until it is revoked or expires; and a key's own TTL (Redis's ``EXPIRE``, ``SET ... PX``: ``solo``), a
lease with that one key, dropped when the key is deleted, overwritten without ``KEEPTTL`` or ``PERSIST``-ed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from zraft.transport.requests import MAX_LEASE_ID as MAX_LEASE_ID
from zraft.transport.requests import MAX_TTL_MS as MAX_TTL_MS
from zraft.transport.requests import MIN_LEASE_TTL_MS as MIN_LEASE_TTL_MS
from zraft.transport.requests import MIN_TTL_MS as MIN_TTL_MS

MAX_LEASES = 1_000_000
"""Most leases held at once (granted ones and keys' own TTLs together): a grant past it is refused."""
MAX_KEYS_PER_LEASE = 10_000
"""Most keys attached to one granted lease: its expiry is one log entry, which must not stall any node's loop."""


@dataclass(slots=True)
class Lease:
    ttl_ms: int
    keys: set[bytes] = field(default_factory=set)
    solo: bool = False
    """A key's own TTL: dropped with its key."""


class LeaseSaver(Protocol):
    """A snapshot image being taken: told about a lease before it changes (copy-on-write)."""

    def save_lease(self, lease_id: int, lease: Lease | None) -> None: ...


class Leases:
    """The lease table of one store. Written only while the store applies a command."""

    def __init__(self) -> None:
        self.table: dict[int, Lease] = {}
        self.of_key: dict[bytes, int] = {}
        """The lease each attached key is attached to."""
        self.next_id = 1
        """The id the next lease granted without one asked gets (the same on every node)."""
        self.image: LeaseSaver | None = None
        self.granted: Callable[[int, int], None] | None = None
        """Told of each lease made (id, TTL), and ``dropped`` of each lease dropped: the leader's deadlines
        (``zraft.server.lessor``), which change nothing here."""
        self.dropped: Callable[[int], None] | None = None

    def __len__(self) -> int:
        return len(self.table)

    def _save(self, lease_id: int) -> None:
        if self.image is not None:
            self.image.save_lease(lease_id, self.table.get(lease_id))

    def grant(self, lease_id: int, ttl_ms: int, solo: bool = False) -> int:
        """Make a lease (``lease_id`` 0: the next free id); its id, or 0 if the id is taken or the table full."""
        if len(self.table) >= MAX_LEASES:
            return 0
        if not lease_id:
            lease_id = self.next_id
            while lease_id in self.table:
                lease_id += 1
        elif lease_id in self.table:
            return 0
        self.next_id = max(self.next_id, lease_id + 1) if lease_id < MAX_LEASE_ID else self.next_id
        self._save(lease_id)
        self.table[lease_id] = Lease(ttl_ms, set(), solo)
        if self.granted is not None:
            self.granted(lease_id, ttl_ms)
        return lease_id

    def attach(self, key: bytes, lease_id: int) -> bool:
        """Attach ``key`` (which exists) to ``lease_id`` (which exists and has room: see ``room``)."""
        old = self.of_key.get(key)
        if old == lease_id:
            return True
        if old is not None:
            self.detach(key)
        self._save(lease_id)
        self.table[lease_id].keys.add(key)
        self.of_key[key] = lease_id
        return True

    def room(self, lease_id: int, key: bytes) -> bool:
        """Whether ``key`` may be attached to the lease (it exists, and is not full)."""
        lease = self.table.get(lease_id)
        return lease is not None and not lease.solo and (
            len(lease.keys) < MAX_KEYS_PER_LEASE or key in lease.keys)

    def detach(self, key: bytes) -> int:
        """``key`` is deleted, or written without its lease: the lease it was attached to (0: none). A key's own TTL
        goes with it."""
        lease_id = self.of_key.pop(key, 0)
        if lease_id:
            self._save(lease_id)
            lease = self.table[lease_id]
            lease.keys.discard(key)
            if lease.solo:
                del self.table[lease_id]
                if self.dropped is not None:
                    self.dropped(lease_id)
        return lease_id

    def revoke(self, lease_id: int) -> list[bytes] | None:
        """Drop a lease: the keys attached to it (sorted: deleted in the same order on every node), for the store
        to delete; None if there is no such lease."""
        lease = self.table.get(lease_id)
        if lease is None:
            return None
        self._save(lease_id)
        del self.table[lease_id]
        if self.dropped is not None:
            self.dropped(lease_id)
        of_key = self.of_key
        for k in lease.keys:
            del of_key[k]
        return sorted(lease.keys)

    def state(self) -> tuple[int, dict[int, tuple[int, bool, frozenset[bytes]]]]:
        """Everything that must agree across nodes (for tests)."""
        return self.next_id, {i: (ls.ttl_ms, ls.solo, frozenset(ls.keys)) for i, ls in self.table.items()}
