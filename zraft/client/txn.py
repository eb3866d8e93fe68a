"""Building transactions for ``Client.txn``: conditions written as comparisons, operations as calls.

    from zraft.client import txn as t

    r = client.txn(
        [t.value("config") == b"v1", t.mod_revision("lock") < 40],   # if every one holds
        [t.put("config", "v2"), t.get("lock")],                      # then these
        [t.get("config")])                                           # else these
    r.succeeded, r.results, r.revision

A comparison's left side is one of ``value``, ``version``, ``create_revision``, ``mod_revision`` of a key; its
operator one of ``==``, ``!=``, ``<``, ``>``. A key that is not there has version, create and mod revision 0 (so
``t.version(k) == 0`` means "absent"), and its value compares false whatever the operator. The operations run in
order, each seeing the ones before, all at one revision, atomically, once (a retried transaction is not applied
twice). ``results`` has one item per operation run: None for a put or an append, the number of keys removed for a
delete and a delete_range, a ``KeyValue`` (or None) for a get, a ``RangeResult`` for a range.
"""

from __future__ import annotations

from typing import Any

from zraft.transport.requests import Compare, TxnOp, prefix_end


def _b(x: bytes | str) -> bytes:
    return x.encode() if isinstance(x, str) else x


class _Side:
    """The left side of a comparison (``value(key)``, ...): compared with ``==``, ``!=``, ``<`` or ``>``."""

    __slots__ = ("key", "target")

    def __init__(self, key: bytes | str, target: str) -> None:
        self.key = _b(key)
        self.target = target

    def _cmp(self, cmp: str, operand: Any) -> Compare:
        if self.target == "value":
            if not isinstance(operand, (bytes, str)):
                raise TypeError(f"a value compares with bytes or str, not {type(operand).__name__}")
            operand = _b(operand)
        elif type(operand) is not int or operand < 0:
            raise TypeError(f"{self.target} compares with an integer >= 0, not {operand!r:.40}")
        return Compare(self.key, self.target, cmp, operand)

    def __eq__(self, operand: object) -> Compare:  # type: ignore[override]
        return self._cmp("=", operand)

    def __ne__(self, operand: object) -> Compare:  # type: ignore[override]
        return self._cmp("!=", operand)

    def __lt__(self, operand: object) -> Compare:
        return self._cmp("<", operand)

    def __gt__(self, operand: object) -> Compare:
        return self._cmp(">", operand)

    __hash__ = None  # type: ignore[assignment]


def value(key: bytes | str) -> _Side:
    return _Side(key, "value")


def version(key: bytes | str) -> _Side:
    return _Side(key, "version")


def create_revision(key: bytes | str) -> _Side:
    return _Side(key, "create_revision")


def mod_revision(key: bytes | str) -> _Side:
    return _Side(key, "mod_revision")


def put(key: bytes | str, val: bytes | str, lease: int = 0) -> TxnOp:
    """Set ``key`` to ``val``; ``lease``: attached to this lease (the transaction is refused, ``LeaseExpired``, if
    it is gone); without one the key leaves any lease it had."""
    return TxnOp("put", _b(key), _b(val), lease)


def append(key: bytes | str, val: bytes | str) -> TxnOp:
    """Append ``val`` to ``key``'s value (a missing key is empty)."""
    return TxnOp("append", _b(key), _b(val))


def delete(key: bytes | str) -> TxnOp:
    return TxnOp("delete", _b(key))


def delete_range(start: bytes | str = b"", end: bytes | str | None = None, *,
                 prefix: bytes | str | None = None) -> TxnOp:
    """Delete the keys in ``[start, end)`` (``end`` None: to the last key), or those that start with ``prefix``;
    at most 10,000 (``kv.MAX_DELETE_RANGE``): a transaction whose range holds more is refused."""
    start, end = _bounds(start, end, prefix)
    return TxnOp("delete_range", start, end)


def get(key: bytes | str) -> TxnOp:
    return TxnOp("get", _b(key))


def get_range(start: bytes | str = b"", end: bytes | str | None = None, *, prefix: bytes | str | None = None,
              limit: int = 0) -> TxnOp:
    """Read the keys in ``[start, end)``, or those that start with ``prefix`` (``Client.range``)."""
    start, end = _bounds(start, end, prefix)
    return TxnOp("range", start, end, limit)


def _bounds(start: bytes | str, end: bytes | str | None, prefix: bytes | str | None) -> tuple[bytes, bytes | None]:
    if prefix is not None:
        if start or end is not None:
            raise ValueError("give a prefix, or start and end, not both")
        return _b(prefix), prefix_end(_b(prefix))
    return _b(start), None if end is None else _b(end)
