"""The client's calls on the data model beyond a key's value: range reads with revisions (and, on the same model,
compare-and-swap and transactions).

A part of ``Client`` (``client.py``): its methods run on the one client object; what they use of the rest is
declared at the top of ``DataCalls``.
"""

from __future__ import annotations

import time
from typing import Any, NamedTuple

from zraft.client.errors import ZraftError
from zraft.client.watch import WatchStream
from zraft.transport.requests import Compare, TxnOp, prefix_end


class KeyValue(NamedTuple):
    """A key as a read found it: its value (None when only keys were asked for), the revision that made it, the
    revision that last changed it, and how many times it was written since it was made."""

    key: bytes
    value: bytes | None
    create_revision: int
    mod_revision: int
    version: int


class RangeResult(NamedTuple):
    kvs: list[KeyValue]
    """The keys found, in key order."""
    count: int  # type: ignore[assignment]  # shadows tuple.count, as intended
    """How many keys the range holds in all (more than ``len(kvs)`` when a limit cut the answer short)."""
    more: bool
    """Whether keys past the last one listed are in the range (ask again from just after it)."""
    revision: int
    """The store's revision the answer was read at."""


class TxnResult(NamedTuple):
    succeeded: bool
    """Whether every compare held (then the ``then`` operations ran, else the ``else`` ones)."""
    results: list[Any]
    """One per operation run: None (put, append), keys removed (delete, delete_range), ``KeyValue`` or None (get),
    ``RangeResult`` (range)."""
    revision: int
    """The revision the transaction was applied at (the store's, if it changed nothing)."""


def _b(x: bytes | str) -> bytes:
    return x.encode() if isinstance(x, str) else x


