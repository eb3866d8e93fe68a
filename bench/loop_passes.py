"""What each node's event loop does per second at fixed write rates: a 3-node zraft cluster (fsync on, CurveZMQ)
written by bench/zload, each node's /metrics read before and after the measured window.

Per node: loop passes per second and the loop's busy time (the sum of pass durations: 1.00 s/s is a loop that
never waits for input), fsyncs per second and the time they took, entries per fsync, and AppendEntries sent or
received per second with their entries. A loop that is busy most of the time at a fraction of the saturated
rate, with small batches, spends its time on what every pass costs whatever its size (polling, a write and an
fsync, a message to each follower, waking ZeroMQ's I/O thread): this shows where the CPU per write goes at
moderate load, which is what the latency there is made of.

    apt-get install -y gcc libzmq3-dev
    python bench/loop_passes.py [--rates 20000,0] [--seconds 6]    # 0: saturated (4 x 512 in flight)
"""

from __future__ import annotations

import argparse
import sys
import urllib.request

from sched_wait import loaded_cluster, measure_rates

Sample = dict[str, float]


def scrape(address: str) -> Sample:
    """The node's counters and histogram sums and counts, by name (peer labels summed)."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as r:
        text = r.read().decode()
    out: Sample = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name.endswith(("_total", "_sum", "_count")):
                out[s.name] = out.get(s.name, 0.0) + s.value
    return out


def describe(before: Sample, after: Sample, seconds: float) -> str:
    def rate(name: str) -> float:
        return (after.get(name, 0.0) - before.get(name, 0.0)) / seconds

    passes = rate("zraft_loop_pass_seconds_count")
    fsyncs = rate("zraft_fsync_duration_seconds_count")
    entries = rate("zraft_persist_batch_entries_sum")
    sent, received = rate("zraft_append_sent_total"), rate("zraft_append_received_total")
    ae = f"AppendEntries sent {sent:,.0f}/s" if sent else f"AppendEntries received {received:,.0f}/s"
    per_ae = entries / max(sent / 2 if sent else received, 1.0)  # (a leader of 3 sends each entry twice)
    return (f"{passes:,.0f} passes/s, loop busy {rate('zraft_loop_pass_seconds_sum'):.2f} s/s "
            f"({1000 * rate('zraft_loop_pass_seconds_sum') / max(passes, 1.0):.2f} ms a pass); "
            f"{fsyncs:,.0f} fsyncs/s taking {rate('zraft_fsync_duration_seconds_sum'):.2f} s/s, "
            f"{entries / max(fsyncs, 1.0):,.0f} entries each; {ae}, ~{per_ae:,.0f} entries each")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rates", default="20000,0",
                   help="writes per second to pace at, comma-separated; 0 = saturated (default 20000,0)")
    p.add_argument("--seconds", type=float, default=6.0, help="measured seconds per rate (default 6)")
    a = p.parse_args(argv)
    with loaded_cluster(metrics=True) as (run, leader):
        nodes = run.extra["metrics"]
        measure_rates(run, a.rates, a.seconds, lambda: [scrape(n) for n in nodes],
                      lambda before, after, dt: [f"{'leader  ' if i == leader else 'follower'} {describe(b, f, dt)}"
                                                 for i, (b, f) in enumerate(zip(before, after, strict=True))])
    return 0


if __name__ == "__main__":
    sys.exit(main())
