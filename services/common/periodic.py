"""Background work repeated on a period, for as long as the service serves."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)


def every(seconds: float, work: Callable[[], Awaitable[object]], name: str) -> asyncio.Task[None]:
    """Run `work` now and then every `seconds`; a failed round is logged and the next one
    tries again (stopping would strand what the work is for)."""

    async def rounds() -> None:
        while True:
            try:
                await work()
            except Exception:
                log.exception("%s: round failed", name)
            await asyncio.sleep(seconds)  # a polling period, not a readiness wait

    return asyncio.create_task(rounds(), name=name)


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
