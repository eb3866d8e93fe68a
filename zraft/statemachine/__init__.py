"""The replicated state machine: the ``StateMachine`` seam and the key-value store behind it."""
