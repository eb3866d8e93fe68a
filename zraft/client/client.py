"""The zraft client library.

    c = Client(["127.0.0.1:5551", "127.0.0.1:5552", "127.0.0.1:5553"])
    c.put(b"k", b"v"); c.append(b"k", b"w"); c.get(b"k")  # -> b"vw"

Finding the leader: a probe goes to every node at once and the first answer that names a leader wins (the
zguide's "shotgun", used for probes only, never for writes). The client remembers the leader, follows "not the
leader, try N" answers, and on a timeout tries again elsewhere with backoff until the request's deadline.

Writes are exactly-once: the client has a random id and numbers its writes; a retried write carries the same
number, and the cluster answers a duplicate from its session table instead of applying it twice. When the
deadline passes without an answer, a write raises ``OutcomeUnknown``: it may or may not have happened. A
definite refusal (a value over the limit) raises ``RequestRefused``.

Membership (``members``, ``add_learner``, ``promote``, ``add_node``, ``remove_node``, ``transfer_leadership``) goes
to the leader like a write and is answered once the change has committed. Each is idempotent (adding a member
that is there, removing one that is not, promoting a voter: OK), so it is retried through leader changes and
answers that were lost; a change the cluster can never make raises ``RequestRefused``.
"""

from __future__ import annotations

import itertools
import random
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import zmq

from zraft.client.admin import AdminCalls
from zraft.client.concurrency import Election, Lock
from zraft.client.data import DataCalls, KeyValue, RangeResult
from zraft.client.errors import LeaseExpired, OutcomeUnknown, RequestRefused, Unavailable, ZraftError
from zraft.client.leases import LeaseCalls
from zraft.transport import codec
from zraft.transport.security import ClientKeys, client_socket
from zraft.transport.zmq_transport import tune_tcp

if TYPE_CHECKING:
    pass

__all__ = ["ATTEMPT_TIMEOUT", "DEFAULT_DEADLINE", "Client", "KeyValue", "OutcomeUnknown", "RangeResult",
           "RequestRefused", "Unavailable", "ZraftError"]

DEFAULT_DEADLINE = 10.0
ATTEMPT_TIMEOUT = 1.0


_NOBLOCK = int(zmq.NOBLOCK)
MAX_BACKOFF_S = 0.1
"""Longest pause between retries. Retries mostly happen during an election, which ends within about a second:
a longer pause would add itself to the time to the first answer from the new leader."""
PROBE_EVERY_S = 0.1
"""While no node names a leader, all nodes are probed again this often."""
PACE_SLOT_S = 0.002
"""With a rate, ``closed_loop`` sends what falls due in the next 2 ms together (fewer, larger frames)."""


def _b(x: bytes | str) -> bytes:
    return x.encode() if isinstance(x, str) else x


