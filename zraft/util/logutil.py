"""Rate-limited log lines, for what strangers can make happen as often as they like."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any


class LogLimiter:
    """Log lines about bad input, at most one per event kind per ``every`` seconds, saying how many were held back:
    a flood of bad frames must not become a flood of log lines."""

    def __init__(self, logger: logging.Logger, clock: Callable[[], float] = time.monotonic,
                 every: float = 1.0) -> None:
        self.log = logger
        self.clock = clock
        self.every = every
        self._next: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def warn(self, event: str, fmt: str, *args: Any) -> None:
        now = self.clock()
        if now < self._next.get(event, 0.0):
            self._held[event] = self._held.get(event, 0) + 1
            return
        self._next[event] = now + self.every
        held = self._held.pop(event, 0)
        if held:
            fmt += " (and %d more like it in the last second)"
            args = (*args, held)
        self.log.warning(fmt, *args)
