"""CurveZMQ authentication with real node processes: strangers get nothing, a client key cannot speak for a node,
a node's key speaks only for that node, client keys can be added while the cluster runs."""

from __future__ import annotations

import functools
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import zmq
from clusterutil import leader_id, wait_until

from zraft.client import Client, Unavailable, ZraftError
from zraft.core import Message, MsgType
from zraft.tools import launch
from zraft.transport import codec
from zraft.transport.security import (
    ClientKeys,
    KeyPair,
    KeysError,
    client_socket,
    create_keypair,
    load_keypair,
    load_public,
)

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def cluster(cluster: launch.Cluster) -> launch.Cluster:
    """The shared cluster (tests/conftest.py), holding an acknowledged canary."""
    with cluster.client() as cl:
        cl.put(b"canary", b"acknowledged")
    return cluster


def dealer(ctx: zmq.Context[zmq.Socket[bytes]], address: str, own: KeyPair | None = None,
           server: bytes | None = None, identity: bytes = b"") -> zmq.Socket[bytes]:
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    if identity:
        s.setsockopt(zmq.IDENTITY, identity)
    if own is not None and server is not None:
        client_socket(s, own, server)
    s.connect(f"tcp://{address}")
    return s


def status(c: launch.Cluster, node: int) -> dict[str, object]:
    with c.client() as cl:
        return cl.status(node - 1)


PUT = codec.encode_client({"op": "put", "id": 1, "client": 99, "seq": 1, "ack": 1, "key": b"canary",
                           "value": b"stranger"})
GET = codec.encode_client({"op": "get", "id": 2, "key": b"canary", "stale": True})


def test_a_stranger_gets_no_answer_and_changes_nothing(cluster: launch.Cluster, tmp_path: Path) -> None:
    ld = leader_id(cluster)
    addr = cluster.node(ld).address
    keys = cluster.client_keys()
    assert keys is not None
    stranger = create_keypair(str(tmp_path / "stranger"), "stranger")
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    try:
        plain = dealer(ctx, addr)  # no CURVE at all
        forged = dealer(ctx, addr, stranger, keys.servers[addr])  # CURVE with a key nobody allowed
        for s in (plain, forged):
            for payload in (PUT, GET):
                try:  # once the handshake has failed the socket has no connection to queue on: do not block
                    s.send(payload, zmq.NOBLOCK)
                except zmq.Again:
                    pass
            assert not s.poll(1500), "a stranger got an answer"
    finally:
        ctx.destroy(linger=0)
    wait_until(lambda: int(status(cluster, ld)["refused_connections"]) > 0,  # type: ignore[call-overload]
               what="the unknown key refused by the ZAP handler")
    with cluster.client() as cl:
        assert cl.get(b"canary") == b"acknowledged"
    # The library without keys fails the same way: nothing answers it.
    with Client(cluster.addresses, deadline=1.5, attempt_timeout=0.5) as cl, pytest.raises(Unavailable):
        cl.get(b"canary")


def test_a_client_key_cannot_send_peer_messages(cluster: launch.Cluster) -> None:
    ld = leader_id(cluster)
    addr = cluster.node(ld).address
    keys = cluster.client_keys()
    assert keys is not None
    st = status(cluster, ld)
    other = next(n.id for n in cluster.nodes if n.id != ld)
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    try:
        s = dealer(ctx, addr, keys.own, keys.servers[addr])
        s.send(GET)
        assert s.poll(5000)  # the client key is a client
        s.recv()
        for m in (Message(MsgType.HEARTBEAT, other, ld, int(st["term"])),  # type: ignore[call-overload]
                  Message(MsgType.APPEND_RESP, other, ld, int(st["term"]), index=10**6),  # type: ignore[call-overload]
                  Message(MsgType.VOTE, other, ld, 10**6, 10**6, 10**6)):
            s.send(codec.encode_raft(m))
        s.send(codec.encode_chunk(codec.SnapChunk(other, ld, 1, 5, 1, 10, 0, b"x")))
        n = 0
        while s.poll(1000):
            r = codec.decode_reply(s.recv())
            assert r["error"] == "bad_request" and "only the cluster's nodes" in r["message"]
            n += 1
        assert n == 4
    finally:
        ctx.destroy(linger=0)
    after = status(cluster, ld)
    assert after.get("dropped_messages", 0) == st.get("dropped_messages", 0)  # never reached the core
    assert after["term"] == st["term"] and after["role"] == "leader"
    assert int(after["bad_frames"]) >= 4  # type: ignore[call-overload]


