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

__all__ = ["ATTEMPT_TIMEOUT", "DEFAULT_DEADLINE", "Client", "KeyValue", "OutcomeUnknown", "RangeResult",
           "RequestRefused", "Unavailable", "ZraftError"]
