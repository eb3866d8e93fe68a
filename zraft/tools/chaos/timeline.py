"""What a chaos run shows while it runs and leaves behind: progress lines, the leaders seen, and an HTML
timeline of faults, leaders and operations."""

from __future__ import annotations

import html
import itertools
import time
from collections.abc import Callable
from typing import Any

from zraft.tools.launch import Cluster, statuses


class _Progress:
    """Counts the operations the clients have recorded so far (reading only what is new in their files)."""

    def __init__(self, paths: list[str]) -> None:
        self.paths = paths
        self.offsets = [0] * len(paths)
        self.counts = {"ok": 0, "fail": 0, "unknown": 0}

    def update(self) -> dict[str, int]:
        for i, path in enumerate(self.paths):
            try:
                with open(path) as f:
                    f.seek(self.offsets[i])
                    data = f.read()
            except FileNotFoundError:
                continue
            end = data.rfind("\n") + 1
            self.offsets[i] += len(data[:end].encode())
            for line in data[:end].splitlines():
                for k in self.counts:
                    if f'"status": "{k}"' in line:
                        self.counts[k] += 1
        return self.counts


def report_progress(paths: list[str], leaders: list[tuple[float, int, int]], stop: Any, t0: float,
                     say: Callable[[str], None], every: float = 5.0) -> None:
    prog = _Progress(paths)
    while not stop.wait(every):
        n = prog.update()
        ld = leaders[-1] if leaders else None
        who = f"leader node {ld[1]} (term {ld[2]})" if ld and ld[1] else "no leader"
        say(f"  t={time.monotonic() - t0:6.1f} s  operations: {n['ok']} ok, {n['fail']} failed, {n['unknown']} "
            f"unknown; {who}")


def watch_leaders(c: Cluster, stop: Any, samples: list[tuple[float, int, int]]) -> None:
    """Sample who leads, for the timeline: (time, leader node id or 0, term)."""
    while not stop.is_set():
        best = (0, 0)
        for st in statuses(c, timeout=0.2).values():
            if st and st.get("role") == "leader" and st["term"] >= best[1]:
                best = (st["node"], st["term"])
        samples.append((time.monotonic(), *best))
        stop.wait(0.25)


def write_timeline(path: str, t0: float, t1: float, nodes: list[int], events: list[dict[str, Any]],
                   leaders: list[tuple[float, int, int]], history: list[dict[str, Any]]) -> None:
    """A self-contained HTML page (inline SVG): who led in which term, when each fault struck and healed, and
    client latency over time."""
    width, left = 1000, 90
    span = max(t1 - t0, 1e-3)

    def x(t: float) -> float:
        return left + (t - t0) / span * (width - left - 10)

    rows = {n: 30 + 22 * i for i, n in enumerate(nodes)}
    parts = [f'<text x="5" y="{y + 12}" font-size="12">node {n}</text>' for n, y in rows.items()]
    palette = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#ff9da7"]
    for (ta, ld, term), (tb, _, _) in itertools.pairwise(leaders):
        if ld in rows:
            parts.append(f'<rect x="{x(ta):.1f}" y="{rows[ld]}" width="{max(x(tb) - x(ta), 0.5):.1f}" height="16" '
                         f'fill="{palette[term % len(palette)]}"><title>node {ld} leads term {term}</title></rect>')
    fy = 30 + 22 * len(nodes) + 10
    parts.append(f'<text x="5" y="{fy + 12}" font-size="12">faults</text>')
    for i, e in enumerate(events):
        y = fy + (i % 3) * 14
        label = html.escape(f"{e['fault']} node {e['node']} {e['note']}")
        parts.append(f'<rect x="{x(e["start"]):.1f}" y="{y}" width="{max(x(e["end"]) - x(e["start"]), 1):.1f}" '
                     f'height="12" fill="#d62728" opacity="0.6"><title>{label}</title></rect>'
                     f'<text x="{x(e["start"]):.1f}" y="{y + 10}" font-size="9">{html.escape(e["fault"])}</text>')
    ly = fy + 60
    lh = 160
    done = [h for h in history if h.get("return") is not None and h["client"]]
    worst = max([h["return"] - h["call"] for h in done] or [0.001])
    parts.append(f'<text x="5" y="{ly + 12}" font-size="12">latency</text>'
                 f'<text x="5" y="{ly + 26}" font-size="10">max {worst * 1000:.0f} ms</text>'
                 f'<line x1="{left}" y1="{ly + lh}" x2="{width - 10}" y2="{ly + lh}" stroke="#999"/>')
    step = max(1, len(done) // 4000)
    for h in done[::step]:
        lat = h["return"] - h["call"]
        parts.append(f'<circle cx="{x(h["call"]):.1f}" cy="{ly + lh - lat / worst * lh:.1f}" r="1.2" '
                     f'fill="{"#333" if h["op"] == "get" else "#1f77b4"}"/>')
    for s in range(0, int(span) + 1, max(1, int(span) // 10)):
        parts.append(f'<text x="{x(t0 + s):.1f}" y="{ly + lh + 14}" font-size="10">{s}s</text>')
    height = ly + lh + 24
    page = (f"<!doctype html><meta charset=utf-8><title>zraft chaos run</title>"
            f"<h3 style='font-family:sans-serif'>zraft chaos run: leaders by term (colour), faults, latency "
            f"(blue: writes, black: reads)</h3>"
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'style="font-family:sans-serif">{"".join(parts)}</svg>')
    with open(path, "w") as f:
        f.write(page)


