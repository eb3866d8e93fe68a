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
from .errors import LeaseExpired
from .leases import LeaseInfo

__all__ = ["ATTEMPT_TIMEOUT", "DEFAULT_DEADLINE", "Client", "KeyValue", "LeaseExpired", "LeaseInfo", "OutcomeUnknown",
           "RangeResult", "RequestRefused", "Unavailable", "ZraftError"]
