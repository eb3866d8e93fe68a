"""The simulator's reach (issue 32): each bug of ``planted.BUGS`` once survived the suite and thousands of seeds.
Planted into a copy of the package, each now fails a simulator seed (``planted.SEEDS``; that seed passes on the
real code: it is one of test_sim_seeds' seeds). The situations the seeds needed are counted by the simulator
(``cluster.COVERAGE``), and test_many_seeds asserts that they keep happening.

A change to the simulator changes what each seed does; when a seed here stops catching its bug, find others with
``python tests/planted.py --bug N`` (a few hundred seeds should hold several)."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import planted
import pytest

from zraft.sim.runner import run_seed


@pytest.mark.parametrize("bug", sorted(planted.BUGS))
def test_a_seed_catches_the_planted_bug(bug: int, tmp_path: pathlib.Path) -> None:
    seed, redis, txn = planted.SEEDS[bug], planted.REDIS.get(bug, 0), planted.TXN.get(bug, 0)
    leases, watches = planted.LEASES.get(bug, 0), planted.WATCHES.get(bug, 0)
    assert run_seed(seed, redis=redis, txn=txn, leases=leases, watches=watches).ok  # the real code passes it
    where = planted.plant(bug, tmp_path)
    r = subprocess.run([sys.executable, "-m", "zraft", "sim", "--seed", str(seed), "--redis", str(redis), "--txn",
                        str(txn), "--leases", str(leases), "--watches", str(watches)], cwd=where,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 1 and "FAILED:" in r.stdout, (
        f"seed {seed} no longer catches bug {bug} ({planted.BUGS[bug][0]}): {r.stdout[-2000:]}{r.stderr[-2000:]}")


def test_every_planted_bug_has_a_named_test_that_exists() -> None:
    here = pathlib.Path(__file__).parent
    for bug, where in planted.NAMED.items():
        name = where.split("::")[0]
        assert (here / name).exists(), (bug, where)
        if "::" in where:
            assert f"def {where.split('::')[1]}(" in (here / name).read_text(), (bug, where)
