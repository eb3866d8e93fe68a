"""Processes and ports for the launcher: free ports for a test cluster, signalling and reaping node processes,
the environment a node starts in, the tail of a node's log for an error message."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time


def reap(pid: int, proc: subprocess.Popen[bytes] | None, end: float) -> None:
    """Wait until ``end`` for a node told to stop to exit (our child ``proc``, or any process ``pid``), then
    SIGKILL it."""
    if proc is not None:
        try:
            proc.wait(max(0.0, end - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        return
    while alive(pid) and time.monotonic() < end:
        time.sleep(0.05)
    signal_pid(pid, signal.SIGKILL)


def node_env() -> dict[str, str]:
    """The environment for a node process: this zraft package importable wherever the launcher runs from."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


_HANDED_OUT: set[int] = set()
"""Ports ``free_ports`` returned in this process: the OS may offer a port again as soon as its probe socket is
closed, and two calls (a cluster's node ports, then its Redis ports) must not share one."""


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """Ports the OS says are free now, none of them returned by an earlier call in this process (for tests)."""
    socks = []
    ports: list[int] = []
    try:
        while len(ports) < n:
            s = socket.socket()
            s.bind((host, 0))
            socks.append(s)  # held until the end, so the OS offers another port next
            port = s.getsockname()[1]
            if port not in _HANDED_OUT:
                ports.append(port)
        _HANDED_OUT.update(ports)
        return ports
    finally:
        for s in socks:
            s.close()


def tail(path: str, lines: int = 15) -> str:
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return "(no log)"


def port_free(host: str, port: int) -> bool:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as ZeroMQ binds: TIME_WAIT leftovers do not count
    try:
        s.bind((host, port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def signal_pid(pid: int, sig: int) -> None:
    if pid <= 0:
        return
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
        return True
    except (ProcessLookupError, PermissionError):
        return False
