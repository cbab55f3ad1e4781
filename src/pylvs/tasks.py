"""Background tasks that are always kept and always awaited.

asyncio holds only a weak reference to a task: one created and dropped may be collected
mid-flight, and its exception is reported (if ever) at garbage collection.  Every long-lived
part of pylvs therefore keeps its tasks and, when it stops, cancels *and awaits* them, so a
stop returns only when nothing of it runs any more.  These two helpers are that discipline.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine, Iterable
from typing import Any

__all__ = ["TaskSet", "cancel_and_wait"]

log = logging.getLogger(__name__)


async def cancel_and_wait(tasks: Iterable[asyncio.Task[Any] | None]) -> None:
    """Cancel every task, then wait until each has finished (their errors are logged)."""
    pending = [t for t in tasks if t is not None]
    for task in pending:
        task.cancel()
    for task in pending:
        with contextlib.suppress(asyncio.CancelledError):
            try:
                await task
            except Exception:
                log.exception("task %s failed", task.get_name())


class TaskSet:
    """Short-lived tasks started on demand (e.g. a re-announcement), kept until they end."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def start(self, coro: Coroutine[Any, Any, Any], name: str | None = None) -> None:
        """Run *coro* as a task; it is kept until done, and a failure is logged, not lost."""
        self.adopt(asyncio.get_running_loop().create_task(coro, name=name))

    def retire(self, task: asyncio.Task[Any]) -> None:
        """Cancel a task that is no longer wanted, keeping it until it has really ended."""
        task.cancel()
        self.adopt(task)

    def adopt(self, task: asyncio.Task[Any]) -> None:
        """Keep *task* until it is done (then log its failure, if any)."""
        if task.done():
            self._done(task)
            return
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("task %s failed", task.get_name(), exc_info=task.exception())

    def __len__(self) -> int:
        return len(self._tasks)

    async def close(self) -> None:
        """Cancel what still runs and wait for it."""
        tasks, self._tasks = list(self._tasks), set()
        await cancel_and_wait(tasks)
