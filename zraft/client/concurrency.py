"""Locks and leader elections on leases, transactions and watches (etcd's concurrency package, in this client):
no polling, and a fencing token for every holder.

A contender grants a lease, kept alive by a thread of its own (``KeepAlive``), and creates a key of its own under
the lock's prefix, attached to the lease (a transaction: only if that key does not exist). The holder is the
contender whose key has the smallest ``create_revision``; the others each watch the key just before their own and
wait for it to be deleted (its holder released it, or its lease expired). So the lock passes in the order the
contenders came, and no one wakes a crowd.

**The fencing token** is the holder's ``create_revision``: a revision, which only grows. The next holder's is
larger. Its key exists exactly as long as it holds the lock (the key goes when the lease does), so a write made
with ``Lock.put`` or ``Lock.txn`` -- a transaction that compares the holder key's ``create_revision`` with the token
-- is applied only while the holder still holds the lock: a holder that was paused or cut off until its lease
expired can never write after the next one took over, however late its write arrives. A plain Redis lock
(``SET lock me NX PX 30000``) promises none of that: a holder paused past its TTL wakes up believing it holds the
lock, and its writes go through alongside the next holder's.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from zraft.client import txn as t
from zraft.client.errors import LeaseExpired, ZraftError
from zraft.transport.requests import Compare, TxnOp

if TYPE_CHECKING:
    from zraft.client.client import Client
    from zraft.client.data import TxnResult


class LockLost(ZraftError):
    """The lock's lease expired (or was revoked): this contender no longer holds it."""


