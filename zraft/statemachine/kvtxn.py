"""The key-value store's transactions (``Op.TXN``): the command a request becomes, its compares, and its operations
applied all or nothing at one revision.

A part of ``KVStore`` (``kv.py``), as ``Replica``'s clients are a part of it: its methods run on the one store
object; what they use of the rest is declared at the top of ``TxnPart``. The store's constants are read from
``kv`` when a method runs (``kv`` imports this module while it is being defined).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from zlib import crc32

from msgpack import unpackb
from sortedcontainers import SortedList

from zraft.statemachine import kv as _kv
from zraft.statemachine.leases import Leases
from zraft.transport.requests import MAX_RANGE_BYTES, MAX_RANGE_KEYS, Txn

if TYPE_CHECKING:
    from zraft.statemachine.kvsnapshot import SnapshotImage


class TxnPart:
    shards: list[dict[bytes, Any]]
    index: SortedList
    leases: Leases
    revision: int
    rev: int
    result: bytes | None
    txn_out: list[Any] | None
    events: list[Any] | None

    def range(self, start: bytes, end: bytes | None, limit: int, max_bytes: int,
              values: bool = True) -> tuple[list[bytes], int]:
        raise NotImplementedError  # kv.py

    def _put(self, h: int, key: bytes, value: bytes | None, img: SnapshotImage | None, keep: bool = False) -> None:
        raise NotImplementedError  # kv.py

    def _txn_command(self, req: Txn) -> bytes | tuple[str, str]:
        for key, _, _, operand in req.compares:
            if len(key) > _kv.MAX_KEY_BYTES or (type(operand) is bytes and len(operand) > _kv.MAX_VALUE_BYTES):
                return "too_large", _kv.check_limits(key, operand if type(operand) is bytes else b"") or ""
        for ops in (req.then, req.otherwise):
            for kind, key, arg, _ in ops:
                value = kind == "put" or kind == "append"
                if len(key) > _kv.MAX_KEY_BYTES or (arg is not None and len(arg) > (
                        _kv.MAX_VALUE_BYTES if value else _kv.MAX_KEY_BYTES)):
                    why = _kv.check_limits(key, arg or b"") if value else _kv.check_limits(key)
                    return "too_large", why or (
                        f"a range's end is {len(arg or b'')} bytes; the limit is {_kv.MAX_KEY_BYTES}")
        # The records as they are (msgpack writes a named tuple as an array): no copy on the path of every one.
        return _kv.encode_command(_kv.TXN, req.client, req.seq, req.ack, b"",
                                  _kv._pack([req.compares, req.then, req.otherwise]))

    def _holds(self, c: Any) -> bool | None:
        """Whether a transaction's compare holds now; None if it is malformed."""
        if type(c) is not list or len(c) != 4:
            return None
        key, target, cmp, operand = c
        if type(key) is not bytes or type(target) is not str or type(operand) is not (
                bytes if target == _kv.V_VALUE else int):
            return None
        e = self.shards[crc32(key) >> _kv.SHARD_SHIFT].get(key)
        if target == _kv.V_VALUE:
            if e is None:
                return False  # a missing key's value compares false, whatever the operator (as etcd)
            have: Any = e[0] if type(e) is tuple else e
        elif target in _kv._META_INDEX:
            have = 0 if e is None else (e[_kv._META_INDEX[target]] if type(e) is tuple else 1)
        else:
            return None
        if cmp == _kv.C_EQ:
            return bool(have == operand)
        if cmp == _kv.C_NE:
            return bool(have != operand)
        if cmp == _kv.C_LT:
            return bool(have < operand)
        return bool(have > operand) if cmp == _kv.C_GT else None

    def _apply_txn(self, value: bytes, img: SnapshotImage | None) -> int:
        """A transaction (``_kv.TXN``): its compares, then one branch's operations in order, at one revision (the next,
        if any of them changed the store); ``self.result`` its packed ``[succeeded, results]`` (and ``self.txn_out``
        the same unpacked, for the answer). All or nothing: a delete_range over ``_kv.MAX_DELETE_RANGE`` keys, or an
        append past ``_kv.MAX_VALUE_BYTES``, undoes the operations before it, and the transaction is refused
        (``_kv.TOO_LARGE``); so does a malformed operation (``_kv.BAD_COMMAND``: never proposed by a correct node)."""
        try:
            cmps, then, otherwise = unpackb(value)
        except Exception:
            return _kv.BAD_COMMAND
        if type(cmps) is not list or type(then) is not list or type(otherwise) is not list:
            return _kv.BAD_COMMAND
        succeeded = True
        for c in cmps:
            held = self._holds(c)
            if held is None:
                return _kv.BAD_COMMAND
            succeeded = succeeded and held
        ops = then if succeeded else otherwise
        before = self.revision
        events = self.events
        mark = 0 if events is None else len(events)
        rev = before + 1 if before else 0  # what its writes are made at; kept only if one changes something
        self.rev = rev
        undo: list[tuple[int, bytes, _kv.Entry | None]] = []
        leasing: list[tuple[bytes, int]] = []
        """(key, lease) for each put (lease 0: none) and delete: the keys' leases change once it succeeded."""
        leases = self.leases
        results: list[Any] = []
        budget = MAX_RANGE_BYTES
        shards = self.shards
        status = _kv.OK
        for o in ops:
            if type(o) is not list or len(o) != 4:
                status = _kv.BAD_COMMAND
                break
            kind, key, arg, limit = o
            if type(key) is not bytes or len(key) > _kv.MAX_KEY_BYTES or not (arg is None or type(arg) is bytes):
                status = _kv.BAD_COMMAND
                break
            if kind == _kv.T_PUT or kind == _kv.T_APPEND or kind == _kv.T_DELETE:
                h = crc32(key) >> _kv.SHARD_SHIFT
                data = shards[h]
                old = data.get(key)
                if kind == _kv.T_DELETE:
                    if old is None:
                        results.append(0)
                        continue
                    new = None
                    results.append(1)
                elif arg is None:
                    status = _kv.BAD_COMMAND
                    break
                elif kind == _kv.T_PUT:
                    new = arg
                    if limit and not (type(limit) is int and leases.room(limit, key)):
                        status = _kv.LEASE_LIMIT if type(limit) is int and limit in leases.table \
                            and not leases.table[limit].solo else _kv.NO_LEASE
                        break
                    results.append(None)
                else:
                    old_value = b"" if old is None else old[0] if isinstance(old, tuple) else old
                    if len(old_value) + len(arg) > _kv.MAX_VALUE_BYTES:
                        status = _kv.TOO_LARGE
                        break
                    new = old_value + arg
                    results.append(None)
                if len(new or b"") > _kv.MAX_VALUE_BYTES:
                    status = _kv.TOO_LARGE
                    break
                undo.append((h, key, old))
                if kind != _kv.T_APPEND:
                    leasing.append((key, limit if kind == _kv.T_PUT else 0))
                if img is not None and key not in img.before[h]:
                    img.before[h][key] = old
                if new is None:
                    del data[key]
                    self.index.remove(key)
                    if img is not None:
                        img.deleted(key)
                    if events is not None and rev:
                        events += _kv._event(rev, key, None, old)
                else:
                    entry = data[key] = _kv._written(old, new, rev)
                    if old is None:
                        self.index.add(key)
                    if events is not None and rev:
                        events += _kv._event(rev, key, entry, old)
            elif kind == _kv.T_DELETE_RANGE:
                keys, count = self.range(key, arg, _kv.MAX_DELETE_RANGE + 1, 1 << 62, values=False)
                if count > _kv.MAX_DELETE_RANGE:
                    status = _kv.TOO_LARGE
                    break
                for k in keys:
                    h = crc32(k) >> _kv.SHARD_SHIFT
                    undo.append((h, k, shards[h][k]))
                    leasing.append((k, 0))
                    self._put(h, k, None, img, keep=True)
                results.append(count)
            elif kind == _kv.T_GET:
                e = shards[crc32(key) >> _kv.SHARD_SHIFT].get(key)
                results.append(None if e is None else list(_kv.meta_of(e)))
                budget -= 0 if e is None else len(e[0] if type(e) is tuple else e)
            elif kind == _kv.T_RANGE and type(limit) is int and 0 <= limit <= MAX_RANGE_KEYS:
                keys, count = self.range(key, arg, limit or MAX_RANGE_KEYS, max(budget, 0))
                kvs: list[list[Any]] = [[k, *_kv.meta_of(shards[crc32(k) >> _kv.SHARD_SHIFT][k])] for k in keys]
                budget -= sum(len(k) + len(kv[1]) for k, kv in zip(keys, kvs, strict=True))
                results.append([kvs, count, count > len(kvs)])
            else:
                status = _kv.BAD_COMMAND
                break
        if status != _kv.OK:
            self._undo(undo)
            if events is not None:
                del events[mark:]
            self.rev = before
            return status
        if undo and before:
            self.revision = rev
        else:
            self.rev = before
        for key, lease in leasing:
            if lease:
                leases.attach(key, lease)
            elif leases.of_key:
                leases.detach(key)
        out = self.txn_out = [succeeded, results]
        self.result = _kv._pack(out)
        return _kv.OK

    def _undo(self, undo: list[tuple[int, bytes, _kv.Entry | None]]) -> None:
        """Put back the entries a transaction changed (``undo``: each key's entry before its change, in order)."""
        for h, key, old in reversed(undo):
            data = self.shards[h]
            if old is None:
                if key in data:
                    del data[key]
                    self.index.remove(key)
            else:
                if key not in data:
                    self.index.add(key)
                data[key] = old
