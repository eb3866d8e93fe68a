"""Prometheus metrics of a node: ``zraft node --metrics HOST:PORT`` serves ``/metrics``.

The event loop only counts, in plain ints and fixed-bucket histograms (``Stats``): no metrics library on the hot
path. ``Collector`` turns them into Prometheus families when a scrape comes in (prometheus_client's HTTP server
runs in its own thread; it reads ints and copies small dicts, which the GIL makes consistent enough for
monitoring). Names follow Prometheus conventions: ``zraft_`` prefix, ``_total`` counters, base units
(``_seconds``, ``_bytes``). The README has the table of names and meanings.
"""

from __future__ import annotations

import bisect
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from zraft.server.replica import Replica

log = logging.getLogger("zraft.metrics")

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
"""Seconds: client requests, fsyncs."""
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
"""Entries per persisted batch."""
SNAPSHOT_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


class Histogram:
    """Cumulative-on-export histogram with fixed bounds; ``observe(v, n)`` counts ``n`` observations of ``v``."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, v: float, n: int = 1) -> None:
        self.counts[bisect.bisect_left(self.bounds, v)] += n
        self.sum += v * n

    def buckets(self) -> list[tuple[str, int]]:
        out, acc = [], 0
        for bound, c in zip((*(repr(float(b)) for b in self.bounds), "+Inf"), list(self.counts), strict=True):
            acc += c
            out.append((bound, acc))
        return out


class Runs:
    """Request latencies observed in runs: answers to requests that arrived in the same loop pass (same op, same
    arrival time) and are answered at ``now`` are one histogram update, not one per request."""

    __slots__ = ("at", "n", "now", "op", "stats")

    def __init__(self, stats: Stats, now: float) -> None:
        self.stats, self.now = stats, now
        self.op, self.at, self.n = "", 0.0, 0

    def add(self, op: str, arrived: float) -> None:
        if arrived != self.at or op != self.op:
            self.flush()
            self.op, self.at = op, arrived
        self.n += 1

    def flush(self) -> None:
        if self.n:
            self.stats.latency_of(self.op).observe(self.now - self.at, self.n)
            self.n = 0


class Stats:
    """What the loop counts (``Replica.stats``)."""

    def __init__(self) -> None:
        self.elections_started = 0
        """Campaigns (this node became a candidate; pre-votes that failed are not counted)."""
        self.elections_won = 0
        self.leader_changes = 0
        """Times this node saw the leader change to another known node."""
        self.requests: dict[str, int] = {}
        """Client requests received, by op."""
        self.responses: dict[str, int] = {}
        """Answers sent, by outcome ("ok" or the error code)."""
        self.latency: dict[str, Histogram] = {}
        """At the leader, from a request's arrival to its answer, by op (writes and linearizable gets)."""
        self.fsync = Histogram(LATENCY_BUCKETS)
        """Time to persist a batch (write + fsync)."""
        self.loop_pass = Histogram(LATENCY_BUCKETS)
        """Event-loop passes: from poll returning to the end of the pass (the node process)."""
        self.batch = Histogram(BATCH_BUCKETS)
        """Entries per persisted batch."""
        self.sent: dict[int, int] = {}
        """Raft messages sent, by peer (all types)."""
        self.append_sent: dict[int, int] = {}
        self.append_received: dict[int, int] = {}
        self.append_rejected: dict[int, int] = {}
        """AppendEntries answers with reject set, by the follower that sent them (at the leader)."""
        self.last_contact: dict[int, float] = {}
        """Clock time of the last Raft message from each peer."""
        self.snapshots_sent = 0
        self.snapshot_seconds = Histogram(SNAPSHOT_BUCKETS)

    def latency_of(self, op: str) -> Histogram:
        h = self.latency.get(op)
        if h is None:
            h = self.latency[op] = Histogram(LATENCY_BUCKETS)
        return h


