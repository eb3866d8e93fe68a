"""A linearizability checker for key-value histories (Wing-Gong-Lowe search with memoization, as in Porcupine).

Each key is an independent register holding bytes or nothing, with four operations: put(v), append(v) (onto the
empty value when missing), delete, and get -> value. A history is a list of operations, each with the time it
was called and the time it returned. An operation whose outcome the client never learned (timeout, lost
connection) has no return time: it may have taken effect at any point after its call, or never. A write that
definitely failed must be left out of the history.

    zraft check HISTORY.jsonl [--timeout S] [--max-memory MIB]

reads one operation per line (see ``Op.from_json``) and exits 0 if every key's history is linearizable, 1 if some
key's is not (a definite violation, with the operations involved), 3 if the budget ran out first (unknown).

Keys whose writes are all appends of distinct elements ending in ``;`` (as the chaos run writes them) are decided
without search, in O(n log n), by the list-append check (after Elle, ``check_list_key``); other keys by the
Wing-Gong-Lowe search, within a time and memory budget.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any

from zraft.tools.history import (
    COMPACT_OVER,
    FP_PRIME,
    WRITES,
    Budget,
    Digest,
    KeyResult,
    Loader,
    Op,
    State,
    fingerprint,
    strong_hash,
)

__all__ = ["COMPACT_OVER", "WRITES", "Budget", "Digest", "KeyResult", "Loader", "Op", "check", "check_key",
           "check_list_key", "check_register_key", "fingerprint", "load", "main", "report", "verdict"]



# States are fingerprints, not bytes: (length, the value as a big-endian integer mod the prime 2^127 - 1). An
# append updates the fingerprint from the old one and the appended bytes alone (F(s + v) = F(s) * 256^len(v) +
# F(v)), so long append-only values cost no memory per state; two different values of one length collide only
# if their difference is a multiple of 2^127 - 1.
def _step(state: State, op: Op, fp_value: tuple[int, int] | None, fp_output: State) -> tuple[bool, State]:
    """Whether ``op`` can take effect on a register in ``state`` (what it returned agrees), and the state after.
    For a cas, ``fp_output`` is the expected value's fingerprint."""
    k = op.kind
    if k == "get":
        return fp_output == state, state
    if k == "cas":
        matches = state == fp_output
        if op.swapped is None:  # outcome unknown: it did whatever the state made it do
            return True, fp_value if matches else state
        return matches == op.swapped, fp_value if matches else state
    if k == "put":
        return True, fp_value
    if k == "append":
        assert fp_value is not None
        n, h = state or (0, 0)
        vn, vh = fp_value
        return True, (n + vn, (h * pow(256, vn, FP_PRIME) + vh) % FP_PRIME)
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


def check_key(ops: list[Op], key: str = "", budget: Budget | None = None) -> KeyResult:
    """Whether one key's history is linearizable: the list check when every write is an append of a distinct
    element (``check_list_key``), else the search (``check_register_key``)."""
    t0 = time.monotonic()
    r = check_list_key(ops, key)
    if r is None:
        r = check_register_key(ops, key, budget)
    r.seconds = time.monotonic() - t0
    return r


