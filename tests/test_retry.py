"""The one retry loop (pure, sleeps injected) and the loops built on it: the
gateway's subscriber against a real redis-server that drops it twice."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

import pytest
from structlog.testing import capture_logs

from streamd.backoff import Backoff
from streamd.retry import AsyncRetry, Retry
from streamd.transport.subscriber import FrameSubscriber

from .support import RedisServer

NO_JITTER = Backoff(initial=0.1, cap=0.4, jitter=0.0)


class Flaky:
    """Fails ``times`` times with ``error``, then returns ``"done"``."""

    def __init__(self, times: int, error: Exception) -> None:
        self.left = times
        self.error = error
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.left:
            self.left -= 1
            raise self.error
        return "done"


async def test_async_retry_backs_off_and_reports_every_failure() -> None:
    slept: list[float] = []
    seen: list[tuple[str, int, float]] = []

    async def sleep(delay: float) -> None:
        slept.append(delay)

    flaky = Flaky(4, OSError("refused"))

    async def do() -> str:
        return flaky()

    retry = AsyncRetry(NO_JITTER, (OSError,), sleep=sleep)
    result = await retry.call_with_retry(do, lambda e, n, d: seen.append((str(e), n, d)))
    assert result == "done" and flaky.calls == 5
    assert slept == [0.1, 0.2, 0.4, 0.4]  # capped, never gives up
    assert [n for _, n, _ in seen] == [1, 2, 3, 4] and seen[0] == ("refused", 1, 0.1)
    flaky.left = 1  # a new call starts counting from zero
    await retry.call_with_retry(do, lambda e, n, d: seen.append((str(e), n, d)))
    assert seen[-1][1] == 1 and slept[-1] == 0.1


async def test_async_retry_lets_other_errors_through() -> None:
    async def do() -> None:
        raise KeyError("not ours")

    with pytest.raises(KeyError):
        await AsyncRetry(NO_JITTER, (OSError,)).call_with_retry(do, lambda e, n, d: None)


def test_blocking_retry_progress_resets_the_count_and_stop_ends_it() -> None:
    stop = threading.Event()
    slept: list[float] = []
    failures: list[int] = []

    def sleep(delay: float) -> bool:
        slept.append(delay)
        return stop.is_set()

    retry = Retry(NO_JITTER, (OSError,), sleep=sleep)
    sessions = 0

    def session() -> None:
        nonlocal sessions
        sessions += 1
        if stop.is_set():
            return
        if sessions in (3, 5):  # these sessions got going before they were lost
            retry.succeeded()
        if sessions == 6:
            stop.set()
        raise OSError("lost")

    retry.call_with_retry(session, lambda e, n, d: failures.append(n))
    assert failures == [1, 2, 1, 2, 1, 2] and sessions == 7
    assert slept == [0.1, 0.2, 0.1, 0.2, 0.1, 0.2]


async def test_subscriber_reconnects_after_each_drop_and_says_so_each_time(
    redis_server: RedisServer,
) -> None:
    frames: list[str] = []
    subscriber = FrameSubscriber(
        redis_server.url,
        "video:",
        lambda camera_id, _data: frames.append(camera_id),
        reconnect=Backoff(initial=0.05, cap=0.2),
    )
    subscriber.want("door")
    client = redis_server.client()

    async def until(predicate: Callable[[], object]) -> None:
        async with asyncio.timeout(10):
            while not predicate():
                await asyncio.sleep(0.02)

    with capture_logs() as logs:
        task = asyncio.create_task(subscriber.run())
        try:
            for session in (1, 2, 3):
                await until(lambda s=session: subscriber.sessions == s)  # type: ignore[misc]
                if session < 3:
                    await asyncio.to_thread(client.client_kill_filter, _type="pubsub")
            await until(lambda: client.publish("video:door", b"x") and frames)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    lost = [e for e in logs if e["event"] == "redis subscription lost; reconnecting"]
    restored = [e for e in logs if e["event"] == "redis subscription restored"]
    assert len(lost) == 2 and len(restored) == 2
    assert all(e["log_level"] == "warning" and e["retry_in_s"] <= 0.05 for e in lost)
    assert frames[0] == "door"
