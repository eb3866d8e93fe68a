"""The linearizability checker on hand-written histories that are and are not linearizable, and on a large
history generated from a real (sequentially consistent, atomic) execution."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from pathlib import Path

from zraft.tools.check import Op, check, check_key


def op(kind: str, call: float, ret: float | None, value: str | None = None, output: str | None = None,
       client: int = 1, key: str = "k") -> Op:
    return Op(client, kind, key, None if value is None else value.encode(),
              None if output is None else output.encode(), call, ret)


def ok(*ops: Op) -> bool:
    return check_key(list(ops)).ok


def test_sequential_history() -> None:
    assert ok(op("put", 0, 1, "a"), op("get", 2, 3, output="a"), op("append", 4, 5, "b"),
              op("get", 6, 7, output="ab"), op("delete", 8, 9), op("get", 10, 11, output=None))


def test_concurrent_write_may_be_seen_or_not() -> None:
    # The put overlaps both reads: one may see it and the later one must then see it too.
    assert ok(op("put", 0, 10, "x"), op("get", 1, 2, output=None, client=2), op("get", 3, 4, output="x", client=3))
    assert not ok(op("put", 0, 10, "x"), op("get", 1, 2, output="x", client=2),
                  op("get", 3, 4, output=None, client=3))


def cas(call: float, ret: float | None, expect: str | None, value: str, swapped: bool | None, client: int = 1,
        key: str = "k") -> Op:
    return Op(client, "cas", key, value.encode(), None, call, ret, None if expect is None else expect.encode(),
              None if ret is None else swapped)


def test_compare_and_swap_sequential() -> None:
    assert ok(op("put", 0, 1, "a"), cas(2, 3, "a", "b", True), cas(4, 5, "a", "c", False), op("get", 6, 7, output="b"),
              cas(8, 9, None, "d", False), op("delete", 10, 11), cas(12, 13, None, "e", True),
              op("get", 14, 15, output="e"))
    assert not ok(op("put", 0, 1, "a"), cas(2, 3, "a", "b", False))  # it should have swapped
    assert not ok(op("put", 0, 1, "a"), cas(2, 3, "b", "c", True))  # it should not have


def test_two_concurrent_swaps_from_one_value_cannot_both_succeed() -> None:
    assert ok(op("put", 0, 1, "a"), cas(2, 5, "a", "b", True, client=2), cas(2, 5, "a", "c", False, client=3))
    assert not ok(op("put", 0, 1, "a"), cas(2, 5, "a", "b", True, client=2), cas(2, 5, "a", "c", True, client=3))


def test_a_swap_of_unknown_outcome_that_a_later_one_depends_on_is_kept() -> None:
    # Nothing read "b", but the second swap expected it and succeeded: the first one happened.
    assert ok(op("put", 0, 1, "a"), cas(2, None, "a", "b", None), cas(3, 4, "b", "c", True, client=2),
              op("get", 5, 6, output="c", client=3))
    assert ok(op("put", 0, 1, "a"), cas(2, None, "a", "b", None), op("get", 3, 4, output="a", client=2))


def test_a_failed_swap_may_be_explained_by_a_write_of_unknown_outcome_nobody_read() -> None:
    # Found by the simulator's transaction clients: a put whose answer was lost, then a cas(absent -> x) that
    # failed. Nothing ever read the put's value, but the failed cas saw that something was there: the put happened.
    assert ok(op("put", 0, None, "a"), cas(2, 3, None, "x", False, client=2))
    assert ok(cas(0, None, None, "a", None), cas(2, 3, "b", "x", False, client=2))  # (any value but "b")
    assert not ok(op("get", 0, 1, output=None), cas(2, 3, None, "x", False, client=2))  # nothing could explain it


def test_a_cas_goes_to_json_and_back() -> None:
    o = cas(1.0, 2.0, None, "v", True)
    assert Op.from_json(json.loads(json.dumps(o.to_json()))) == o
    assert Op.from_json({"op": "cas", "key": "k", "expect": "x", "value": "y", "output": None, "call": 1,
                         "return": None}).swapped is None


def test_a_random_cas_register_history_is_decided() -> None:
    """Clients swap a register at random, each operation taking effect at one instant inside its interval (an
    atomic register): linearizable. With one sequential swap's answer flipped: not."""
    rng = random.Random(11)
    value: bytes | None = None
    ops: list[Op] = []
    t = 0.0
    for i in range(400):
        t += 1.0
        c = rng.randrange(8)
        start, end = t - rng.uniform(0, 0.9), t + rng.uniform(0, 0.9)
        if rng.random() < 0.3:
            ops.append(Op(c, "get", "k", None, value, start, end))
            continue
        expect = value if rng.random() < 0.6 else rng.choice([None, b"v1", b"v2"])
        new = f"v{i}".encode()
        swapped = expect == value
        if swapped:
            value = new
        ops.append(Op(c, "cas", "k", new, None, start, end, expect, swapped))
    assert check_key(ops).ok
    flipped = list(ops)
    flipped.append(Op(99, "cas", "k", b"last", None, t + 2, t + 3, value, False))  # alone in time: must swap
    assert check_key(flipped).ok is False


    assert not ok(op("put", 0, 1, "a"), op("put", 2, 3, "b"), op("get", 4, 5, output="a", client=2))


