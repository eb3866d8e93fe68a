"""Issue 32's planted bugs: small, plausible mistakes that once survived the suite and thousands of simulator seeds
(1-11), four more of the same classes (12-15), two in the Redis server (16-17, caught by seeds with Redis
clients), two in transactions (18-19, caught by seeds with transaction clients) and two in leases (20-21, caught by
seeds with lease clients) and one in watches (22, caught by seeds with watch clients). Each is a one-line change to
the source; ``plant`` writes it into a copy of the package. The named test of each of 1-11 (``NAMED``) fails with
it planted, and so does the simulator seed listed in ``SEEDS`` for each (test_sim_reach.py runs those); this tool
finds which seeds of a range catch each bug:

    python tests/planted.py --seeds 400            # all bugs, seeds 0-399
    python tests/planted.py --bug 4 --seeds 1000   # one bug

A change to the simulator reshuffles what each seed does: when a seed in ``SEEDS`` no longer catches its bug, run
this to find ones that do (and if none of a few hundred does, the simulator lost reach: fix that instead).
"""

from __future__ import annotations

import argparse
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent

BUGS: dict[int, tuple[str, str, str, str]] = {
    1: ("a leader that removes itself still counts its own ack toward commit", "zraft/core/leader.py",
        "        mci = matches[self.config.quorum - 1]\n",
        "        if self.id not in self.config.voters:\n"
        "            matches = sorted([*matches, lg.last_index], reverse=True)\n"
        "        mci = matches[self.config.quorum - 1]\n"),
    2: ("learners' acks count toward the ReadIndex quorum", "zraft/core/leader.py",
        "(self.reads.round if v == self.id else self.prs[v].read_ack for v in self.config.voters),",
        "(self.reads.round if v == self.id else self.prs[v].read_ack for v in self.config.members),"),
    3: ("a vote answer is sent before the vote is durable", "zraft/server/replica.py",
        "EARLY_TYPES = frozenset((MsgType.APPEND, MsgType.HEARTBEAT, MsgType.SNAPSHOT))",
        "EARLY_TYPES = frozenset((MsgType.APPEND, MsgType.HEARTBEAT, MsgType.SNAPSHOT, MsgType.VOTE_RESP))"),
    4: ("a session's trim drops the answer for seq == ack", "zraft/statemachine/kv.py",
        "{q: r for q, r in replies.items() if q >= ack}", "{q: r for q, r in replies.items() if q > ack}"),
    5: ("an installed snapshot keeps the old log's configuration list", "zraft/core/follower.py",
        "            self._base_config = s.config\n            self._configs = []\n",
        "            self._base_config = s.config\n"),
    6: ("a local snapshot finishing after a newer install is saved", "zraft/server/replica.py",
        "        if snap.index <= self.raft.snapshot_index:  # a snapshot from the leader was installed meanwhile",
        "        if False:  # a snapshot from the leader was installed meanwhile"),
    7: ("segment cleanup off by one at the snapshot index", "zraft/storage/store.py",
        "self._segments[0].max_index <= index:", "self._segments[0].max_index <= index + 1:"),
    8: ("a sealed segment cut short is judged a torn tail", "zraft/storage/store.py",
        "records, end, torn = rec.scan(path, buf, last)", "records, end, torn = rec.scan(path, buf, True)"),
    9: ("entries behind a snapshot marker of another term survive a restart", "zraft/storage/store.py",
        "            or (index > self.base_index and self.entries[index - self.base_index - 1].term == term)",
        "            or (index > self.base_index)"),
    10: ("a learner that never answered can be promoted", "zraft/core/membership.py",
         "if pr.state != ReplState.REPLICATE or match + self.opts.promote_lag < lg.last_index:",
         "if match + self.opts.promote_lag < lg.last_index:"),
    11: ("CheckQuorum counts learners", "zraft/core/leader.py",
         "sum(1 for v, pr in self.prs.items() if pr.recent_active and v in voters)",
         "sum(1 for v, pr in self.prs.items() if pr.recent_active)"),
    # Not from issue 32's list: bugs of the same classes, planted after the simulator's reach was built, to see
    # whether it aimed at classes or at lines (12 and 14 were caught at once; 13 needed reads at new leaders).
    12: ("learners' acks count toward commit", "zraft/core/leader.py",
         "(lg.last_index if v == self.id else self.prs[v].match for v in self.config.voters), reverse=True",
         "(lg.last_index if v == self.id else self.prs[v].match for v in self.config.members), reverse=True"),
    13: ("reads served before the leader's first entry of its term commits", "zraft/core/leader.py",
         "        if lg.term(lg.commit) != self.term:\n            # diss. §6.4 step 1",
         "        if False:\n            # diss. §6.4 step 1"),
    14: ("a vote granted to a candidate whose log is behind", "zraft/core/election.py",
         "if can_vote and self.log.is_up_to_date(m.index, m.log_term):", "if can_vote:"),
    15: ("a stray duplicate below the client's ack applied", "zraft/statemachine/kv.py",
         "        if seq < s.ack:\n", "        if False:\n"),
    # The Redis server's own mistakes, caught since the simulator runs it (seeds with Redis clients: ``REDIS``).
    16: ("the Redis server retries a write as a new one (a new sequence number)", "zraft/server/redis/bridge.py",
         "                    w.target = -1\n                    continue\n",
         "                    w.target = -1\n"
         "                    w.req = w.req._replace(seq=w.req.seq + 1000000, ack=w.req.seq + 1000000)\n"
         "                    continue\n"),
    17: ("the Redis server answers reads from its node's store without a read barrier", "zraft/server/redis/server.py",
         "        if self.barrier_reads:\n            rid = next(self._ids)\n",
         "        if self.barrier_reads:\n"
         "            self._serve_reads(self.barrier_reads, {\"id\": 0, \"ok\": True})\n"
         "            self.barrier_reads = []\n        if self.barrier_reads:\n            rid = next(self._ids)\n"),
    # Transactions' own mistakes, caught by the seeds' transaction clients (``TXN``) and their checkers.
    18: ("a transaction's compares are not evaluated (every compare-and-swap succeeds)", "zraft/statemachine/kvtxn.py",
         "            succeeded = succeeded and held\n",
         "            succeeded = True\n"),
    19: ("a retried transaction is applied again", "zraft/statemachine/kv.py",
         "        if cached is not None:  # a retry: answer again, apply nothing\n",
         "        if cached is not None and op != TXN:  # a retry: answer again, apply nothing\n"),
    # Leases' own mistakes, caught by the seeds' lease clients (``LEASES``): a lease expired while promised.
    20: ("a new leader expires leases at once, without giving them their TTL and the extension",
         "zraft/server/lessor.py",
         "        self.deadlines = {i: now + ls.ttl_ms / 1000 + ext for i, ls in leases.table.items()}\n",
         "        self.deadlines = {i: now for i, ls in leases.table.items()}\n"),
    21: ("a keepalive of a lease being expired is acknowledged", "zraft/server/lessor.py",
         "        if lease is None or lease.solo or lease_id in self.expiring:\n",
         "        if lease is None or lease.solo:\n"),
    # Watches' own: caught by the seeds' watch clients (``WATCHES``): a change skipped.
    22: ("a watch resumed from a revision starts one revision late", "zraft/server/watches.py",
         "        start = req.start_revision or self.revision + 1\n",
         "        start = req.start_revision + 1 if req.start_revision else self.revision + 1\n"),
}
"""number -> (what it breaks, file, the correct text, the planted text)."""

