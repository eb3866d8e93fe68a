"""The key-value store's leases as commands (``Op.LEASE_GRANT``, ``LEASE_REVOKE``, ``LEASE_EXPIRE``, ``EXPIRE``):
granting and revoking a lease, a key's own TTL, and the keys a lease takes with it when it goes. The lease table
itself is ``leases.py``; when a lease expires is the leader's (``zraft.server.lessor``).

A part of ``KVStore`` (``kv.py``): its methods run on the one store object; what they use of the rest is declared at
the top of ``LeasePart``. The store's constants are read from ``kv`` when a method runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from zlib import crc32

from msgpack import unpackb

from zraft.statemachine import kv as _kv
from zraft.statemachine import leases as lease_table
from zraft.statemachine.leases import MAX_LEASE_ID, MAX_TTL_MS, MIN_LEASE_TTL_MS, Leases

if TYPE_CHECKING:
    from zraft.statemachine.kvsnapshot import SnapshotImage


class LeasePart:
    shards: list[dict[bytes, Any]]
    leases: Leases
    result: bytes | None
    _expiring: bool

    def _put(self, h: int, key: bytes, value: bytes | None, img: SnapshotImage | None, keep: bool = False) -> None:
        raise NotImplementedError  # kv.py

    def _next_revision(self) -> None:
        raise NotImplementedError  # kv.py

    def _grant_or_revoke(self, op: int, value: bytes, img: SnapshotImage | None) -> int:
        """_kv.LEASE_GRANT (``self.result``: the id) or _kv.LEASE_REVOKE (its keys deleted, at one revision)."""
        leases = self.leases
        try:
            arg = unpackb(value) if op == _kv.LEASE_GRANT else int(value)
        except Exception:
            return _kv.BAD_COMMAND
        if op == _kv.LEASE_REVOKE:
            if type(arg) is not int or arg not in leases.table or leases.table[arg].solo:
                return _kv.NO_LEASE
            self._delete_keys(leases.revoke(arg) or [], img)
            return _kv.OK
        if not (type(arg) is list and len(arg) == 2 and type(arg[0]) is int and type(arg[1]) is int
                and 0 <= arg[0] <= MAX_LEASE_ID and MIN_LEASE_TTL_MS <= arg[1] <= MAX_TTL_MS):
            return _kv.BAD_COMMAND
        lease_id, ttl = arg
        if lease_id in leases.table:
            return _kv.LEASE_EXISTS
        if len(leases) >= lease_table.MAX_LEASES:
            return _kv.LEASE_LIMIT
        self.result = b"%d" % leases.grant(lease_id, ttl)
        return _kv.OK

    def _key_ttl(self, key: bytes, value: bytes, img: SnapshotImage | None) -> int:
        """EXPIRE: give ``key`` its own TTL, drop it (PERSIST), or delete the key (a TTL of at most 0)."""
        try:
            ttl = unpackb(value)
        except Exception:
            return _kv.BAD_COMMAND
        if not (ttl is None or (type(ttl) is int and ttl <= MAX_TTL_MS)):
            return _kv.BAD_COMMAND
        h = crc32(key) >> _kv.SHARD_SHIFT
        if key not in self.shards[h]:
            return _kv.NOT_FOUND
        leases = self.leases
        if ttl is None:
            return _kv.OK if leases.detach(key) else _kv.NOT_SET
        if ttl <= 0:
            self._delete_keys([key], img)
            return _kv.OK
        if len(leases) >= lease_table.MAX_LEASES:
            return _kv.LEASE_LIMIT
        leases.detach(key)
        leases.attach(key, leases.grant(0, ttl, solo=True))
        return _kv.OK

    def _expire_leases(self, value: bytes, img: SnapshotImage | None) -> None:
        """LEASE_EXPIRE: the leader found these leases expired; drop those still here, and delete their keys at one
        revision."""
        try:
            ids = unpackb(value)
        except Exception:
            return
        if type(ids) is not list:
            return
        keys: list[bytes] = []
        for lease_id in ids:
            if type(lease_id) is int:
                keys += self.leases.revoke(lease_id) or ()
        self._expiring = True  # (their events say so: Redis's "expired" notifications)
        try:
            self._delete_keys(keys, img)
        finally:
            self._expiring = False

    def _delete_keys(self, keys: list[bytes], img: SnapshotImage | None) -> None:
        """Delete these keys (all present), at the next revision if there are any."""
        if keys:
            self._next_revision()
            for k in keys:
                self._put(crc32(k) >> _kv.SHARD_SHIFT, k, None, img)