def test_lost_write_is_caught() -> None:
    # An acknowledged append that a later read does not contain.
    assert not ok(op("append", 0, 1, "x"), op("append", 2, 3, "y"), op("get", 4, 5, output="y", client=2))


def test_duplicated_append_is_caught() -> None:
    assert not ok(op("append", 0, 1, "x"), op("get", 2, 3, output="xx", client=2))


def test_read_of_a_value_never_written_is_caught() -> None:
    assert not ok(op("put", 0, 1, "a"), op("get", 2, 3, output="zzz", client=2))


def test_unknown_outcome_may_have_happened() -> None:
    # The client never learned whether its append happened; a later read shows it did.
    assert ok(op("append", 0, None, "x"), op("get", 5, 6, output="x", client=2))


def test_unknown_outcome_may_not_have_happened() -> None:
    assert ok(op("append", 0, None, "x"), op("get", 5, 6, output=None, client=2))


def test_unknown_outcome_cannot_happen_before_its_call() -> None:
    assert not ok(op("get", 0, 1, output="x", client=2), op("append", 5, None, "x"))


def test_unknown_outcome_happens_at_most_once_and_stays() -> None:
    # Seen, then gone without a delete: not linearizable.
    assert not ok(op("append", 0, None, "x"), op("get", 5, 6, output="x", client=2),
                  op("get", 7, 8, output=None, client=3))


def test_reads_must_agree_on_the_order_of_appends() -> None:
    assert ok(op("append", 0, 10, "a"), op("append", 0, 10, "b", client=2), op("get", 11, 12, output="ab", client=3))
    assert not ok(op("append", 0, 10, "a"), op("append", 0, 10, "b", client=2),
                  op("get", 11, 12, output="ab", client=3), op("get", 13, 14, output="ba", client=4))


def test_keys_are_checked_separately() -> None:
    res = check([op("put", 0, 1, "a", key="x"), op("get", 2, 3, output="a", key="x"),
                 op("put", 0, 1, "a", key="y"), op("get", 2, 3, output="b", key="y")])
    assert [(r.key, r.ok) for r in res] == [("x", True), ("y", False)]
    assert "stuck at" in res[1].explanation