class Client(AdminCalls, DataCalls, LeaseCalls):
    def __init__(self, nodes: Iterable[str], deadline: float = DEFAULT_DEADLINE,
                 attempt_timeout: float = ATTEMPT_TIMEOUT, client_id: int | None = None,
                 keys: ClientKeys | None = None) -> None:
        """``keys``: this client's CurveZMQ pair and each node's public key (a secure cluster needs them;
        ``launch.Cluster.client()`` and ``ClientKeys.load`` find them)."""
        self.nodes = [n.removeprefix("tcp://") for n in nodes]
        if not self.nodes:
            raise ValueError("a client needs at least one node address")
        self.deadline = deadline
        self.attempt_timeout = attempt_timeout
        self.client_id = client_id or random.SystemRandom().randrange(1, 1 << 62)
        self._seq = 0
        self._unfinished: set[int] = set()
        self._inbox: dict[int, dict[str, Any]] = {}
        self._ids = itertools.count(1)
        self.leader: int | None = None  # index into self.nodes
        self.answered_by = 0
        """The index of the node that answered the last request."""
        self.ctx = zmq.Context()
        self.keys = keys
        self.socks: list[zmq.Socket[bytes]] = []
        self.poller = zmq.Poller()
        for addr in self.nodes:
            if keys is not None and addr not in keys.servers:
                raise ValueError(f"no public key for node {addr} among the client's keys")
            self._open(addr, keys.servers[addr] if keys is not None else None)

    def _open(self, addr: str, server: bytes | None) -> None:
        s = self.ctx.socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, 0)
        tune_tcp(s)
        if self.keys is not None and server is not None:
            client_socket(s, self.keys.own, server)
        s.connect(f"tcp://{addr}")
        self.socks.append(s)
        self.poller.register(s, zmq.POLLIN)

    def _learn(self, reply: dict[str, Any]) -> int | None:
        """The index of the node a reply names as leader; a node added since the client started (not in its
        list) is connected to first, if its key is known (or the cluster is insecure)."""
        addr = reply.get("leader_addr", "")
        idx = self._index_of(addr)
        if idx is not None or not addr or not reply.get("leader"):
            return idx
        server = None
        if self.keys is not None:
            server = self.keys.server_key(reply["leader"], addr)
            if server is None:
                return None
        self.nodes.append(addr)
        self._open(addr, server)
        return len(self.nodes) - 1

    def close(self) -> None:
        self.ctx.destroy(linger=0)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ------------------------------------------------------------------ operations

    def put(self, key: bytes | str, value: bytes | str, *, lease: int = 0, ttl: float | None = None) -> int:
        """Set ``key`` to ``value``; returns the revision of the write (the key's new ``mod_revision``). ``lease``:
        attach the key to this lease (it is deleted when the lease expires or is revoked; ``LeaseExpired`` if the
        lease is gone); ``ttl``: give the key its own TTL, in seconds. Without either, the key leaves any lease or
        TTL it had."""
        if not lease and ttl is None:
            return self._write("put", _b(key), _b(value))
        req: dict[str, Any] = {"op": "put", "key": _b(key), "value": _b(value)}
        if lease:
            req["lease"] = lease
        if ttl is not None:
            req["ttl_ms"] = max(1, round(ttl * 1000))
        rev: int = self._session_call(req).get("rev", 0)
        return rev

    def append(self, key: bytes | str, value: bytes | str) -> int:
        """Append ``value`` to ``key``'s value (a missing key is empty); returns the revision of the write."""
        return self._write("append", _b(key), _b(value))

    def delete(self, key: bytes | str) -> int:
        """Delete ``key`` (nothing to do if it is not there); returns the revision the store was left at."""
        return self._write("delete", _b(key), b"")

    def lock(self, name: bytes | str, ttl: float = 10.0) -> Lock:
        """A distributed lock with fencing tokens (``zraft.client.concurrency``): ``with client.lock("jobs") as
        lock: lock.put(...)``."""
        return Lock(self, name, ttl)

    def election(self, name: bytes | str, ttl: float = 10.0) -> Election:
        """A leader election (``zraft.client.concurrency``): campaign, leader, observe, resign."""
        return Election(self, name, ttl)

    def get(self, key: bytes | str, stale: bool = False) -> bytes | None:
        """A linearizable read; with ``stale=True`` any node answers from its own state, possibly out of date."""
        r = self._call({"op": "get", "key": _b(key), "stale": stale}, write=False, any_node=stale)
        v: bytes | None = r.get("value")
        return v

    def run_many(self, ops: Iterable[tuple[str, bytes | str, bytes | str]]) -> list[bytes | None]:
        """Send many requests at once (pipelining) and wait for all: ``ops`` are ("put"|"append", key, value),
        ("delete", key, _) or ("get", key, _). Returns, in order, the value of each get and None for each write.
        The requests are concurrent: each write applies exactly once, but in no promised order among them, and a
        get need not see a write sent in the same call. Requests that fail or time out are retried one by one,
        writes with their original sequence numbers."""
        reqs: list[dict[str, Any]] = []
        for op, key, value in ops:
            req: dict[str, Any] = {"op": op, "key": _b(key), "id": next(self._ids)}
            if op in ("put", "append", "delete"):
                self._seq += 1
                self._unfinished.add(self._seq)
                req.update(value=_b(value), client=self.client_id, seq=self._seq)
            elif op != "get":
                raise ValueError(f"unknown operation {op!r}")
            reqs.append(req)
        results: dict[int, dict[str, Any]] = {}
        try:
            if self.leader is None:
                self.find_leader(self.attempt_timeout)
            if self.leader is not None:
                sock = self.socks[self.leader]
                ack = min(self._unfinished) if self._unfinished else 0
                for req in reqs:
                    if "seq" in req:
                        req["ack"] = ack
                self._send_batches(sock, reqs)
                waiting = {r["id"] for r in reqs}
                end = time.monotonic() + self.attempt_timeout
                while waiting:
                    r = self._wait(waiting, end)
                    if r is None:
                        break
                    waiting.discard(r["id"])
                    if r.get("ok"):
                        results[r["id"]] = r
            out: list[bytes | None] = []
            for req in reqs:
                r = results.get(req["id"])
                if r is None:  # not answered, or answered with an error: retry alone (same seq for a write)
                    if "seq" in req:
                        req["ack"] = min(self._unfinished)
                    try:
                        r = self._call(req, write="seq" in req)
                    except OutcomeUnknown:
                        self.new_session()
                        raise
                if "seq" in req:
                    self._unfinished.discard(req["seq"])
                out.append(r.get("value") if req["op"] == "get" else None)
            return out
        finally:
            for req in reqs:
                if "seq" in req:
                    self._unfinished.discard(req["seq"])

    def closed_loop(self, next_op: Callable[[], tuple[str, bytes, bytes]], depth: int, until: float,
                    rate: float | None = None) -> list[float]:
        """Load generation: keep ``depth`` requests in flight until ``until`` (a ``time.monotonic()`` value),
        sending the next request (``next_op()``: ("put"|"append"|"delete"|"get", key, value)) as each one is
        answered; with ``rate``, send at most that many per second. Returns each request's latency in seconds.
        Requests answered with an error (a leader change, say) are retried like any other call, and their latency
        includes the retry. Gets are linearizable."""
        lat: list[float] = []
        out: dict[int, tuple[float, dict[str, Any]]] = {}
        if self.leader is None:
            self.find_leader(self.deadline)
        interval = 1.0 / rate if rate else 0.0
        next_send = time.monotonic()

        def make_one(ack: int) -> dict[str, Any]:
            op, key, value = next_op()
            req: dict[str, Any] = {"op": op, "key": key, "id": next(self._ids)}
            if op != "get":
                self._seq += 1
                self._unfinished.add(self._seq)
                req.update(value=value, client=self.client_id, seq=self._seq, ack=ack)
            out[req["id"]] = (time.perf_counter(), req)
            return req

        def finish(rid: int, ok: bool) -> None:
            t0, req = out.pop(rid)
            if not ok:
                self._call(req, write="seq" in req)  # redirects, backoff, deadline: the ordinary path
            if "seq" in req:
                self._unfinished.discard(req["seq"])
            lat.append(time.perf_counter() - t0)

        try:
            while True:
                now = time.monotonic()
                batch = []
                # The lowest unanswered write (computed once per batch: every new one is above it).
                ack = min(self._unfinished) if self._unfinished else self._seq + 1
                while now < until and len(out) < depth and now + PACE_SLOT_S >= next_send:
                    batch.append(make_one(ack))
                    if interval:
                        next_send = max(next_send + interval, now - 1.0)
                if batch:  # everything that can go now goes in one frame
                    self._send_batches(self.socks[self.leader if self.leader is not None else 0], batch)
                if not out and now >= until:
                    return lat
                wait_s = max(0.0, min(next_send - now, 0.05)) if interval and len(out) < depth and now < until \
                    else self.attempt_timeout
                got = False
                for r in self._receive(wait_s):
                    if r.get("id") in out:
                        got = True
                        if not r.get("ok") and r.get("error") == codec.Err.NOT_LEADER:
                            self.leader = self._learn(r)
                        finish(r["id"], bool(r.get("ok")))
                if not got and wait_s >= self.attempt_timeout and out:
                    for rid in sorted(out):  # silence: retry the oldest requests the ordinary way
                        if time.perf_counter() - out[rid][0] >= self.attempt_timeout:
                            finish(rid, False)
        except OutcomeUnknown:
            self.new_session()
            raise
        finally:
            for _, req in out.values():
                if "seq" in req:
                    self._unfinished.discard(req["seq"])

    def status(self, node: int) -> dict[str, Any]:
        """The ``status`` answer of one node (an index into the address list)."""
        rid = next(self._ids)
        self.socks[node].send(codec.encode_client({"op": "status", "id": rid}), zmq.NOBLOCK)
        r = self._wait({rid}, time.monotonic() + self.attempt_timeout)
        if r is None:
            raise Unavailable(f"node {self.nodes[node]} did not answer")
        return r

    def status_many(self, timeout: float) -> list[dict[str, Any] | None]:
        """Ask every node at once; each node's status, or None if it did not answer within ``timeout``."""
        ids: dict[int, int] = {}
        for i, sock in enumerate(self.socks):
            rid = next(self._ids)
            try:
                sock.send(codec.encode_client({"op": "status", "id": rid}), zmq.NOBLOCK)
            except zmq.Again:
                continue
            ids[rid] = i
        out: list[dict[str, Any] | None] = [None] * len(self.socks)
        until = time.monotonic() + timeout
        while ids:
            r = self._wait(set(ids), until)
            if r is None:
                break
            out[ids.pop(r["id"])] = r
        return out

    def status_all(self) -> list[dict[str, Any]]:
        """Every node's status, for scripts (like ``etcdctl endpoint status -w json``): one map per address,
        ``{"endpoint": address, "status": {...}}`` or ``{"endpoint": address, "error": why}``."""
        out: list[dict[str, Any]] = []
        for addr, answer in zip(self.nodes, self.status_many(self.attempt_timeout), strict=True):
            if answer is None:
                out.append({"endpoint": addr, "error": f"node {addr} did not answer"})
                continue
            st = dict(answer)
            st.pop("id", None)
            st.pop("ok", None)
            out.append({"endpoint": addr, "status": st})
        return out

    def find_leader(self, deadline: float | None = None) -> int | None:
        """Probe every node at once; return the index of the leader the first answer names (or None)."""
        end = time.monotonic() + (self.attempt_timeout if deadline is None else deadline)
        while time.monotonic() < end:
            rid = next(self._ids)
            for s in self.socks:
                try:
                    s.send(codec.encode_client({"op": "probe", "id": rid}), zmq.NOBLOCK)
                except zmq.Again:
                    pass
            probe_end = min(end, time.monotonic() + PROBE_EVERY_S)
            while True:
                r = self._wait({rid}, probe_end)
                if r is None:
                    break
                idx = self._learn(r)
                if idx is not None:
                    self.leader = idx
                    return idx
        return None

    # ------------------------------------------------------------------ machinery

    def _write(self, op: str, key: bytes, value: bytes) -> int:
        """A write in this session, retried until answered; returns its revision (0 from a cluster that has not
        begun revisions)."""
        rev: int = self._session_call({"op": op, "key": key, "value": value}).get("rev", 0)
        return rev

    def _session_call(self, req: dict[str, Any]) -> dict[str, Any]:
        """Send the write ``req`` as this session's next one, retried (with the same sequence number) until it is
        answered; returns the answer."""
        self._seq += 1
        seq = self._seq
        self._unfinished.add(seq)
        ack = min(self._unfinished)
        try:
            return self._call({**req, "client": self.client_id, "seq": seq, "ack": ack}, write=True)
        except OutcomeUnknown:
            self.new_session()
            raise
        finally:
            self._unfinished.discard(seq)

    def new_session(self) -> None:
        """Start a new session (a new client id, sequence numbers from 1). Done after a write whose outcome stays
        unknown: the cluster refuses a session's later writes when it cannot tell whether an earlier one, which
        the client gave up on, was applied (it answers session_expired). The unknown write is not retried."""
        self.client_id = random.SystemRandom().randrange(1, 1 << 62)
        self._seq = 0
        self._unfinished.clear()

    def _index_of(self, addr: str) -> int | None:
        try:
            return self.nodes.index(addr)
        except ValueError:
            return None

    def _call(self, req: dict[str, Any], write: bool, any_node: bool = False,
              attempt_timeout: float | None = None, deadline: float | None = None) -> dict[str, Any]:
        """Send ``req`` to the leader (``any_node``: to each node in turn) until it is answered or the deadline
        passes; the answering node's index is left in ``self.answered_by``."""
        limit = self.deadline if deadline is None else deadline
        end = time.monotonic() + limit
        attempt = self.attempt_timeout if attempt_timeout is None else attempt_timeout
        rid = next(self._ids)
        req["id"] = rid
        payload = codec.encode_client(req)
        backoff = 0.02
        rotate = random.randrange(len(self.nodes))
        last_error = "no answer"
        while time.monotonic() < end:
            if any_node:
                target = rotate % len(self.nodes)
                rotate += 1
            else:
                if self.leader is None:
                    self.find_leader(min(self.attempt_timeout, max(0.0, end - time.monotonic())))
                target = self.leader if self.leader is not None else rotate % len(self.nodes)
                rotate += 1
            try:
                self.socks[target].send(payload, zmq.NOBLOCK)
            except zmq.Again:
                pass
            r = self._wait({rid}, min(end, time.monotonic() + attempt))
            if r is None:
                last_error = f"no answer from {self.nodes[target]}"
                self.leader = None
            elif r.get("ok"):
                self.answered_by = target
                return r
            else:
                err = r.get("error", "")
                last_error = f"{err}: {r.get('message', '')}"
                if err in (codec.Err.TOO_LARGE, codec.Err.BAD_REQUEST, codec.Err.CONFIG_REFUSED,
                           codec.Err.TRANSFER_FAILED, codec.Err.LEASE_LIMIT, codec.Err.LEASE_EXISTS,
                           codec.Err.BAD_COMMAND):
                    raise RequestRefused(r.get("message", err))
                if err == codec.Err.NO_LEASE:
                    raise LeaseExpired(r.get("message", err))
                if err == codec.Err.SESSION_EXPIRED:
                    raise OutcomeUnknown(r.get("message", err))
                hint = self._learn(r)
                self.leader = hint
                if err == codec.Err.NOT_LEADER and hint is not None:
                    continue  # follow the redirect at once
            time.sleep(min(backoff, max(0.0, end - time.monotonic())))
            backoff = min(backoff * 2, MAX_BACKOFF_S)
        if write:
            raise OutcomeUnknown(f"no answer within {limit:.1f} s ({last_error}); the write may or may "
                                 "not have been applied")
        raise Unavailable(f"no answer within {limit:.1f} s ({last_error})")

    def _send_batches(self, sock: zmq.Socket[bytes], reqs: list[dict[str, Any]]) -> None:
        """Send requests in batch frames (at most ``codec.MAX_BATCH`` requests and about 1 MiB each)."""
        lo = 0
        while lo < len(reqs):
            hi, size = lo, 0
            while hi < len(reqs) and hi - lo < codec.MAX_BATCH and (size < 1 << 20 or hi == lo):
                size += len(reqs[hi]["key"]) + len(reqs[hi].get("value", b"")) + 64
                hi += 1
            try:
                sock.send(codec.encode_client_batch(reqs[lo:hi]), _NOBLOCK)
            except zmq.Again:
                return  # the rest are retried after the attempt timeout
            lo = hi

    def _wait(self, ids: set[int], until: float) -> dict[str, Any] | None:
        """The next answer to one of ``ids`` (answers to others that arrive meanwhile are dropped; several
        answers to ``ids`` in one frame are kept for the next calls)."""
        for rid in [rid for rid in self._inbox if rid in ids]:
            return self._inbox.pop(rid)
        self._inbox.clear()
        while True:
            left = until - time.monotonic()
            if left <= 0:
                return None
            found = None
            for r in self._receive(left):
                if r.get("id") in ids:
                    if found is None:
                        found = r
                    else:
                        self._inbox[r["id"]] = r
            if found is not None:
                return found

    def _receive(self, timeout: float) -> list[dict[str, Any]]:
        """Wait up to ``timeout`` seconds for answers; then every answer that has arrived (malformed frames are
        skipped)."""
        out: list[dict[str, Any]] = []
        for sock, _ in self.poller.poll(int(timeout * 1000) + 1):
            while True:
                try:
                    payload = sock.recv(_NOBLOCK)
                except zmq.Again:
                    break
                try:
                    out.extend(codec.decode_replies(payload))
                except codec.ProtocolError:
                    continue
        return out
