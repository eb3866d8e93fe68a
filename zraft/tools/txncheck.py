"""A transaction checker for list-append histories, after Elle (Kingsbury and Alvaro, VLDB 2020): it decides
whether transactions over append-only lists were strictly serializable, and names each anomaly it finds.

Each transaction is a list of micro-operations on keys: ``append(k, e)`` adds a unique element ``e`` to the list
at ``k``; ``read(k)`` returns the whole list. Because every element is unique and lists only grow, the reads
reveal the order in which the appends took effect on each key (its version order), and from that order the
checker recovers who read what from whom:

- **ww** (write-write): ``T1`` appended the element just before ``T2``'s on some key;
- **wr** (write-read): ``T2`` read a list whose last element ``T1`` appended;
- **rw** (read-write, an anti-dependency): ``T1`` read a list that ``T2``'s element came right after;
- **rt** (real time): ``T1`` returned before ``T2`` was called (strict serializability: that order must hold).

A cycle in that graph is an anomaly, named as Elle names it by the edges it needs: **G0** (ww only: dirty
writes), **G1c** (ww and wr: circular information flow), **G-single** (exactly one rw: read skew, lost update),
**G2** (several rw: write skew); each with ``-realtime`` when only real-time edges close it (serializable, not
strictly). Beside the cycles: **G1a** (aborted read: a read saw an element of a transaction that failed), **G1b**
(intermediate read: a read ended at an element its transaction followed with another append to the key),
**duplicate** (an element twice in a list), **incompatible-order** (two reads of a key that are not prefixes of
one another: no single version order explains them), **garbage** (an element nobody appended).

A transaction whose outcome the client never learned (``info``) may or may not have committed: its appends count
once a read saw them. A failed one (``fail``) must not be seen.
"""

from __future__ import annotations

import itertools
from collections import defaultdict, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

OK, FAIL, INFO = "ok", "fail", "info"
EDGE_KINDS = ("ww", "wr", "rw", "rt")


@dataclass(frozen=True, slots=True)
class Txn:
    """One transaction: its client, call and return times (``ret`` None: the outcome is unknown), outcome, and
    micro-operations: ``("append", key, element)`` or ``("r", key, list or None)`` (None: not read, as in a
    failed or unknown transaction)."""

    client: int
    call: float
    ret: float | None
    status: str
    ops: tuple[tuple[str, str, Any], ...]

    @staticmethod
    def from_json(d: dict[str, Any]) -> Txn:
        ops = tuple(_mop(o) for o in d["ops"])
        ret = d.get("ret", d.get("return"))  # ("return", as the other histories name it, is taken too)
        if ret is not None and float(ret) < float(d["call"]):
            raise ValueError(f"a transaction returns ({ret}) before it was called ({d['call']})")
        status = str(d.get("status", OK if ret is not None else INFO))
        if status not in (OK, FAIL, INFO):
            raise ValueError(f"a transaction's status is ok, fail or info, not {status!r:.20}")
        return Txn(int(d.get("client", 0)), float(d["call"]), None if ret is None else float(ret), status, ops)


def _mop(o: Any) -> tuple[str, str, Any]:
    """A micro-operation from JSON: ``["append", key, element]`` or ``["r", key, [elements] or null]``, elements
    being integers or strings."""
    if not isinstance(o, list) or len(o) != 3 or o[0] not in ("append", "r") or not isinstance(o[1], str):
        raise ValueError(f"a micro-operation is [\"append\"|\"r\", key, value], not {o!r:.60}")
    f, k, v = o
    if f == "append" and type(v) not in (int, str):
        raise ValueError(f"an appended element is an integer or a string, not {v!r:.60}")
    if f == "r" and v is not None and (not isinstance(v, list) or any(type(e) not in (int, str) for e in v)):
        raise ValueError(f"a read returns a list of elements or null, not {v!r:.60}")
    return f, k, tuple(v) if isinstance(v, list) else v


@dataclass(frozen=True, slots=True)
class Anomaly:
    kind: str
    """``G0``, ``G1c``, ``G-single``, ``G2`` (optionally ``-realtime``), ``G1a``, ``G1b``, ``duplicate``,
    ``incompatible-order`` or ``garbage``."""
    txns: tuple[int, ...]
    """Indexes into the history of the transactions involved (a cycle in order, for the cycle anomalies)."""
    explanation: str


@dataclass
class Result:
    ok: bool
    anomalies: list[Anomaly] = field(default_factory=list)
    txns: int = 0
    edges: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        if self.ok:
            return f"strictly serializable: {self.txns} transactions, edges {self.edges}"
        kinds = sorted({a.kind for a in self.anomalies})
        return f"NOT strictly serializable ({', '.join(kinds)}): {self.anomalies[0].explanation}"


