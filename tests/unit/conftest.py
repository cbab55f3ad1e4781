"""Fixtures shared by the unit tests (helpers live in :mod:`tests.support`)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from pylvs import model
from pylvs.api.server import ApiServer
from tests.support.mini_director import ApiStarter, MiniDirector


@pytest.fixture
async def running_api() -> AsyncIterator[ApiStarter]:
    """Start (MiniDirector, ApiServer) pairs for configs; everything is stopped afterwards."""
    started: list[tuple[MiniDirector, ApiServer]] = []

    async def start(cfg: model.Config) -> tuple[MiniDirector, ApiServer]:
        director = MiniDirector(cfg)
        await director.start()
        server = ApiServer(director)
        await server.start()
        started.append((director, server))
        return director, server

    yield start
    for director, server in reversed(started):
        await server.stop()
        await director.stop()
    await asyncio.sleep(0)
