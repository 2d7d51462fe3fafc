"""A detector that leaks like a codec on a flaky stream: 5 MB more held at
every frame (``detector = "tests.plugins.leaky:Leaky"``), stopping at 1 GB so a
broken memory cap cannot take the machine down with it."""

from __future__ import annotations

import numpy as np

from streamd.config import DetectorConfig
from streamd.worker.detectors import Detection

CHUNK = 5 * 1024 * 1024
LIMIT = 1024 * 1024 * 1024


class Leaky:
    def __init__(self, config: DetectorConfig) -> None:
        self.config = config
        self.held: list[bytes] = []

    def detect(self, image: np.ndarray, now: float) -> list[Detection]:
        if len(self.held) * CHUNK < LIMIT:
            self.held.append(b"\x01" * CHUNK)  # written, so resident
        return []
