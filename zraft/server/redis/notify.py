"""Redis's keyspace notifications: ``SUBSCRIBE``/``PSUBSCRIBE`` to ``__keyspace@0__:<key>`` (the message: the event,
``set``, ``del`` or ``expired``) and ``__keyevent@0__:<event>`` (the message: the key), and ``UNSUBSCRIBE``,
``PUNSUBSCRIBE``.

They come from the node's watch history (``zraft.server.watches``): each change the node applied, in revision order,
as a watch sees it -- any node serves them, a follower from what it has applied. They are always on (``CONFIG SET
notify-keyspace-events`` is accepted and changes nothing). Every write is ``set`` (zraft does not tell SET from
APPEND or INCR in its history), every delete ``del``, a key deleted because its TTL or lease ran out ``expired``.
Like Redis's, they are fire-and-forget: a subscriber that does not read its socket is disconnected once its
unsent output passes the server's bound, and one connected later does not see what came before. ``PUBLISH`` of
other channels is not supported.

In RESP2 a connection that subscribed takes only ``(P)SUBSCRIBE``, ``(P)UNSUBSCRIBE``, ``PING`` and ``QUIT``; in
RESP3 anything, the messages arriving as push replies.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from typing import TYPE_CHECKING

from zraft.core import Role
from zraft.server.redis import protocol as resp
from zraft.server.redis.conn import Conn
from zraft.statemachine.kv import EVENT_FIELDS
from zraft.transport import codec, requests

if TYPE_CHECKING:
    from zraft.server.redis.server import RespServer

KEYSPACE = b"__keyspace@0__:"
KEYEVENT = b"__keyevent@0__:"
MAX_SUBSCRIPTIONS = 1024
"""Most channels and patterns one connection subscribes to."""
IN_SUBSCRIBED = frozenset((b"SUBSCRIBE", b"PSUBSCRIBE", b"UNSUBSCRIBE", b"PUNSUBSCRIBE", b"PING", b"QUIT", b"RESET"))


def _push(c: Conn, items: list[bytes]) -> bytes:
    """A pub/sub message: an array in RESP2, a push in RESP3."""
    body = b"".join(items)
    return (b">%d\r\n" if c.r is resp.RESP3 else b"*%d\r\n") % len(items) + body


def _count(c: Conn) -> int:
    return len(c.channels or ()) + len(c.patterns or ())


def _subscribe(s: RespServer, c: Conn, a: list[bytes], pattern: bool) -> None:
    kind = b"psubscribe" if pattern else b"subscribe"
    out: list[bytes] = []
    for name in a[1:]:
        if _count(c) >= MAX_SUBSCRIPTIONS:
            s.immediate(c, b"".join(out) + resp.error(f"ERR zraft takes at most {MAX_SUBSCRIPTIONS} subscriptions "
                                                      "per connection"))
            return
        if pattern:
            c.patterns = c.patterns or set()
            c.patterns.add(name)
        else:
            c.channels = c.channels or set()
            c.channels.add(name)
        out.append(_push(c, [resp.bulk(kind), resp.bulk(name), resp.integer(_count(c))]))
    s.subscribers.add(c)
    s.immediate(c, b"".join(out))
    if not s.replica.machine.watching:  # the cluster keeps no history of changes yet: have the leader start it
        raft = s.replica.raft
        if raft.role is Role.LEADER:
            s.replica.start_watching()
        elif raft.lead and s.forward is not None:
            s.forward(raft.lead, codec.encode_requests([requests.WatchStart(next(s._ids))]))


def _unsubscribe(s: RespServer, c: Conn, a: list[bytes], pattern: bool) -> None:
    kind = b"punsubscribe" if pattern else b"unsubscribe"
    have = c.patterns if pattern else c.channels
    names = a[1:] or sorted(have or ())
    out: list[bytes] = []
    for name in names:
        if have is not None:
            have.discard(name)
        out.append(_push(c, [resp.bulk(kind), resp.bulk(name), resp.integer(_count(c))]))
    if not names:
        out.append(_push(c, [resp.bulk(kind), resp.bulk(None), resp.integer(_count(c))]))
    if not _count(c):
        c.channels = c.patterns = None
        s.subscribers.discard(c)
    s.immediate(c, b"".join(out))


def _sub(s: RespServer, c: Conn, a: list[bytes]) -> None:
    _subscribe(s, c, a, False)


def _psub(s: RespServer, c: Conn, a: list[bytes]) -> None:
    _subscribe(s, c, a, True)


def _unsub(s: RespServer, c: Conn, a: list[bytes]) -> None:
    _unsubscribe(s, c, a, False)


def _punsub(s: RespServer, c: Conn, a: list[bytes]) -> None:
    _unsubscribe(s, c, a, True)


def _publish(s: RespServer, c: Conn, a: list[bytes]) -> None:
    s.immediate(c, resp.error("ERR zraft publishes its keyspace notifications only; PUBLISH is not supported"))


def publish_changes(s: RespServer) -> None:
    """Send the subscribers the node's changes since the last call (from its watch history)."""
    w = s.replica.watches
    if w.revision <= s.notified:
        return
    if not s.subscribers:
        s.notified = w.revision
        return
    segments = w.since(s.notified + 1, cache=False)
    s.notified = w.revision
    subs = list(s.subscribers)
    for events, start in segments:
        for at in range(start, len(events), EVENT_FIELDS):
            _publish_one(s, subs, events[at + 1], events[at + 2] is not None, events[at + 4])


def _publish_one(s: RespServer, subs: list[Conn], key: bytes, written: bool, expired: bool) -> None:
    """One change's messages, to each subscriber whose channels or patterns it matches."""
    event = b"set" if written else b"expired" if expired else b"del"
    space, evch = KEYSPACE + key, KEYEVENT + event
    for c in subs:
        msgs = []
        for ch, msg in ((space, event), (evch, key)):
            if c.channels and ch in c.channels:
                msgs.append(_push(c, [resp.bulk(b"message"), resp.bulk(ch), resp.bulk(msg)]))
            for p in c.patterns or ():
                if fnmatch.fnmatchcase(ch, p):
                    msgs.append(_push(c, [resp.bulk(b"pmessage"), resp.bulk(p), resp.bulk(ch), resp.bulk(msg)]))
        if msgs:
            s.immediate(c, b"".join(msgs))
            s.dirty.add(c)


def subscribed_refusal(c: Conn, name: bytes) -> bytes | None:
    """The error for a command a RESP2 connection in subscribed mode may not run (None: it may)."""
    if c.r is resp.RESP3 or not (c.channels or c.patterns) or name in IN_SUBSCRIBED:
        return None
    return resp.error(f"ERR Can't execute '{name.decode(errors='replace').lower()}': only (P|S)SUBSCRIBE / "
                      "(P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context")


NOTIFY_COMMANDS: dict[bytes, tuple[int, Callable[[RespServer, Conn, list[bytes]], None]]] = {
    b"SUBSCRIBE": (-2, _sub), b"PSUBSCRIBE": (-2, _psub), b"UNSUBSCRIBE": (-1, _unsub),
    b"PUNSUBSCRIBE": (-1, _punsub), b"PUBLISH": (3, _publish),
}