class DataCalls:
    deadline: float

    def _call(self, req: dict[str, Any], write: bool, any_node: bool = False,
              attempt_timeout: float | None = None, deadline: float | None = None) -> dict[str, Any]:
        raise NotImplementedError  # client.py

    def _session_call(self, req: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError  # client.py

    def txn(self, compares: list[Compare], then: list[TxnOp], otherwise: list[TxnOp] | None = None) -> TxnResult:
        """If every compare holds, run ``then``, else ``otherwise``: atomically, as one write, applied once even
        when retried. Build the compares and operations with ``zraft.client.txn`` (its docstring has an
        example)."""
        r = self._session_call({"op": "txn", "if": [list(c) for c in compares], "then": [list(o) for o in then],
                                "else": [list(o) for o in otherwise or []]})
        ops = then if r.get("succeeded") else otherwise or []
        results = r.get("results")
        rev = r.get("rev")
        if type(results) is not list or len(results) != len(ops) or type(rev) is not int:
            raise ZraftError(f"malformed transaction answer {r!r:.200}")
        return TxnResult(r.get("succeeded") is True, [_result(o, x, rev) for o, x in zip(ops, results, strict=True)],
                         rev)

    def watch(self, key: bytes | str = b"", *, prefix: bytes | str | None = None, end: bytes | str | None = None,
              all_keys: bool = False, start_revision: int = 0, prev_kv: bool = False) -> WatchStream:
        """The changes to ``key`` (or to the keys that start with ``prefix``, or in ``[key, end)``, or ``all_keys``)
        from ``start_revision`` on (0: from now), as an iterator of ``Event``, each once and in revision order,
        resumed on another node when one fails (``zraft.client.watch``). ``Compacted`` if no node still has the
        changes from ``start_revision``. Close it (or use it as a context manager) when done::

            with client.watch(prefix="cfg/", start_revision=r) as changes:
                for event in changes:
                    ...
        """
        if prefix is not None:
            if end is not None or all_keys or key:
                raise ValueError("watch a key, a prefix, a range or all keys: one of them")
            return WatchStream(self, _b(prefix), None, True, False, start_revision, prev_kv)  # type: ignore[arg-type]
        return WatchStream(self, _b(key), None if end is None else _b(end), False, all_keys,  # type: ignore[arg-type]
                           start_revision, prev_kv)

    def enable_watches(self) -> int:
        """Make the cluster keep a history of its changes, from now on, for good (it does not until a client first
        watches: writes cost about 5% more with it). ``watch`` does this itself; call it first to watch later from a
        revision read before the first watch. Returns the revision the history begins at (or began, long ago)."""
        end = time.monotonic() + self.deadline
        while True:
            st = self._call({"op": "watch_start"}, write=False)
            if st.get("watching") is True and type(st.get("rev")) is int:
                rev: int = st["rev"]
                return rev
            if time.monotonic() > end:
                raise ZraftError("the cluster did not start keeping its history of changes in time")
            time.sleep(0.02)

    def cas(self, key: bytes | str, expect: bytes | str | None, new: bytes | str) -> bool:
        """Compare-and-swap: set ``key`` to ``new`` if its value is ``expect`` (None: if it is absent); whether it
        did."""
        k = _b(key)
        cond = Compare(k, "version", "=", 0) if expect is None else Compare(k, "value", "=", _b(expect))
        return self.txn([cond], [TxnOp("put", k, _b(new))]).succeeded

    def range(self, start: bytes | str = b"", end: bytes | str | None = None, *, prefix: bytes | str | None = None,
              limit: int = 0, keys_only: bool = False, count_only: bool = False,
              stale: bool = False) -> RangeResult:
        """The keys in ``[start, end)`` in key order (``end`` None: to the last key), or those that start with
        ``prefix``, with their values and revisions. At most ``limit`` keys (0: as many as one answer carries,
        ``requests.MAX_RANGE_KEYS``, and about 4 MiB); ``keys_only`` leaves the values out, ``count_only`` lists
        nothing and says how many. Linearizable, or from any node's own state with ``stale=True``.

            r = client.range(prefix="cfg/")
            for kv in r.kvs: print(kv.key, kv.value, kv.mod_revision)
        """
        if prefix is not None:
            if start or end is not None:
                raise ValueError("give a prefix, or start and end, not both")
            start, end = _b(prefix), prefix_end(_b(prefix))
        req: dict[str, Any] = {"op": "range", "key": _b(start), "end": None if end is None else _b(end),
                               "limit": limit, "keys_only": keys_only, "count_only": count_only, "stale": stale}
        r = self._call(req, write=False, any_node=stale)
        kvs = r.get("kvs", [])
        count, rev = r.get("count"), r.get("rev")
        if type(count) is not int or type(rev) is not int:
            raise ZraftError(f"malformed range answer {r!r:.200}")
        if type(kvs) is not list:
            raise ZraftError(f"malformed range answer {r!r:.200}")
        return RangeResult([_kv(item) for item in kvs], count, r.get("more") is True, rev)

    def prefix(self, prefix: bytes | str, stale: bool = False) -> dict[bytes, bytes]:
        """Every key that starts with ``prefix`` and its value (read in as many answers as it takes, each
        linearizable: the keys are not all read at one revision when it takes more than one)."""
        out: dict[bytes, bytes] = {}
        start, end = _b(prefix), prefix_end(_b(prefix))
        while True:
            r = self.range(start, end, stale=stale)
            for kv in r.kvs:
                assert kv.value is not None
                out[kv.key] = kv.value
            if not r.more or not r.kvs:
                return out
            start = r.kvs[-1].key + b"\0"


def _kv(item: Any) -> KeyValue:
    if (type(item) is not list or len(item) != 5 or type(item[0]) is not bytes
            or not (item[1] is None or type(item[1]) is bytes) or not all(type(n) is int for n in item[2:])):
        raise ZraftError(f"malformed key in an answer {item!r:.200}")
    return KeyValue(*item)


def _result(op: TxnOp, x: Any, rev: int) -> Any:
    """One operation's result in a transaction's answer, checked and made readable."""
    if op.kind in ("put", "append") and x is None:
        return None
    if op.kind in ("delete", "delete_range") and type(x) is int:
        return x
    if op.kind == "get":
        return None if x is None else _kv([op.key, *x]) if type(x) is list else _kv(x)
    if op.kind == "range" and type(x) is list and len(x) == 3 and type(x[0]) is list and type(x[1]) is int:
        return RangeResult([_kv(i) for i in x[0]], x[1], x[2] is True, rev)
    raise ZraftError(f"malformed {op.kind} result in a transaction answer {x!r:.200}")
