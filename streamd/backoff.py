"""Exponential backoff with jitter and a cap: one policy for every retry loop
in streamd (``retry.Retry`` / ``AsyncRetry`` for source reopen and Redis
reconnect; ``lifecycle.Lifecycle`` for child restarts).

The default ``jitter=0.5`` is what redis-py calls *equal* jitter: half of the
delay is fixed and half is random, so the delay lies in [ceiling/2, ceiling].
``jitter=1`` would be full jitter ([0, ceiling]), ``jitter=0`` none.

Pure: the random draw is injected so tests can pin it.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Backoff:
    initial: float
    cap: float
    multiplier: float = 2.0
    jitter: float = 0.5  # randomised fraction of the delay: 0.5 equal jitter, 1 full, 0 none

    def ceiling(self, failures: int) -> float:
        """The un-jittered delay after ``failures`` consecutive failures (≥ 1)."""
        exponent = max(0, failures - 1)
        # Cap the exponent first so a night of failures cannot overflow a float.
        if exponent > 64:
            return self.cap
        return min(self.cap, self.initial * self.multiplier**exponent)

    def delay(self, failures: int, draw: Callable[[], float] = random.random) -> float:
        """Delay in [ceiling·(1-jitter), ceiling]: spreads retries of many cameras."""
        top = self.ceiling(failures)
        return top * (1.0 - self.jitter * draw())
