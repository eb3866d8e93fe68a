"""The chaos run's nemesis: process, network and membership faults, at random, with the timeline's events."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

from zraft.tools.chaos.faults import ChaosError, Network, best_effort, kill, leader, pause, restart, resume
from zraft.tools.launch import Cluster

FAULTS = ("kill", "kill_leader", "pause", "pause_leader", "isolate_leader", "split", "bridge", "one_way",
          "flaky_network")
LEADER_AFTER_HEAL_S = 10.0
"""After each fault heals, some node must report itself leader within this many seconds."""

MEMBERSHIP_KINDS = ("add", "remove", "replace", "transfer")
SPARE_NAMESPACES = 30
"""Namespaces made for nodes added during a ``--netns --membership`` run (ids are never reused)."""


CATCH_UP_S = 8.0
"""How long the membership nemesis waits for a node it added to catch up and be promoted. One that cannot (cut off
by the other nemesis) stays a learner, and the changes go on: a 20 s wait once took the rest of a 25 s run, which
then made 3 changes instead of the usual 5-8."""


def membership_nemesis(c: Cluster, rng: random.Random, until: float, events: list[dict[str, Any]],
                        say: Callable[[str], None], t0: float, voters: tuple[int, int]) -> None:
    """While the other faults happen: every few seconds add a node, remove one (the leader too), replace one
    (remove it, add a fresh one under a new id) or transfer leadership, keeping between ``voters`` voters."""
    from zraft.client import ZraftError
    from zraft.tools.launch import LaunchError

    while time.monotonic() < until:
        time.sleep(rng.uniform(2.0, 5.0))
        if time.monotonic() >= until:
            break
        start = time.monotonic()
        size = len(c.nodes)
        kinds = [k for k in MEMBERSHIP_KINDS
                 if not (k == "add" and size >= voters[1]) and not (k == "remove" and size <= voters[0])]
        kind = rng.choice(kinds)
        note = ""
        try:
            ld = leader(c)
        except ChaosError:
            ld = 0
        try:
            ids = [n.id for n in c.nodes]
            if kind == "add":
                note = f"added node {c.add_node(wait=CATCH_UP_S).id}"
            elif kind in ("remove", "replace"):
                target = ld if ld and rng.random() < 0.3 else rng.choice(ids)
                c.remove_node(target)
                note = f"removed node {target}" + (" (the leader)" if target == ld else "")
                if kind == "replace":
                    note += f", added node {c.add_node(wait=CATCH_UP_S).id}"
            else:
                target = rng.choice([i for i in ids if i != ld] or ids)
                with c.client(deadline=5.0) as cl:
                    cl.transfer_leadership(target)
                note = f"leadership {ld} -> {target}"
        except (ZraftError, LaunchError, ChaosError) as e:
            note += f" failed: {e}" if note else f"failed: {e}"
        end = time.monotonic()
        events.append({"fault": f"member_{kind}", "node": 0, "note": note, "start": start, "end": end,
                       "leader_after": 0.0, "membership": [n.id for n in c.nodes]})
        say(f"  t={start - t0:6.1f} s  member  {kind:<15} {note}  (members now {[n.id for n in c.nodes]})")


def run_nemesis(c: Cluster, rng: random.Random, until: float, rate: float, events: list[dict[str, Any]],
             say: Callable[[str], None] = lambda s: None, t0: float = 0.0, net: Network | None = None) -> None:
    from zraft.tools.launch import LaunchError

    net = net or Network(c)
    while time.monotonic() < until:
        time.sleep(rng.uniform(0.5, 1.5) / rate)
        if time.monotonic() >= until:
            break
        ids = [n.id for n in c.nodes]
        kind = rng.choice(FAULTS)
        try:
            ld = leader(c)
        except ChaosError:
            ld = rng.choice(ids)
        target = ld if kind.endswith("_leader") else rng.choice(ids)
        start = time.monotonic()
        note = ""
        try:  # the membership nemesis may remove the target meanwhile: then there is nothing to fault or heal
            if kind.startswith("kill"):
                kill(c, target)
            elif kind.startswith("pause"):
                pause(c, target)
            elif kind == "isolate_leader":
                net.partition([target], [i for i in ids if i != target])
            elif kind == "split":
                shuffled = ids[:]
                rng.shuffle(shuffled)
                k = len(ids) // 2
                net.partition(shuffled[:k], shuffled[k:])
                note = f"{sorted(shuffled[:k])} | {sorted(shuffled[k:])}"
            elif kind == "bridge":
                shuffled = ids[:]
                rng.shuffle(shuffled)
                bridge, rest = shuffled[0], shuffled[1:]
                half = len(rest) // 2
                a, b = rest[:half], rest[half:]
                net.bridge(a, b)
                note = f"{sorted(a)} <-{bridge}-> {sorted(b)}"
            elif kind == "one_way":
                other = rng.choice([i for i in ids if i != target])
                net.one_way(target, other)
                note = f"{target} -/-> {other}"
            else:  # every node loses (and, inside the nodes, duplicates and delays) some of its traffic
                note = net.flaky()
        except (ChaosError, KeyError, LaunchError) as e:
            note = f"skipped: {e}"
        say(f"  t={start - t0:6.1f} s  fault   {kind:<15} node {target}  {note}")
        time.sleep(rng.uniform(1.0, 3.0) / rate)
        # Heal this fault before the next one.
        try:
            if kind.startswith("kill"):
                best_effort(restart, c, target)
            elif kind.startswith("pause"):
                best_effort(resume, c, target)
            else:
                net.heal()
        except (KeyError, LaunchError):
            pass  # the node was removed meanwhile
        end = time.monotonic()
        # Liveness: a leader again soon after each heal.
        recovered = None
        while time.monotonic() - end < LEADER_AFTER_HEAL_S:
            try:
                leader(c)
                recovered = time.monotonic() - end
                break
            except ChaosError:
                time.sleep(0.05)
        events.append({"fault": kind, "node": target, "note": note, "start": start, "end": end,
                       "leader_after": recovered})
        say(f"  t={end - t0:6.1f} s  healed  {kind:<15} " + (
            f"leader after {recovered:.2f} s" if recovered is not None else "NO LEADER"))
