"""The chaos run's clients: processes that write and read through the Python client (or redis-py), each
recording its history of operations for the checker."""

from __future__ import annotations

import json
import random
import time
from typing import Any

from zraft.transport.security import ClientKeys


def _random_ops(rng: random.Random, cid: int, n: int, count: int, w: float, append_keys: list[str],
                register_keys: list[str]) -> list[dict[str, Any]]:
    """``count`` random operations (appends of unique values, puts, deletes, and a ``1 - w`` share of gets), as
    history records still to be completed; ``n`` is the client's count of operations so far."""
    recs: list[dict[str, Any]] = []
    for i in range(n + 1, n + count + 1):
        x = rng.random()
        if x < 0.7 * w:
            kind, key, value = "append", rng.choice(append_keys), f"{cid}.{i};"
        elif x < 0.93 * w:
            kind, key, value = "put", rng.choice(register_keys), f"{cid}.{i}"
        elif x < w:
            kind, key, value = "delete", rng.choice(register_keys), None
        else:
            kind, key, value = "get", rng.choice(append_keys + register_keys), None
        recs.append({"client": cid, "op": kind, "key": key, "value": value, "output": None})
    return recs


def client_proc(addresses: list[str], cid: int, seed: int, until: float, append_keys: list[str],
                 register_keys: list[str], path: str, keys: ClientKeys | None = None, pipeline: int = 1,
                 read_share: float = 0.35, namespace: str | None = None) -> None:
    """One client process: random operations until ``until``, each recorded with its call and return times.
    With ``pipeline`` > 1 it sends that many requests at once (``run_many``); they are concurrent, so each is
    recorded with the call and return of the whole group. ``read_share``: the fraction of reads. ``namespace``:
    the network namespace to run in (``--netns``: the LAN's clients' namespace)."""
    if namespace is not None:
        from zraft.tools import netns

        netns.enter(namespace)
    from zraft.client import Client, OutcomeUnknown, RequestRefused, Unavailable

    rng = random.Random(seed)
    n = 0
    # Client 1 gives up quickly, so some of its writes end with an unknown outcome that the checker must place.
    deadline = 1.0 if cid == 1 else 5.0
    with Client(addresses, deadline=deadline, attempt_timeout=0.5, keys=keys) as cl, open(path, "w") as out:
        while time.monotonic() < until:
            recs = _random_ops(rng, cid, n, pipeline, 1.0 - read_share, append_keys, register_keys)
            n += pipeline
            call = time.monotonic()
            for rec in recs:
                rec["call"] = call
            try:
                if pipeline == 1:
                    rec = recs[0]
                    kind, key, value = rec["op"], rec["key"], rec["value"]
                    if kind == "get":
                        v = cl.get(key)
                        rec["output"] = None if v is None else v.decode()
                    elif kind == "delete":
                        cl.delete(key)
                    else:
                        getattr(cl, kind)(key, value)
                else:
                    got = cl.run_many([(r["op"], r["key"], r["value"] or "") for r in recs])
                    for rec, v in zip(recs, got, strict=True):
                        if rec["op"] == "get":
                            rec["output"] = None if v is None else v.decode()
                ret = time.monotonic()
                for rec in recs:
                    rec["return"], rec["status"] = ret, "ok"
            except (OutcomeUnknown, Unavailable):
                for rec in recs:
                    rec["return"] = None
                    rec["status"] = "unknown" if rec["op"] != "get" else "fail"
            except RequestRefused:
                for rec in recs:
                    rec["return"] = time.monotonic()
                    rec["status"] = "fail"
            out.write("".join(json.dumps(rec) + "\n" for rec in recs))
            out.flush()