def random_history(n_ops: int, keys: int, clients: int, seed: int) -> list[Op]:
    """A history from an atomic store: each operation takes effect at one instant inside [call, return]."""
    rng = random.Random(seed)
    state: dict[str, bytes | None] = {}
    ops = []
    t = 0.0
    per_client_free = [0.0] * clients
    for i in range(n_ops):
        c = rng.randrange(clients)
        call = max(t, per_client_free[c]) + rng.random()
        t = call
        point = call + rng.random() * 5  # when it takes effect (events are applied in call order: close enough)
        ret = point + rng.random() * 5
        per_client_free[c] = ret
        k = f"k{rng.randrange(keys)}"
        kind = rng.choice(("put", "append", "append", "get", "get", "delete"))
        cur = state.get(k)
        if kind == "get":
            ops.append(Op(c, kind, k, None, cur, call, ret))
        else:
            v = b"%d," % i
            state[k] = v if kind == "put" else (cur or b"") + v if kind == "append" else None
            unknown = rng.random() < 0.02
            ops.append(Op(c, kind, k, v if kind != "delete" else None, None, call, None if unknown else ret))
    return ops


def test_generated_histories_are_linearizable_and_fast() -> None:
    ops = random_history(10_000, 10, 8, 1)
    start = time.monotonic()
    res = check(ops)
    elapsed = time.monotonic() - start
    assert all(r.ok for r in res), [r.explanation for r in res if not r.ok]
    assert elapsed < 30, elapsed  # the issue asks for seconds; a generous bound so a slow CI does not flake


def test_generated_history_with_a_stale_read_fails() -> None:
    ops = random_history(300, 3, 5, 2)
    # Make one late read return an older value of its key.
    for i in range(len(ops) - 1, 0, -1):
        o = ops[i]
        if o.kind == "get" and o.output and len(o.output) > 6:
            ops[i] = Op(o.client, "get", o.key, None, o.output[: o.output.index(b",") + 1], o.call, o.ret)
            break
    assert not all(r.ok for r in check(ops))


def test_cli(tmp_path: Path) -> None:
    good = tmp_path / "good.jsonl"
    good.write_text("\n".join(json.dumps(o.to_json()) for o in random_history(300, 3, 4, 3)) + "\n")
    root = Path(__file__).resolve().parent.parent
    r = subprocess.run([sys.executable, "-m", "zraft", "check", str(good)], capture_output=True, text=True, cwd=root,
                       timeout=120)
    assert r.returncode == 0 and r.stdout.strip().splitlines()[-1].endswith("verdict=linearizable")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(op("put", 0, 1, "a").to_json()) + "\n"
                   + json.dumps(op("get", 2, 3, output="b").to_json()) + "\n")
    r = subprocess.run([sys.executable, "-m", "zraft", "check", str(bad)], capture_output=True, text=True, cwd=root,
                       timeout=120)
    assert r.returncode == 1 and "NOT linearizable" in r.stdout


def test_many_unknown_writes_stay_cheap() -> None:
    """Unknown-outcome writes nobody observed are set aside instead of doubling the search for each one."""
    ops = [op("append", 0, 100, "base;")]
    ops += [op("append", 1 + i * 0.01, None, f"u{i};", client=10 + i) for i in range(60)]
    ops += [op("get", 101 + i, 101.5 + i, output="base;", client=2) for i in range(50)]
    start = time.monotonic()
    assert ok(*ops)
    assert time.monotonic() - start < 5
    # One of them was observed: it must have happened before that read, and it stays in the search.
    ops.append(op("get", 200, 201, output="base;u7;", client=3))
    assert ok(*ops)
    ops.append(op("get", 202, 203, output="base;", client=3))  # ... and cannot un-happen afterwards
    assert not ok(*ops)


# ------------------------------------------------------------------------------ the list-append check (Elle)

from zraft.tools.check import Budget, check_list_key, check_register_key  # noqa: E402