class Collector:
    """A prometheus_client collector over one replica (read at scrape time)."""

    def __init__(self, replica: Replica[Any]) -> None:
        self.replica = replica

    def describe(self) -> list[Any]:
        return []  # families are made at collect time; nothing to check at registration

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

        r = self.replica
        raft = r.raft
        s = r.stats
        nid = str(r.id)

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            g = GaugeMetricFamily(name, doc, labels=["node"])
            g.add_metric([nid], value)
            return g

        def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
            c = CounterMetricFamily(name, doc, labels=["node"])
            c.add_metric([nid], value)
            return c

        role = raft.role.name.lower()
        yield gauge("zraft_term", "Current Raft term.", raft.term)
        yield gauge("zraft_is_leader", "1 if this node is the leader.", 1 if role == "leader" else 0)
        roles = GaugeMetricFamily("zraft_role", "1 for this node's role.", labels=["node", "role"])
        for name in ("follower", "pre_candidate", "candidate", "leader"):
            roles.add_metric([nid, name], 1 if role == name else 0)
        yield roles
        yield gauge("zraft_leader_id", "The leader this node knows (0: none).", raft.lead)
        yield gauge("zraft_commit_index", "Highest log index known committed.", raft.commit_index)
        yield gauge("zraft_applied_index", "Highest log index applied to the store.", r.machine.applied)
        yield gauge("zraft_last_index", "Last log index.", raft.last_index)
        yield gauge("zraft_snapshot_index", "Index of the latest snapshot (log compacted up to it).",
                    raft.snapshot_index)
        yield gauge("zraft_apply_lag_entries", "Committed entries not yet applied.",
                    max(0, raft.commit_index - r.machine.applied))
        g = r.gauges
        yield gauge("zraft_log_bytes", "Bytes of log segments on disk.", g.get("log_bytes", 0))
        yield gauge("zraft_disk_bytes", "Bytes on disk: segments and snapshot files.", g.get("disk_bytes", 0))
        yield gauge("zraft_log_segments", "Log segment files.", g.get("segments", 0))
        yield gauge("zraft_keys", "Keys in the store.", r.machine.counts()[0])
        yield gauge("zraft_sessions", "Client sessions held.", r.machine.counts()[1])
        yield gauge("zraft_pending_writes", "Writes proposed, not yet answered.", len(r.pending_writes))
        yield gauge("zraft_pending_reads", "Linearizable reads waiting for a read index.", r.reads_waiting())
        yield counter("zraft_elections_started_total", "Campaigns started by this node.", s.elections_started)
        yield counter("zraft_elections_won_total", "Elections this node won.", s.elections_won)
        yield counter("zraft_leader_changes_total", "Times this node saw a new leader.", s.leader_changes)
        req = CounterMetricFamily("zraft_requests_total", "Client requests received, by op.", labels=["node", "op"])
        for op, n in dict(s.requests).items():
            req.add_metric([nid, op], n)
        yield req
        resp = CounterMetricFamily("zraft_responses_total", "Answers to clients, by outcome (ok or error code).",
                                   labels=["node", "outcome"])
        for outcome, n in dict(s.responses).items():
            resp.add_metric([nid, outcome], n)
        yield resp
        lat = HistogramMetricFamily("zraft_request_duration_seconds", "At the leader, from a request's arrival to "
                                    "its answer, by op.", labels=["node", "op"])
        for op, h in dict(s.latency).items():
            lat.add_metric([nid, op], h.buckets(), h.sum)
        yield lat
        for name, doc, h in (("zraft_fsync_duration_seconds", "Time to persist a batch (write and fsync).", s.fsync),
                             ("zraft_persist_batch_entries", "Entries per persisted batch.", s.batch),
                             ("zraft_loop_pass_seconds", "Event-loop passes, from poll returning to the pass's end.",
                              s.loop_pass),
                             ("zraft_snapshot_duration_seconds", "Time to take a snapshot, start to finish.",
                              s.snapshot_seconds)):
            f = HistogramMetricFamily(name, doc, labels=["node"])
            f.add_metric([nid], h.buckets(), h.sum)
            yield f
        for name, doc, d in (("zraft_append_sent_total", "AppendEntries sent, by peer.", s.append_sent),
                             ("zraft_append_received_total", "AppendEntries received, by peer.", s.append_received),
                             ("zraft_append_rejected_total", "AppendEntries answers that rejected, by follower.",
                              s.append_rejected)):
            c = CounterMetricFamily(name, doc, labels=["node", "peer"])
            for peer, n in dict(d).items():
                c.add_metric([nid, str(peer)], n)
            yield c
        now = r.clock()
        contact = GaugeMetricFamily("zraft_peer_last_contact_seconds", "Seconds since the last Raft message from "
                                    "each member (a large value: unreachable).", labels=["node", "peer"])
        for peer in r.membership.members:
            if peer != r.id:
                seen = s.last_contact.get(peer)
                contact.add_metric([nid, str(peer)], now - seen if seen is not None else float("inf"))
        yield contact
        yield counter("zraft_snapshots_taken_total", "Snapshots this node took.", r.snapshots_taken)
        yield counter("zraft_snapshots_sent_total", "Snapshots this node sent to followers, completed.",
                      s.snapshots_sent)
        yield counter("zraft_snapshots_installed_total", "Snapshots received and installed.", r.snapshots_installed)
        yield counter("zraft_bad_frames_total", "Frames refused or dropped (protocol errors, impostors).",
                      g.get("bad_frames", 0))


MAX_CONNECTIONS = 16
"""Scrapers served at once (a thread each); one more connection is closed at once."""
SILENT_S = 10.0
"""A connection that sends nothing (or half a request) for this long is dropped."""


def serve(address: str, replica: Replica[Any]) -> Any:
    """Serve ``/metrics`` at ``address`` (HOST:PORT) from a thread; returns the server (``shutdown()`` stops
    it). Raises OSError if the port cannot be bound. At most ``MAX_CONNECTIONS`` connections at once, each dropped
    after ``SILENT_S`` of silence (300 half-sent requests once made 304 threads)."""
    import threading

    from prometheus_client import CollectorRegistry
    from prometheus_client.exposition import MetricsHandler

    from zraft.util.httpserve import BoundedServer

    host, _, port = address.rpartition(":")
    registry = CollectorRegistry(auto_describe=False)
    registry.register(Collector(replica))

    class Handler(MetricsHandler.factory(registry)):  # type: ignore[misc]
        timeout = SILENT_S

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = BoundedServer((host.strip("[]") or "127.0.0.1", int(port)), Handler, MAX_CONNECTIONS)
    threading.Thread(target=server.serve_forever, name="zraft-metrics", daemon=True).start()
    log.info("node=%d event=metrics address=http://%s/metrics", replica.id, address)
    return server