def resp_client_proc(addresses: list[str], cid: int, seed: int, until: float, append_keys: list[str],
                      register_keys: list[str], path: str, pipeline: int = 1, read_share: float = 0.35,
                      namespace: str | None = None, password: str | None = None) -> None:
    """``client_proc`` through the Redis protocol (redis-py): SET, APPEND, DEL, GET at a random node's Redis port
    (any node serves every command), another one after a connection error. A write answered with an error
    (-TRYAGAIN after the node's 10 s of retries) or cut off has an unknown outcome; a failed read none."""
    if namespace is not None:
        from zraft.tools import netns

        netns.enter(namespace)
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    rng = random.Random(seed)
    n = 0
    protocol = 2 + cid % 2  # half the clients speak RESP2, half RESP3 (HELLO 3)

    def connect() -> redis.Redis:
        host, _, port = rng.choice(addresses).rpartition(":")
        # No retries by redis-py (it retries a command up to 10 times on a broken connection by default): a retry
        # on a new connection is a new session, so a write whose answer was lost could be applied twice.
        return redis.Redis(host=host, port=int(port), socket_timeout=12.0, socket_connect_timeout=2.0,
                           protocol=protocol, retry=Retry(NoBackoff(), 0), password=password)

    r = connect()
    with open(path, "w") as out:
        while time.monotonic() < until:
            recs = _random_ops(rng, cid, n, pipeline, 1.0 - read_share, append_keys, register_keys)
            n += pipeline
            call = time.monotonic()
            p = r.pipeline(transaction=False)
            for rec in recs:
                rec["call"] = call
                kind, key, value = rec["op"], rec["key"], rec["value"]
                if kind == "get":
                    p.get(key)
                elif kind == "delete":
                    p.delete(key)
                elif kind == "put":
                    p.set(key, value)
                else:
                    p.append(key, value)
            try:
                results = p.execute(raise_on_error=False)
            except (redis.ConnectionError, redis.TimeoutError):
                results = [None] * len(recs)
                lost = True
            else:
                lost = False
            ret = time.monotonic()
            for rec, res in zip(recs, results, strict=True):
                if lost or isinstance(res, Exception):
                    rec["return"] = None if rec["op"] != "get" else ret
                    rec["status"] = "unknown" if rec["op"] != "get" else "fail"
                else:
                    rec["return"], rec["status"] = ret, "ok"
                    if rec["op"] == "get":
                        rec["output"] = None if res is None else res.decode()
            if lost:
                r.close()
                r = connect()
            out.write("".join(json.dumps(rec) + "\n" for rec in recs))
            out.flush()


def txn_client_proc(addresses: list[str], cid: int, seed: int, until: float, append_keys: list[str],
                    register_keys: list[str], path: str, keys: ClientKeys | None = None,
                    namespace: str | None = None) -> None:
    """``--workload txn``: transactions through ``Client.txn`` until ``until``. Most are list-append transactions
    after Elle's (1-4 micro-operations on the list keys: appends of unique elements, and reads), recorded as
    ``{"type": "txn", "ops": [["append", k, e] | ["r", k, [elements] or null], ...], ...}`` for
    ``zraft.tools.txncheck``; the rest compare-and-swap, put and get on the register keys, recorded as the
    linearizability checker's operations (a cas: ``{"op": "cas", "expect", "value", "output": swapped}``)."""
    if namespace is not None:
        from zraft.tools import netns

        netns.enter(namespace)
    from zraft.client import Client, OutcomeUnknown, RequestRefused, Unavailable
    from zraft.client import txn as t

    rng = random.Random(seed)
    n = 0
    seen: dict[str, list[str]] = {k: [] for k in register_keys}
    deadline = 1.0 if cid == 1 else 5.0
    with Client(addresses, deadline=deadline, attempt_timeout=0.5, keys=keys) as cl, open(path, "w") as out:
        while time.monotonic() < until:
            n += 1
            rec: dict[str, Any]
            if rng.random() < 0.6:
                mops: list[list[Any]] = []
                for j in range(rng.randint(1, 4)):
                    key = rng.choice(append_keys)
                    mops.append(["append", key, f"{cid}.{n}.{j}"] if rng.random() < 0.5 else ["r", key, None])
                ops = [t.append(k, f"{e};") if f == "append" else t.get(k) for f, k, e in mops]
                rec = {"type": "txn", "op": "txn", "client": cid, "ops": mops, "call": time.monotonic()}
                try:
                    r = cl.txn([], ops)
                    rec["return"], rec["status"] = time.monotonic(), "ok"
                    for m, res in zip(mops, r.results, strict=True):
                        if m[0] == "r":
                            m[2] = [] if res is None else [x for x in (res.value or b"").decode().split(";") if x]
                except (OutcomeUnknown, Unavailable):
                    rec["return"], rec["status"] = None, "unknown"
                except RequestRefused:
                    rec["return"], rec["status"] = time.monotonic(), "fail"
            else:
                key = rng.choice(register_keys)
                kind = rng.choice(("cas", "cas", "put", "get"))
                value = f"{cid}.{n}"
                rec = {"client": cid, "op": kind, "key": key, "value": None if kind == "get" else value,
                       "output": None, "call": time.monotonic()}
                try:
                    if kind == "cas":
                        expect = rng.choice([*seen[key][-3:], None])
                        rec["expect"] = expect
                        rec["output"] = cl.cas(key, expect, value)
                        if rec["output"]:
                            seen[key].append(value)
                    elif kind == "put":
                        cl.put(key, value)
                        seen[key].append(value)
                    else:
                        v = cl.get(key)
                        rec["output"] = None if v is None else v.decode()
                        if v is not None:
                            seen[key].append(v.decode())
                    rec["return"], rec["status"] = time.monotonic(), "ok"
                except (OutcomeUnknown, Unavailable):
                    rec["return"] = None
                    rec["status"] = "unknown" if kind != "get" else "fail"
                except RequestRefused:
                    rec["return"], rec["status"] = time.monotonic(), "fail"
            out.write(json.dumps(rec) + "\n")
            out.flush()
