"""Detector plugins used by the tests (``detector = "tests.plugins.detectors:NAME"``)."""

from __future__ import annotations

import asyncio
import time

import numpy as np

from streamd.config import DetectorConfig
from streamd.worker.detectors import Detection

FIXED_BOX = (40, 30, 60, 50)


class FixedBox:
    """Always sees one 'widget' at FIXED_BOX."""

    def __init__(self, config: DetectorConfig) -> None:
        self.config = config

    def detect(self, image: np.ndarray, now: float) -> list[Detection]:
        return [Detection("widget", 0.9, FIXED_BOX)]


class Slow(FixedBox):
    """Takes 0.3 s per call: must lower its own rate, not the stream's."""

    def detect(self, image: np.ndarray, now: float) -> list[Detection]:
        time.sleep(0.3)
        return super().detect(image, now)


def broken(config: DetectorConfig) -> FixedBox:
    raise RuntimeError("model weights missing")


NOT_A_DETECTOR = object()


class Storm(FixedBox):
    """A different label every call: with ``event_clear_after = 0`` every
    detection is an event (the event-storm tests)."""

    def __init__(self, config: DetectorConfig) -> None:
        super().__init__(config)
        self.calls = 0

    def detect(self, image: np.ndarray, now: float) -> list[Detection]:
        self.calls += 1
        return [Detection("odd" if self.calls % 2 else "even", 0.9, FIXED_BOX)]


class Stubborn(FixedBox):
    """A plugin with a bug: it leaves a task on the child's event loop that
    ignores cancellation (the child must still exit)."""

    def __init__(self, config: DetectorConfig) -> None:
        super().__init__(config)
        self.task = asyncio.get_running_loop().create_task(_ignore_cancellation())


async def _ignore_cancellation() -> None:
    while True:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            continue
