"""Every test in tests/netns builds network namespaces and needs root."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "/tests/netns/" in str(item.fspath):
            item.add_marker(pytest.mark.netns)
