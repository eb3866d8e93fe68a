"""Small HTTP servers that a flood cannot grow: the metrics endpoint and the dashboard.

``BoundedServer`` runs a thread per connection, at most ``slots`` at a time (one more connection is closed at
once, not served by another thread), with a listen backlog that takes a burst quickly; handlers set ``timeout``
(seconds a connection may stay silent, half-sent requests included, before it is dropped). ``host_allowed`` is
the defence against DNS rebinding: a page from another site whose name was made to resolve to 127.0.0.1 reaches
the port, but its requests carry that site's name in ``Host``.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
from http.server import ThreadingHTTPServer
from typing import Any

LOOPBACK_NAMES = frozenset(("localhost", "localhost.localdomain", "ip6-localhost"))


class BoundedServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], handler: Any, slots: int = 64) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, handler)
        self._slots = threading.BoundedSemaphore(slots)
        self.refused = 0

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.refused += 1
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


def host_allowed(host_header: str | None, bound_host: str, port: int) -> bool:
    """Whether a request's ``Host`` names this server: its bound address, or a loopback name or address (with
    this port, or none). A missing Host (HTTP/1.0 tools) is allowed: a browser always sends one."""
    if host_header is None:
        return True
    host = host_header.strip().lower()
    if host.startswith("["):  # [::1]:port
        name, _, rest = host[1:].partition("]")
        given_port = rest[1:] if rest.startswith(":") else ""
    else:
        name, _, given_port = host.partition(":")
    if given_port and given_port != str(port):
        return False
    if name in LOOPBACK_NAMES or name == bound_host.lower():
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False
