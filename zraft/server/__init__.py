"""A node's runtime: the replica that drives the Raft core and the state machine, the node process and its event
loop, snapshot transfer, metrics, and the Redis protocol."""
