"""A linearizability checker for key-value histories (Wing-Gong-Lowe search with memoization, as in Porcupine).

Each key is an independent register holding bytes or nothing, with four operations: put(v), append(v) (onto the
empty value when missing), delete, and get -> value. A history is a list of operations, each with the time it
was called and the time it returned. An operation whose outcome the client never learned (timeout, lost
connection) has no return time: it may have taken effect at any point after its call, or never. A write that
definitely failed must be left out of the history.

    python -m zraft.check HISTORY.jsonl

reads one operation per line (see ``Op.from_json``) and exits non-zero if some key's history is not
linearizable.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

WRITES = ("put", "append", "delete")


@dataclass(frozen=True, slots=True)
class Op:
    client: int
    kind: str  # put, append, delete, get
    key: str
    value: bytes | None  # the argument of put/append
    output: bytes | None  # what a get returned (None: the key was missing)
    call: float
    ret: float | None  # None: outcome unknown

    @staticmethod
    def from_json(d: dict[str, Any]) -> Op:
        """{"client": 1, "op": "append", "key": "k", "value": "x", "output": null, "call": 1.0, "return": 1.5}
        Values are UTF-8 strings; "return": null (or "status": "unknown") marks an unknown outcome."""

        def b(x: Any) -> bytes | None:
            return None if x is None else (x.encode() if isinstance(x, str) else bytes(x))

        ret = d.get("return")
        if d.get("status") == "unknown":
            ret = None
        kind = d["op"]
        if kind not in (*WRITES, "get"):
            raise ValueError(f"unknown operation {kind!r}")
        return Op(int(d.get("client", 0)), kind, str(d["key"]), b(d.get("value")), b(d.get("output")),
                  float(d["call"]), None if ret is None else float(ret))

    def to_json(self) -> dict[str, Any]:
        def s(x: bytes | None) -> str | None:
            return None if x is None else x.decode(errors="replace")

        return {"client": self.client, "op": self.kind, "key": self.key, "value": s(self.value),
                "output": s(self.output), "call": self.call, "return": self.ret}


@dataclass
class KeyResult:
    key: str
    ok: bool
    ops: int
    explanation: str = ""


# States are fingerprints, not bytes: (length, the value as a big-endian integer mod the prime 2^127 - 1). An
# append updates the fingerprint from the old one and the appended bytes alone (F(s + v) = F(s) * 256^len(v) +
# F(v)), so long append-only values cost no memory per state; two different values of one length collide only
# if their difference is a multiple of 2^127 - 1.
_P = (1 << 127) - 1

State = tuple[int, int] | None


def fingerprint(data: bytes) -> tuple[int, int]:
    return len(data), int.from_bytes(data, "big") % _P


def _step(state: State, op: Op, fp_value: tuple[int, int] | None, fp_output: State) -> tuple[bool, State]:
    k = op.kind
    if k == "get":
        return fp_output == state, state
    if k == "put":
        return True, fp_value
    if k == "append":
        assert fp_value is not None
        n, h = state or (0, 0)
        vn, vh = fp_value
        return True, (n + vn, (h * pow(256, vn, _P) + vh) % _P)
    return True, None  # delete


class _Node:
    __slots__ = ("index", "is_call", "match", "next", "op", "prev")

    def __init__(self, op: Op | None, index: int, is_call: bool) -> None:
        self.op = op
        self.index = index
        self.is_call = is_call
        self.match: _Node | None = None
        self.prev: _Node | None = None
        self.next: _Node | None = None


def check_key(ops: list[Op], key: str = "") -> KeyResult:
    """Whether one register's history is linearizable."""
    # A read whose answer never arrived constrains nothing.
    ops = [o for o in ops if not (o.kind == "get" and o.ret is None)]
    # A put or append of unknown outcome whose value no read ever returned may as well have happened after
    # everything else (it has no result of its own and nothing saw it), so leave it out: each such operation
    # would otherwise double the states the search must consider.
    seen = [o.output for o in ops if o.kind == "get" and o.output is not None]
    ops = [o for o in ops if not (o.ret is None and o.kind in ("put", "append") and o.value
                                  and not any(o.value in out for out in seen))]
    n = len(ops)
    if n == 0:
        return KeyResult(key, True, 0)
    events = []
    for i, o in enumerate(ops):
        events.append((o.call, 0, i))
        events.append((math.inf if o.ret is None else o.ret, 1, i))
    events.sort()  # at equal times calls come first: the operations overlap (the permissive reading)
    head = _Node(None, -1, False)
    calls: list[_Node | None] = [None] * n
    prev = head
    for _, kind, i in events:
        node = _Node(ops[i], i, kind == 0)
        if kind == 0:
            calls[i] = node
        else:
            c = calls[i]
            assert c is not None
            c.match = node
            node.match = c
        prev.next = node
        node.prev = prev
        prev = node

    def lift(c: _Node) -> None:
        assert c.prev is not None and c.match is not None and c.match.prev is not None
        c.prev.next = c.next
        if c.next is not None:
            c.next.prev = c.prev
        r = c.match
        assert r.prev is not None
        r.prev.next = r.next
        if r.next is not None:
            r.next.prev = r.prev

    def unlift(c: _Node) -> None:
        r = c.match
        assert r is not None and r.prev is not None and c.prev is not None
        r.prev.next = r
        if r.next is not None:
            r.next.prev = r
        c.prev.next = c
        if c.next is not None:
            c.next.prev = c

    fp_value = [None if o.value is None else fingerprint(o.value) for o in ops]
    fp_output: list[State] = [None if o.output is None else fingerprint(o.output) for o in ops]
    state: State = None
    linearized = 0
    cache: set[tuple[int, State]] = {(0, None)}
    stack: list[tuple[_Node, State]] = []
    best = 0
    entry = head.next
    while head.next is not None:
        assert entry is not None
        if entry.is_call:
            assert entry.op is not None
            ok, new_state = _step(state, entry.op, fp_value[entry.index], fp_output[entry.index])
            if ok:
                new_lin = linearized | (1 << entry.index)
                if (new_lin, new_state) not in cache:
                    cache.add((new_lin, new_state))
                    stack.append((entry, state))
                    best = max(best, len(stack))
                    state = new_state
                    linearized = new_lin
                    lift(entry)
                    entry = head.next
                    continue
            entry = entry.next
        else:
            # A return reached before its call was linearized: backtrack.
            if not stack:
                return KeyResult(key, False, n, _explain(ops, best, entry))
            top, state = stack.pop()
            linearized &= ~(1 << top.index)
            unlift(top)
            entry = top.next
    return KeyResult(key, True, n)