def list_history(n_ops: int, clients: int, seed: int, keys: int = 1, unknown: float = 0.03) -> list[Op]:
    """An atomic execution of appends of distinct elements ("c.i;") and reads: each operation takes effect at one
    instant inside [call, return], applied in the order of those instants."""
    rng = random.Random(seed)
    planned = []
    free = [0.0] * clients
    for i in range(n_ops):
        c = rng.randrange(clients)
        call = free[c] + rng.random() * 2
        point = call + rng.random() * 3
        ret = point + rng.random() * 3
        free[c] = ret
        planned.append((point, i, c, call, ret, f"k{rng.randrange(keys)}", rng.random() < 0.5))
    state: dict[str, bytes] = {}
    ops = []
    for point, i, c, call, ret, k, is_append in sorted(planned):
        if is_append:
            v = b"%d.%d;" % (c, i)
            lost = rng.random() < unknown
            if not lost or rng.random() < 0.5:  # an unknown outcome may or may not have happened
                state[k] = state.get(k, b"") + v
            ops.append(Op(c, "append", k, v, None, call, None if lost else ret))
        else:
            ops.append(Op(c, "get", k, None, state.get(k), call, ret))
        del point
    return sorted(ops, key=lambda o: o.call)


def test_list_check_decides_generated_histories() -> None:
    ops = list_history(20_000, 16, 3, keys=4)
    res = check(ops)
    assert all(r.ok for r in res) and {r.method for r in res} == {"list"}


def _mutate_first(ops: list[Op], pred: object, change: object) -> list[Op]:
    for i, o in enumerate(ops):
        if pred(o):  # type: ignore[operator]
            return [*ops[:i], change(o), *ops[i + 1:]]  # type: ignore[operator]
    raise AssertionError("nothing to mutate")


def test_list_check_catches_the_known_bad_histories() -> None:
    base = list_history(400, 6, 5, unknown=0.0)
    assert check_list_key(base).ok  # type: ignore[union-attr]
    long_reads = [o for o in base if o.kind == "get" and o.output and o.output.count(b";") >= 4]
    late = long_reads[-1]
    cut = late.output[: late.output.index(b";") + 1]  # type: ignore[index]
    cases = {
        "stale read": _mutate_first(base, lambda o: o is late, lambda o: Op(o.client, "get", o.key, None, cut,
                                                                             o.call, o.ret)),
        "duplicated append": _mutate_first(base, lambda o: o is late, lambda o: Op(
            o.client, "get", o.key, None, o.output + o.output[: o.output.index(b";") + 1], o.call, o.ret)),
        "value never written": _mutate_first(base, lambda o: o is late, lambda o: Op(
            o.client, "get", o.key, None, o.output + b"999.999;", o.call, o.ret)),
        # An acknowledged append that no read holds, though reads began after it completed.
        "lost append": [*base, Op(9, "append", "k", b"lost;", None, -5, -4)],
    }
    # An uncommitted value: a read that returns an append called only after the read returned.
    first = late.output[: late.output.index(b";") + 1]  # type: ignore[index]
    cases["read of an uncommitted value"] = [Op(9, "get", "k", None, first, -10, -9), *base]
    # Appends in an order that contradicts real time: two appends one after the other, read in the other order.
    cases["appends against real time"] = [
        Op(1, "append", "k", b"a;", None, 0, 1), Op(2, "append", "k", b"b;", None, 2, 3),
        Op(3, "get", "k", None, b"b;a;", 4, 5)]
    says = {"stale read": "stale read", "duplicated append": "twice", "value never written": "no (successful or "
            "unknown) append wrote", "lost append": "lost append", "read of an uncommitted value": "not yet written",
            "appends against real time": "appends ordered against real time"}
    for name, ops in cases.items():
        r = check_list_key(ops)
        assert r is not None and r.ok is False, name
        assert says[name] in r.explanation, (name, r.explanation)
        assert check_register_key(ops).ok is False, name  # the search agrees


