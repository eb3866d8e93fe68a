"""The client's lease calls: grant a lease, keep it alive, revoke it, ask its time left; attach keys to it (``put``'s
``lease``), or give a key its own TTL (``put``'s ``ttl``, ``expire``). The leader decides when a lease expires,
and its keys are then deleted at once on every node (``zraft.server.lessor`` says what is promised).

A part of ``Client`` (``client.py``): its methods run on the one client object; what they use of the rest is
declared at the top of ``LeaseCalls``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from zraft.client.errors import ZraftError


class LeaseInfo(NamedTuple):
    lease: int
    ttl: float
    """The lease's TTL, in seconds."""
    remaining: float
    """Seconds left before the leader expires it, unless it is kept alive."""
    keys: int
    """Keys attached to it."""


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


class LeaseCalls:
    def _call(self, req: dict[str, Any], write: bool, any_node: bool = False,
              attempt_timeout: float | None = None, deadline: float | None = None) -> dict[str, Any]:
        raise NotImplementedError  # client.py

    def _session_call(self, req: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError  # client.py

    def grant(self, ttl: float, lease: int = 0) -> int:
        """Grant a lease of ``ttl`` seconds (2 s at least); ``lease``: the id wanted (0: the cluster picks one).
        Returns its id. It expires ``ttl`` seconds after it was granted or last kept alive."""
        req: dict[str, Any] = {"op": "lease_grant", "ttl_ms": _ms(ttl)}
        if lease:
            req["lease"] = lease
        r = self._session_call(req)
        got = r.get("lease")
        if type(got) is not int or got <= 0:
            raise ZraftError(f"malformed lease_grant answer {r!r:.200}")
        return got

    def keepalive(self, lease: int) -> float:
        """Restart the lease's TTL from now; returns the TTL in seconds. ``LeaseExpired`` if it is gone. The lease
        is then safe until the moment this call was made plus the TTL, less the leader's clock drift over one TTL
        (see docs/PROTOCOL.md)."""
        r = self._call({"op": "lease_keepalive", "lease": lease}, write=False)
        ttl = r.get("ttl_ms")
        if type(ttl) is not int:
            raise ZraftError(f"malformed lease_keepalive answer {r!r:.200}")
        return ttl / 1000

    def revoke(self, lease: int) -> int:
        """Drop the lease now and delete its keys; returns the revision. ``LeaseExpired`` if it is gone."""
        rev: int = self._session_call({"op": "lease_revoke", "lease": lease}).get("rev", 0)
        return rev

    def time_to_live(self, lease: int) -> LeaseInfo:
        """The lease's TTL and time left, as the leader sees it. ``LeaseExpired`` if it is gone."""
        r = self._call({"op": "lease_ttl", "lease": lease}, write=False)
        return _info(r)

    def key_ttl(self, key: bytes | str) -> LeaseInfo | None:
        """The lease (or own TTL) of ``key`` and its time left; None if the key has none. ``KeyError`` if the key is
        not there."""
        r = self._call({"op": "lease_ttl", "key": key.encode() if isinstance(key, str) else key}, write=False)
        if r.get("found") is not True:
            raise KeyError(key)
        return _info(r) if r.get("lease") else None

    def expire(self, key: bytes | str, ttl: float | None) -> bool:
        """Give ``key`` its own TTL of ``ttl`` seconds (at most 0: delete it now; None: drop its TTL or lease, as
        Redis's PERSIST). Whether it did (False: the key is not there, or for None had no TTL)."""
        r = self._session_call({"op": "expire", "key": key.encode() if isinstance(key, str) else key,
                                "ttl_ms": None if ttl is None else round(ttl * 1000)})
        return r.get("done") is True


def _info(r: dict[str, Any]) -> LeaseInfo:
    lease, ttl, left, keys = r.get("lease"), r.get("ttl_ms"), r.get("remaining_ms"), r.get("keys")
    if type(lease) is not int or type(ttl) is not int or type(left) is not int or type(keys) is not int:
        raise ZraftError(f"malformed lease_ttl answer {r!r:.200}")
    return LeaseInfo(lease, ttl / 1000, left / 1000, keys)