def test_a_node_key_speaks_only_for_its_node(cluster: launch.Cluster) -> None:
    ld = leader_id(cluster)
    f = next(n.id for n in cluster.nodes if n.id != ld)
    third = next(n.id for n in cluster.nodes if n.id not in (ld, f))
    assert cluster.keys_dir is not None
    third_keys = load_keypair(os.path.join(cluster.keys_dir, f"node-{third}.key_secret"))
    keys = cluster.client_keys()
    assert keys is not None
    addr = cluster.node(f).address
    st = status(cluster, f)
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    try:
        s = dealer(ctx, addr, third_keys, keys.servers[addr])
        # As the leader (it is not): a heartbeat with a huge commit and an append in the leader's name.
        s.send(codec.encode_raft(Message(MsgType.HEARTBEAT, ld, f, int(st["term"]), commit=10**6)))  # type: ignore[call-overload]
        s.send(codec.encode_raft(Message(MsgType.APPEND, ld, f, int(st["term"]) + 1)))  # type: ignore[call-overload]
        wait_until(lambda: int(status(cluster, f)["bad_frames"]) >= 2,  # type: ignore[call-overload]
                   what="the impersonation refused")
    finally:
        ctx.destroy(linger=0)
    after = status(cluster, f)
    assert after["term"] == st["term"] and after["leader"] == ld


def _reached(cl: Client, node: int, commit: int) -> bool:
    return int(cl.status(node - 1)["commit"]) >= commit


def test_a_client_key_cannot_take_a_nodes_route(cluster: launch.Cluster) -> None:
    """The hijack: a client-key holder connects to each follower with the leader's old routing id (``node-<id>``)
    and asks for status, twice. It once took the leader's connection over on every follower (ROUTER_HANDOVER) and
    deposed the leader for good. Now the leader stays the leader for 30 s, every follower keeps up with it, and
    every write is acknowledged within a second."""
    ld = leader_id(cluster)
    keys = cluster.client_keys()
    assert keys is not None
    followers = [n for n in cluster.nodes if n.id != ld]
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    try:
        for attempt in range(2):
            socks = [dealer(ctx, n.address, keys.own, keys.servers[n.address], identity=b"node-%d" % ld)
                     for n in followers]
            for s in socks:
                s.send(codec.encode_client({"op": "status", "id": 3}))
            for s in socks:
                # The first round is answered as a client. The second may not be: a routing id still in use (the
                # first round's connection, until the node sees it closed) is never handed to a newcomer, whose
                # frames are ignored meanwhile -- which is the point.
                if attempt == 0:
                    assert s.poll(5000)
                    assert codec.decode_reply(s.recv())["ok"]
                elif s.poll(1000):
                    assert codec.decode_reply(s.recv())["ok"]
            for s in socks:
                s.close(linger=0)
    finally:
        ctx.destroy(linger=0)
    term = status(cluster, ld)["term"]
    end = time.monotonic() + 30
    i = 0
    with cluster.client(deadline=5) as cl:
        while time.monotonic() < end:
            i += 1
            t0 = time.monotonic()
            cl.put(b"hijack", b"%d" % i)
            assert time.monotonic() - t0 < 1.0, f"write {i} took {time.monotonic() - t0:.2f} s"
            st = cl.status(ld - 1)
            assert st["role"] == "leader" and st["term"] == term, st
            for n in followers:  # every link carries messages: each follower has what the leader committed
                caught_up = functools.partial(_reached, cl, n.id, int(st["commit"]))  # type: ignore[call-overload]
                wait_until(caught_up, timeout=1.0, what=f"node {n.id} to reach the leader's commit index")
    assert i >= 20


