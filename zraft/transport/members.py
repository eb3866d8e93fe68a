"""Who the members of a cluster are and how to reach them: the runtime's part of a configuration.

The core's ``ClusterConfig`` says who votes and who learns; its opaque ``context`` holds, for every member, the
address peers connect to and its public CurveZMQ key (empty in ``--insecure`` clusters), encoded here. So a
configuration entry carries everything a node needs to talk to a new member, and a restarted node finds its
peers in its own log or snapshot, not on its command line. A cluster that was started from a peer list and never
changed its membership has an empty context: its members come from that list (``resolve``).

Encoding: msgpack array of ``[id, "host:port", key]`` triples, ``key`` the 40-character Z85 public key or "".
"""

from __future__ import annotations

from typing import Any, NamedTuple

import msgpack

from zraft.core import ClusterConfig

MAX_ADDRESS = 255
KEY_LEN = 40


class Member(NamedTuple):
    id: int
    address: str
    key: str = ""
    """Z85 public key (40 characters), or "" without authentication."""


def check_address(address: Any) -> str:
    """``host:port`` with a port in 1..65535 (``ValueError`` saying what is wrong)."""
    if type(address) is not str or not 0 < len(address) <= MAX_ADDRESS:
        raise ValueError(f"an address must be host:port, at most {MAX_ADDRESS} characters")
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"address {address!r:.80} is not host:port")
    return address


def check_key(key: Any) -> str:
    if type(key) is not str or (key and (len(key) != KEY_LEN or not key.isascii() or not key.isprintable())):
        raise ValueError(f"a public key is {KEY_LEN} Z85 characters (or empty without authentication)")
    return key


def encode(members: dict[int, Member]) -> bytes:
    out: bytes = msgpack.packb([[m.id, m.address, m.key] for m in sorted(members.values())], use_bin_type=True)
    return out


def decode(context: bytes) -> dict[int, Member]:
    """The members a configuration's context names (``ValueError`` if it is not such a context)."""
    try:
        rows = msgpack.unpackb(context, raw=False, max_array_len=1 << 13, max_map_len=0, max_bin_len=0,
                               max_str_len=MAX_ADDRESS)
    except Exception as e:
        raise ValueError(f"a membership context does not decode: {e}") from None
    if not isinstance(rows, list):
        raise ValueError("a membership context is an array of [id, address, key]")
    out: dict[int, Member] = {}
    for row in rows:
        if not (isinstance(row, list) and len(row) == 3 and type(row[0]) is int and row[0] > 0):
            raise ValueError("a member is [id, address, key]")
        out[row[0]] = Member(row[0], check_address(row[1]), check_key(row[2]))
    return out


def resolve(config: ClusterConfig, bootstrap: dict[int, Member]) -> dict[int, Member]:
    """The members of ``config`` with their addresses: from its context, or (a cluster whose membership never
    changed) from the bootstrap peer list. Members the context does not know (impossible unless it is damaged)
    fall back to the bootstrap list; those neither knows are left out."""
    known = decode(config.context) if config.context else {}
    out = {}
    for i in config.members:
        m = known.get(i) or bootstrap.get(i)
        if m is not None:
            out[i] = m
    return out


def with_change(config: ClusterConfig, bootstrap: dict[int, Member], voters: tuple[int, ...],
                learners: tuple[int, ...], new: Member | None = None) -> ClusterConfig:
    """``config`` changed to ``voters``/``learners``, its context naming every member (``new`` added)."""
    members = resolve(config, bootstrap)
    if new is not None:
        members[new.id] = new
    keep = set(voters) | set(learners)
    return ClusterConfig(voters, learners, encode({i: m for i, m in members.items() if i in keep}))
