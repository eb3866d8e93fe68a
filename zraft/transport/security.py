"""Authentication and encryption: CurveZMQ key pairs, the allow lists, and the ZAP handler a node runs.

Every socket of a secure cluster speaks CURVE (ZeroMQ's CurveCP-based handshake: both ends prove they hold the
secret key of a known public key, and every frame is encrypted). A node's ROUTER is a CURVE server; ZeroMQ asks
the node's ZAP handler (RFC 27, ``inproc://zeromq.zap.01``) about each new connection, and the handler accepts
only the public keys of the cluster's nodes (user id ``node-<id>``) and of its allowed clients (user id
``client``). The node reads that user id on every frame that claims to come from a node, so a client key can
never send Raft or snapshot messages, and a node's key can speak only for that node (``src`` must match).

Key layout (``--keys DIR``; the launcher makes it under ``<data-dir>/keys``, directory 0700, files 0600):

    DIR/node-<id>.key            every node's public key (ZeroMQ certificate format, ``zmq.auth``)
    DIR/node-<id>.key_secret     a node's secret key: on each machine, only that node's
    DIR/clients/*.key            the public keys of allowed clients, one file each (read again whenever the
                                 directory changes: adding a client needs no restart)
    DIR/client.key_secret        the key pair the local shell and tools use (``launch`` makes one)

Rotating a node's key: stop the node, replace its pair, copy the new public key to every node's ``DIR`` and
restart them one at a time. Removing a client: delete its file from ``clients/`` (new connections are refused at
once; an open connection lasts until it closes).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import zmq
import zmq.auth

log = logging.getLogger("zraft.transport.security")

ZAP_ENDPOINT = "inproc://zeromq.zap.01"
DOMAIN = "zraft"
CLIENT_USER = "client"


class KeysError(Exception):
    """Keys that are missing or unreadable: the sentence says which file and what to do."""


@dataclass(frozen=True)
class KeyPair:
    public: bytes
    """Z85 text, 40 bytes."""
    secret: bytes


def _private(path: str) -> None:
    os.chmod(path, 0o600)


def create_keypair(directory: str, name: str) -> KeyPair:
    """Make ``directory/name.key`` and ``name.key_secret`` (0600, directory 0700); returns the pair."""
    os.makedirs(directory, mode=0o700, exist_ok=True)
    os.chmod(directory, 0o700)
    pub_path, sec_path = zmq.auth.create_certificates(directory, name)
    _private(pub_path)
    _private(sec_path)
    return load_keypair(sec_path)


def load_keypair(secret_file: str) -> KeyPair:
    if not os.path.exists(secret_file):
        raise KeysError(f"{secret_file} does not exist: this node's key pair goes there (make it with python -c "
                        f"\"import zmq.auth; zmq.auth.create_certificates('DIR', 'node-ID')\")")
    try:
        public, secret = zmq.auth.load_certificate(secret_file)
    except (OSError, ValueError) as e:
        raise KeysError(f"cannot read the key pair in {secret_file}: {e}") from None
    if secret is None:
        raise KeysError(f"{secret_file} holds no secret key (a .key_secret file is needed)")
    return KeyPair(public, secret)


def load_public(path: str) -> bytes:
    if not os.path.exists(path):
        raise KeysError(f"{path} does not exist (a public key file is needed there)")
    try:
        public, _ = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as e:
        raise KeysError(f"cannot read the public key in {path}: {e}") from None
    return bytes(public)


def load_node_keys(directory: str) -> dict[int, bytes]:
    """Every ``node-<id>.key`` in ``directory``: {id: public key (Z85)}."""
    out = {}
    for name in sorted(os.listdir(directory)):
        stem = name.removeprefix("node-").removesuffix(".key")
        if name.startswith("node-") and name.endswith(".key") and stem.isdigit() and int(stem) > 0:
            out[int(stem)] = load_public(os.path.join(directory, name))
    return out


def load_public_dir(directory: str) -> set[bytes]:
    """The public keys of every ``*.key`` file in ``directory`` (empty if it does not exist)."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return set()
    return {load_public(os.path.join(directory, n)) for n in sorted(names) if n.endswith(".key")}


@dataclass(frozen=True)
class NodeKeys:
    """What a node of a secure cluster needs: its own pair, every node's public key, where clients' keys are."""

    own: KeyPair
    nodes: dict[int, bytes]
    clients_dir: str

    @staticmethod
    def load(directory: str, node_id: int, peers: list[int]) -> NodeKeys:
        """Every ``node-<n>.key`` in ``directory`` is read (a node added later, or the cluster a ``--join`` node
        waits for). A peer of the command line without one is left out with a warning: once the membership has
        changed, the members' keys travel in the configuration, and a removed node's key file may be gone."""
        own = load_keypair(os.path.join(directory, f"node-{node_id}.key_secret"))
        nodes = load_node_keys(directory)
        missing = [p for p in peers if p not in nodes and p != node_id]
        if missing:
            log.warning("node=%d event=keys_missing no public key in %s for nodes %s (removed from the cluster?)",
                        node_id, directory, missing)
        if nodes.get(node_id) != own.public:
            raise KeysError(f"{directory}/node-{node_id}.key does not match node-{node_id}.key_secret")
        return NodeKeys(own, nodes, os.path.join(directory, "clients"))


