"""The Python client (``Client``: sessions, leader discovery, retries that apply a write once)."""

from .client import (
    ATTEMPT_TIMEOUT,
    DEFAULT_DEADLINE,
    Client,
    KeyValue,
    OutcomeUnknown,
    RangeResult,
    RequestRefused,
    Unavailable,
    ZraftError,
)
from .concurrency import Election, Lock, LockLost
from .errors import LeaseExpired
from .leases import LeaseInfo
from .watch import Compacted, Event, WatchStream

__all__ = ["ATTEMPT_TIMEOUT", "DEFAULT_DEADLINE", "Client", "Compacted", "Election", "Event", "KeyValue",
           "LeaseExpired", "LeaseInfo", "Lock", "LockLost", "OutcomeUnknown", "RangeResult", "RequestRefused",
           "Unavailable", "WatchStream", "ZraftError"]
