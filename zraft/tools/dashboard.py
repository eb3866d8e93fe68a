"""A live web dashboard for a launcher-made cluster: ``python launcher.py`` serves it on 127.0.0.1.

The page (``zraft/tools/web/``: plain HTML, CSS and JavaScript, no build step, nothing fetched from the internet) shows
every node -- role, term, vote, leader, log/commit/applied indexes as bars, snapshot index, up/paused/killed,
messages per second to each peer as links -- updated five times a second over server-sent events, an event log,
a form for put/append/get/delete, and buttons per node: kill, pause, resume, restart, isolate, heal, plus
partition presets.

Security: it binds 127.0.0.1 only. Reading (the page, ``/state``, ``/events``) is open; every action needs the
random token the launcher prints with the URL, sent in the ``X-Zraft-Token`` header: another web page open in
the same browser can neither set that header on a cross-site request nor read the token (no CORS headers are
ever sent). Network isolation uses the nodes' fault-control sockets (the launcher starts them with ``--chaos``).
"""

from __future__ import annotations

import collections
import hmac
import json
import logging
import os
import secrets
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from typing import Any

import psutil

from zraft.client import Client, RequestRefused, ZraftError
from zraft.tools import chaos
from zraft.tools.launch import Cluster
from zraft.util.httpserve import BoundedServer, host_allowed

log = logging.getLogger("zraft.tools.dashboard")

WEB_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "web")
FILES = {"/": ("index.html", "text/html; charset=utf-8"), "/app.js": ("app.js", "text/javascript; charset=utf-8"),
         "/style.css": ("style.css", "text/css; charset=utf-8")}
UPDATE_S = 0.2
"""How often the state is collected and pushed to every page (five times a second)."""
MAX_STREAMS = 16
"""Pages receiving events at once (each holds a thread); more are refused with 503."""
MAX_BODY = 1 << 20
MAX_CONNECTIONS = 64
"""Connections served at once (each holds a thread); more are closed at once."""
ACTIONS = frozenset(("kill", "pause", "resume", "restart", "isolate", "heal"))
PRESETS = frozenset(("isolate_leader", "split", "heal_all"))