@dataclass(frozen=True)
class ClientKeys:
    """What a client of a secure cluster needs: its pair and each node's public key, by address."""

    own: KeyPair
    servers: dict[str, bytes]
    directory: str | None = None
    """Where the nodes' public keys are: a client that is sent to a node it does not know (a member added since it
    started) reads ``node-<id>.key`` there."""

    def server_key(self, node_id: int, address: str) -> bytes | None:
        """The public key of node ``node_id`` at ``address``: known, or read from ``directory`` (None if not)."""
        key = self.servers.get(address)
        if key is None and self.directory is not None:
            try:
                key = self.servers[address] = load_public(os.path.join(self.directory, f"node-{node_id}.key"))
            except KeysError:
                return None
        return key

    @staticmethod
    def load(directory: str, addresses: list[str], ids: list[int] | None = None) -> ClientKeys:
        """``directory/client.key_secret`` and ``directory/node-<id>.key`` for each address (address i is node
        ``ids[i]``, or node i+1)."""
        ids = ids or list(range(1, len(addresses) + 1))
        own = load_keypair(os.path.join(directory, "client.key_secret"))
        servers = {a: load_public(os.path.join(directory, f"node-{i}.key")) for a, i in zip(addresses, ids,
                                                                                            strict=True)}
        return ClientKeys(own, servers, directory)


def client_socket(sock: zmq.Socket[Any], own: KeyPair, server: bytes) -> None:
    """Make ``sock`` (before it connects) a CURVE client of the node whose public key is ``server``."""
    sock.curve_secretkey = own.secret
    sock.curve_publickey = own.public
    sock.curve_serverkey = server


def server_socket(sock: zmq.Socket[Any], own: KeyPair) -> None:
    """Make ``sock`` (before it binds) a CURVE server that asks the ZAP handler about every connection."""
    sock.curve_server = True
    sock.curve_secretkey = own.secret
    sock.curve_publickey = own.public
    sock.zap_domain = DOMAIN.encode()


class ZapHandler:
    """Answers ZeroMQ's authentication requests for one node, in the node's own loop (poll ``sock``)."""

    def __init__(self, ctx: zmq.Context[Any], keys: NodeKeys) -> None:
        self.by_key = {zmq.utils.z85.decode(k): f"node-{i}" for i, k in keys.nodes.items()}
        self.members: dict[bytes, str] = {}
        """The keys of the configuration in force (membership changes carry them), besides the key directory's."""
        self.clients_dir = keys.clients_dir
        self.nodes_dir = os.path.dirname(keys.clients_dir)
        self._nodes_stamp = _stamp(self.nodes_dir)
        self._clients: set[bytes] = set()
        self._clients_stamp: tuple[float, int] | None = None
        self.refused = 0
        self.last_refused = ""
        self.sock = ctx.socket(zmq.REP)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.bind(ZAP_ENDPOINT)
        self._reload()

    def _reload(self) -> None:
        try:
            st = os.stat(self.clients_dir)
            stamp: tuple[float, int] | None = (st.st_mtime, st.st_ino)
        except FileNotFoundError:
            stamp = None
        if stamp != self._clients_stamp or stamp is None:
            try:
                self._clients = {zmq.utils.z85.decode(k) for k in load_public_dir(self.clients_dir)}
            except KeysError as e:
                self.last_refused = f"client keys not reloaded: {e}"
                return
            self._clients_stamp = stamp

    def set_members(self, keys: dict[int, str]) -> None:
        """Admit the members of the configuration in force by their keys (Z85), as node ``<id>``."""
        self.members = {zmq.utils.z85.decode(k): f"node-{i}" for i, k in keys.items() if k}
        try:  # and the key directory as it is now (a removed node's file may be gone)
            self.by_key = {zmq.utils.z85.decode(k): f"node-{i}" for i, k in load_node_keys(self.nodes_dir).items()}
            self._nodes_stamp = _stamp(self.nodes_dir)
        except (KeysError, OSError) as e:
            self.last_refused = f"node keys not reloaded: {e}"

    def user_for(self, key: bytes) -> str | None:
        user = self.members.get(key) or self.by_key.get(key)
        if user is not None:
            return user
        stamp = _stamp(self.nodes_dir)
        if stamp != self._nodes_stamp:  # a node's key added to (or removed from) the key directory
            try:
                self.by_key = {zmq.utils.z85.decode(k): f"node-{i}" for i, k in load_node_keys(self.nodes_dir).items()}
                self._nodes_stamp = stamp
            except (KeysError, OSError) as e:
                self.last_refused = f"node keys not reloaded: {e}"
            user = self.by_key.get(key)
            if user is not None:
                return user
        self._reload()
        return CLIENT_USER if key in self._clients else None

    def handle(self) -> None:
        while True:
            try:
                msg = self.sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            if len(msg) < 6:
                self.sock.send_multipart([b"1.0", msg[1] if len(msg) > 1 else b"", b"400", b"bad request", b"",
                                          b""])
                continue
            version, request_id, _domain, address, _identity, mechanism = msg[:6]
            user = None
            if version == b"1.0" and mechanism == b"CURVE" and len(msg) == 7 and len(msg[6]) == 32:
                user = self.user_for(msg[6])
            if user is None:
                self.refused += 1
                self.last_refused = f"{address.decode(errors='replace')} ({mechanism.decode(errors='replace')})"
                self.sock.send_multipart([b"1.0", request_id, b"400", b"unknown key", b"", b""])
            else:
                self.sock.send_multipart([b"1.0", request_id, b"200", b"OK", user.encode(), b""])

    def close(self) -> None:
        self.sock.close(linger=0)


def _stamp(directory: str) -> tuple[float, int] | None:
    try:
        st = os.stat(directory)
    except FileNotFoundError:
        return None
    return (st.st_mtime, st.st_ino)


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` exposes the node only to this machine."""
    h = host.strip("[]")
    return h == "localhost" or h.startswith("127.") or h == "::1"
