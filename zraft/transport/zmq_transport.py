"""A node's ZeroMQ transport: its sockets, and the checks every frame passes before a replica sees it.

One ROUTER bound at the node's address receives everything (peers' Raft messages and snapshot chunks, client
requests); one DEALER per peer sends to that peer's ROUTER. Sends never block: when a peer's queue is full the
message is dropped and Raft's retries cover it. With keys, every connection is CurveZMQ-authenticated
(``zraft.transport.security``) and a peer's message must come from that peer's key.

Who a connection is comes from its key (the ZAP handler's User-Id), never from a routing id the peer chooses: node
DEALERs set none (the ROUTER gives each connection its own, which no peer can pick), ``ROUTER_HANDOVER`` is off (no
connection can take over another's route), and answers to a node outside our configuration go back over the
connection its last authenticated message came on. Routing ids that start with 0xff are the node's own (the Redis
server's connections, ``zraft.server.redis.conn.TAG``): a frame from a connection that chose one is refused. A
peer we keep sending to and have not heard from for ``silence_s`` is dialled again, so no half-dead connection lasts.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from typing import Any

import zmq

from zraft.core import Message
from zraft.transport import codec, security
from zraft.transport.members import Member
from zraft.util.logutil import LogLimiter

log = logging.getLogger("zraft.transport")

PEER_HWM = 10_000
"""Messages queued for a peer that cannot take them before new ones are dropped."""
TCP_STALL_MS = 2_000
"""A connection whose sent data goes unacknowledged this long is dropped (TCP_USER_TIMEOUT) and made again."""
CONNECT_TIMEOUT_MS = 1_000
"""A connection attempt that hangs this long is abandoned and tried afresh."""
REDIAL_FIRST_S = 0.5
REDIAL_MAX_S = 5.0
"""A peer that refused our handshake (our key not admitted there yet, e.g. a node that joins before its key
reached the cluster) is dialled again after 0.5 s, then 1, 2, 4, 5, 5, ... seconds."""
_HANDSHAKE_FAILED = (int(zmq.EVENT_HANDSHAKE_FAILED_AUTH) | int(zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL)
                     | int(zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL))
PEER_KINDS = frozenset(("raft", "snap_chunk", "snap_ack"))
_NOBLOCK = int(zmq.NOBLOCK)
_NOBLOCK_MORE = int(zmq.NOBLOCK) | int(zmq.SNDMORE)


def tune_tcp(sock: zmq.Socket[bytes]) -> None:
    """Recover quickly from a link that silently lost packets for a while (measured on the namespace network,
    bench/freeze_bench.py). Without this, TCP retransmits with exponential backoff into the dead link, and after
    it heals the next retransmission (and with it the whole backlog ZeroMQ queued) comes seconds later: 4.3 s
    after a 10 s freeze, 7.7 s after a 20 s one. With it the stalled connection is dropped (its queue with it:
    no stale backlog), reconnection attempts that hang are renewed every second instead of backing off, and a
    follower catches up about 0.6 s after the heal. Raft's own retries resend what was dropped."""
    sock.setsockopt(zmq.TCP_MAXRT, TCP_STALL_MS)
    sock.setsockopt(zmq.CONNECT_TIMEOUT, CONNECT_TIMEOUT_MS)


def _cluster_of(frame: zmq.Frame) -> str:
    """The cluster id the sending connection announced (``X-Cluster`` metadata), or "" if none."""
    try:
        return str(frame.get("X-Cluster"))
    except zmq.ZMQError:
        return ""


