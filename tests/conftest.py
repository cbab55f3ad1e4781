"""Shared pytest configuration.

Tests marked ``netns`` need root to build network namespaces.  Outside CI they are skipped for
an unprivileged user; under ``CI=true`` a skip would hide a missing capability, so the run fails.
"""

from __future__ import annotations

import os

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "/tests/netns/" in str(item.path):
            item.add_marker(pytest.mark.netns)
    if os.geteuid() == 0:
        return
    needs_root = [item for item in items if item.get_closest_marker("netns")]
    if not needs_root:
        return
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        raise pytest.UsageError(f"CI=true but not root: {len(needs_root)} netns tests cannot run")
    skip = pytest.mark.skip(reason="needs root (network namespaces)")
    for item in needs_root:
        item.add_marker(skip)
