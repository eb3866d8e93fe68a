"""A deterministic simulator: whole clusters of the real Raft core under seeded faults and virtual time."""

from .cluster import TICK_MS, SimCluster, Violation
from .network import NetConfig
from .runner import PROFILES, SeedResult, run_seed

__all__ = ["PROFILES", "TICK_MS", "NetConfig", "SeedResult", "SimCluster", "Violation", "run_seed"]
