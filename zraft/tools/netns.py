"""A virtual LAN of Linux network namespaces, so that nodes talk over real TCP on their own addresses, and
network faults cut with nftables inside the namespaces (root only; ``iproute2`` and ``nftables``).

    lan = Lan(3)          # namespaces zr-n1..zr-n3 at 10.77.0.1..3, bridged in zr-lan; this host at 10.77.0.200,
                          # client programs in zr-cl at 10.77.0.100 (lan.client_wrap(), or enter(lan.clients))
    lan.up()
    ... start node i with lan.wrap(i) + its command, bound to lan.address(i) ...
    lan.isolate(1); lan.heal(); lan.down()

Everything is made by name and torn down by name (also at ``up``, in case a previous run died). Only the test
subnet 10.77.0.0/24 is used. A fault is one nftables ruleset on the LAN's bridge: drops of the packets between
chosen pairs of node addresses (a dropped packet is silently lost in the middle of the network, so TCP hangs and
backs off instead of failing, as on a real cut link); loss drops a random share with ``numgen random``. This
host's own address and the clients' are never cut, so tests can still ask an isolated node what it thinks.
"""

from __future__ import annotations

import os
import shutil
import subprocess

SUBNET = "10.77.0"
HOST = f"{SUBNET}.200"
CLIENTS = f"{SUBNET}.100"
"""The clients' namespace's address (``Lan.clients``)."""
_CLONE_NEWNET = 0x40000000


class NetnsError(Exception):
    pass


