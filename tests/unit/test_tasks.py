"""Background tasks are kept and awaited: the helpers, and a check over the source."""

from __future__ import annotations

import ast
import asyncio
import logging
from pathlib import Path

import pytest

from pylvs.tasks import TaskSet, cancel_and_wait

SRC = Path(__file__).resolve().parents[2] / "src" / "pylvs"


def test_no_task_is_created_and_dropped() -> None:
    # A create_task whose result is thrown away (an expression statement) may be collected
    # mid-flight and is never awaited; every call must keep what it returns.
    dropped = []
    for path in SRC.rglob("*.py"):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if (isinstance(node, ast.Expr) and isinstance(node.value, ast.Call)
                    and isinstance(node.value.func, ast.Attribute)
                    and node.value.func.attr in ("create_task", "ensure_future")):
                dropped.append(f"{path.relative_to(SRC)}:{node.lineno}")
    assert dropped == []


async def test_cancel_and_wait_returns_when_the_tasks_have_ended() -> None:
    ended: list[str] = []

    async def worker(name: str) -> None:
        try:
            await asyncio.sleep(60)
        finally:
            await asyncio.sleep(0.01)  # cleanup that takes a moment
            ended.append(name)

    tasks = [asyncio.create_task(worker(n)) for n in "ab"]
    await asyncio.sleep(0)
    await cancel_and_wait([*tasks, None])
    assert sorted(ended) == ["a", "b"] and all(t.done() for t in tasks)


async def test_task_set_keeps_logs_and_closes(caplog: pytest.LogCaptureFixture) -> None:
    ts = TaskSet()

    async def boom() -> None:
        raise RuntimeError("bang")

    ts.start(boom(), name="boom")
    ts.start(asyncio.sleep(60), name="sleeper")
    long = asyncio.create_task(asyncio.sleep(60))
    ts.retire(long)
    with caplog.at_level(logging.ERROR, logger="pylvs.tasks"):
        await asyncio.sleep(0.01)
    assert "task boom failed" in caplog.text
    assert len(ts) == 1  # the sleeper; boom and the retired task have ended
    await ts.close()
    assert len(ts) == 0 and long.cancelled()
