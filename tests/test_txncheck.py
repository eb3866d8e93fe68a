"""The transaction checker (``zraft.tools.txncheck``, after Elle): a known-bad history for each anomaly it names,
decided as that anomaly, and good histories -- serial, concurrent, with unknown outcomes -- decided as strictly
serializable."""

from __future__ import annotations

import random
from pathlib import Path

from zraft.tools.txncheck import FAIL, INFO, OK, Txn, check


def T(call: float, ret: float | None, *ops: tuple[str, str, object], status: str = OK, client: int = 0) -> Txn:
    return Txn(client, call, ret, status if ret is not None or status != OK else INFO,
               tuple((f, k, tuple(v) if isinstance(v, list) else v) for f, k, v in ops))


def a(k: str, e: int) -> tuple[str, str, object]:
    return ("append", k, e)


def r(k: str, v: list[int] | None) -> tuple[str, str, object]:
    return ("r", k, v)


def kinds(history: list[Txn]) -> set[str]:
    return {x.kind for x in check(history).anomalies}


def test_a_serial_history_is_strictly_serializable() -> None:
    h = [T(0, 1, a("x", 1), a("y", 1)), T(2, 3, r("x", [1]), a("x", 2)), T(4, 5, r("x", [1, 2]), r("y", [1]))]
    res = check(h)
    assert res.ok, res.anomalies
    assert res.edges["ww"] and res.edges["wr"] and res.edges["rt"]


def test_concurrent_transactions_may_take_effect_in_either_order() -> None:
    # T0 and T1 overlap in time: either order is a valid serialization; the reads say T1 went first.
    h = [T(0, 10, a("x", 1)), T(1, 9, a("x", 2)), T(11, 12, r("x", [2, 1]))]
    assert check(h).ok


def test_g0_dirty_write() -> None:
    # T0 and T1 both append to x and y; x says T0 then T1, y says T1 then T0: a ww cycle.
    h = [T(0, 5, a("x", 1), a("y", 1)), T(0, 5, a("x", 2), a("y", 2)), T(6, 7, r("x", [1, 2]), r("y", [2, 1]))]
    assert "G0" in kinds(h)


def test_g1a_aborted_read() -> None:
    h = [T(0, 1, a("x", 1), status=FAIL), T(2, 3, r("x", [1]))]
    assert "G1a" in kinds(h)


def test_g1b_intermediate_read() -> None:
    # T0 appends 1 then 2 to x; T1 saw the list end at 1: a state inside T0.
    h = [T(0, 5, a("x", 1), a("x", 2)), T(1, 4, r("x", [1])), T(6, 7, r("x", [1, 2]))]
    assert "G1b" in kinds(h)


def test_g1c_circular_information_flow() -> None:
    # T0 read T1's append to y, T1 read T0's append to x: each saw the other (wr both ways).
    h = [T(0, 5, a("x", 1), r("y", [2])), T(0, 5, a("y", 2), r("x", [1]))]
    assert "G1c" in kinds(h)


def test_g_single_read_skew() -> None:
    # T1 appended to x and y together; T0 saw its y but not its x.
    h = [T(0, 5, r("x", []), r("y", [1])), T(0, 5, a("x", 1), a("y", 1)), T(6, 7, r("x", [1]))]
    assert "G-single" in kinds(h)


def test_g2_write_skew() -> None:
    # Each read the key the other appended to, and saw neither append: two rw edges.
    h = [T(0, 5, r("x", []), a("y", 1)), T(0, 5, r("y", []), a("x", 1)), T(6, 7, r("x", [1]), r("y", [1]))]
    assert kinds(h) == {"G2"}


def test_a_stale_read_is_serializable_but_not_strictly() -> None:
    # The append returned before the read was called, and the read missed it: fine for serializability, not in
    # real time.
    h = [T(0, 1, a("x", 1)), T(2, 3, r("x", [])), T(4, 5, r("x", [1]))]
    assert kinds(h) == {"G-single-realtime"}


def test_a_lost_append_is_a_realtime_cycle() -> None:
    # Acknowledged, then never seen by a read that began after it.
    h = [T(0, 1, a("x", 1)), T(0, 1, a("x", 2)), T(2, 3, r("x", [2]))]
    assert kinds(h) == {"G-single-realtime"}


def test_duplicate_and_garbage_and_incompatible_reads() -> None:
    assert "duplicate" in kinds([T(0, 1, a("x", 1)), T(2, 3, r("x", [1, 1]))])
    assert "garbage" in kinds([T(0, 1, r("x", [7]))])
    assert "incompatible-order" in kinds([T(0, 1, a("x", 1)), T(0, 1, a("x", 2)), T(2, 3, r("x", [1])),
                                          T(4, 5, r("x", [2, 1]))])


