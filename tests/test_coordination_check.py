"""The coordination workload's checker (``zraft.tools.chaos.coordination.check``) on histories made by hand: it
passes a correct one, and names each violation -- a superseded holder's write, a fenced write lost or applied though
refused, a watch that skipped, repeated or invented an event or disagreed with another, a lease gone while
promised -- also through ``zraft check`` on a history file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from zraft.tools.chaos.coordination import check

ROOT = Path(__file__).resolve().parent.parent


def _good() -> list[dict[str, Any]]:
    return [
        {"client": 1, "type": "lock", "event": "write", "token": 5, "entry": "5.1.1", "status": "ok", "paused": False},
        {"client": 1, "type": "lock", "event": "write", "token": 5, "entry": "5.1.2", "status": "refused",
         "paused": True},
        {"client": 4, "type": "lock", "event": "write", "token": 9, "entry": "9.4.1", "status": "ok", "paused": False},
        {"client": 2, "type": "wwrite", "key": "wk/2/0", "kind": "put", "rev": 6, "status": "ok"},
        {"client": 2, "type": "wwrite", "key": "wk/2/0", "kind": "delete", "rev": 7, "status": "ok"},
        {"client": 2, "type": "wwrite", "key": "wk/2/1", "kind": "delete", "rev": 7, "status": "ok"},  # (no-op)
        {"client": 2, "type": "wwrite", "key": "wk/2/1", "kind": "put", "rev": None, "status": "unknown"},
        *({"client": c, "type": "wevent", "rev": r, "key": k, "kind": kind}
          for c in (2, 5) for r, k, kind in ((6, "wk/2/0", "put"), (7, "wk/2/0", "delete"), (8, "wk/2/1", "put"))),
        {"client": 2, "type": "wdone", "last": 9, "start": 6, "resumes": 1},
        {"client": 5, "type": "wdone", "last": 9, "start": 6, "resumes": 0},
        {"client": 3, "type": "lease", "event": "gone", "lease": 1, "at": 20.0, "safe_until": 19.5},
        {"client": 0, "type": "lock", "event": "final", "value": "5.1.1;9.4.1;"},
    ]


def test_a_correct_history_passes() -> None:
    problems, counts = check(_good(), None)
    assert problems == []
    assert counts["fenced_ok"] == 2 and counts["fenced_refused"] == 1 and counts["holders"] == 2
    assert counts["watch_events"] == 6 and counts["watch_resumes"] == 1


def _with(change: dict[str, Any] | None = None, drop: int | None = None, final: str | None = None) -> list[str]:
    recs = _good()
    if drop is not None:
        del recs[drop]
    if change is not None:
        recs.append(change)
    problems, _ = check(recs, None if final is None else final.encode())
    return problems


def test_each_violation_is_named() -> None:
    assert "a superseded holder wrote" in _with(final="9.4.1;5.1.1;")[0]
    assert "5.1.2" in _with(final="5.1.1;5.1.2;9.4.1;")[0]  # applied though refused
    assert "is missing" in _with(final="5.1.1;")[0]
    assert "missed put 'wk/2/0' at revision 6" in _with(drop=7)[0]  # client 2's event at 6
    invented = {"client": 5, "type": "wevent", "rev": 10, "key": "wk/9", "kind": "put"}
    assert "an event no write made" in _with(invented)[0]
    assert "out of order or twice" in _with({"client": 2, "type": "wevent", "rev": 8, "key": "wk/2/1",
                                              "kind": "put"})[0]
    problems = _with(drop=9)  # client 2 never got revision 8 (an unknown write that did apply): 5 did
    assert any("saw different events" in p for p in problems)
    assert "while an acknowledged keepalive promised it" in _with(
        {"client": 3, "type": "lease", "event": "expired", "lease": 2, "at": 10.0, "safe_until": 11.0})[0]


def test_zraft_check_reads_a_coordination_history(tmp_path: Path) -> None:
    f = tmp_path / "history.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in _good()))
    r = subprocess.run([sys.executable, "-m", "zraft", "check", "-q", str(f)], capture_output=True, text=True,
                       cwd=ROOT, timeout=60)
    assert r.returncode == 0 and "coordination:" in r.stdout and "verdict=PASS" in r.stdout, r.stdout + r.stderr
    bad = _good()
    bad[-1]["value"] = "9.4.1;5.1.1;"
    f.write_text("".join(json.dumps(x) + "\n" for x in bad))
    r = subprocess.run([sys.executable, "-m", "zraft", "check", "-q", str(f)], capture_output=True, text=True,
                       cwd=ROOT, timeout=60)
    assert r.returncode == 1 and "VIOLATION: lock:" in r.stdout, r.stdout + r.stderr
