"""Attacks on a live 3-node cluster with nothing but a ZeroMQ DEALER socket (issue 11's list): each one is sent,
then an acknowledged-data canary is read back, every node's memory is compared with before, and the cluster must
still serve.

The cluster here runs without authentication (``--insecure``), so that forged Raft and snapshot messages reach the
decoder and the core: these are the defences behind authentication, for whatever does reach a node (a stolen node
key, a bug, an operator who chose --insecure). tests/test_security.py checks that with keys, strangers and client
keys do not get that far."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import msgpack
import psutil
import pytest
import zmq
from clusterutil import leader_id, stop_cluster, wait_until

from zraft.client import OutcomeUnknown
from zraft.core import ClusterConfig, Entry, Message, MsgType, Snapshot
from zraft.statemachine import kv
from zraft.storage import OsDisk
from zraft.storage import snapshots as snapfiles
from zraft.tools import launch
from zraft.transport import codec

MEMORY_SLACK = 60 << 20
"""Most a node's resident memory may grow over an attack (allocator noise, caches), far below what the attacks
cost before they were bounded (hundreds of MB to GBs)."""


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[launch.Cluster]:
    c = launch.start(3, str(tmp_path / "data"), ports=launch.free_ports(3), secure=False)
    try:
        with c.client() as cl:
            cl.put(b"canary", b"acknowledged")
        yield c
    finally:
        stop_cluster(c)


class Attacker:
    def __init__(self, c: launch.Cluster) -> None:
        self.c = c
        self.ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self.socks: dict[int, zmq.Socket[bytes]] = {}

    def sock(self, node: int) -> zmq.Socket[bytes]:
        s = self.socks.get(node)
        if s is None:
            s = self.socks[node] = self.ctx.socket(zmq.DEALER)
            s.setsockopt(zmq.LINGER, 0)
            s.setsockopt(zmq.SNDHWM, 0)
            if self.c.cluster_id:  # an insider: it announces the cluster's identity, so its frames reach the core
                s.setsockopt(zmq.METADATA, f"X-Cluster:{self.c.cluster_id}".encode())
            s.connect(f"tcp://{self.c.node(node).address}")
        return s

    def send(self, node: int, payload: bytes) -> None:
        self.sock(node).send(payload)

    def raft(self, node: int, *args: object, **kw: object) -> None:
        self.send(node, codec.encode_raft(Message(*args, **kw)))  # type: ignore[arg-type]

    def drain(self, node: int, quiet: float = 0.5) -> int:
        """Read every answer until the node has been quiet for ``quiet`` seconds; how many."""
        n = 0
        s = self.sock(node)
        while s.poll(int(quiet * 1000)):
            s.recv()
            n += 1
        return n

    def close(self) -> None:
        self.ctx.destroy(linger=0)


@pytest.fixture
def attacker(cluster: launch.Cluster) -> Iterator[Attacker]:
    a = Attacker(cluster)
    try:
        yield a
    finally:
        a.close()


def rss(c: launch.Cluster) -> dict[int, int]:
    return {n.id: psutil.Process(n.pid).memory_info().rss for n in c.nodes}


def peak_rss(c: launch.Cluster) -> dict[int, int]:
    """Each node's peak resident memory so far (VmHWM)."""
    out = {}
    for n in c.nodes:
        with open(f"/proc/{n.pid}/status") as f:
            line = next(x for x in f if x.startswith("VmHWM:"))
        out[n.id] = int(line.split()[1]) << 10
    return out


def status(c: launch.Cluster, node: int) -> dict[str, object]:
    with c.client() as cl:
        return cl.status(node - 1)


def healthy(c: launch.Cluster, before: dict[int, int] | None = None) -> None:
    """Every node alive and answering, the canary readable, a new write acknowledged, memory bounded."""
    for n in c.nodes:
        assert psutil.Process(n.pid).status() != psutil.STATUS_ZOMBIE, f"node {n.id} died"
    with c.client() as cl:
        assert cl.get(b"canary") == b"acknowledged"
        cl.put(b"after", b"attack")
        for i in range(3):
            assert cl.status(i)["node"] == i + 1
    if before is not None:
        after = rss(c)
        for nid, b in before.items():
            assert after[nid] - b < MEMORY_SLACK, f"node {nid} grew from {b >> 20} to {after[nid] >> 20} MiB"


