"""Messages on the wire (``codec``); the node runtime owns the ZeroMQ sockets."""
