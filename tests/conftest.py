import contextlib
import os
import pathlib
from collections.abc import Iterator

import pytest
from clusterutil import stop_cluster

from zraft.tools import launch

_PASSED = pytest.StashKey[bool]()
_NODE_FILES = (".seg", ".prealloc")
"""What a node preallocates (64 MiB log segments and their spare): a full run wrote about 16 GB of them."""


def _drop_node_files(root: pathlib.Path) -> None:
    for dirpath, _, names in os.walk(root):
        for n in names:
            if n.endswith(_NODE_FILES):
                with contextlib.suppress(OSError):
                    os.remove(os.path.join(dirpath, n))


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[pytest.TestReport]:
    report = yield
    if report.when == "call":
        item.stash[_PASSED] = report.passed
    return report


@pytest.fixture(autouse=True)
def _free_node_data(request: pytest.FixtureRequest) -> Iterator[None]:
    """After a test that passed (and its fixtures stopped their nodes), remove the log segments its nodes left
    in its temporary directory; a failed test keeps everything to look at."""
    yield
    path = getattr(request.node, "funcargs", {}).get("tmp_path")
    if path is not None and request.node.stash.get(_PASSED, False):
        _drop_node_files(path)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """A run that passed also drops the segments of module-scoped directories (``tmp_path_factory.mktemp``)."""
    factory = getattr(session.config, "_tmp_path_factory", None)
    if exitstatus == 0 and factory is not None:
        _drop_node_files(factory.getbasetemp())


@pytest.fixture
def cluster(tmp_path: pathlib.Path) -> Iterator[launch.Cluster]:
    """A running 3-node cluster (CurveZMQ, as the launcher makes it) on free ports; every node stopped after."""
    c = launch.start(3, str(tmp_path / "data"), ports=launch.free_ports(3))
    try:
        yield c
    finally:
        stop_cluster(c)
