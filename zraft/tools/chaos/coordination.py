"""``zraft chaos --workload coord``: locks, watches and leases under the nemesis, each with its checker.

Clients take three roles, by number (``ROLES``):

- **lock**: take the lock ``chaos`` (``Client.lock``, a 3 s lease), append ``token.client.n;`` to the protected list
  ``protected`` with writes fenced by the token (``Lock.txn``), sometimes pause past the lease's TTL while holding it
  (keepalives stopped, as a GC pause or SIGSTOP would) and then try to write anyway, release. Checked: in the final
  list the tokens never go down (a holder superseded by a newer token never wrote after it), every acknowledged
  write is there exactly once and every refused one is not.
- **watch**: write (put or delete) keys under ``wk/`` and watch the prefix from the revision the run began at
  (``Client.watch``, resumed from node to node through the faults). Checked: each watcher's events come in strictly
  increasing revisions, none twice; every write acknowledged at a revision the watcher got to is among its events,
  with its key and kind; no event that no write made; and every two watchers saw the same events where both looked.
- **lease**: grant a lease, attach a key, keep it alive and read the key after each keepalive; then stop and let it
  expire. Checked: the key was never found gone while a keepalive acknowledged within the TTL (less
  ``lessor.safe_for``'s margin for clock drift) promised it.
"""

from __future__ import annotations

import itertools
import json
import random
import time
from typing import Any

from zraft.server.lessor import safe_for
from zraft.transport.security import ClientKeys

ROLES = ("lock", "watch", "lease")
"""Client i (from 1) takes role ``ROLES[(i - 1) % 3]``."""
LOCK = "chaos"
PROTECTED = "protected"
WATCH_PREFIX = "wk/"
LOCK_TTL = 3.0
DRAIN_S = 60.0
"""How long a watcher goes on after the load, to get every write made before it stopped."""


def role(cid: int) -> str:
    return ROLES[(cid - 1) % len(ROLES)]


def coord_client_proc(addresses: list[str], cid: int, seed: int, until: float, start_revision: int, path: str,
                      keys: ClientKeys | None = None, namespace: str | None = None) -> None:
    if namespace is not None:
        from zraft.tools import netns

        netns.enter(namespace)
    from zraft.client import Client

    rng = random.Random(seed)
    with Client(addresses, deadline=5.0, attempt_timeout=0.5, keys=keys) as cl, open(path, "w") as out:
        def record(rec: dict[str, Any]) -> None:
            out.write(json.dumps({"client": cid, **rec}) + "\n")
            out.flush()

        {"lock": _lock_loop, "watch": _watch_loop, "lease": _lease_loop}[role(cid)](
            cl, cid, rng, until, start_revision, record)


def _lock_loop(cl: Any, cid: int, rng: random.Random, until: float, start_revision: int, record: Any) -> None:
    from zraft.client import OutcomeUnknown, ZraftError
    from zraft.client import txn as t

    n = 0
    while time.monotonic() < until:
        lock = cl.lock(LOCK, ttl=LOCK_TTL)
        try:
            token = lock.acquire(timeout=max(0.5, until - time.monotonic()))
        except (TimeoutError, ZraftError) as e:
            record({"type": "lock", "event": "not_acquired", "why": str(e)[:200]})
            continue
        record({"type": "lock", "event": "acquired", "token": token})
        try:
            for _ in range(rng.randint(1, 3)):
                paused = False
                if rng.random() < 0.15 and lock.keepalive is not None:
                    lock.keepalive.stop()  # a pause longer than the TTL while holding the lock
                    time.sleep(LOCK_TTL * 1.5)
                    paused = True
                n += 1
                entry = f"{token}.{cid}.{n}"
                try:
                    r = lock.txn([], [t.append(PROTECTED, entry + ";")])
                    status = "ok" if r.succeeded else "refused"
                except OutcomeUnknown:
                    status = "unknown"
                except ZraftError:
                    status = "refused"
                record({"type": "lock", "event": "write", "token": token, "entry": entry, "status": status,
                        "paused": paused})
                if paused:
                    break
        finally:
            try:
                lock.release()
            except ZraftError:
                pass