class KeepAlive:
    """A thread that keeps a lease alive every third of its TTL, with a client of its own; ``lost`` is set once the
    lease is gone (or could not be renewed within its TTL)."""

    def __init__(self, client: Client, lease: int, ttl: float) -> None:
        from zraft.client.client import Client as ClientType

        self.lease = lease
        self.ttl = ttl
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._client = ClientType(client.nodes, deadline=ttl, attempt_timeout=min(client.attempt_timeout, ttl / 3),
                                  keys=client.keys)
        self.renewed = time.monotonic()
        """When the last acknowledged keepalive was sent (the lease is safe until then plus ``safe_for(ttl)``)."""
        self._thread = threading.Thread(target=self._run, name=f"zraft-keepalive-{lease}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stop.wait(self.ttl / 3):
                sent = time.monotonic()
                try:
                    self._client.keepalive(self.lease)
                    self.renewed = sent
                except LeaseExpired:
                    self.lost.set()
                    return
                except ZraftError:
                    if time.monotonic() - self.renewed > self.ttl:
                        self.lost.set()
                        return
        finally:
            self._client.close()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(self.ttl)


class Lock:
    """A distributed lock: ``with client.lock("jobs", ttl=10) as lock:`` holds it for the block (``lock.token`` is the
    fencing token; ``lock.put`` and ``lock.txn`` write only while it is held). ``acquire``/``release`` do it by hand."""

    def __init__(self, client: Client, name: str | bytes, ttl: float = 10.0, prefix: bytes = b"__lock/") -> None:
        self.client = client
        self.prefix = prefix + (name.encode() if isinstance(name, str) else name) + b"/"
        self.ttl = ttl
        self.lease = 0
        self.key = b""
        self.token = 0
        """The fencing token: this holder's key's ``create_revision`` (0 until acquired)."""
        self.keepalive: KeepAlive | None = None

    def acquire(self, timeout: float | None = None, value: bytes = b"") -> int:
        """Wait until this contender holds the lock (``TimeoutError`` after ``timeout`` seconds, and it leaves the
        queue); returns the fencing token."""
        cl = self.client
        deadline = None if timeout is None else time.monotonic() + timeout
        self.lease = cl.grant(self.ttl)
        self.keepalive = KeepAlive(cl, self.lease, self.ttl)
        self.key = self.prefix + b"%016x" % self.lease
        try:
            r = cl.txn([t.create_revision(self.key) == 0], [t.put(self.key, value, self.lease)], [t.get(self.key)])
            mine = r.revision if r.succeeded else r.results[0].create_revision
            self._wait_turn(mine, deadline)
        except BaseException:
            self.release()
            raise
        self.token = mine
        return mine

    def _wait_turn(self, mine: int, deadline: float | None) -> None:
        cl = self.client
        while True:
            if self.keepalive is not None and self.keepalive.lost.is_set():
                raise LockLost(f"the lease of {self.key!r} expired while waiting for the lock")
            rr = cl.range(prefix=self.prefix)
            ahead = [kv for kv in rr.kvs if kv.create_revision < mine]
            if not ahead:
                return
            before = max(ahead, key=lambda kv: kv.create_revision)
            with cl.watch(before.key, start_revision=rr.revision + 1) as w:
                while True:
                    left = None if deadline is None else deadline - time.monotonic()
                    if left is not None and left <= 0:
                        raise TimeoutError(f"the lock {self.prefix!r} was not free within the timeout")
                    if any(e.type == "delete" for e in w.get(min(1.0, left) if left is not None else 1.0)):
                        break
                    if self.keepalive is not None and self.keepalive.lost.is_set():
                        raise LockLost(f"the lease of {self.key!r} expired while waiting for the lock")

    def release(self) -> None:
        """Give the lock up (or leave the queue): the key goes with the lease."""
        if self.keepalive is not None:
            self.keepalive.stop()
            self.keepalive = None
        if self.lease:
            try:
                self.client.revoke(self.lease)
            except LeaseExpired:
                pass
            self.lease = 0
        self.token = 0

    def fence(self) -> Compare:
        """The compare that holds only while this holder holds the lock (its key, made at its token, is there)."""
        if not self.token:
            raise LockLost("the lock is not held")
        return t.create_revision(self.key) == self.token

    def txn(self, compares: list[Compare], then: list[TxnOp], otherwise: list[TxnOp] | None = None) -> TxnResult:
        """A transaction that runs ``then`` only if the lock is still held (and ``compares`` hold)."""
        return self.client.txn([self.fence(), *compares], then, otherwise)

    def put(self, key: bytes | str, value: bytes | str) -> int:
        """Write ``key`` only if the lock is still held: its revision, or ``LockLost``."""
        r = self.txn([], [t.put(key, value)])
        if not r.succeeded:
            raise LockLost(f"the lock {self.prefix!r} was lost (token {self.token}): the write was not made")
        return r.revision

    @property
    def lost(self) -> bool:
        """Whether the lease is known to be gone (the lock is then no longer held)."""
        return self.keepalive is None or self.keepalive.lost.is_set()

    def __enter__(self) -> Lock:
        self.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


class Election:
    """A leader election: ``campaign(value)`` waits until this candidate leads (it is the lock's holder, its value
    the leader's value); ``leader()`` is the current leader's value; ``observe()`` yields the leader's value each time
    it changes (watching, not polling); ``resign()`` steps down. The leader's ``token`` fences its writes, as a
    lock's does (``Lock.put``/``Lock.txn`` on ``election.lock``)."""

    def __init__(self, client: Client, name: str | bytes, ttl: float = 10.0) -> None:
        self.client = client
        self.lock = Lock(client, name, ttl, prefix=b"__election/")

    def campaign(self, value: bytes | str, timeout: float | None = None) -> int:
        """Wait until this candidate leads, with ``value`` as the leader's value; returns its fencing token."""
        return self.lock.acquire(timeout, value.encode() if isinstance(value, str) else value)

    def resign(self) -> None:
        self.lock.release()

    def leader(self) -> tuple[bytes, int] | None:
        """The current leader's (value, token), or None when no one leads."""
        r = self.client.range(prefix=self.lock.prefix)
        if not r.kvs:
            return None
        first = min(r.kvs, key=lambda kv: kv.create_revision)
        return first.value or b"", first.create_revision

    def observe(self, timeout: float | None = None) -> Iterator[tuple[bytes, int] | None]:
        """The leader (value, token) now, then each time it changes (None: no leader), until ``timeout`` seconds
        pass without a change (None: forever)."""
        cl = self.client
        r = cl.range(prefix=self.lock.prefix)
        leaders = {kv.key: (kv.value or b"", kv.create_revision) for kv in r.kvs}
        current = min(leaders.values(), key=lambda x: x[1]) if leaders else None
        yield current
        with cl.watch(prefix=self.lock.prefix, start_revision=r.revision + 1) as w:
            while True:
                batch = w.get(timeout if timeout is not None else 3600.0)
                if not batch:
                    if timeout is not None:
                        return
                    continue
                for e in batch:
                    if e.type == "put":
                        leaders[e.key] = (e.value or b"", e.create_revision)
                    else:
                        leaders.pop(e.key, None)
                now = min(leaders.values(), key=lambda x: x[1]) if leaders else None
                if now != current:
                    current = now
                    yield current