class Dashboard:
    def __init__(self, cluster: Cluster, port: int, host: str = "127.0.0.1", token: str | None = None) -> None:
        self.c = cluster
        self.token = token or secrets.token_urlsafe(18)
        self.events: collections.deque[dict[str, Any]] = collections.deque(maxlen=200)
        self.state: dict[str, Any] = {"nodes": [], "events": [], "time": 0.0}
        self.isolated: set[int] = set()
        self._lock = threading.Lock()  # actions one at a time
        self._cond = threading.Condition()
        self._seq = 0
        self._streams = 0
        self._stop = threading.Event()
        self._prev: dict[int, dict[str, Any]] = {}
        self._sent: dict[int, tuple[float, dict[int, int]]] = {}
        self._client: Client | None = None
        self._client_nodes: list[str] = []
        dash = self

        class Handler(_Handler):
            dashboard = dash

        self.server = BoundedServer((host, port), Handler, MAX_CONNECTIONS)
        self.server.daemon_threads = True
        self.url = f"http://{host}:{self.server.server_address[1]}/?token={self.token}"
        self._threads = [threading.Thread(target=self.server.serve_forever, name="zraft-web", daemon=True),
                         threading.Thread(target=self._collect_loop, name="zraft-web-state", daemon=True)]

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def close(self) -> None:
        self._stop.set()
        self.server.shutdown()
        self.server.server_close()
        with self._cond:
            self._cond.notify_all()
        if self._client is not None:
            self._client.close()

    # ------------------------------------------------------------------ state

    def event(self, text: str, kind: str = "info") -> None:
        self.events.append({"t": time.time(), "text": text, "kind": kind})

    def client(self) -> Client:
        addrs = self.c.addresses
        if self._client is None or addrs != self._client_nodes:
            if self._client is not None:
                self._client.close()
            self._client = Client(addrs, keys=self.c.client_keys(), deadline=5.0, attempt_timeout=0.3)
            self._client_nodes = addrs
        return self._client

    def _collect_loop(self) -> None:
        # The status client is this thread's own (actions use ``client()`` under the lock).
        client: Client | None = None
        nodes: list[str] = []
        while not self._stop.is_set():
            t0 = time.monotonic()
            try:
                if client is None or nodes != self.c.addresses:
                    if client is not None:
                        client.close()
                    nodes = self.c.addresses
                    client = Client(nodes, keys=self.c.client_keys(), attempt_timeout=0.15)
                self._collect(client)
            except Exception as e:  # the page must keep updating whatever one round met
                log.warning("dashboard: collecting the state failed: %s", e)
            self._stop.wait(max(0.0, UPDATE_S - (time.monotonic() - t0)))
        if client is not None:
            client.close()

    def _collect(self, client: Client) -> None:
        specs = list(self.c.nodes)
        answers = client.status_many(0.15)
        now = time.monotonic()
        rows = []
        for spec, st in zip(specs, answers, strict=False):
            row: dict[str, Any] = {"id": spec.id, "address": spec.address, "pid": spec.pid,
                                   "process": _process_state(spec.pid), "isolated": spec.id in self.isolated}
            if st is not None:
                row.update({k: st.get(k) for k in ("role", "term", "leader", "vote", "commit", "applied",
                                                   "last_index", "snapshot_index", "keys")})
                sent = {int(k): int(v) for k, v in (st.get("sent") or {}).items()}
                prev = self._sent.get(spec.id)
                rates = {}
                if prev is not None and now > prev[0]:
                    rates = {str(p): round(max(0, n - prev[1].get(p, 0)) / (now - prev[0]), 1)
                             for p, n in sent.items()}
                self._sent[spec.id] = (now, sent)
                row["rates"] = rates
            else:
                self._sent.pop(spec.id, None)
            self._note_changes(spec.id, row)
            rows.append(row)
        with self._cond:
            self._seq += 1
            self.state = {"nodes": rows, "events": list(self.events)[-60:], "time": time.time(), "seq": self._seq}
            self._cond.notify_all()

    def _note_changes(self, nid: int, row: dict[str, Any]) -> None:
        prev = self._prev.get(nid)
        self._prev[nid] = row
        if prev is None:
            return
        if prev["process"] != row["process"]:
            self.event(f"node {nid} is {row['process']}", "fault" if row["process"] != "up" else "info")
        if row.get("role") == "leader" and prev.get("role") != "leader":
            self.event(f"node {nid} became leader (term {row['term']})", "leader")
        elif row.get("role") == "candidate" and prev.get("role") != "candidate":
            self.event(f"node {nid} started an election (term {row['term']})", "election")
        if (row.get("snapshot_index") or 0) > (prev.get("snapshot_index") or 0):
            self.event(f"node {nid} has a snapshot at index {row['snapshot_index']}", "snapshot")

    # ------------------------------------------------------------------ actions

    def act(self, body: dict[str, Any]) -> dict[str, Any]:
        action = body.get("action")
        with self._lock:
            if action in ACTIONS:
                nid = body.get("node")
                if type(nid) is not int or all(n.id != nid for n in self.c.nodes):
                    return {"ok": False, "error": f"no node {nid!r}"}
                return self._node_action(action, nid)
            if action in PRESETS:
                return self._preset(action)
            if action == "kv":
                return self._kv(body)
        return {"ok": False, "error": f"unknown action {action!r}"}

    def _node_action(self, action: str, nid: int) -> dict[str, Any]:
        try:
            if action == "kill":
                chaos.kill(self.c, nid)
            elif action == "pause":
                chaos.pause(self.c, nid)
            elif action == "resume":
                chaos.resume(self.c, nid)
            elif action == "restart":
                chaos.restart(self.c, nid)
                if self.isolated:
                    threading.Timer(1.0, self._apply_network).start()  # once it listens on its control socket
            elif action == "isolate":
                self.isolated.add(nid)
                self._apply_network()
            elif action == "heal":
                self.isolated.discard(nid)
                self._apply_network()
        except (chaos.ChaosError, psutil.Error, OSError) as e:
            return {"ok": False, "error": str(e)}
        self.event(f"{action} node {nid} (from the page)", "fault")
        return {"ok": True}

    def _apply_network(self) -> None:
        ids = [n.id for n in self.c.nodes]
        if not self.isolated:
            chaos.heal_network(self.c)
        else:
            chaos.partition(self.c, *([i] for i in sorted(self.isolated)),
                            [i for i in ids if i not in self.isolated])

    def _preset(self, action: str) -> dict[str, Any]:
        ids = [n.id for n in self.c.nodes]
        if action == "heal_all":
            self.isolated.clear()
            chaos.heal_network(self.c)
            self.event("network healed (from the page)", "fault")
            return {"ok": True}
        if action == "isolate_leader":
            try:
                ld = chaos.leader(self.c)
            except chaos.ChaosError as e:
                return {"ok": False, "error": str(e)}
            self.isolated = {ld}
            self._apply_network()
            self.event(f"isolated the leader, node {ld} (from the page)", "fault")
            return {"ok": True}
        minority = ids[: (len(ids) - 1) // 2]  # split: a minority and a majority that can still elect
        self.isolated.clear()
        chaos.partition(self.c, minority, [i for i in ids if i not in minority])
        self.event(f"partition {minority} | {[i for i in ids if i not in minority]} (from the page)", "fault")
        return {"ok": True}

    def _kv(self, body: dict[str, Any]) -> dict[str, Any]:
        op, key, value = body.get("op"), body.get("key"), body.get("value", "")
        if op not in ("put", "append", "get", "delete") or not isinstance(key, str) or not key \
                or not isinstance(value, str):
            return {"ok": False, "error": "give op (put, append, get, delete), key and value as text"}
        cl = self.client()
        try:
            if op == "get":
                v = cl.get(key)
                return {"ok": True, "value": None if v is None else v.decode(errors="replace")}
            if op == "delete":
                cl.delete(key)
            else:
                getattr(cl, op)(key, value)
        except (ZraftError, RequestRefused, ValueError) as e:
            return {"ok": False, "error": str(e)}
        return {"ok": True}

    def authorized(self, header: str | None) -> bool:
        return header is not None and hmac.compare_digest(header.encode(), self.token.encode())

    def wait_state(self, seq: int, timeout: float) -> dict[str, Any]:
        with self._cond:
            self._cond.wait_for(lambda: self.state.get("seq", 0) != seq or self._stop.is_set(), timeout)
            return self.state

    def stream_slot(self, delta: int) -> bool:
        with self._cond:
            if delta > 0 and self._streams >= MAX_STREAMS:
                return False
            self._streams += delta
            return True


def _process_state(pid: int) -> str:
    try:
        st = psutil.Process(pid).status()
    except (psutil.Error, ValueError):
        return "killed"
    if st == psutil.STATUS_ZOMBIE:
        return "killed"
    return "paused" if st == psutil.STATUS_STOPPED else "up"


class _Handler(BaseHTTPRequestHandler):
    dashboard: Dashboard
    server_version = "zraft-dashboard"
    protocol_version = "HTTP/1.1"
    timeout = 10.0
    """Seconds a connection may stay silent before it is dropped (an idle connection holds a slot)."""

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("dashboard: " + format, *args)

    def _send(self, status: int, body: bytes, ctype: str, extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Content-Security-Policy", "default-src 'self'; img-src 'self' data:")
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, doc: Any) -> None:
        self._send(status, json.dumps(doc).encode(), "application/json")

    def _host_ok(self) -> bool:
        """DNS rebinding: a page of another site whose name now resolves to 127.0.0.1 must not read the state."""
        addr: Any = self.server.server_address
        if host_allowed(self.headers.get("Host"), str(addr[0]), int(addr[1])):
            return True
        self._json(HTTPStatus.MISDIRECTED_REQUEST, {"ok": False, "error": "this dashboard answers only requests "
                                                    "for its own address (the Host header names another)"})
        return False

    def do_GET(self) -> None:
        if not self._host_ok():
            return
        path = self.path.split("?", 1)[0]
        if path in FILES:
            name, ctype = FILES[path]
            with open(os.path.join(WEB_DIR, name), "rb") as f:
                self._send(HTTPStatus.OK, f.read(), ctype)
        elif path == "/state":
            self._json(HTTPStatus.OK, self.dashboard.state)
        elif path == "/events":
            self._events()
        else:
            self._json(HTTPStatus.NOT_FOUND, {"ok": False, "error": "not found"})

    def _events(self) -> None:
        d = self.dashboard
        if not d.stream_slot(1):
            self._json(HTTPStatus.SERVICE_UNAVAILABLE, {"ok": False, "error": "too many pages open"})
            return
        try:
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-store")
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True
            seq = -1
            while not d._stop.is_set():
                state = d.wait_state(seq, 2.0)
                seq = state.get("seq", 0)
                self.wfile.write(b"data: " + json.dumps(state).encode() + b"\n\n")
                self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            pass
        finally:
            d.stream_slot(-1)

    def do_POST(self) -> None:
        if not self._host_ok():
            return
        d = self.dashboard
        if self.path.split("?", 1)[0] != "/action":
            self._json(HTTPStatus.NOT_FOUND, {"ok": False, "error": "not found"})
            return
        if not d.authorized(self.headers.get("X-Zraft-Token")):
            self._json(HTTPStatus.FORBIDDEN, {"ok": False, "error": "missing or wrong token (the launcher printed "
                                                                   "the URL with it)"})
            return
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            length = -1
        if not 0 < length <= MAX_BODY:
            self._json(HTTPStatus.BAD_REQUEST, {"ok": False, "error": "a JSON body of at most 1 MiB"})
            return
        try:
            body = json.loads(self.rfile.read(length))
        except ValueError:
            self._json(HTTPStatus.BAD_REQUEST, {"ok": False, "error": "the body is not JSON"})
            return
        if not isinstance(body, dict):
            self._json(HTTPStatus.BAD_REQUEST, {"ok": False, "error": "the body is a JSON object"})
            return
        self._json(HTTPStatus.OK, d.act(body))
