"""e2e collection: tests that run only inside a network namespace a test made."""

from __future__ import annotations

import os

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Leave out ``test_inside_*`` of test_cluster.py outside its namespace: the outer test
    runs them there (Ray must never see this host's routable address), so outside they
    are not test cases of their own, and are deselected rather than reported as skips."""
    if os.environ.get("PYRO_TEST_NETNS") == "1":
        return
    keep, drop = [], []
    for item in items:
        inner = item.path.name == "test_cluster.py" and item.name.startswith("test_inside_")
        (drop if inner else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