def test_unknown_outcomes_count_only_when_seen() -> None:
    # An unknown append that a read saw took effect (it is in the graph); one nobody saw may never have.
    seen = [T(0, None, a("x", 1)), T(5, 6, r("x", [1]))]
    assert check(seen).ok
    unseen = [T(0, None, a("x", 1)), T(5, 6, r("x", []))]
    assert check(unseen).ok
    # A failed transaction's appends must not be seen; its reads say nothing.
    assert check([T(0, 1, a("x", 1), r("y", [9]), status=FAIL), T(2, 3, r("x", []))]).ok


def test_a_random_serial_execution_passes_and_a_swapped_read_fails() -> None:
    """Transactions run one at a time against a model store (strictly serializable by construction), in
    overlapping-free real time; then one read is replaced by an older state of its key."""
    rng = random.Random(5)
    store: dict[str, list[int]] = {"x": [], "y": [], "z": []}
    h: list[Txn] = []
    n = 0
    for i in range(300):
        ops: list[tuple[str, str, object]] = []
        for _ in range(rng.randint(1, 4)):
            k = rng.choice("xyz")
            if rng.random() < 0.5:
                n += 1
                store[k].append(n)
                ops.append(a(k, n))
            else:
                ops.append(r(k, list(store[k])))
        h.append(T(2 * i, 2 * i + 1, *ops, client=i % 5))
    res = check(h)
    assert res.ok, res.anomalies[:3]
    # A read late in the history that returns an old state of its key: stale, in real time.
    i, j = next((i, j) for i in range(250, 300) for j, (f, k, v) in enumerate(h[i].ops)
                if f == "r" and v and len(v) > 3)
    f, k, v = h[i].ops[j]
    ops = list(h[i].ops)
    ops[j] = (f, k, tuple(v)[:1])
    h[i] = Txn(h[i].client, h[i].call, h[i].ret, OK, tuple(ops))
    bad = check(h)
    assert not bad.ok and any(x.kind.endswith("realtime") or x.kind in ("G-single", "G2") for x in bad.anomalies)
    assert i in {t for x in bad.anomalies for t in x.txns}


def test_zraft_check_txn_decides_a_history_file_and_refuses_a_bad_one(tmp_path: Path) -> None:
    import json
    import subprocess
    import sys

    good, bad, broken = tmp_path / "good.jsonl", tmp_path / "bad.jsonl", tmp_path / "broken.jsonl"
    good.write_text("\n".join(json.dumps(x) for x in (
        {"client": 1, "call": 0, "ret": 1, "status": "ok", "ops": [["append", "x", 1], ["r", "y", []]]},
        {"client": 2, "call": 2, "ret": 3, "status": "ok", "ops": [["r", "x", [1]]]})))
    bad.write_text("\n".join(json.dumps(x) for x in (
        {"call": 0, "ret": 1, "ops": [["append", "x", 1]]}, {"call": 2, "ret": 3, "ops": [["r", "x", []]]})))
    broken.write_text(json.dumps({"call": 0, "ret": 1, "ops": [["append", "x", {"not": "hashable"}]]}))

    def run(p: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "zraft", "check", "--txn", str(p)], capture_output=True,
                              text=True, timeout=60)

    r = run(good)
    assert r.returncode == 0 and "verdict=strictly-serializable" in r.stdout, r.stdout + r.stderr
    r = run(bad)
    assert r.returncode == 1 and "G-single-realtime" in r.stdout, r.stdout + r.stderr
    r = run(broken)
    assert r.returncode == 2 and "broken.jsonl:1: not a transaction" in r.stderr and "Traceback" not in r.stderr


def test_a_mixed_history_file_is_checked_both_ways(tmp_path: Path) -> None:
    """A chaos run's ``--workload txn`` history: register operations and ``{"type": "txn"}`` lines in one file
    (``return`` and ``unknown`` as the other histories write them); ``zraft check`` decides both."""
    import json
    import subprocess
    import sys

    reg = {"client": 1, "op": "cas", "key": "r", "expect": None, "value": "a", "output": True, "call": 0,
           "return": 1, "status": "ok"}
    txn = {"type": "txn", "op": "txn", "client": 2, "call": 2, "return": 3, "status": "ok",
           "ops": [["append", "x", "2.1.0"], ["r", "x", ["2.1.0"]]]}
    lost = {"type": "txn", "op": "txn", "client": 3, "call": 4, "return": 5, "status": "ok", "ops": [["r", "x", []]]}
    unknown = {**txn, "return": None, "status": "unknown", "ops": [["append", "x", "3.1.0"], ["r", "x", None]]}
    assert Txn.from_json(unknown | {"status": "info"}).ret is None
    for name, lines, code, verdict in [("good", [reg, txn, unknown], 0, "verdict=strictly-serializable"),
                                        ("bad", [reg, txn, lost], 1, "verdict=NOT-strictly-serializable")]:
        path = tmp_path / f"{name}.jsonl"
        path.write_text("".join(json.dumps(x) + "\n" for x in lines))
        r = subprocess.run([sys.executable, "-m", "zraft", "check", "-q", str(path)], capture_output=True,
                           text=True, timeout=60)
        assert r.returncode == code and verdict in r.stdout and "verdict=linearizable" in r.stdout, r.stdout
