"""One pass of a node's event loop, in the one order every runtime follows: the node process (``zraft.server.node``:
ZeroMQ polling, real time) and the simulator (``zraft.sim``: virtual time) both drive their replicas with ``Loop``.

A pass, after the runtime has fed the replica what arrived since the last one (``replica.receive``: Raft messages,
snapshot chunks, client frames, the Redis server's commands):

1. end input: the pass's writes become one proposal -- one log append, one fsync, one AppendEntries per follower --
   and its reads share one read index;
2. tick, when one is due, and the tick hooks (the node redials peers, the Redis server retries its writes);
3. work: a slice of a snapshot being written, memory freed a piece at a time;
4. process: carry out the core's ready batch (send the leader's appends, persist, send the rest, apply, answer);
5. flush: the sources send what the pass produced (the Redis server's answers and forwarded writes).

The runtime decides when a pass runs: the node when its poll returns (input arrived, the next tick is due, or at
once while the replica is busy); the simulator when a message arrives (a moment later: what arrives meanwhile joins
the same pass, as it would queue on a real node's socket), when the next tick is due, and while busy. Every time it
reads comes from the replica's clock.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from zraft.server.replica import Replica


class Source(Protocol):
    """An input source of the loop besides peers and clients (the Redis server): it feeds the replica itself, and
    sends what a pass produced when the pass ends."""

    def tick(self, now: float) -> None: ...

    def flush(self) -> None: ...


class Loop:
    def __init__(self, replica: Replica[Any], tick_s: float, first_tick: float) -> None:
        """``first_tick``: the clock time of the first tick (the node: a tick from now; the simulator: a random
        phase, so that nodes do not tick in step)."""
        self.replica = replica
        self.tick_s = tick_s
        self.next_tick = first_tick
        self.sources: list[Source] = []
        self.on_tick: list[Callable[[float], None]] = []
        """Called with the time at each tick, after the replica's."""

    def busy(self) -> bool:
        """Whether the next pass should run at once (a snapshot being written)."""
        return self.replica.busy()

    def run_pass(self, now: float) -> None:
        replica = self.replica
        replica.end_input()
        if now >= self.next_tick:
            replica.tick(now - self.next_tick)
            for hook in self.on_tick:
                hook(now)
            for s in self.sources:
                s.tick(now)
            self.next_tick += self.tick_s
            if self.next_tick < now:  # we were paused (SIGSTOP) or starved: do not tick in a burst
                self.next_tick = now + self.tick_s
        replica.work()
        replica.process()
        for s in self.sources:
            s.flush()