def follower_of(c: launch.Cluster, ld: int) -> int:
    return next(n.id for n in c.nodes if n.id != ld)


def test_wrong_types_in_every_field_kill_no_node(cluster: launch.Cluster, attacker: Attacker) -> None:
    before = rss(cluster)
    req = {"op": "put", "id": 1, "client": 9, "seq": 1, "ack": 1, "key": b"k", "value": b"v"}
    weird: list[object] = [[], {}, [1], {"a": 1}, None, True, -1, 2**64 - 1, 1.5, "s", b"b"]
    frames = []
    for field in (*req, "stale"):
        for w in weird:
            frames.append(msgpack.packb(["C", {**req, field: w}]))
            frames.append(msgpack.packb(["C", [{**req, field: w}, {"op": "probe", "id": 2}]]))
    raft = ["R", 1, 1, 1, 2, 1, 0, 0, [], 0, False, 0, None, None]
    for i in range(1, len(raft)):
        for w in weird:
            frames.append(msgpack.packb([*raft[:i], w, *raft[i + 1:]]))
    chunk: list[object] = ["S", 1, 1, 2, 1, 1, 1, 10, 0, b"x"]
    ack: list[object] = ["A", 1, 2, 1, 1, 1, 1, 0, 0]
    for i in range(1, 10):
        for w in weird:
            frames.append(msgpack.packb([*chunk[:i], w, *chunk[i + 1:]]))
            frames.append(msgpack.packb([*ack[:i], w, *ack[i + 1:]]))
    for w in weird:
        frames.append(msgpack.packb([w, {}]))
        frames.append(msgpack.packb(["C", w]))
    for node in (1, 2, 3):
        for f in frames:
            attacker.send(node, f)
    for node in (1, 2, 3):
        attacker.drain(node)
    healthy(cluster, before)
    assert all(status(cluster, n)["bad_frames"] for n in (1, 2, 3))  # type: ignore[operator]


def test_messages_of_several_frames_are_refused_and_the_connection_goes_on(cluster: launch.Cluster,
                                                                          attacker: Attacker) -> None:
    node = 2
    bad = int(status(cluster, node)["bad_frames"])  # type: ignore[call-overload]
    s = attacker.sock(node)
    s.send_multipart([b"a", b"b", b"c"])
    s.send_multipart([codec.encode_client({"op": "probe", "id": 7}), b"and more"])  # a request, then a stray part
    s.send(codec.encode_client({"op": "probe", "id": 8}))
    assert s.poll(5000), "the node stopped answering this connection"
    answers = codec.decode_replies(s.recv())
    assert [a["id"] for a in answers] == [8]  # the frames were not taken for one another; the bad ones dropped
    assert int(status(cluster, node)["bad_frames"]) >= bad + 2  # type: ignore[call-overload]
    healthy(cluster)


def test_forged_heartbeat_at_the_leaders_term_is_dropped(cluster: launch.Cluster, attacker: Attacker) -> None:
    ld = leader_id(cluster)
    st = status(cluster, ld)
    other = follower_of(cluster, ld)
    for _ in range(2):
        attacker.raft(ld, MsgType.HEARTBEAT, other, ld, st["term"], commit=10**6)
        attacker.raft(ld, MsgType.APPEND, other, ld, st["term"], 0, 1, (Entry(2, st["term"], 0, b"x"),), 10**6)
    wait_until(lambda: status(cluster, ld).get("dropped_messages", 0) >= 4, what="the forged messages dropped")
    assert leader_id(cluster) == ld
    healthy(cluster)