def test_list_check_agrees_with_the_search_on_small_histories() -> None:
    rng = random.Random(7)
    agreed = 0
    for seed in range(600):
        ops = list_history(rng.randrange(2, 9), 3, seed, unknown=0.2)
        if rng.random() < 0.6:  # and often break it: drop, reorder or shift something
            i = rng.randrange(len(ops))
            o = ops[i]
            if o.kind == "get" and o.output:
                ops[i] = Op(o.client, "get", o.key, None, o.output[: o.output.index(b";") + 1], o.call, o.ret)
            else:
                shift = rng.uniform(-6, 6)
                ops[i] = Op(o.client, o.kind, o.key, o.value, o.output, o.call + shift,
                            None if o.ret is None else max(o.call + shift, o.ret + shift))
        listed = check_list_key(ops)
        assert listed is not None
        searched = check_register_key(ops)
        assert listed.ok == searched.ok, (seed, ops, listed.explanation, searched.explanation)
        agreed += 1
    assert agreed == 600


def test_search_budget_gives_unknown_never_a_hang() -> None:
    # Many overlapping puts of distinct values and reads that pin little: a hard history for the search.
    rng = random.Random(3)
    ops = [Op(c, "put", "r", b"v%d" % i, None, rng.random(), 10 + rng.random()) for i, c in
           enumerate(range(40))] + [Op(99, "get", "r", None, b"v%d" % i, 11 + i, 12 + i) for i in range(0, 40, 3)]
    start = time.monotonic()
    r = check_register_key(ops, "r", Budget(seconds=1.0))
    assert time.monotonic() - start < 20
    assert r.ok is None and "unknown" in r.explanation
    r = check_register_key(ops, "r", Budget(seconds=60.0, max_bytes=1 << 20))
    assert r.ok is None and "memory budget" in r.explanation


def test_compacted_outputs_give_the_same_verdicts() -> None:
    from zraft.tools.check import Digest, Loader

    ops = list_history(6000, 12, 9, keys=2)
    loader = Loader()
    for o in ops:
        loader.add(o)
    assert sum(isinstance(o.output, Digest) for o in loader.ops) > 1000  # most reads were long
    assert all(r.ok for r in check(loader.ops))
    # A stale read among the long ones: a late long read returns an earlier, shorter (still long) list.
    reads = [i for i, o in enumerate(ops) if o.kind == "get" and o.output and len(o.output) > 4000]
    i = reads[-1]
    o = ops[i]
    assert o.output is not None and not isinstance(o.output, Digest)
    stale = Op(o.client, "get", o.key, None, o.output[: len(o.output) // 2].rsplit(b";", 1)[0] + b";", o.call, o.ret)
    bad = Loader()
    for x in [*ops[:i], stale, *ops[i + 1:]]:
        bad.add(x)
    res = {r.key: r for r in check(bad.ops)}
    assert res[o.key].ok is False and "stale read" in res[o.key].explanation
    # A long read that is not a prefix of the longest (an element changed in the middle).
    mid = o.output[: len(o.output) // 2] + b"x" + o.output[len(o.output) // 2 + 1:]
    worse = Loader()
    for x in [*ops[:i], Op(o.client, "get", o.key, None, mid, o.call, o.ret), *ops[i + 1:]]:
        worse.add(x)
    assert {r.key: r for r in check(worse.ops)}[o.key].ok is False


def test_cli_exit_codes_say_linearizable_violation_or_unknown(tmp_path: Path) -> None:
    rng = random.Random(3)
    hard = [Op(c, "put", "r", b"v%d" % i, None, rng.random(), 10 + rng.random()) for i, c in
            enumerate(range(40))] + [Op(99, "get", "r", None, b"v%d" % i, 11 + i, 12 + i) for i in range(0, 40, 3)]
    f = tmp_path / "hard.jsonl"
    f.write_text("".join(json.dumps(o.to_json()) + "\n" for o in hard))
    r = subprocess.run([sys.executable, "-m", "zraft", "check", str(f), "--timeout", "1"], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 3 and "verdict=unknown" in r.stdout and "time budget" in r.stdout