def check(history: Sequence[Txn]) -> Result:
    """Decide a history of list-append transactions (see the module's docstring)."""
    anomalies: list[Anomaly] = []
    writer: dict[tuple[str, Any], int] = {}  # (key, element) -> the transaction that appended it
    appends: dict[int, dict[str, list[Any]]] = defaultdict(lambda: defaultdict(list))
    for i, t in enumerate(history):
        for f, k, v in t.ops:
            if f == "append":
                if (k, v) in writer:
                    anomalies.append(Anomaly("duplicate", (writer[(k, v)], i),
                                             f"element {v!r} appended to {k!r} by two transactions"))
                writer[(k, v)] = i
                appends[i][k].append(v)

    # The version order of each key: the longest read; every other read must be a prefix of it.
    longest: dict[str, tuple[Any, ...]] = {}
    reads: list[tuple[int, str, tuple[Any, ...]]] = []
    for i, t in enumerate(history):
        if t.status != OK:
            continue
        for f, k, v in t.ops:
            if f == "r" and v is not None:
                lst = tuple(v)
                reads.append((i, k, lst))
                if len(set(lst)) != len(lst):
                    twice = sorted({repr(e) for e in lst if lst.count(e) > 1})
                    anomalies.append(Anomaly("duplicate", (i,), f"transaction {i} read {k!r} with {', '.join(twice)}"
                                                                 " more than once (an append applied twice)"))
                if k not in longest or len(lst) > len(longest[k]):
                    longest[k] = lst
    # Each element read is checked once: in the longest read of its key (the others are prefixes of it), or in a
    # read that is not.
    first_reader: dict[tuple[str, int], int] = {}  # (key, length) -> the first transaction that read that many
    to_check: list[tuple[int, str, tuple[Any, ...]]] = []
    for i, k, lst in reads:
        first_reader.setdefault((k, len(lst)), i)
        if longest[k][:len(lst)] != lst:
            anomalies.append(Anomaly("incompatible-order", (i,), f"transaction {i} read {k!r} as {list(lst)!r:.120}, "
                                     f"not a prefix of {list(longest[k])!r:.120}"))
            to_check.append((i, k, lst))
    for k, order in longest.items():
        to_check.append((first_reader[(k, len(order))], k, order))
    for i, k, lst in to_check:
        for p, e in enumerate(lst):
            w = writer.get((k, e))
            if w is not None and history[w].status != FAIL:
                continue
            # The first read that saw it (one that read at least p + 1 elements).
            i = min((j for (kk, n), j in first_reader.items() if kk == k and n > p), default=i)
            if w is None:
                anomalies.append(Anomaly("garbage", (i,), f"transaction {i} read element {e!r} of {k!r}, which no "
                                         "transaction appended"))
            else:
                anomalies.append(Anomaly("G1a", (w, i), f"transaction {i} read element {e!r} of {k!r}, appended by "
                                         f"transaction {w}, which failed (aborted read)"))
    for i, k, lst in reads:
        if lst:
            w = writer.get((k, lst[-1]))
            if w is not None and w != i:
                mine = appends[w][k]
                if mine and mine[-1] != lst[-1]:
                    anomalies.append(Anomaly("G1b", (w, i), f"transaction {i} read {k!r} ending at {lst[-1]!r}, "
                                             f"which transaction {w} followed with {mine[-1]!r} (intermediate read)"))

    # Transactions in the graph: the committed ones, and the unknown ones whose appends a read saw.
    observed = {(k, e) for k, lst in longest.items() for e in lst}
    seen = {writer[ke] for ke in observed if ke in writer}
    nodes = [i for i, t in enumerate(history) if t.status == OK or (t.status == INFO and i in seen)]
    edges: dict[int, dict[int, set[str]]] = defaultdict(dict)  # a -> b -> the kinds of edge from a to b
    counts = dict.fromkeys(EDGE_KINDS, 0)

    def add(a: int, b: int, kind: str) -> None:
        if a == b:
            return
        kinds = edges[a].setdefault(b, set())
        if kind not in kinds:
            kinds.add(kind)
            counts[kind] += 1

    for k, order in longest.items():
        ws = [writer.get((k, e)) for e in order]
        for a, b in itertools.pairwise(ws):
            if a is not None and b is not None:
                add(a, b, "ww")
    # Committed appends no read saw: every read of the key came before them (a lost append shows as a cycle).
    unseen: dict[str, list[int]] = defaultdict(list)
    for j in nodes:
        if history[j].status == OK:
            for k, elements in appends[j].items():
                if not any((k, e) in observed for e in elements):
                    unseen[k].append(j)
    for i, k, lst in reads:
        order = longest[k]
        if lst:
            w = writer.get((k, lst[-1]))
            if w is not None:
                add(w, i, "wr")
        if len(lst) < len(order):
            nxt = writer.get((k, order[len(lst)]))
            if nxt is not None:
                add(i, nxt, "rw")
        for j in unseen.get(k, ()):
            add(i, j, "rw")
    _realtime(history, nodes, add)

    anomalies += _cycles(nodes, edges)
    return Result(not anomalies, anomalies, len(history), counts)


