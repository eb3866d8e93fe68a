"""Helpers for tests that run real node processes."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

from zraft.tools import chaos, launch


def wait_until(cond: Callable[[], object], timeout: float = 15.0, what: str = "condition") -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def zombie(pid: int) -> bool:
    import psutil

    try:
        return bool(psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True


def leader_id(c: launch.Cluster) -> int:
    found: list[int] = []

    def one() -> bool:
        try:
            found.append(chaos.leader(c))
            return True
        except chaos.ChaosError:
            return False

    wait_until(one, what="a leader")
    return found[-1]


def stop_cluster(c: launch.Cluster) -> None:
    """Stop every node of ``c`` and check that none is left running."""
    c.stop()
    for n in c.nodes:
        assert not launch.alive(n.pid) or zombie(n.pid), f"node {n.id} still running"


def consecutive_free_ports(n: int) -> int:
    """A base port such that base .. base + n - 1 are free now (the launcher's --base-port numbering)."""
    for base in launch.free_ports(20):
        socks = []
        try:
            for port in range(base, base + n):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise AssertionError("no run of free ports found")
