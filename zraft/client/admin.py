"""The client's operator calls: membership (members, add a learner, promote, add or remove a node), leadership
transfer, and backups (a snapshot downloaded in chunks, several in flight, into a file made atomically).

A part of ``Client`` (``client.py``): its methods run on the one client object; what they use of the rest is
declared at the top of ``AdminCalls``.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import time
from typing import TYPE_CHECKING, Any

import zmq

from zraft.client.errors import Unavailable, ZraftError
from zraft.transport import codec, requests

if TYPE_CHECKING:
    from zraft.statemachine.backup import BackupInfo

_NOBLOCK = int(zmq.NOBLOCK)
BACKUP_WINDOW = 4
"""Backup chunk requests in flight at once (4 MiB): enough to keep a fast link busy, little to buffer."""


class AdminCalls:
    nodes: list[str]
    attempt_timeout: float
    leader: int | None
    """Index into ``nodes`` of the node believed to lead."""
    answered_by: int
    socks: list[zmq.Socket[bytes]]
    _ids: itertools.count[int]

    def _call(self, req: dict[str, Any], write: bool, any_node: bool = False,
              attempt_timeout: float | None = None, deadline: float | None = None) -> dict[str, Any]:
        raise NotImplementedError  # client.py

    def _wait(self, ids: set[int], until: float) -> dict[str, Any] | None:
        raise NotImplementedError  # client.py

    def _receive(self, timeout: float) -> list[dict[str, Any]]:
        raise NotImplementedError  # client.py

    def members(self) -> dict[str, Any]:
        """The leader's view: ``voters``, ``learners``, ``members`` (rows ``[id, address, "voter"|"learner",
        match index]``), ``leader``, ``last_index``, and ``pending_config_index``/``transferee`` while a change or
        a transfer is under way."""
        return self._call({"op": "members"}, write=False)

    def add_learner(self, node: int, address: str, key: str = "") -> None:
        """Add node ``node`` (reachable at ``address``, with Z85 public ``key`` in a secure cluster) as a learner:
        it receives the log but does not vote. Start it first with ``zraft node --join``."""
        self._call({"op": "add_learner", "node": node, "address": address, "key": key}, write=False)

    def promote(self, node: int) -> None:
        """Make learner ``node`` a voter; retried while it is still catching up, until the deadline."""
        self._call({"op": "promote", "node": node}, write=False)

    def add_node(self, node: int, address: str, key: str = "", timeout: float = 120.0) -> None:
        """Add a voter the safe way: as a learner, wait until it has caught up, then promote it."""
        self.add_learner(node, address, key)
        end = time.monotonic() + timeout
        while True:
            try:
                self.promote(node)
                return
            except Unavailable:
                if time.monotonic() >= end:
                    raise Unavailable(f"node {node} did not catch up within {timeout:.0f} s; it is a learner "
                                      "(promote it later, or remove it)") from None

    def remove_node(self, node: int) -> None:
        """Remove voter or learner ``node`` (the leader too: it hands over after the change commits)."""
        self._call({"op": "remove", "node": node}, write=False)

    def transfer_leadership(self, node: int) -> None:
        """Make voter ``node`` the leader (answered once it leads). Raises ``RequestRefused`` if it did not take
        over within an election timeout, or is not a voter."""
        self._call({"op": "transfer", "node": node}, write=False)
        self.leader = None  # found again (the new leader) by the next request

    def backup(self, path: str, timeout: float = 600.0, follow_symlink: bool = False) -> BackupInfo:
        """Write a backup of the whole cluster to ``path`` and return what it holds.

        The leader confirms its leadership as for a linearizable read, so the backup holds every write
        acknowledged before this call; it takes a snapshot at least that new (or uses its newest), and this client
        reads the snapshot's file from it in chunks of ``requests.MAX_BACKUP_CHUNK``, ``BACKUP_WINDOW`` at a time,
        into a new temporary file beside ``path`` (made by ``tempfile.mkstemp``: a name nobody else chose, mode
        0600, never a link planted in advance), fsyncs it, verifies its checksum over every byte and renames it into
        place. A damaged or incomplete download never takes the name ``path``. A ``path`` that is a symbolic link is
        refused unless ``follow_symlink`` (then the link's target is replaced). Raises ``Unavailable`` if the
        cluster did not serve it within ``timeout`` seconds, ``ZraftError`` if the file it sent is bad."""
        import tempfile

        from zraft.statemachine import backup as backups

        if os.path.islink(path):
            if not follow_symlink:
                raise ZraftError(f"{path} is a symbolic link (to {os.readlink(path)}): give the file's own path, or "
                                 "ask to follow the link")
            path = os.path.realpath(path)
        if os.path.isdir(path):
            raise ZraftError(f"{path} is a directory: give the backup file's name")

        end = time.monotonic() + timeout
        r = self._call({"op": "backup"}, write=False, attempt_timeout=5.0, deadline=timeout)
        node = self.answered_by
        index, term, size = r.get("index"), r.get("term"), r.get("size")
        if type(index) is not int or type(term) is not int or type(size) is not int:
            raise ZraftError(f"node {self.nodes[node]} answered the backup request without index, term and size")
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".part",
                                   dir=os.path.dirname(os.path.abspath(path)))
        try:
            self._download(node, index, term, size, fd, end)
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            os.unlink(tmp)
            raise
        os.close(fd)
        try:
            self.socks[node].send(codec.encode_client({"op": "backup_end", "id": next(self._ids), "index": index,
                                                       "term": term}), _NOBLOCK)
        except zmq.Again:
            pass  # the node closes it after a silence anyway
        try:
            info = backups.inspect(tmp)
            if (info.index, info.term) != (index, term):
                raise backups.BackupError(f"it holds index {info.index} term {info.term}, the node announced "
                                          f"{index} {term}")
        except backups.BackupError as e:
            os.unlink(tmp)
            raise ZraftError(f"the backup from {self.nodes[node]} is damaged and was not kept: {e}") from None
        os.replace(tmp, path)
        dfd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
        return dataclasses.replace(info, path=path)

    def _download(self, node: int, index: int, term: int, size: int, fd: int, end: float) -> None:
        """Read bytes [0, size) of backup (index, term) from node ``node`` into ``fd``: a window of chunk requests
        in flight, answers written in order, requests unanswered for an attempt timeout sent again."""
        sock = self.socks[node]
        step = requests.MAX_BACKUP_CHUNK
        asked: dict[int, tuple[int, float]] = {}  # request id -> (offset, when sent)
        got: dict[int, bytes] = {}  # offset -> data, not yet written (answers may overtake each other)
        written, next_off = 0, 0

        def ask(offset: int) -> None:
            rid = next(self._ids)
            req = {"op": "backup_chunk", "id": rid, "index": index, "term": term, "offset": offset,
                   "length": min(step, size - offset)}
            try:
                sock.send(codec.encode_client(req), _NOBLOCK)
            except zmq.Again:
                pass  # sent again after the attempt timeout
            asked[rid] = (offset, time.monotonic())

        while written < size:
            now = time.monotonic()
            if now >= end:
                raise Unavailable(f"the backup from {self.nodes[node]} did not finish in time ({written} of {size} "
                                  "bytes)")
            while len(asked) < BACKUP_WINDOW and next_off < size:
                ask(next_off)
                next_off += min(step, size - next_off)
            for rid, (offset, sent) in list(asked.items()):
                if now - sent >= self.attempt_timeout:
                    del asked[rid]
                    ask(offset)
            for r in self._receive(min(self.attempt_timeout, end - now)):
                want = asked.pop(r["id"], None)
                if want is None:
                    continue
                if not r.get("ok"):
                    raise ZraftError(f"node {self.nodes[node]} stopped serving the backup: {r.get('error', '')}: "
                                     f"{r.get('message', '')}")
                data = r.get("data")
                offset = want[0]
                if not isinstance(data, bytes) or r.get("offset") != offset or len(data) != min(step, size - offset):
                    raise ZraftError(f"node {self.nodes[node]} answered a backup chunk at {offset} with the wrong "
                                     "offset or length")
                if offset >= written:
                    got[offset] = data
            while written in got:
                data = got.pop(written)
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                written += len(data)
