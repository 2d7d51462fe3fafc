"""One retry loop for every reconnect and reopen in streamd, shaped like
redis-py's ``Retry.call_with_retry``: call ``do``; when it raises one of
``errors``, count the failure, call ``on_failure(error, failures, delay)`` (the
place to log and to update state) and wait ``Backoff.delay(failures)``, then
call ``do`` again. ``AsyncRetry`` is for the event loop, ``Retry`` for threads.

Unlike redis-py's it never gives up: a camera that is off all night comes back
within one capped delay of being reachable. A long-running ``do`` (a
subscription, a capture session) calls ``succeeded()`` once it got going, so its
eventual loss counts as a first failure again (a short delay, and logged).
Failures also start from zero on each ``call_with_retry``.

Child restarts are not retried here: ``lifecycle.Lifecycle`` decides those (exit
codes, a stable run, no restart on a config error).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from streamd.backoff import Backoff

T = TypeVar("T")
# (the error, consecutive failures so far, seconds until the next try)
FailureHook = Callable[[Exception, int, float], None]


class _RetryPolicy:
    def __init__(
        self,
        backoff: Backoff,
        errors: tuple[type[Exception], ...],
        draw: Callable[[], float] = random.random,
    ) -> None:
        self.backoff = backoff
        self.errors = errors
        self.failures = 0
        self._draw = draw

    def succeeded(self) -> None:
        """``do`` made progress: the next failure is a first failure."""
        self.failures = 0

    def _failed(self, error: Exception, on_failure: FailureHook) -> float:
        self.failures += 1
        delay = self.backoff.delay(self.failures, self._draw)
        on_failure(error, self.failures, delay)
        return delay


class AsyncRetry(_RetryPolicy):
    def __init__(
        self,
        backoff: Backoff,
        errors: tuple[type[Exception], ...],
        draw: Callable[[], float] = random.random,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        super().__init__(backoff, errors, draw)
        self._sleep = sleep

    async def call_with_retry(self, do: Callable[[], Awaitable[T]], on_failure: FailureHook) -> T:
        self.failures = 0
        while True:
            try:
                return await do()
            except self.errors as error:
                await self._sleep(self._failed(error, on_failure))


class Retry(_RetryPolicy):
    """The blocking variant; ``sleep`` may return early (``threading.Event.wait``),
    and ``do`` is then expected to notice why and return."""

    def __init__(
        self,
        backoff: Backoff,
        errors: tuple[type[Exception], ...],
        draw: Callable[[], float] = random.random,
        sleep: Callable[[float], object] = time.sleep,
    ) -> None:
        super().__init__(backoff, errors, draw)
        self._sleep = sleep

    def call_with_retry(self, do: Callable[[], T], on_failure: FailureHook) -> T:
        self.failures = 0
        while True:
            try:
                return do()
            except self.errors as error:
                self._sleep(self._failed(error, on_failure))
