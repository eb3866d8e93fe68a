"""A client history as the checker reads it: each operation (``Op``) with its call and return times, read
outputs kept whole or as a ``Digest``, loaded one line of JSON at a time (``Loader``), and what the checker
answers per key (``KeyResult``) within a ``Budget`` of time and memory.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, replace
from typing import Any

from zraft.transport.requests import WRITE_OPS

WRITES = tuple(sorted(WRITE_OPS))
"""The write operations a history holds: the client protocol's (``requests.WRITE_OPS``)."""


@dataclass(frozen=True, slots=True)
class Digest:
    """A long read output kept as a summary (``compact``): a history of whole-list reads holds far more bytes
    in its outputs than in anything else. Enough to check: its length, how many list elements it holds (and
    whether it ends like a list), a strong hash for prefix comparisons and the search's fingerprint."""

    length: int
    elements: int
    is_list: bool
    digest: bytes
    fp: tuple[int, int]
    tail: bytes

    @staticmethod
    def of(data: bytes, sep: bytes = b";") -> Digest:
        return Digest(len(data), data.count(sep), data.endswith(sep), strong_hash(data), fingerprint(data), data[-40:])

    def __repr__(self) -> str:
        return f"<{self.length} bytes ending {self.tail!r}>"


def strong_hash(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=16).digest()


COMPACT_OVER = 1024
"""Read outputs longer than this are kept as a ``Digest`` (but for the longest of each key, kept whole)."""


@dataclass(frozen=True, slots=True)
class Op:
    client: int
    kind: str  # put, append, delete, get, cas (and the protocol's other writes)
    key: str
    value: bytes | None  # the argument of put/append; the new value of a cas
    output: bytes | Digest | None  # what a get returned (None: the key was missing)
    call: float
    ret: float | None  # None: outcome unknown
    expect: bytes | None = None
    """A cas's expected value (None: the key must be missing)."""
    swapped: bool | None = None
    """Whether a cas set its value (None: the outcome is unknown)."""

    @staticmethod
    def from_json(d: dict[str, Any]) -> Op:
        """{"client": 1, "op": "append", "key": "k", "value": "x", "output": null, "call": 1.0, "return": 1.5}
        Values are UTF-8 strings; "return": null (or "status": "unknown") marks an unknown outcome. A
        compare-and-swap: {"op": "cas", "key": "k", "expect": "old" or null (missing), "value": "new", "output":
        true or false (whether it set the value), ...}."""

        def b(x: Any) -> bytes | None:
            return None if x is None else (x.encode() if isinstance(x, str) else bytes(x))

        ret = d.get("return")
        if d.get("status") == "unknown":
            ret = None
        kind = d["op"]
        if ret is not None and float(ret) < float(d["call"]):
            raise ValueError(f"an operation returns ({ret}) before it was called ({d['call']})")
        if kind not in (*WRITES, "get", "cas"):
            raise ValueError(f"unknown operation {kind!r}")
        if kind == "cas":
            out = d.get("output")
            if out is not None and not isinstance(out, bool):
                raise ValueError("a cas's output is true, false or null")
            return Op(int(d.get("client", 0)), kind, str(d["key"]), b(d.get("value")), None, float(d["call"]),
                      None if ret is None else float(ret), b(d.get("expect")), None if ret is None else out)
        return Op(int(d.get("client", 0)), kind, str(d["key"]), b(d.get("value")), b(d.get("output")),
                  float(d["call"]), None if ret is None else float(ret))

    def to_json(self) -> dict[str, Any]:
        def s(x: bytes | None) -> str | None:
            return None if x is None else x.decode(errors="replace")

        if isinstance(self.output, Digest):
            raise ValueError("a compacted read output cannot be written back")
        if self.kind == "cas":
            return {"client": self.client, "op": "cas", "key": self.key, "expect": s(self.expect),
                    "value": s(self.value), "output": self.swapped, "call": self.call, "return": self.ret}
        return {"client": self.client, "op": self.kind, "key": self.key, "value": s(self.value),
                "output": s(self.output), "call": self.call, "return": self.ret}


class Loader:
    """Builds a history operation by operation, keeping long read outputs as digests (``Digest``) except the
    longest of each key, so that memory grows with the number of operations, not with the bytes reads returned."""

    def __init__(self) -> None:
        self.ops: list[Op] = []
        self._longest: dict[str, tuple[int, int]] = {}  # key -> (index in ops, length)

    def add(self, op: Op) -> None:
        out = op.output
        if isinstance(out, bytes) and len(out) > COMPACT_OVER:
            cur = self._longest.get(op.key)
            if cur is None or len(out) > cur[1]:
                if cur is not None:
                    old = self.ops[cur[0]]
                    assert isinstance(old.output, bytes)
                    self.ops[cur[0]] = replace(old, output=Digest.of(old.output))
                self._longest[op.key] = (len(self.ops), len(out))
            else:
                op = replace(op, output=Digest.of(out))
        self.ops.append(op)


@dataclass
class KeyResult:
    key: str
    ok: bool | None
    """True: linearizable; False: a definite violation (``explanation`` says which operations); None: unknown,
    the search ran out of its time or memory budget (``explanation`` says which)."""
    ops: int
    explanation: str = ""
    method: str = "wgl"
    """``list`` (the append-only list check, linear time) or ``wgl`` (search)."""
    seconds: float = 0.0


class Budget:
    """How long the whole check may take and how much memory the search's cache of visited states may use."""

    def __init__(self, seconds: float = 60.0, max_bytes: int = 512 << 20) -> None:
        self.deadline = time.monotonic() + seconds
        self.seconds = seconds
        self.max_bytes = max_bytes

    def expired(self) -> bool:
        return time.monotonic() > self.deadline


FP_PRIME = (1 << 127) - 1


State = tuple[int, int] | None


def fingerprint(data: bytes) -> tuple[int, int]:
    return len(data), int.from_bytes(data, "big") % FP_PRIME
