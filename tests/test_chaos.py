"""A short chaos run in CI: a real 3-node cluster under kills, pauses and network partitions, snapshotting every 200
entries, 8 clients (half of them pipelining), its history checked for linearizability and for lost or duplicated
appends."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.dom.minidom
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_short_chaos_run_passes(tmp_path: Path) -> None:
    out = tmp_path / "chaos"
    r = subprocess.run([sys.executable, "-m", "zraft", "chaos", "--nodes", "3", "--duration", "20", "--seed", "1",
                        "--clients", "8", "--keys", "4", "--snapshot-every", "200", "--out", str(out)],
                       capture_output=True, text=True, cwd=ROOT, timeout=300)
    last = r.stdout.strip().splitlines()[-1]
    assert r.returncode == 0, r.stdout + r.stderr
    assert last.startswith("summary:") and "verdict=PASS" in last and "violations=0" in last
    faults = int(last.split("faults=")[1].split()[0])
    assert faults >= 3
    # Live progress, as it happened: each fault struck and healed, operation counts, the checker key by key.
    lines = r.stdout.splitlines()
    assert any(" fault " in x for x in lines) and any(" healed " in x for x in lines)
    assert any("operations:" in x and " ok, " in x and "leader" in x for x in lines[:-5])
    assert sum(1 for x in lines if x.strip().startswith("checked key")) == 8
    assert "list 4 keys" in r.stdout
    # Aggressive compaction: nodes that were down caught up by snapshot, and the history still checks.
    assert int(last.split("snapshots_installed=")[1].split()[0]) >= 1
    # The picture of the run: a well-formed SVG with a row per node, the faults and the latency points.
    page = (out / "timeline.html").read_text()
    svg = page[page.index("<svg"): page.index("</svg>") + 6]
    doc = xml.dom.minidom.parseString(svg)
    texts = [t.firstChild.data for t in doc.getElementsByTagName("text") if t.firstChild is not None]
    assert {"node 1", "node 2", "node 3", "faults", "latency"} <= set(texts)
    assert len(doc.getElementsByTagName("circle")) > 100
    assert "timeline.html" in r.stdout
    # The recorded history checks again on its own.
    r = subprocess.run([sys.executable, "-m", "zraft", "check", str(out / "history.jsonl")], capture_output=True,
                       text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0 and "verdict=linearizable" in r.stdout


def test_chaos_run_with_membership_changes_passes(tmp_path: Path) -> None:
    """The nemesis also adds, removes (the leader too) and replaces nodes and moves leadership while the other
    faults go on; the history still checks and nothing acknowledged is lost."""
    out = tmp_path / "chaos"
    r = subprocess.run([sys.executable, "-m", "zraft", "chaos", "--nodes", "3", "--duration", "25", "--seed", "2",
                        "--clients", "4", "--membership", "--quiet", "--out", str(out)],
                       capture_output=True, text=True, cwd=ROOT, timeout=300)
    last = r.stdout.strip().splitlines()[-1]
    assert r.returncode == 0, r.stdout + r.stderr
    assert last.startswith("summary:") and "verdict=PASS" in last and "violations=0" in last
    changes = [x for x in r.stdout.splitlines() if " member_" in x and "(nodes now" in x]
    done = [x for x in changes if "failed" not in x]
    assert len(changes) >= 4, r.stdout  # a change every 2-5 s; under faults some cannot be made (no quorum)
    assert any("member_add" in x or "member_replace" in x or "member_remove" in x for x in done), r.stdout
    ok = int(last.split(" ok=")[1].split()[0])
    assert ok > 1000


def test_chaos_help() -> None:
    r = subprocess.run([sys.executable, "-m", "zraft", "chaos", "--help"], capture_output=True, text=True, cwd=ROOT,
                       timeout=60)
    assert r.returncode == 0 and "--duration" in r.stdout


def test_chaos_run_through_the_redis_protocol_passes(tmp_path: Path) -> None:
    """The same faults with every client on redis-py at a random node's Redis port: followers forward writes,
    elections make them wait and retry; the history is linearizable and no acknowledged append is lost."""
    out = tmp_path / "chaos"
    r = subprocess.run([sys.executable, "-m", "zraft", "chaos", "--nodes", "3", "--duration", "15", "--seed", "3",
                        "--clients", "6", "--snapshot-every", "300", "--resp", "--quiet", "--out", str(out)],
                       capture_output=True, text=True, cwd=ROOT, timeout=300)
    last = r.stdout.strip().splitlines()[-1]
    assert r.returncode == 0, r.stdout + r.stderr
    assert last.startswith("summary:") and "verdict=PASS" in last and "violations=0" in last
    assert int(last.split("faults=")[1].split()[0]) >= 2
    assert all(n["resp"] for n in json.loads((out / "data" / "cluster.json").read_text())["nodes"])


def test_chaos_run_of_transactions_passes(tmp_path: Path) -> None:
    """--workload txn: list-append transactions (checked strictly serializable by the transaction checker) and
    compare-and-swap on registers (checked linearizable) under kills, pauses and partitions; the history file
    checks again on its own, both kinds."""
    out = tmp_path / "chaos"
    r = subprocess.run([sys.executable, "-m", "zraft", "chaos", "--nodes", "3", "--duration", "15", "--seed", "4",
                        "--clients", "6", "--workload", "txn", "--snapshot-every", "300", "--quiet", "--out",
                        str(out)], capture_output=True, text=True, cwd=ROOT, timeout=300)
    last = r.stdout.strip().splitlines()[-1]
    assert r.returncode == 0, r.stdout + r.stderr
    assert last.startswith("summary:") and "verdict=PASS" in last and "violations=0" in last
    assert int(last.split("faults=")[1].split()[0]) >= 2
    summary = next(x for x in r.stdout.splitlines() if x.startswith("transactions: "))
    assert "strictly serializable" in summary and int(summary.split(": ")[2].split()[0]) > 200, summary
    lines = [json.loads(x) for x in (out / "history.jsonl").read_text().splitlines()]
    assert sum(1 for h in lines if h["op"] == "cas" and h["status"] == "ok" and h["output"]) > 20
    assert sum(1 for h in lines if h["op"] == "cas" and h["status"] == "ok" and not h["output"]) > 20
    r = subprocess.run([sys.executable, "-m", "zraft", "check", "-q", str(out / "history.jsonl")],
                       capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0 and "verdict=linearizable" in r.stdout and "verdict=strictly-serializable" in r.stdout


def test_chaos_run_of_locks_watches_and_leases_passes(tmp_path: Path) -> None:
    """--workload coord: lock holders writing with fencing tokens (some paused past their lease), writers and
    watchers of a prefix, lease keepers, under kills, pauses and partitions: every check passes, each part did its
    work (holders changed, paused holders' writes were refused, watchers resumed across faults), and the history
    checks again on its own."""
    out = tmp_path / "chaos"
    r = subprocess.run([sys.executable, "-m", "zraft", "chaos", "--nodes", "3", "--duration", "20", "--seed", "2",
                        "--clients", "6", "--workload", "coord", "--quiet", "--out", str(out)],
                       capture_output=True, text=True, cwd=ROOT, timeout=400)
    last = r.stdout.strip().splitlines()[-1]
    assert r.returncode == 0, r.stdout + r.stderr
    assert last.startswith("summary:") and "verdict=PASS" in last and "violations=0" in last
    line = next(x for x in r.stdout.splitlines() if x.startswith("coordination: "))
    counts = {k: int(v) for k, v in (p.rsplit(" ", 1) for p in line.removeprefix("coordination: ").split(", "))}
    assert counts["holders"] >= 5 and counts["fenced_ok"] >= 5 and counts["watchers"] == 2, line
    assert counts["watch_events"] > 100 and counts["leases_kept"] + counts["leases_lost"] >= 2, line
    r = subprocess.run([sys.executable, "-m", "zraft", "check", "-q", str(out / "history.jsonl")],
                       capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0 and "coordination:" in r.stdout and "verdict=PASS" in r.stdout, r.stdout