def _realtime(history: Sequence[Txn], nodes: Iterable[int], add: Any) -> None:
    """Real-time edges, transitively reduced: each transaction after the ones that returned most recently before
    it was called (and not already before one of those)."""
    events: list[tuple[float, int, int]] = []
    for i in nodes:
        t = history[i]
        events.append((t.call, 1, i))
        if t.ret is not None:
            events.append((t.ret, 0, i))
    events.sort()
    frontier: set[int] = set()
    before: dict[int, set[int]] = {}
    for _, kind, i in events:
        if kind == 1:  # a call: after everything on the frontier
            before[i] = set(frontier)
            for j in frontier:
                add(j, i, "rt")
        else:  # a return: it replaces the ones it follows
            frontier -= before.get(i, set())
            frontier.add(i)


_SEARCHES = (
    ("G0", frozenset({"ww"}), 0),
    ("G1c", frozenset({"ww", "wr"}), 0),
    ("G-single", frozenset({"ww", "wr"}), 1),
    ("G2", frozenset({"ww", "wr", "rw"}), 2),
)


def _cycles(nodes: list[int], edges: dict[int, dict[int, set[str]]]) -> list[Anomaly]:
    """One anomaly per strongly connected component of the graph: the first cycle found among G0, G1c, G-single,
    G2 -- first without real-time edges, then with them (``-realtime``)."""
    out = []
    for comp in _sccs(nodes, edges):
        if len(comp) < 2:
            continue
        members = set(comp)
        found = None
        for realtime in (False, True):
            for name, kinds, rw in _SEARCHES:
                allowed = kinds | ({"rt"} if realtime else set())
                cycle = _find_cycle(comp, members, edges, allowed, rw)
                if cycle is not None:
                    found = (name + ("-realtime" if realtime else ""), cycle)
                    break
            if found:
                break
        if found is None:  # (every cycle uses some mix the searches above allow: this is not reached)
            continue
        name, cycle = found
        shown = set(EDGE_KINDS) if name.endswith("-realtime") else {"ww", "wr", "rw"}
        steps = " ".join(f"{a} -{_label(edges[a][b], shown)}-> {b}"
                         for a, b in zip(cycle, [*cycle[1:], cycle[0]], strict=True))
        out.append(Anomaly(name, tuple(cycle), f"{name} cycle: {steps}"))
    return out


def _label(kinds: set[str], allowed: set[str]) -> str:
    """The edge's kind as the cycle uses it: the first of ww, wr, rw, rt it has."""
    return next(k for k in EDGE_KINDS if k in kinds and k in allowed)


def _find_cycle(comp: list[int], members: set[int], edges: dict[int, dict[int, set[str]]],
                allowed: frozenset[str], rw: int) -> list[int] | None:
    """A cycle inside the component using only ``allowed`` edge kinds: with ``rw`` 0 no rw edge, 1 exactly one,
    2 any number (at least one, else an earlier search finds it)."""
    plain = allowed - {"rw"}
    if rw == 1:
        for a in comp:
            for b, kinds in edges[a].items():
                if "rw" in kinds and b in members:
                    path = _path(b, a, members, edges, plain)
                    if path is not None:
                        return [a, *path[:-1]]
        return None
    for start in comp:
        for b, kinds in edges[start].items():
            if b in members and kinds & allowed:
                path = _path(b, start, members, edges, allowed)
                if path is not None:
                    return [start, *path[:-1]]
    return None


def _path(src: int, dst: int, members: set[int], edges: dict[int, dict[int, set[str]]],
          allowed: frozenset[str] | set[str]) -> list[int] | None:
    """A shortest path from ``src`` to ``dst`` (both included) over ``allowed`` edges inside ``members``."""
    prev: dict[int, int | None] = {src: None}
    q = deque([src])
    while q:
        a = q.popleft()
        if a == dst:
            path = [a]
            while prev[path[-1]] is not None:
                p = prev[path[-1]]
                assert p is not None
                path.append(p)
            return path[::-1]
        for b, kinds in edges[a].items():
            if b in members and b not in prev and kinds & allowed:
                prev[b] = a
                q.append(b)
    return None


def _sccs(nodes: list[int], edges: dict[int, dict[int, set[str]]]) -> list[list[int]]:
    """Tarjan's strongly connected components, iteratively (histories have many thousands of transactions)."""
    index: dict[int, int] = {}
    low: dict[int, int] = {}
    on_stack: set[int] = set()
    stack: list[int] = []
    out: list[list[int]] = []
    counter = 0
    node_set = set(nodes)
    for root in nodes:
        if root in index:
            continue
        work = [(root, iter(edges[root]))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            v, it = work[-1]
            advanced = False
            for w in it:
                if w not in node_set:
                    continue
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(edges[w])))
                    advanced = True
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                out.append(comp)
    return out