def _watch_loop(cl: Any, cid: int, rng: random.Random, until: float, start_revision: int, record: Any) -> None:
    from zraft.client import OutcomeUnknown, ZraftError

    stream = cl.watch(prefix=WATCH_PREFIX, start_revision=start_revision)

    def drain(timeout: float) -> None:
        for e in stream.get(timeout):
            record({"type": "wevent", "rev": e.mod_revision, "key": e.key.decode(), "kind": e.type})

    n = 0
    while time.monotonic() < until:
        n += 1
        key = f"{WATCH_PREFIX}{cid}/{rng.randrange(5)}"
        kind = "delete" if rng.random() < 0.25 else "put"
        try:
            rev = cl.delete(key) if kind == "delete" else cl.put(key, f"{cid}.{n}")
            record({"type": "wwrite", "key": key, "kind": kind, "rev": rev, "status": "ok"})
        except OutcomeUnknown:
            record({"type": "wwrite", "key": key, "kind": kind, "rev": None, "status": "unknown"})
        except ZraftError:
            record({"type": "wwrite", "key": key, "kind": kind, "rev": None, "status": "fail"})
        drain(0.02)
    # Every write made before the load stopped has a revision below this marker's: get to it.
    time.sleep(6.0)  # (the other writers' last requests end within their 5 s deadline)
    end = time.monotonic() + DRAIN_S
    target = None
    while target is None and time.monotonic() < end:
        try:
            target = cl.put(f"wkdone/{cid}", "1")
        except ZraftError:
            drain(0.5)
    while target is not None and stream.revision < target and time.monotonic() < end:
        drain(0.5)
    record({"type": "wdone", "last": stream.revision, "start": start_revision, "resumes": stream.resumes})
    stream.close()


def _lease_loop(cl: Any, cid: int, rng: random.Random, until: float, start_revision: int, record: Any) -> None:
    from zraft.client import LeaseExpired, ZraftError

    key = f"lk/{cid}"
    while time.monotonic() < until:
        ttl = rng.choice((2.0, 3.0))
        sent = time.monotonic()
        try:
            lease = cl.grant(ttl)
            cl.put(key, "held", lease=lease)
        except ZraftError as e:
            record({"type": "lease", "event": "not_granted", "why": str(e)[:200]})
            continue
        promised = sent  # the send time of the last grant or keepalive acknowledged
        for _ in range(rng.randint(3, 12)):
            if time.monotonic() >= until:
                break
            time.sleep(ttl / 4)
            sent = time.monotonic()
            try:
                cl.keepalive(lease)
                promised = sent
            except LeaseExpired:
                record({"type": "lease", "event": "expired", "lease": lease, "at": time.monotonic(),
                        "safe_until": promised + safe_for(ttl)})
                break
            except ZraftError:
                continue
            try:
                v = cl.get(key)
            except ZraftError:
                continue
            if v is None:
                record({"type": "lease", "event": "gone", "lease": lease, "at": time.monotonic(),
                        "safe_until": promised + safe_for(ttl)})
                break
        else:
            record({"type": "lease", "event": "kept", "lease": lease})
        try:
            cl.revoke(lease)
        except ZraftError:
            pass


COORD_TYPES = frozenset(("lock", "wwrite", "wevent", "wdone", "lease"))