def test_forged_append_from_a_node_that_is_not_the_leader_is_dropped(cluster: launch.Cluster,
                                                                      attacker: Attacker) -> None:
    ld = leader_id(cluster)
    f = follower_of(cluster, ld)
    third = next(n.id for n in cluster.nodes if n.id not in (ld, f))
    st = status(cluster, f)
    last = int(st["last_index"])  # type: ignore[call-overload]
    cmd = kv.encode_command(kv.PUT, 4242, 1, 1, b"canary", b"forged")
    # From a member that is not the leader of this term, and from a stranger with a higher term.
    attacker.raft(f, MsgType.APPEND, third, f, st["term"], st["term"], last, (Entry(last + 1, st["term"], 0, cmd),),
                  last + 1)
    attacker.raft(f, MsgType.APPEND, 7, f, int(st["term"]) + 5, st["term"], last,  # type: ignore[call-overload]
                  (Entry(last + 1, int(st["term"]) + 5, 0, cmd),), last + 1)  # type: ignore[call-overload]
    wait_until(lambda: status(cluster, f).get("dropped_messages", 0) >= 2, what="the forged appends dropped")
    with cluster.client() as cl:
        assert cl.get(b"canary", stale=True) == b"acknowledged"
        for i in range(3):
            assert cl.status(i)["term"] == st["term"]
    healthy(cluster)


def test_forged_ack_past_the_leaders_log_does_not_commit_a_write_only_it_holds(cluster: launch.Cluster,
                                                                               attacker: Attacker) -> None:
    ld = leader_id(cluster)
    followers = [n.id for n in cluster.nodes if n.id != ld]
    st = status(cluster, ld)
    for f in followers:
        os.kill(cluster.node(f).pid, signal.SIGSTOP)
    try:
        for f in followers:
            attacker.raft(ld, MsgType.APPEND_RESP, f, ld, st["term"], index=int(st["last_index"]) + 100)
        with cluster.client(deadline=1.5) as cl, pytest.raises(OutcomeUnknown):
            cl.put(b"only-on-the-leader", b"x")
        s2 = status(cluster, ld)
        assert s2["commit"] == st["commit"] and s2.get("dropped_messages", 0) >= 2
    finally:
        for f in followers:
            os.kill(cluster.node(f).pid, signal.SIGCONT)
    healthy(cluster)
    # Every node can restart from what it stored (no "commit past the last entry").
    for n in cluster.nodes:
        os.kill(n.pid, signal.SIGKILL)
        psutil.Process(n.pid).wait(10)
        cluster.start_node(n.id)
    with cluster.client(deadline=20) as cl:
        assert cl.get(b"canary") == b"acknowledged"


def test_a_term_that_cannot_be_counted_past_is_refused(cluster: launch.Cluster, attacker: Attacker) -> None:
    for node in (1, 2, 3):
        for t in (MsgType.PRE_VOTE, MsgType.VOTE, MsgType.HEARTBEAT):
            attacker.raft(node, t, 1 if node != 1 else 2, node, 2**63 - 1, 2**63 - 1, 2**63 - 1)
    for node in (1, 2, 3):
        attacker.drain(node)
    healthy(cluster)
    with cluster.client() as cl:
        assert all(int(cl.status(i)["term"]) < 100 for i in range(3))


def test_one_forged_term_at_the_top_leaves_a_cluster_that_elects(cluster: launch.Cluster, attacker: Attacker) -> None:
    """The frame of the issue (a heartbeat answer at term 2**62 from a follower to the leader): it once took the
    leader to MAX_TERM, whence no node could campaign, for good (on disk too). Now its term is refused (the leader's
    term goes to the start of the reserve at most), a leader is elected within 5 s, and writes go on, with a
    trillion elections left."""
    from zraft.core import MAX_TERM
    from zraft.core.raft import TERM_LIMIT, TERM_STEP

    ld = leader_id(cluster)
    f = follower_of(cluster, ld)
    attacker.send(ld, msgpack.packb(["R", 1, 8, f, ld, 1 << 62, 0, 0, [], 0, False, 0, None, None]))
    sent = time.monotonic()
    with cluster.client(deadline=1) as cl:
        wait_until(lambda: int(cl.status(ld - 1)["term"]) >= TERM_LIMIT or  # type: ignore[call-overload]
                   bool(cl.status(ld - 1).get("dropped_messages")), what="the forged frame to arrive")

        def a_leader_takes_writes() -> bool:
            try:
                cl.put(b"after-forgery", b"ok")
            except Exception:
                return False
            return True

        wait_until(a_leader_takes_writes, timeout=5, what="a leader that takes writes, within 5 s")
        elected = time.monotonic() - sent
        terms = [int(cl.status(i)["term"]) for i in range(3)]  # type: ignore[call-overload]
    assert elected < 5 and max(terms) < TERM_LIMIT + 100 * TERM_STEP and MAX_TERM - max(terms) > 1 << 39, terms
    healthy(cluster)


