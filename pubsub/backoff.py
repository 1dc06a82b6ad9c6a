"""Reconnect backoff shared by the subscribers: exponential, with full jitter.

Full jitter (a pause drawn between 0 and the current step) spreads the
processes that lost the same Redis at the same moment, so they do not all
come back in one burst.
"""

from __future__ import annotations

import asyncio
import random

# The first pause's upper bound, doubling to the cap.
BACKOFF_FIRST_SECONDS = 0.25
BACKOFF_CAP_SECONDS = 5.0


class Backoff:
    """`await wait()` after each failure; `reset()` after a success."""

    def __init__(self, first: float = BACKOFF_FIRST_SECONDS,
                 cap: float = BACKOFF_CAP_SECONDS) -> None:
        self.first = first
        self.cap = cap
        self.step = first

    def reset(self) -> None:
        self.step = self.first

    def next_pause(self) -> float:
        """The pause to take now; the step doubles for the next one."""
        pause = random.uniform(0, self.step)
        self.step = min(self.step * 2, self.cap)
        return pause

    async def wait(self) -> None:
        await asyncio.sleep(self.next_pause())
