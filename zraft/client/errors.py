"""What a client call raises: every failure is a ``ZraftError``, and says whether a write may have applied."""

from __future__ import annotations


class ZraftError(Exception):
    pass


class OutcomeUnknown(ZraftError):
    """No answer before the deadline: the write may or may not have been applied."""


class Unavailable(ZraftError):
    """No leader answered a read before the deadline (nothing was changed)."""


class RequestRefused(ZraftError):
    """The cluster refused the request; nothing was changed (for example a value over the size limit)."""


class LeaseExpired(RequestRefused):
    """The lease named expired, was revoked, or never was (nothing was changed)."""