def _snapshot_file(tmp: Path, index: int, term: int, data: bytes) -> bytes:
    snap = snapfiles.write(OsDisk(), str(tmp), Snapshot(index, term, ClusterConfig((1, 2, 3)), data))
    return Path(snap.data.path).read_bytes()


def test_forged_snapshots_never_replace_a_nodes_state(cluster: launch.Cluster, attacker: Attacker,
                                                      tmp_path: Path) -> None:
    ld = leader_id(cluster)
    f = follower_of(cluster, ld)
    term = int(status(cluster, f)["term"])  # type: ignore[call-overload]
    snap_dir = os.path.join(cluster.node(f).data_dir, "snap")
    before = rss(cluster)
    # 1. A stranger's (not the leader's) chunk: dropped.
    evil = kv.KVStore()
    evil.apply(1, kv.encode_command(kv.PUT, 1, 1, 1, b"canary", b"forged"))
    good_file = _snapshot_file(tmp_path, 10**6, term, kv.KVStore.restore(evil.snapshot()).snapshot())
    other = next(n.id for n in cluster.nodes if n.id not in (ld, f))
    attacker.send(f, codec.encode_chunk(codec.SnapChunk(other, f, term, 10**6, term, len(good_file), 0, good_file)))
    # 2. In the leader's name, announcing 1 TiB: refused before anything is written.
    attacker.send(f, codec.encode_chunk(codec.SnapChunk(ld, f, term, 10**7, term, 1 << 40, 0, b"x" * 1000)))
    # 3. In the leader's name, a well-formed file whose store bytes do not decode: refused, not saved.
    bad_file = _snapshot_file(tmp_path, 10**6 + 1, term, b"\x93\x02not a store")
    attacker.send(f, codec.encode_chunk(codec.SnapChunk(ld, f, term, 10**6 + 1, term, len(bad_file), 0, bad_file)))
    # 4. In the leader's name, a store at another index than the snapshot says.
    wrong = _snapshot_file(tmp_path, 10**6 + 2, term, evil.snapshot())
    attacker.send(f, codec.encode_chunk(codec.SnapChunk(ld, f, term, 10**6 + 2, term, len(wrong), 0, wrong)))
    acks = []
    s = attacker.sock(f)
    while s.poll(1500):
        acks.append(s.recv())
    assert not [n for n in os.listdir(snap_dir) if n.startswith(f"{10**6:016x}") or n.startswith(f"{10**7:016x}")
                or n.startswith(f"{10**6 + 1:016x}") or n.startswith(f"{10**6 + 2:016x}")]
    with cluster.client() as cl:
        assert cl.get(b"canary", stale=True) == b"acknowledged"
        assert int(cl.status(f - 1)["snapshot_index"]) < 10**6
    healthy(cluster, before)
    # The follower still restarts from its own data.
    os.kill(cluster.node(f).pid, signal.SIGKILL)
    psutil.Process(cluster.node(f).pid).wait(10)
    cluster.start_node(f)
    launch.wait_ready(cluster, 30)  # a fresh interpreter takes a while to start on a loaded machine
    healthy(cluster)


