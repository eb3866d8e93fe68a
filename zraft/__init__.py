"""zraft: a replicated key-value store built on Raft."""
