"""The Redis protocol on a node's own port (``--resp``): ``protocol`` parses and encodes RESP2/RESP3, ``server``
runs the connections inside the node's loop and bridges them to the replica, ``commands`` is the command table."""

from .server import RespServer, Routing

__all__ = ["RespServer", "Routing"]
