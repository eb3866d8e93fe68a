import pathlib
import sys
from collections.abc import Iterator

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).parent))

from clusterutil import stop_cluster

from zraft import launch


@pytest.fixture
def cluster(tmp_path: pathlib.Path) -> Iterator[launch.Cluster]:
    """A running 3-node cluster (CurveZMQ, as the launcher makes it) on free ports; every node stopped after."""
    c = launch.start(3, str(tmp_path / "data"), ports=launch.free_ports(3))
    try:
        yield c
    finally:
        stop_cluster(c)