def check_register_key(ops: list[Op], key: str = "", budget: Budget | None = None) -> KeyResult:
    """Whether one register's history is linearizable (Wing-Gong-Lowe search with memoization). Past the
    budget's deadline, or once the cache of visited states would pass its memory, the answer is unknown."""
    # A read whose answer never arrived constrains nothing.
    ops = [o for o in ops if not (o.kind == "get" and o.ret is None)]
    # A put or append of unknown outcome whose value no read ever returned may as well have happened after
    # everything else (it has no result of its own and nothing saw it), so leave it out: each such operation
    # would otherwise double the states the search must consider.
    seen = [o.output for o in ops if o.kind == "get" and isinstance(o.output, bytes)]
    seen += [o.expect for o in ops if o.kind == "cas" and o.expect is not None]  # a cas that saw it, too
    # Their contents are unknown (digests), or a cas failed -- it saw the value differ from the one it expected,
    # which any write may explain, without saying which: keep every write.
    keep = any(isinstance(o.output, Digest) for o in ops) or any(o.kind == "cas" and o.swapped is False for o in ops)
    ops = [o for o in ops if not (o.ret is None and o.kind in ("put", "append", "cas") and o.value and not keep
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
    fp_output: list[State] = [(None if o.expect is None else fingerprint(o.expect)) if o.kind == "cas"
                              else None if o.output is None else o.output.fp if isinstance(o.output, Digest)
                              else fingerprint(o.output) for o in ops]
    state: State = None
    linearized = 0
    cache: set[tuple[int, State]] = {(0, None)}
    # A cache entry holds a bit set of n bits (plus a tuple, two ints and the set's slot): about n/8 + 150 bytes.
    max_entries = (budget.max_bytes // (n // 8 + 150)) if budget is not None else 1 << 62
    steps = 0
    stack: list[tuple[_Node, State]] = []
    best = 0
    entry = head.next
    while head.next is not None:
        assert entry is not None
        steps += 1
        if steps & 0xFFF == 0 and budget is not None:
            if budget.expired():
                return KeyResult(key, None, n, f"unknown: the search passed the time budget ({budget.seconds:.0f} s, "
                                 f"--timeout) after {len(cache):,} states; at most {best} of {n} operations "
                                 "linearized so far")
            if len(cache) > max_entries:
                return KeyResult(key, None, n, f"unknown: the search's cache passed the memory budget "
                                 f"({budget.max_bytes >> 20} MiB, --max-memory) at {len(cache):,} states")
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


LIST_SEP = b";"


def check_list_key(ops: list[Op], key: str = "", sep: bytes = LIST_SEP) -> KeyResult | None:
    """The list-append check (after Elle): when every write of the key is an append of an element that ends with
    ``sep``, contains it nowhere else, and is written by one append only, each read returns the list of elements
    appended so far, so the order of the appends is visible and no search is needed. Returns None when the key's
    history is not of that kind (the search decides it then).

    Linearizable iff: every read is a list of distinct, written elements; all reads are prefixes of the longest
    one, L (the order of appends); and the operations can be given points within their call-return intervals in
    the order: reads of length 0, append L[0], reads of length 1, append L[1], ..., then the acknowledged appends
    that no read saw. With that order fixed, giving each operation the earliest point it can take decides it
    (greedy), so the check takes O(n log n) time and O(n) memory."""
    ops = [o for o in ops if not (o.kind == "get" and o.ret is None)]
    appends: dict[bytes, Op] = {}
    for o in ops:
        if o.kind == "get":
            continue
        v = o.value
        if o.kind != "append" or not v or not v.endswith(sep) or sep in v[: -len(sep)] or v in appends:
            return None
        appends[v] = o
    reads = [o for o in ops if o.kind == "get"]
    if not appends and not reads:
        return KeyResult(key, True, 0, method="list")
    n = len(ops)

    def fail(why: str) -> KeyResult:
        return KeyResult(key, False, n, why, method="list")

    # Every read must be a prefix of the longest one (compared as bytes: elements end with sep, so a byte prefix
    # that ends with sep is an element prefix); only the longest needs splitting into elements.
    longest_out = b""
    for r in reads:
        out = r.output or b""
        if isinstance(out, Digest):
            if not out.is_list:
                return fail(f"client {r.client}'s read at {r.call:.6f} returned {out!r}, which is not a list of "
                            "appended elements")
            continue  # never the longest (``Loader`` keeps that one whole)
        if out and not out.endswith(sep):
            return fail(f"client {r.client}'s read at {r.call:.6f} returned {out[-40:]!r}, which is not a list of "
                        "appended elements")
        if len(out) > len(longest_out):
            longest_out = out
    longest = [e + sep for e in longest_out.split(sep)[:-1]]
    seen: set[bytes] = set()
    for e in longest:
        if e in seen:
            return fail(f"the list {longest_out[-80:]!r}... holds {e!r} twice (an append applied twice)")
        seen.add(e)
        if e not in appends:
            return fail(f"a read returned {e!r}, which no (successful or unknown) append wrote")
    prefix_hash: dict[int, bytes] = {}
    parsed: list[tuple[Op, int]] = []
    for r in reads:
        out = r.output or b""
        if isinstance(out, Digest):
            h = prefix_hash.get(out.length)
            if h is None:
                h = prefix_hash[out.length] = strong_hash(longest_out[: out.length])
            if out.length > len(longest_out) or h != out.digest:
                return fail(f"client {r.client}'s read at {r.call:.6f} ({out.elements} elements, ending "
                            f"{out.tail!r}) is not a prefix of the longest read: the reads disagree on the order "
                            "of appends, or one holds a value never written or written twice")
            parsed.append((r, out.elements))
            continue
        if not longest_out.startswith(out):
            elems = [e + sep for e in out.split(sep)[:-1]]
            if len(set(elems)) != len(elems):
                dup = next(e for e in elems if elems.count(e) > 1)
                return fail(f"client {r.client}'s read at {r.call:.6f} holds {dup!r} twice (an append applied twice)")
            i = next((i for i, (a, b) in enumerate(zip(elems, longest, strict=False)) if a != b), len(longest))
            if i >= len(elems) or elems[i] not in appends:
                bad = elems[i] if i < len(elems) else elems[-1]
                return fail(f"client {r.client}'s read at {r.call:.6f} holds {bad!r}, which no (successful or "
                            "unknown) append wrote")
            return fail(f"reads disagree on the order of appends: client {r.client}'s read at {r.call:.6f} has "
                        f"{elems[i]!r} at position {i}, another read has {longest[i]!r} there")
        parsed.append((r, out.count(sep)))
    position = {e: i for i, e in enumerate(longest)}
    # The order the operations must take (groups; the operations of a group in any order among themselves).
    groups: list[list[Op]] = [[] for _ in range(2 * len(longest) + 2)]
    for r, m in parsed:
        groups[2 * m].append(r)
    for e, i in position.items():
        groups[2 * i + 1].append(appends[e])
    unseen = [o for e, o in appends.items() if e not in position and o.ret is not None]
    groups[-1].extend(unseen)
    t, by = -math.inf, None  # the earliest point the next group may take, and the operation that set it
    for g in groups:
        end, end_by = t, by
        for o in g:
            ret = math.inf if o.ret is None else o.ret
            if o.call > end:
                end, end_by = o.call, o
            if max(t, o.call) > ret:
                assert by is not None
                return fail(_list_explain(o, by, position))
        t, by = end, end_by
    return KeyResult(key, True, n, method="list")


def _list_explain(x: Op, y: Op, position: dict[bytes, int]) -> str:
    """``x`` completed before ``y`` began, yet the list puts ``y`` first: say what that means."""

    def show(o: Op) -> str:
        ret = "?" if o.ret is None else f"{o.ret:.6f}"
        if o.kind == "get":
            out = o.output
            n = out.elements if isinstance(out, Digest) else (out or b"").count(LIST_SEP)
            return f"client {o.client}'s read of {n} elements ({o.call:.6f}-{ret})"
        where = f"at position {position[o.value]}" if o.value in position else "in no read"
        return f"client {o.client}'s append {o.value!r} ({o.call:.6f}-{ret}, {where})"

    if y.kind == "get" and x.kind == "append":
        what = "lost append" if x.value not in position else "stale read"
        return f"{what}: {show(y)} misses {show(x)}, which completed before the read began"
    if y.kind == "get":
        return f"stale read: {show(y)} returned less than {show(x)}, which completed before it began"
    if x.kind == "get":
        return f"read of a value not yet written: {show(x)} holds {show(y)}, which began only after the read ended"
    return f"appends ordered against real time: {show(x)} completed before {show(y)} began, but the list has it later"


def _explain(ops: list[Op], depth: int, stuck: _Node) -> str:
    o = stuck.op
    assert o is not None
    what = f"{o.kind}({o.value!r})" if o.kind in ("put", "append") else \
        f"cas({o.expect!r} -> {o.value!r}) = {o.swapped}" if o.kind == "cas" else (
        f"get -> {o.output!r}" if o.kind == "get" else o.kind)
    return (f"no order of the {len(ops)} operations fits their real-time order: at most {depth} could be "
            f"linearized; stuck at client {o.client}'s {what} called at {o.call:.6f}")


def check(ops: Iterable[Op], budget: Budget | None = None,
          progress: Callable[[KeyResult, int, int], None] | None = None) -> list[KeyResult]:
    """Check a whole history, one key at a time (each key is independent): list keys first, then registers,
    smallest first, so that a register that exhausts the budget leaves the others decided."""
    by_key: dict[str, list[Op]] = defaultdict(list)
    for o in ops:
        by_key[o.key].append(o)
    out = []
    order = sorted(by_key.items(), key=lambda kv: (len(kv[1]), kv[0]))
    for i, (k, v) in enumerate(order):
        if budget is not None and budget.expired():
            r = KeyResult(k, None, len(v), f"unknown: not checked, the time budget ({budget.seconds:.0f} s) was "
                          "spent on other keys")
        else:
            r = check_key(v, k, budget)
        out.append(r)
        if progress is not None:
            progress(r, i + 1, len(order))
    return sorted(out, key=lambda r: r.key)


def verdict(results: list[KeyResult]) -> str:
    """"linearizable", "NOT linearizable" (some key has a definite violation) or "unknown"."""
    if any(r.ok is False for r in results):
        return "NOT linearizable"
    if any(r.ok is None for r in results):
        return "unknown"
    return "linearizable"


EXIT_OK, EXIT_VIOLATION, EXIT_USAGE, EXIT_UNKNOWN = 0, 1, 2, 3


def load(path: str, txns: list[Any] | None = None, coord: list[dict[str, Any]] | None = None) -> list[Op]:
    """A history file's operations (long read outputs compacted, see ``Loader``). Lines ``{"type": "txn", ...}``
    (a chaos run's ``--workload txn``) are transactions: appended to ``txns`` as ``txncheck.Txn``s (refused when
    ``txns`` is None); their "status" "unknown" is the checker's "info". Lines of a ``--workload coord`` run
    (locks, watches, leases) go to ``coord``, for ``zraft.tools.chaos.coordination.check``."""
    from zraft.tools import txncheck
    from zraft.tools.chaos.coordination import COORD_TYPES

    out = Loader()
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                d = json.loads(line)
                if isinstance(d, dict) and d.get("type") in COORD_TYPES and coord is not None:
                    coord.append(d)
                elif isinstance(d, dict) and d.get("type") == "txn" and txns is not None:
                    txns.append(txncheck.Txn.from_json({**d, "status": "info" if d.get("status") == "unknown"
                                                        else d.get("status")}))
                else:
                    out.add(Op.from_json(d))
            except (ValueError, KeyError, TypeError, IndexError) as e:
                raise ValueError(f"{path}:{lineno}: not an operation ({e})") from None
    return out.ops


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("history", help="a JSON-lines history (one operation per line)")
    p.add_argument("--timeout", type=float, default=60.0,
                   help="seconds the whole check may take; past it the verdict is unknown (default 60)")
    p.add_argument("--max-memory", type=int, default=512,
                   help="MiB the search's cache of states may use; past it that key is unknown (default 512)")
    p.add_argument("-q", "--quiet", action="store_true", help="print only violations and the summary")
    p.add_argument("--txn", action="store_true",
                   help="the history holds list-append transactions, one per line: {\"client\": 1, \"call\": 1.0, "
                        "\"ret\": 1.5 (null: unknown), \"status\": \"ok\"|\"fail\"|\"info\", \"ops\": [[\"append\", "
                        "\"k\", 3], [\"r\", \"k\", [1, 2, 3]]]}; they are checked for strict serializability "
                        "(zraft.tools.txncheck, after Elle)")
    a = p.parse_args(argv)
    if a.txn:
        return _check_txns(a.history)
    txns: list[Any] = []
    coord: list[dict[str, Any]] = []
    try:
        ops = load(a.history, txns, coord)
    except (OSError, ValueError) as e:
        print(f"zraft.tools.check: {e}", file=sys.stderr)
        return EXIT_USAGE
    results = check(ops, Budget(a.timeout, a.max_memory << 20), None if a.quiet else print_progress)
    code = report(results, len(ops))
    if txns:  # a chaos run's --workload txn: its transactions too
        code = max(code, _report_txns(txns))
    if coord:  # a chaos run's --workload coord: its locks, watches and leases
        from zraft.tools.chaos import coordination

        try:
            problems, counts = coordination.check(coord, None)
        except (KeyError, TypeError, ValueError) as e:
            print(f"zraft.tools.check: {a.history}: malformed coordination records ({e!r})", file=sys.stderr)
            return EXIT_USAGE
        for problem in problems:
            print(f"VIOLATION: {problem}")
        print("coordination: " + " ".join(f"{k}={v}" for k, v in counts.items())
              + f" violations={len(problems)} verdict={'FAIL' if problems else 'PASS'}")
        code = max(code, EXIT_VIOLATION if problems else 0)
    return code


def _check_txns(path: str) -> int:
    from zraft.tools import txncheck

    txns = []
    try:
        with open(path) as f:
            for lineno, line in enumerate(f, 1):
                if line.strip():
                    try:
                        txns.append(txncheck.Txn.from_json(json.loads(line)))
                    except (ValueError, KeyError, TypeError, IndexError) as e:
                        raise ValueError(f"{path}:{lineno}: not a transaction ({e})") from None
    except (OSError, ValueError) as e:
        print(f"zraft.tools.check: {e}", file=sys.stderr)
        return EXIT_USAGE
    return _report_txns(txns)


def _report_txns(txns: list[Any]) -> int:
    from zraft.tools import txncheck

    result = txncheck.check(txns)
    for x in result.anomalies[:20]:
        print(f"{x.kind}: {x.explanation}")
    print(f"transactions={len(txns)} anomalies={len(result.anomalies)} verdict="
          f"{'strictly-serializable' if result.ok else 'NOT-strictly-serializable'}", flush=True)
    return EXIT_OK if result.ok else EXIT_VIOLATION


def print_progress(r: KeyResult, done: int, total: int) -> None:
    what = {True: "linearizable", False: "NOT linearizable", None: "unknown"}[r.ok]
    print(f"  checked key {done}/{total} {r.key!r}: {r.ops} operations, {r.method}, {r.seconds:.2f} s: {what}",
          flush=True)


def report(results: list[KeyResult], n_ops: int) -> int:
    """Print violations, unknowns and the summary line; returns the exit code (0, 1 violation, 3 unknown)."""
    for r in results:
        if r.ok is False:
            print(f"key {r.key!r}: NOT linearizable: {r.explanation}")
        elif r.ok is None:
            print(f"key {r.key!r}: {r.explanation}")
    v = verdict(results)
    bad = sum(1 for r in results if r.ok is False)
    unknown = sum(1 for r in results if r.ok is None)
    print(f"operations={n_ops} keys={len(results)} violations={bad} unknown={unknown} verdict={v}", flush=True)
    return EXIT_VIOLATION if bad else (EXIT_UNKNOWN if unknown else EXIT_OK)


if __name__ == "__main__":
    sys.exit(main())
