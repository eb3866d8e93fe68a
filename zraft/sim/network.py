"""The simulated network: every link between nodes, and between clients and nodes, with the faults a profile
gives it (``NetConfig``) and the cuts the nemesis makes.

A link delivers in order, as a ZeroMQ connection (one TCP stream) does: a message never overtakes the one sent
before it on the same link -- except a message the network holds up (``long_delay``), which the messages after it
overtake. Messages may be lost or duplicated. A cut link drops what it carries, or, with ``hold_blocked``, keeps
it (as ZeroMQ queues for a peer it cannot reach) and delivers the backlog in a burst when the network heals.

It draws from the cluster's random number generator, in the order the cluster asks, so that a seed replays.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

MAX_HELD = 5000
"""Most messages held on cut links at once (a peer's queue has a high-water mark too)."""


@dataclass
class NetConfig:
    min_delay: float = 0.5
    max_delay: float = 5.0
    drop: float = 0.0
    duplicate: float = 0.0
    long_delay: float = 0.0
    """Probability that a message takes up to ``long_delay_max`` ms instead (reordering)."""
    long_delay_max: float = 300.0
    hold_blocked: bool = False
    """Messages on a cut link are held, not lost, and delivered in a burst when the network heals (what ZeroMQ
    does with its queue for a peer it cannot reach): old votes and answers arrive long after their term."""


class SimNetwork:
    def __init__(self, config: NetConfig, rng: random.Random) -> None:
        self.config = config
        self.rng = rng
        self.blocked: set[tuple[int, int]] = set()
        """Cut links between nodes: (from, to)."""
        self.link_last: dict[tuple[Any, ...], float] = {}
        """link -> when the last message sent on it arrives (``arrival``)."""
        self.held: list[tuple[int, int, bytes]] = []
        """(from, to, payload) held on cut links (``hold_blocked``), until ``heal``."""

    def lost(self) -> bool:
        """Whether the message being sent is lost."""
        cfg = self.config
        return bool(cfg.drop) and self.rng.random() < cfg.drop

    def copies(self) -> int:
        """How many copies of the message being sent arrive (a duplicate now and then)."""
        cfg = self.config
        return 2 if cfg.duplicate and self.rng.random() < cfg.duplicate else 1

    def arrival(self, link: tuple[Any, ...], now: float) -> float:
        """When a message sent at ``now`` on ``link`` arrives."""
        cfg, rng = self.config, self.rng
        if cfg.long_delay and rng.random() < cfg.long_delay:
            return now + rng.uniform(cfg.max_delay, cfg.long_delay_max)
        at = max(now + rng.uniform(cfg.min_delay, cfg.max_delay), self.link_last.get(link, 0.0))
        self.link_last[link] = at
        return at

    def blocks(self, src: int, dst: int, payload: bytes) -> bool:
        """Whether the link is cut as the message arrives (it is then held or dropped)."""
        if (src, dst) not in self.blocked:
            return False
        if self.config.hold_blocked and len(self.held) < MAX_HELD:
            self.held.append((src, dst, payload))
        return True

    def partition(self, nodes: list[int], groups: tuple[list[int], ...]) -> None:
        """Cut every link between nodes of different groups (nodes in no group are cut from all)."""
        where = {n: g for g, members in enumerate(groups) for n in members}
        self.blocked = {
            (a, b) for a in nodes for b in nodes
            if a != b and (a not in where or b not in where or where[a] != where[b])
        }

    def cut(self, a: int, b: int, both: bool = True) -> None:
        self.blocked.add((a, b))
        if both:
            self.blocked.add((b, a))

    def heal(self, now: float) -> list[tuple[float, tuple[int, int, bytes]]]:
        """Mend every link; the held backlog, each message with when it arrives (at once, in order, a little
        late)."""
        self.blocked = set()
        out = [(max(now + self.rng.uniform(0.0, self.config.max_delay), self.link_last.get(m[:2], 0.0)), m)
               for m in self.held]
        self.held = []
        return out