SEEDS: dict[int, int] = {1: 11, 2: 278, 3: 580, 4: 162, 5: 4, 6: 38, 7: 25, 8: 59, 9: 188, 10: 3, 11: 5, 12: 4,
                         13: 136, 14: 2, 15: 67, 16: 7, 17: 0, 18: 0, 19: 0, 20: 1, 21: 4, 22: 1}
"""A simulator seed that fails with each bug planted (and passes without it)."""
REDIS: dict[int, int] = {16: 2, 17: 2}
"""Bugs whose seeds run with that many Redis clients (``zraft sim --redis N``: every node runs its Redis server)."""
TXN: dict[int, int] = {18: 2, 19: 2}
"""Bugs whose seeds run with that many transaction clients (``zraft sim --txn N``); the others' run with none."""
LEASES: dict[int, int] = {20: 2, 21: 3}
WATCHES: dict[int, int] = {22: 3}
"""Bugs whose seeds run with that many watch clients (``zraft sim --watches N``); the others' run with none."""
"""Bugs whose seeds run with that many lease clients (``zraft sim --leases N``); the others' run with none."""

NAMED = {
    1: "test_quorum_rules.py", 2: "test_quorum_rules.py", 3: "test_durability_rules.py",
    4: "test_kv.py::test_the_oldest_unacknowledged_answer_survives_every_trim", 5: "test_membership.py",
    6: "test_durability_rules.py", 7: "test_storage.py", 8: "test_storage.py", 9: "test_storage.py",
    10: "test_quorum_rules.py", 11: "test_quorum_rules.py",
}


def plant(n: int, dest: pathlib.Path) -> pathlib.Path:
    """A copy of the repository's ``zraft`` package under ``dest`` with bug ``n`` written into it."""
    _, path, good, bad = BUGS[n]
    shutil.copytree(ROOT / "zraft", dest / "zraft", ignore=shutil.ignore_patterns("__pycache__"))
    f = dest / path
    text = f.read_text()
    if text.count(good) != 1:
        raise SystemExit(f"bug {n}: the text to replace is not in {path} exactly once; update tests/planted.py")
    f.write_text(text.replace(good, bad))
    return dest


def run_seeds(where: pathlib.Path, first: int, count: int, jobs: int = 2, redis: int = 0, txn: int = 0,
              leases: int = 0, watches: int = 0) -> list[int]:
    """The seeds of ``first`` .. ``first + count - 1`` that fail, run with the package under ``where``."""
    r = subprocess.run([sys.executable, "-m", "zraft", "sim", "--seeds", str(count), "--first-seed", str(first),
                        "--jobs", str(jobs), "-q", "--redis", str(redis), "--txn", str(txn), "--leases",
                        str(leases), "--watches", str(watches)], cwd=where,
                       capture_output=True, text=True, timeout=3600)
    return [int(m) for m in re.findall(r"^FAIL seed (\d+)", r.stdout, re.M)]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python tests/planted.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bug", type=int, action="append", choices=sorted(BUGS), help="a bug to plant (default: all)")
    p.add_argument("--seeds", type=int, default=400, help="seeds to run per bug (default 400)")
    p.add_argument("--first-seed", type=int, default=0, help="the first seed (default 0)")
    p.add_argument("--jobs", type=int, default=2, help="worker processes (default 2)")
    a = p.parse_args(argv)
    missed = 0
    for n in a.bug or sorted(BUGS):
        with tempfile.TemporaryDirectory(prefix=f"zraft-bug{n}-") as tmp:
            failing = run_seeds(plant(n, pathlib.Path(tmp)), a.first_seed, a.seeds, a.jobs, REDIS.get(n, 0),
                                TXN.get(n, 0), LEASES.get(n, 0), WATCHES.get(n, 0))
        missed += not failing
        print(f"bug {n} ({BUGS[n][0]}): {len(failing)} of seeds {a.first_seed}-{a.first_seed + a.seeds - 1} "
              f"fail: {failing[:10]}", flush=True)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