def test_a_backup_never_writes_through_a_link_or_a_file_made_in_advance(cluster: launch.Cluster,
                                                                          tmp_path: Path) -> None:
    """``backup FILE`` once opened ``FILE.part`` without O_EXCL/O_NOFOLLOW: a symlink planted there had its target
    overwritten with the snapshot, and a ``.part`` made in advance by another user (mode 0666) kept its owner and
    mode and became the backup, every value readable. Now the temporary file is mkstemp's (a fresh name, 0600),
    and a FILE that is a symbolic link is refused unless the caller asks to follow it."""
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    out = tmp_path / "b.zbak"
    planted = tmp_path / "b.zbak.part"
    planted.symlink_to(victim)
    early = tmp_path / "other.zbak.part"
    early.write_bytes(b"")
    early.chmod(0o666)
    with cluster.client() as cl:
        info = cl.backup(str(out))
        assert info.keys >= 1 and stat.S_IMODE(out.stat().st_mode) == 0o600 and not out.is_symlink()
        assert victim.read_bytes() == b"precious" and planted.is_symlink()
        cl.backup(str(tmp_path / "other.zbak"))
        assert stat.S_IMODE((tmp_path / "other.zbak").stat().st_mode) == 0o600 and early.read_bytes() == b""
        link = tmp_path / "link.zbak"
        link.symlink_to(victim)
        with pytest.raises(ZraftError, match="is a symbolic link"):
            cl.backup(str(link))
        assert victim.read_bytes() == b"precious"
        cl.backup(str(link), follow_symlink=True)  # asked for: the link's target is replaced
        assert link.is_symlink() and victim.read_bytes()[:8] != b"precious"
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".part") and n not in (planted.name, early.name)]


def test_a_client_key_added_while_the_cluster_runs_is_accepted(cluster: launch.Cluster, tmp_path: Path) -> None:
    assert cluster.keys_dir is not None
    mine = create_keypair(str(tmp_path / "mine"), "alice")
    base = cluster.client_keys()
    assert base is not None
    keys = ClientKeys(mine, base.servers)
    with Client(cluster.addresses, keys=keys, deadline=1.5, attempt_timeout=0.5) as cl, pytest.raises(Unavailable):
        cl.get(b"canary")
    allowed = Path(cluster.keys_dir) / "clients" / "alice.key"
    allowed.write_bytes((tmp_path / "mine" / "alice.key").read_bytes())
    with Client(cluster.addresses, keys=keys) as cl:
        assert cl.get(b"canary") == b"acknowledged"
        cl.put(b"from", b"alice")
    allowed.unlink()  # and removed: new connections are refused
    with Client(cluster.addresses, keys=keys, deadline=1.5, attempt_timeout=0.5) as cl, pytest.raises(Unavailable):
        cl.get(b"canary")


def test_files_are_private_and_the_shell_uses_the_keys(cluster: launch.Cluster) -> None:
    assert cluster.keys_dir is not None
    assert stat.S_IMODE(os.stat(cluster.keys_dir).st_mode) == 0o700
    # The nodes run with the usual umask 022; still keys, logs, segments, lock and identity files are 0600.
    with cluster.client() as cl:
        cl.run_many([("put", b"k%d" % i, b"v" * 100) for i in range(500)])
    for root, dirs, files in os.walk(cluster.data_dir):
        for d in dirs:
            assert stat.S_IMODE(os.stat(os.path.join(root, d)).st_mode) == 0o700
        for name in files:
            assert stat.S_IMODE(os.stat(os.path.join(root, name)).st_mode) == 0o600, name
    assert stat.S_IMODE(os.stat(cluster.file).st_mode) == 0o600
    import json

    doc = json.loads(Path(cluster.file).read_text())
    assert doc["keys"] == cluster.keys_dir
    keys = cluster.client_keys()
    assert keys is not None
    for n in doc["nodes"]:  # each node's public key, as in its certificate; never a secret
        assert n["public_key"].encode() == keys.servers[n["address"]]
    assert "secret" not in Path(cluster.file).read_text()
    r = subprocess.run([sys.executable, str(ROOT / "client_shell.py"), "--cluster", cluster.file, "get", "canary"],
                       capture_output=True, text=True, timeout=60)
    assert (r.returncode, r.stdout) == (0, "acknowledged\n")
    nodes = ",".join(cluster.addresses)
    r = subprocess.run([sys.executable, str(ROOT / "client_shell.py"), "--nodes", nodes, "--keys", cluster.keys_dir,
                        "get", "canary"], capture_output=True, text=True, timeout=60)
    assert (r.returncode, r.stdout) == (0, "acknowledged\n")