class ZmqTransport:
    def __init__(self, ctx: zmq.Context[zmq.Socket[bytes]], node_id: int, peers: dict[int, str], bind: str,
                 keys: security.NodeKeys | None = None, cluster_id: str = "", silence_s: float = 2.0) -> None:
        """``silence_s``: a peer we send to and do not hear from for this long is dialled again (about two
        election timeouts)."""
        self.id = node_id
        self.silence_s = silence_s
        self._heard: dict[int, float] = {}
        """When a message from each peer last arrived (by either connection)."""
        self._sent: dict[int, float] = {}
        """When we last sent each peer something."""
        self._dialled: dict[int, float] = {}
        """When each peer's connection was last made (or made again)."""
        self.silent_redials = 0
        self._routes: dict[int, bytes] = {}
        """Node id -> the routing id of the connection its last authenticated peer message came on (to answer a
        node outside our configuration, which reaches us only over the connection it opened)."""
        self.keys = keys
        self.cluster_id = cluster_id
        """Announced in the ZeroMQ handshake of every connection (metadata ``X-Cluster``); a peer message from a
        connection that announces another (or none) is dropped. Empty: no identity, nothing checked."""
        self.zap: security.ZapHandler | None = None
        self.router = ctx.socket(zmq.ROUTER)
        if keys is not None:
            self.zap = security.ZapHandler(ctx, keys)  # bound before any CURVE socket needs it
            security.server_socket(self.router, keys.own)
        if cluster_id:
            self.router.setsockopt(zmq.METADATA, f"X-Cluster:{cluster_id}".encode())
        self.router.setsockopt(zmq.MAXMSGSIZE, codec.MAX_PEER_MESSAGE)
        self.router.setsockopt(zmq.LINGER, 0)
        self.router.setsockopt(zmq.ROUTER_HANDOVER, 0)  # a route is never handed to a newcomer that claims it
        self.router.setsockopt(zmq.RCVHWM, 100_000)
        self.router.setsockopt(zmq.SNDHWM, 100_000)
        self.router.bind(bind)
        self.ctx = ctx
        self._packed: dict[tuple[int, int, int], bytes] = {}
        """Entries packed for recent APPENDs (``codec.encode_raft``): packed once for every follower."""
        self.dealers: dict[int, zmq.Socket[bytes]] = {}
        self.peer_addrs: dict[int, str] = {}
        self._peer_keys: dict[int, bytes] = {}
        self._monitors: dict[int, zmq.Socket[bytes]] = {}
        """Handshake events of each peer connection (with keys): ZeroMQ never dials again after a peer refused
        the handshake, so the transport does (``redial``)."""
        self._redial: dict[int, list[float]] = {}
        """Peers to dial again: [when, the next delay]."""
        self.handshakes_refused = 0
        self.dealers_changed = False
        """Set when a peer socket is opened or closed (the loop polls them too: see ``incoming_back``)."""
        for pid, addr in peers.items():
            if pid != node_id and (keys is None or pid in keys.nodes):
                self._connect(pid, addr, keys.nodes[pid] if keys is not None else b"")
        self.limiter = LogLimiter(log)
        self.bad_frames = 0
        """Frames dropped or refused because they break the protocol or could not be handled."""

    def _connect(self, pid: int, addr: str, key: bytes) -> None:
        d = self.ctx.socket(zmq.DEALER)
        d.setsockopt(zmq.LINGER, 0)
        d.setsockopt(zmq.SNDHWM, PEER_HWM)
        d.setsockopt(zmq.IMMEDIATE, 1)
        if self.cluster_id:
            d.setsockopt(zmq.METADATA, f"X-Cluster:{self.cluster_id}".encode())
        if os.environ.get("ZRAFT_TCP_DEFAULTS") != "1":  # set by bench/freeze_bench.py to show the difference
            tune_tcp(d)
        if self.keys is not None:
            security.client_socket(d, self.keys.own, key)
            self._monitors[pid] = d.get_monitor_socket(_HANDSHAKE_FAILED | int(zmq.EVENT_HANDSHAKE_SUCCEEDED))
        d.connect(f"tcp://{addr}")
        self._dialled[pid] = self._now
        self.dealers[pid] = d
        self.peer_addrs[pid] = addr
        self._peer_keys[pid] = key
        self.dealers_changed = True

    def _disconnect(self, pid: int) -> None:
        d = self.dealers.pop(pid)
        mon = self._monitors.pop(pid, None)
        if mon is not None:
            d.disable_monitor()
            mon.close(linger=0)
        d.close(linger=0)
        self.dealers_changed = True

    _now = 0.0
    """The time of the last ``redial`` call (the loop's clock; the transport reads none of its own)."""

    def redial(self, now: float) -> None:
        """Dial again the peers that refused our handshake, after a delay, and those we keep sending to and have
        not heard from for ``silence_s`` (called on every tick)."""
        self._now = now
        for pid in list(self.dealers):
            sent, heard = self._sent.get(pid, 0.0), self._heard.get(pid, 0.0)
            since = max(heard, self._dialled.get(pid, 0.0))
            if sent > since and now - since > self.silence_s and pid not in self._redial:
                self.silent_redials += 1
                self.limiter.warn(f"silent_{pid}", "node=%d event=peer_silent peer=%d address=%s: nothing heard for "
                                  "%.1f s while sending to it; dialling again", self.id, pid,
                                  self.peer_addrs.get(pid, "?"), now - since)
                addr, key = self.peer_addrs[pid], self._peer_keys[pid]
                self._disconnect(pid)
                self._connect(pid, addr, key)
        for pid, mon in list(self._monitors.items()):
            while True:
                try:
                    frames = mon.recv_multipart(_NOBLOCK)
                except zmq.Again:
                    break
                event = int.from_bytes(frames[0][:2], "little") if frames and len(frames[0]) >= 2 else 0
                if event & _HANDSHAKE_FAILED:
                    self.handshakes_refused += 1
                    delay = self._redial.get(pid, [0.0, REDIAL_FIRST_S])[1]
                    self._redial[pid] = [now + delay, min(REDIAL_MAX_S, delay * 2)]
                    self.limiter.warn(f"handshake_{pid}", "node=%d event=handshake_refused peer=%d address=%s: "
                                      "it does not admit our key (yet?); dialling again in %.1f s", self.id, pid,
                                      self.peer_addrs.get(pid, "?"), delay)
                elif event & int(zmq.EVENT_HANDSHAKE_SUCCEEDED):
                    self._redial.pop(pid, None)
        for pid, (when, _) in list(self._redial.items()):
            if now < when:
                continue
            self._redial[pid][0] = float("inf")  # until the new connection's handshake says how it went
            if pid in self.dealers:
                addr, key = self.peer_addrs[pid], self._peer_keys[pid]
                self._disconnect(pid)
                self._connect(pid, addr, key)
            else:
                del self._redial[pid]

    def set_members(self, members: dict[int, Member]) -> None:
        """The configuration in force changed: connect to new members (or to a member's new address), let go of
        removed ones, and admit exactly the members' keys (besides the key directory's)."""
        if not members:
            return  # waiting to be added (--join): stay connected to the cluster we were told of
        if self.zap is not None:
            self.zap.set_members({i: m.key for i, m in members.items()})
        for pid in [p for p in self.dealers if p not in members]:
            self._disconnect(pid)
            del self.peer_addrs[pid]
            self._redial.pop(pid, None)
            for d in (self._heard, self._sent, self._dialled, self._routes):
                d.pop(pid, None)
            log.info("node=%d event=peer_removed peer=%d", self.id, pid)
        for pid, m in members.items():
            if pid == self.id or self.peer_addrs.get(pid) == m.address:
                continue
            if pid in self.dealers:
                self._disconnect(pid)
            key = m.key.encode() if m.key else (self.keys.nodes.get(pid, b"") if self.keys is not None else b"")
            if self.keys is not None and not key:
                self.limiter.warn("no_key", "node=%d event=peer_without_key peer=%d: not connecting", self.id, pid)
                continue
            self._connect(pid, m.address, key)
            log.info("node=%d event=peer_added peer=%d address=%s", self.id, pid, m.address)

    # ------------------------------------------------------------------ receiving

    def incoming(self, most: int) -> Iterator[tuple[str, Any, bytes]]:
        """The messages waiting (up to ``most``), decoded and checked: (kind, message, sender's identity).
        A frame that breaks the protocol is counted, logged (rate-limited) and answered, never yielded."""
        secure = self.keys is not None
        cluster = self.cluster_id
        router = self.router
        for _ in range(most):
            user: str | None = None
            theirs = ""
            try:
                # A ROUTER's message is the sender's identity, then what it sent: one frame from a client or a node.
                # Read part by part (recv_multipart asks the socket about more parts after each, and makes a
                # Frame of each with copy=False): the payload's Frame says whether more follow, and carries the
                # connection's metadata.
                identity = router.recv(_NOBLOCK)
                frame = router.recv(_NOBLOCK, copy=False)
            except zmq.Again:
                return
            if identity[:1] == b"\xff":
                self.refused("reserved_identity", "node=%d event=bad_message error=a connection chose a routing id "
                             "reserved for this node's own (%r)", self.id, identity[:16])
                continue
            if frame.more:
                parts = 2
                while frame.more:
                    frame = router.recv(_NOBLOCK, copy=False)
                    parts += 1
                self.refused("bad_frames", "node=%d event=bad_message error=expected 2 frames, got %d", self.id,
                             parts)
                continue
            payload = frame.bytes
            # Who sent it (the user id our ZAP handler gave the connection's key) and the cluster its connection
            # announced: read for messages that may come from nodes only. A client's need neither (any key the ZAP
            # handler let in may send them), and reading metadata a client's connection does not carry costs an
            # exception per frame.
            if payload[1:3] != codec.CLIENT_TAG:
                if secure:
                    user = str(frame.get("User-Id"))
                if cluster:
                    theirs = _cluster_of(frame)
            try:
                kind, msg = codec.decode(payload, peer=user is None or user.startswith("node-"))
            except codec.ProtocolError as e:
                self.refused("bad_message", "node=%d event=bad_message from=%r error=%s", self.id, identity[:32], e)
                self.answer(identity, [{"id": e.req_id, "ok": False, "error": codec.Err.BAD_REQUEST,
                                        "message": str(e)}], False)
                continue
            if secure and kind in PEER_KINDS and user != f"node-{msg.src}":
                self.refused("impersonation", "node=%d event=bad_message error=%s sent a message as node %d",
                             self.id, user, msg.src)
                continue
            if cluster and kind in PEER_KINDS and theirs != cluster:
                self.refused("other_cluster", "node=%d event=other_cluster from=%d their_cluster=%r ours=%r: "
                             "dropped (a node of another cluster reached this one)", self.id, msg.src,
                             theirs[:64], cluster)
                continue
            if kind in PEER_KINDS:
                src = msg.src
                self._heard[src] = self._now
                if self._routes.get(src) != identity and (secure or src in self.peer_addrs or len(self._routes) < 64):
                    self._routes[src] = identity  # with keys, src is the key's node (checked above)
            yield kind, msg, identity

    def incoming_back(self, ready: Any, most: int) -> Iterator[tuple[str, Any, bytes]]:
        """Messages that came back over the connections we opened (those of them in ``ready``): from nodes outside
        their own configuration (one waiting to be added, or lagging behind a membership change), which cannot
        reach our ROUTER otherwise."""
        for pid, d in self.dealers.items():
            if d not in ready:
                continue
            for _ in range(most):
                try:
                    frame = d.recv(_NOBLOCK, copy=False)
                except zmq.Again:
                    break
                payload = frame.bytes
                if self.cluster_id and _cluster_of(frame) != self.cluster_id:
                    self.refused("other_cluster", "node=%d event=other_cluster from_peer=%d their_cluster=%r "
                                 "ours=%r: dropped", self.id, pid, _cluster_of(frame)[:64], self.cluster_id)
                    continue
                if payload[1:3] == codec.CLIENT_TAG:  # the answers to client requests we forwarded to it
                    try:
                        yield "client_replies", codec.decode_replies(payload), b""
                    except codec.ProtocolError as e:
                        self.refused("bad_message", "node=%d event=bad_message from_peer=%d error=%s", self.id, pid,
                                     e)
                    continue
                try:
                    kind, msg = codec.decode(payload)
                except codec.ProtocolError as e:
                    self.refused("bad_message", "node=%d event=bad_message from_peer=%d error=%s", self.id, pid, e)
                    continue
                if kind not in PEER_KINDS or msg.src != pid:
                    self.refused("impersonation", "node=%d event=bad_message error=a %s on node %d's connection",
                                 self.id, kind, pid)
                    continue
                self._heard[pid] = self._now
                yield kind, msg, b""

    def send_client(self, peer: int, payload: bytes) -> bool:
        """Client requests (a Redis connection's writes, forwarded) to ``peer`` over our connection to it; its
        answers come back on the same connection (``incoming_back``). False if they could not be queued."""
        d = self.dealers.get(peer)
        if d is None:
            return False
        try:
            d.send(payload, _NOBLOCK)
        except zmq.ZMQError:
            return False
        return True

    def refused(self, event: str, fmt: str, *args: Any) -> None:
        """A frame dropped: counted, and logged at most once a second per kind."""
        self.bad_frames += 1
        self.limiter.warn(event, fmt, *args)

    # ------------------------------------------------------------------ sending (the replica's Transport)

    def send(self, m: Message) -> None:
        d = self.dealers.get(m.dst)
        if d is None:
            self._send_back(m.dst, codec.encode_raft(m, self._packed))
            return
        self._sent[m.dst] = self._now
        try:
            d.send(codec.encode_raft(m, self._packed), _NOBLOCK)
        except zmq.Again:
            pass  # queue full or peer not connected: dropped, Raft retries

    def _send_back(self, peer: int, payload: bytes) -> None:
        """To a node outside our configuration (a leader of one we have not seen yet, while we wait to be added
        or lag behind): answer over the connection it opened to us, if it did."""
        route = self._routes.get(peer)
        if route is None:
            return  # it never reached us: nothing to answer over
        try:
            self.router.send(route, _NOBLOCK_MORE)
            self.router.send(payload, _NOBLOCK)
        except zmq.ZMQError:
            pass

    def send_chunk(self, peer: int, c: codec.SnapChunk) -> bool:
        return self.send_raw(peer, codec.encode_chunk(c))

    def send_ack(self, peer: int, a: codec.SnapAck) -> None:
        self.send_raw(peer, codec.encode_ack(a))

    def send_raw(self, peer: int, payload: bytes) -> bool:
        """False if the peer's queue is full (try again later)."""
        d = self.dealers.get(peer)
        if d is None:
            self._send_back(peer, payload)
            return True
        self._sent[peer] = self._now
        try:
            d.send(payload, _NOBLOCK)
        except zmq.Again:
            return False
        return True

    def answer(self, client: bytes, replies: list[dict[str, Any]], batch: bool) -> None:
        if not batch:
            self._send_client(client, codec.encode_client(replies[0]))
            return
        for lo in range(0, len(replies), codec.MAX_BATCH):
            self._send_client(client, codec.encode_client_batch(replies[lo:lo + codec.MAX_BATCH]))

    def _send_client(self, identity: bytes, payload: bytes) -> None:
        try:
            self.router.send(identity, _NOBLOCK_MORE)
            self.router.send(payload, _NOBLOCK)
        except zmq.ZMQError:
            pass  # the client is gone or slow; it will retry

    # ------------------------------------------------------------------ the rest

    def status(self) -> dict[str, Any]:
        return {"bad_frames": self.bad_frames, "secure": self.keys is not None, "cluster_id": self.cluster_id,
                "refused_connections": self.zap.refused if self.zap is not None else 0,
                "handshakes_refused": self.handshakes_refused, "silent_redials": self.silent_redials}

    def close(self) -> None:
        if self.zap is not None:
            self.zap.close()
