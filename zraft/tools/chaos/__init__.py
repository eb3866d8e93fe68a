"""Process and network faults on a launcher-made cluster, and the checked chaos run (``zraft chaos``).

    from zraft.tools import chaos, launch
    c = launch.load("./zraft-data")
    chaos.kill(c, chaos.leader(c))

- ``faults``: kill (SIGKILL), pause (SIGSTOP), resume (SIGCONT), restart a node by id, the leader or a random one;
  network faults (drop, delay, duplicate, partitions) through the ``--chaos`` control socket (``Network``), or with
  nftables on a namespace LAN (``LanNetwork``);
- ``workload``: the client processes and their recorded histories;
- ``nemesis``: the faults of a run, at random, and membership changes during them;
- ``timeline``: progress lines and the HTML timeline a run leaves;
- ``runner``: ``run``, a whole run and its checks; ``cli``: its command line.
"""

from .faults import (
    ChaosError,
    LanNetwork,
    Network,
    cut_one_way,
    heal_network,
    kill,
    leader,
    partition,
    pause,
    random_node,
    restart,
    resume,
    set_net_faults,
)
from .runner import EXIT_PASS, EXIT_UNKNOWN, EXIT_VIOLATION, run

__all__ = ["EXIT_PASS", "EXIT_UNKNOWN", "EXIT_VIOLATION", "ChaosError", "LanNetwork", "Network", "cut_one_way",
           "heal_network", "kill", "leader", "partition", "pause", "random_node", "restart", "resume", "run",
           "set_net_faults"]