def test_a_node_on_a_network_address_without_keys_refuses_to_start(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "zraft", "node", "--id", "1", "--peers",
                        "1=10.77.0.1:5551,2=10.77.0.2:5551",
                        "--data-dir", str(tmp_path / "n1")], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert r.returncode == 2
    assert "is not a loopback address: give --keys DIR" in r.stderr and "--insecure" in r.stderr


def test_the_shell_survives_a_node_that_answers_nonsense() -> None:
    """A fake node that answers every request with wrong-typed fields: the shell says so and exits non-zero."""
    import threading

    import msgpack

    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    fake = ctx.socket(zmq.ROUTER)
    fake.setsockopt(zmq.LINGER, 0)
    port = fake.bind_to_random_port("tcp://127.0.0.1")
    stop = threading.Event()
    answers = [{"ok": True, "value": 5}, {"ok": "yes"}, {"ok": True, "value": [b"x"], "found": True},
               {"ok": False, "error": ["not_leader"], "leader_addr": 7}, {"ok": True, "role": {}, "term": "x"}]
    # Well-typed, but not what a status answer holds: no fields at all; a role of 10,000 characters and a
    # match map of mixed values.
    odd_status = [{"ok": True}, {"ok": True, "node": 3, "role": "r" * 10_000, "match": {"a": 1, "b": b"x", "c": [1]}}]
    only: list[dict[str, object]] = []  # when set, the fake gives this answer to everything

    def serve() -> None:
        n = 0
        while not stop.is_set():
            if not fake.poll(50):
                continue
            ident, payload = fake.recv_multipart()
            body = msgpack.unpackb(payload)
            reqs = body[1] if isinstance(body[1], list) else [body[1]]
            for r in reqs:
                n += 1
                answer = only[0] if only else answers[n % len(answers)]
                fake.send_multipart([ident, msgpack.packb(["C", {**answer, "id": r["id"]}])])

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        for cmd in (["get", "k"], ["put", "k", "v"], ["leader"], ["status"]):
            r = subprocess.run([sys.executable, str(ROOT / "client_shell.py"), "--nodes", f"127.0.0.1:{port}",
                                "--timeout", "1.5", *cmd], capture_output=True, text=True, timeout=60)
            assert "Traceback" not in r.stderr, r.stderr
            if cmd == ["status"]:  # the table shows the node as not answering
                assert r.returncode == 0 and "(no answer)" in r.stdout
            else:
                assert r.returncode != 0 and r.stderr, cmd
        for answer in odd_status:  # shown as far as it goes, never a crash
            only[:] = [answer]
            r = subprocess.run([sys.executable, str(ROOT / "client_shell.py"), "--nodes", f"127.0.0.1:{port}",
                                "--timeout", "1.5", "status"], capture_output=True, text=True, timeout=60)
            assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
            row = r.stdout.splitlines()[1]
            assert f"127.0.0.1:{port}" in row and "(no answer)" not in row and len(row) < 200, r.stdout
    finally:
        stop.set()
        t.join()
        ctx.destroy(linger=0)


def test_a_missing_key_file_is_named_as_missing(tmp_path: Path) -> None:
    with pytest.raises(KeysError, match=r"node-1\.key_secret does not exist: this node.s key pair goes there"):
        load_keypair(str(tmp_path / "node-1.key_secret"))
    with pytest.raises(KeysError, match=r"node-2\.key does not exist"):
        load_public(str(tmp_path / "node-2.key"))
    (tmp_path / "node-3.key").write_text("not a certificate")
    with pytest.raises(KeysError, match="cannot read the public key"):
        load_public(str(tmp_path / "node-3.key"))