def _explain(ops: list[Op], depth: int, stuck: _Node) -> str:
    o = stuck.op
    assert o is not None
    what = f"{o.kind}({o.value!r})" if o.kind in ("put", "append") else (
        f"get -> {o.output!r}" if o.kind == "get" else o.kind)
    return (f"no order of the {len(ops)} operations fits their real-time order: at most {depth} could be "
            f"linearized; stuck at client {o.client}'s {what} called at {o.call:.6f}")


def check(ops: Iterable[Op]) -> list[KeyResult]:
    """Check a whole history, one key at a time (each key is independent)."""
    by_key: dict[str, list[Op]] = defaultdict(list)
    for o in ops:
        by_key[o.key].append(o)
    return [check_key(v, k) for k, v in sorted(by_key.items())]


def load(path: str) -> list[Op]:
    out = []
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                out.append(Op.from_json(json.loads(line)))
            except (ValueError, KeyError, TypeError) as e:
                raise ValueError(f"{path}:{lineno}: not an operation ({e})") from None
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m zraft.check", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("history", help="a JSON-lines history (one operation per line)")
    a = p.parse_args(argv)
    try:
        ops = load(a.history)
    except (OSError, ValueError) as e:
        print(f"zraft.check: {e}", file=sys.stderr)
        return 2
    results = check(ops)
    bad = [r for r in results if not r.ok]
    for r in bad:
        print(f"key {r.key!r}: NOT linearizable: {r.explanation}")
    print(f"operations={len(ops)} keys={len(results)} violations={len(bad)} "
          f"verdict={'linearizable' if not bad else 'NOT linearizable'}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