def test_frames_of_tiny_containers_are_refused_without_growing_memory(cluster: launch.Cluster,
                                                                     attacker: Attacker) -> None:
    ld = leader_id(cluster)
    before = rss(cluster)
    peak = peak_rss(cluster)
    # ["C", [[[], [], ... 2000], ... 2000]]: 4 million empty arrays in 4 MB, each a Python list of 56 bytes
    nested = msgpack.packb(["C", [[[] for _ in range(2000)] for _ in range(2000)]])
    maps = msgpack.packb(["C", [[{} for _ in range(2000)] for _ in range(2000)]])  # and empty maps
    big = b"\x92\xa1C\xdd" + (5 << 20).to_bytes(4, "big") + b"\x90" * (5 << 20)  # over the client limit
    assert len(nested) < codec.MAX_CLIENT_BATCH_MESSAGE and len(maps) < codec.MAX_CLIENT_BATCH_MESSAGE
    t0 = time.monotonic()
    for payload in (nested, maps, big) * 3:
        attacker.send(ld, payload)
    assert attacker.drain(ld, quiet=1.0) == 9
    assert time.monotonic() - t0 < 15
    assert leader_id(cluster) == ld
    healthy(cluster, before)
    assert peak_rss(cluster)[ld] - peak[ld] < MEMORY_SLACK  # not even for a moment


def test_forged_read_confirmations_and_unanswerable_reads_hold_no_memory(cluster: launch.Cluster,
                                                                         attacker: Attacker) -> None:
    ld = leader_id(cluster)
    f = follower_of(cluster, ld)
    term = status(cluster, f)["term"]
    before = rss(cluster)
    for i in range(200_000):
        attacker.raft(f, MsgType.READ_INDEX_RESP, ld, f, 0, index=10**9 + i, context=i + 1)
        if i % 20_000 == 0:
            attacker.drain(f, quiet=0.01)
    # Reads to a follower whose leader is frozen: each is answered (failed, retry) within the read timeout.
    os.kill(cluster.node(ld).pid, signal.SIGSTOP)
    try:
        s = attacker.sock(f)
        for i in range(20_000):
            s.send(codec.encode_client({"op": "get", "id": i + 1, "key": b"canary"}))
        answered = 0
        end = time.monotonic() + 30
        while answered < 20_000 and time.monotonic() < end:
            if s.poll(1000):
                answered += len(codec.decode_replies(s.recv()))
        assert answered == 20_000
        assert status(cluster, f)["pending_reads"] == 0
    finally:
        os.kill(cluster.node(ld).pid, signal.SIGCONT)
    healthy(cluster, before)
    assert term is not None


def test_pipelined_large_gets_never_read_hold_the_nodes_memory_bounded(tmp_path: Path) -> None:
    """10,000 pipelined GETs of a 1 MiB value on a connection that never reads: the node once made every reply at
    once (1 GB of RSS at 1,000, and lost its leadership). Now it stops reading the connection and makes the replies
    as the reader takes them: RSS stays under 200 MB on the leader and on a follower, the leader keeps leading,
    other clients are served, and the replies that are read are right."""
    import socket

    import redis

    from zraft.server.redis import protocol as resp

    c = launch.start(3, str(tmp_path / "d"), ports=launch.free_ports(3), resp_ports=launch.free_ports(3))
    try:
        ld = leader_id(c)
        big = os.urandom(1 << 19) * 2
        port = {n.id: int(n.resp.rpartition(":")[2]) for n in c.nodes}
        redis.Redis(port=port[ld], protocol=2).set("big", big)
        term = c.client().status(ld - 1)["term"]
        for node in (ld, follower_of(c, ld)):
            s = socket.create_connection(("127.0.0.1", port[node]))
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)
            try:
                s.sendall(resp.command("GET", "big") * 10_000)
                proc = psutil.Process(c.node(node).pid)
                peak = 0
                other = redis.Redis(port=port[node], protocol=2, socket_timeout=5)
                end = time.monotonic() + 5  # watch the node for 5 s while the replies are not read
                while time.monotonic() < end:
                    peak = max(peak, proc.memory_info().rss)
                    assert other.get("big") == big  # everyone else is served meanwhile
                assert peak < 200 << 20, f"node {node} reached {peak >> 20} MiB"
                s.settimeout(10)
                want = b"$%d\r\n%b\r\n" % (len(big), big)
                got = b""
                while len(got) < 3 * len(want):
                    chunk = s.recv(1 << 20)
                    assert chunk, "the node closed the connection"
                    got += chunk
                assert got[:3 * len(want)] == want * 3
            finally:
                s.close()
        with c.client() as cl:
            st = cl.status(ld - 1)
            assert st["role"] == "leader" and st["term"] == term
    finally:
        stop_cluster(c)