def available() -> str | None:
    """None if this machine can build the LAN, else why not (for a test's skip reason)."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool in ("ip", "nft"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install -y iproute2 nftables)"
    r = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
    if r.returncode != 0:
        return f"ip netns does not work here: {r.stderr.strip()}"
    return None


def _run(*argv: str, stdin: str | None = None, check: bool = True) -> None:
    r = subprocess.run(argv, input=stdin, capture_output=True, text=True)
    if check and r.returncode != 0:
        raise NetnsError(f"{' '.join(argv)}: {r.stderr.strip() or r.stdout.strip()}")


class Lan:
    def __init__(self, n: int, prefix: str = "zr") -> None:
        if not 1 <= n <= 99:
            raise ValueError("1 to 99 nodes")
        self.n = n
        self.prefix = prefix
        self.lan = f"{prefix}-lan"

    def ns(self, i: int) -> str:
        return f"{self.prefix}-n{i}"

    def address(self, i: int) -> str:
        return f"{SUBNET}.{i}"

    @property
    def clients(self) -> str:
        """The namespace for client programs: on the LAN like the nodes, never cut by a fault."""
        return f"{self.prefix}-cl"

    def wrap(self, i: int) -> list[str]:
        """The command prefix that runs a program inside node ``i``'s namespace."""
        return ["ip", "netns", "exec", self.ns(i)]

    def client_wrap(self) -> list[str]:
        """The command prefix that runs a program inside the clients' namespace."""
        return ["ip", "netns", "exec", self.clients]

    def up(self) -> None:
        self.down()
        _run("ip", "netns", "add", self.lan)
        _run("ip", "-n", self.lan, "link", "add", "br0", "type", "bridge")
        _run("ip", "-n", self.lan, "link", "set", "br0", "up")
        _run("ip", "-n", self.lan, "link", "set", "lo", "up")
        # This host joins the LAN (so the launcher and the tests reach every node directly).
        host_if = f"{self.prefix}-host"
        _run("ip", "link", "add", host_if, "type", "veth", "peer", "name", "host", "netns", self.lan)
        _run("ip", "-n", self.lan, "link", "set", "host", "master", "br0", "up")
        _run("ip", "addr", "add", f"{HOST}/24", "dev", host_if)
        _run("ip", "link", "set", host_if, "up")
        for i in range(1, self.n + 1):
            self._join(self.ns(i), f"n{i}", self.address(i))
        self._join(self.clients, "cl", CLIENTS)

    def _join(self, ns: str, port: str, address: str) -> None:
        """A namespace with one interface on the LAN's bridge (``port`` is its end on the bridge)."""
        _run("ip", "netns", "add", ns)
        _run("ip", "-n", ns, "link", "set", "lo", "up")
        _run("ip", "-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", port, "netns", self.lan)
        _run("ip", "-n", self.lan, "link", "set", port, "master", "br0", "up")
        _run("ip", "-n", ns, "addr", "add", f"{address}/24", "dev", "eth0")
        _run("ip", "-n", ns, "link", "set", "eth0", "up")

    def down(self) -> None:
        """Remove everything this LAN is made of (what exists of it)."""
        for i in range(1, 100):
            _run("ip", "netns", "del", self.ns(i), check=False)
        _run("ip", "netns", "del", self.clients, check=False)
        _run("ip", "netns", "del", self.lan, check=False)
        _run("ip", "link", "del", f"{self.prefix}-host", check=False)

    # ------------------------------------------------------------------ faults

    def _apply(self, blocked: set[tuple[int, int]], loss: int = 0) -> None:
        """One ruleset on the LAN's bridge, as a switch would drop: packets are lost in the middle of the network,
        never refused by the sender's own stack. (Drops in a sender's OUTPUT hook fail the send locally, and TCP
        then retries every 500 ms without backing off -- not what a cut cable does.)"""
        lines = ["table bridge zraft {", " chain forward { type filter hook forward priority 0; policy accept;"]
        if blocked:
            pairs = ", ".join(f"{self.address(a)} . {self.address(b)}" for a, b in sorted(blocked))
            lines.append(f"  ip saddr . ip daddr {{ {pairs} }} drop")
        if loss:
            nodes = ", ".join(self.address(j) for j in range(1, self.n + 1))
            lines.append(f"  ip saddr {{ {nodes} }} ip daddr {{ {nodes} }} numgen random mod 100 < {loss} drop")
        lines += [" }", "}"]
        self.heal()
        if blocked or loss:
            _run("ip", "netns", "exec", self.lan, "nft", "-f", "-", stdin="\n".join(lines) + "\n")

    def cut(self, blocked: set[tuple[int, int]]) -> None:
        """Packets from ``a`` to ``b`` are lost for every (a, b) in ``blocked``; every other link works."""
        self._apply({(a, b) for a, b in blocked if a != b and 1 <= a <= self.n and 1 <= b <= self.n})

    def isolate(self, i: int) -> None:
        """Cut node ``i`` from every other node, both ways."""
        self.partition([i], [j for j in range(1, self.n + 1) if j != i])

    def partition(self, *groups: list[int]) -> None:
        """Nodes in different groups cannot reach each other (a node in no group reaches no one)."""
        where = {x: g for g, members in enumerate(groups) for x in members}
        nodes = range(1, self.n + 1)
        self.cut({(a, b) for a in nodes for b in nodes
                  if a != b and (a not in where or b not in where or where[a] != where[b])})

    def bridge(self, left: list[int], right: list[int]) -> None:
        """``left`` and ``right`` cannot reach each other; a node in neither reaches both (Jepsen's bridge)."""
        self.cut({(a, b) for a in left for b in right} | {(b, a) for a in left for b in right})

    def one_way(self, src: int, dst: int) -> None:
        """Packets from ``src`` to ``dst`` are lost; the other direction works."""
        self.cut({(src, dst)})

    def loss(self, percent: int) -> None:
        """Every node loses ``percent``% of the packets to and from the other nodes."""
        self._apply(set(), percent)

    def heal(self) -> None:
        _run("ip", "netns", "exec", self.lan, "nft", "delete", "table", "bridge", "zraft", check=False)


def enter(name: str) -> None:
    """Move this process into the network namespace ``name`` (made by ``Lan.up``). Call it first thing in a fresh
    process, before any socket or thread exists (threads started later inherit it, e.g. ZeroMQ's I/O threads)."""
    fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        if hasattr(os, "setns"):  # Python 3.12+
            os.setns(fd, _CLONE_NEWNET)
        else:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            if libc.setns(fd, _CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                raise OSError(err, f"setns into {name}: {os.strerror(err)}")
    finally:
        os.close(fd)