def check(records: list[dict[str, Any]], protected: bytes | None) -> tuple[list[str], dict[str, int]]:
    """The violations in a coordination run's records (and the final value of the protected list), and counts."""
    problems: list[str] = []
    if protected is None:  # (from a history file: the run recorded the final value)
        final = next((r for r in records if r["type"] == "lock" and r["event"] == "final"), None)
        protected = None if final is None or final["value"] is None else final["value"].encode()
    # Locks: fenced writes.
    entries = [x for x in (protected or b"").decode().split(";") if x]
    tokens = [int(x.split(".")[0]) for x in entries]
    for i in range(1, len(tokens)):
        if tokens[i] < tokens[i - 1]:
            problems.append(f"lock: a write with token {tokens[i]} was applied after one with token {tokens[i - 1]} "
                            f"(a superseded holder wrote): {entries[i - 1]!r} then {entries[i]!r}")
            break
    present = set(entries)
    if len(present) != len(entries):
        problems.append("lock: a fenced write was applied twice")
    writes = [r for r in records if r["type"] == "lock" and r["event"] == "write"]
    for w in writes:
        if w["status"] == "ok" and w["entry"] not in present:
            problems.append(f"lock: acknowledged fenced write {w['entry']!r} is missing")
        if w["status"] == "refused" and w["entry"] in present:
            problems.append(f"lock: refused fenced write {w['entry']!r} was applied")
    # Watches.
    made = [r for r in records if r["type"] == "wwrite"]
    puts = {r["rev"]: r for r in made if r["status"] == "ok" and r["kind"] == "put"}
    at_rev: dict[int, set[tuple[str, str]]] = {}
    for r in made:
        if r["status"] == "ok":
            at_rev.setdefault(r["rev"], set()).add((r["key"], r["kind"]))
    unknown = {(r["key"], r["kind"]) for r in made if r["status"] == "unknown"}
    streams: dict[int, list[tuple[int, str, str]]] = {}
    for r in records:
        if r["type"] == "wevent":
            streams.setdefault(r["client"], []).append((r["rev"], r["key"], r["kind"]))
    done = {r["client"]: r for r in records if r["type"] == "wdone"}
    for cid, events in sorted(streams.items()):
        revs = [e[0] for e in events]
        if any(b <= a for a, b in itertools.pairwise(revs)):
            bad = next(i for i in range(1, len(revs)) if revs[i] <= revs[i - 1])
            problems.append(f"watch: client {cid} got revision {revs[bad]} after {revs[bad - 1]} (out of order or "
                            "twice)")
            continue
        got = {e[0]: e for e in events}
        last = done[cid]["last"] if cid in done else (revs[-1] if revs else 0)
        start = done[cid]["start"] if cid in done else 0
        # Every acknowledged put it got to is there. (A delete may have changed nothing -- the key was not there --
        # and then it made no event and answers the revision as it was: deletes are checked by the next rule.)
        for rev, w in sorted(puts.items()):
            if start <= rev <= last and got.get(rev) != (rev, w["key"], "put"):
                problems.append(f"watch: client {cid} missed put {w['key']!r} at revision {rev} (it got to revision "
                                f"{last})")
                break
        for e in events:
            if (e[1], e[2]) not in at_rev.get(e[0], ()) and (e[1], e[2]) not in unknown:
                problems.append(f"watch: client {cid} got an event no write made: {e}")
                break
    clients = sorted(streams)
    for a, b in itertools.pairwise(clients):
        lo = max(done.get(a, {}).get("start", 0), done.get(b, {}).get("start", 0))
        hi = min(done.get(a, {}).get("last", 0), done.get(b, {}).get("last", 0))
        sa = [e for e in streams[a] if lo <= e[0] <= hi]
        sb = [e for e in streams[b] if lo <= e[0] <= hi]
        if sa != sb:
            problems.append(f"watch: clients {a} and {b} saw different events between revisions {lo} and {hi}")
    # Leases.
    for r in records:
        if r["type"] == "lease" and r["event"] in ("gone", "expired") and r["at"] < r["safe_until"]:
            problems.append(f"lease: lease {r['lease']} of client {r['client']} was {r['event']} at {r['at']:.3f}, "
                            f"while an acknowledged keepalive promised it until {r['safe_until']:.3f}")
    counts = {"fenced_ok": sum(1 for w in writes if w["status"] == "ok"),
              "fenced_refused": sum(1 for w in writes if w["status"] == "refused"),
              "holders": len(set(tokens)), "paused_holders": sum(1 for w in writes if w["paused"]),
              "watch_events": sum(len(s) for s in streams.values()), "watchers": len(streams),
              "watch_resumes": sum(r.get("resumes", 0) for r in done.values()),
              "leases_kept": sum(1 for r in records if r["type"] == "lease" and r["event"] == "kept"),
              "leases_lost": sum(1 for r in records if r["type"] == "lease" and r["event"] in ("gone", "expired"))}
    return problems, counts
