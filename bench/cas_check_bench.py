"""How long the linearizability checker (``zraft.tools.check``) takes to decide compare-and-swap registers: a
history made by ``--clients`` clients doing ``--ops`` operations each (60% cas, 30% get, 10% put) on ``--keys``
registers, each operation taking effect at one instant inside its call-return interval (an atomic register, so
the history is linearizable), with latencies that overlap up to ``--overlap`` other clients' operations.

    python bench/cas_check_bench.py [--clients 50] [--ops 2000] [--keys 10] [--timeout 60]

Prints the verdict, the time, and the slowest key.
"""

from __future__ import annotations

import argparse
import random
import time

from zraft.tools.check import Budget, Op, check, verdict


def history(clients: int, per_client: int, keys: int, seed: int) -> list[Op]:
    rng = random.Random(seed)
    values: dict[str, bytes | None] = {f"k{i}": None for i in range(keys)}
    ops: list[Op] = []
    busy_until = [0.0] * clients  # each client does one operation at a time
    t = 0.0
    n = 0
    for _ in range(clients * per_client):
        t += rng.expovariate(1.0)  # the next linearization point, taken by a client that is free by then
        free = [i for i in range(clients) if busy_until[i] < t]
        if not free:
            t = min(busy_until) + 1e-6
            free = [i for i in range(clients) if busy_until[i] < t]
        c = rng.choice(free)
        start = max(busy_until[c], t - rng.uniform(0.0, 20.0))
        end = t + rng.uniform(0.0, 20.0)
        busy_until[c] = end
        k = f"k{rng.randrange(keys)}"
        r = rng.random()
        n += 1
        if r < 0.3:
            ops.append(Op(c, "get", k, None, values[k], start, end))
        elif r < 0.4:
            values[k] = b"p%d" % n
            ops.append(Op(c, "put", k, values[k], None, start, end))
        else:
            expect = values[k] if rng.random() < 0.7 else b"p%d" % rng.randrange(1, n + 1)
            swapped = expect == values[k]
            new = b"c%d" % n
            if swapped:
                values[k] = new
            ops.append(Op(c, "cas", k, new, None, start, end, expect, swapped))
    return ops


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clients", type=int, default=50)
    p.add_argument("--ops", type=int, default=2000, help="operations per client (default 2000)")
    p.add_argument("--keys", type=int, default=10, help="registers (default 10)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--timeout", type=float, default=60.0, help="the checker's time budget in seconds (default 60)")
    a = p.parse_args(argv)
    ops = history(a.clients, a.ops, a.keys, a.seed)
    t0 = time.monotonic()
    results = check(ops, Budget(a.timeout))
    took = time.monotonic() - t0
    slowest = max(results, key=lambda r: r.seconds)
    print(f"{len(ops)} operations on {a.keys} registers by {a.clients} clients: {verdict(results)} in {took:.2f} s "
          f"(slowest key {slowest.key}: {slowest.ops} operations, {slowest.seconds:.2f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
