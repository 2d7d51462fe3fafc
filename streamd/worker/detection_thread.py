"""The detection thread: runs the camera's detector on the newest frame at
``min(fps, detect_fps)``. A slow detector lowers its own rate (it always takes
the newest frame and skips the rest), never the stream's frame rate: capture
only hands frames over and reads the latest detections for the overlay.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import structlog

from streamd.config import DetectorConfig
from streamd.sparse import should_log
from streamd.stats import LatencyHistogram
from streamd.worker.detectors import Detection, Detector
from streamd.worker.events import DetectionEvent, EventTracker

log = structlog.get_logger("streamd.detect")


@dataclass(frozen=True, slots=True)
class DetectorInput:
    """What the detector looks at (BGR, or grey for detectors that read grey)
    and how to get the same frame in colour for an event's snapshot (called in
    the detection thread, only when an event starts)."""

    image: np.ndarray
    colour: Callable[[], np.ndarray]

    @classmethod
    def of_bgr(cls, image: np.ndarray) -> DetectorInput:
        return cls(image, lambda: image)


class DetectionRunner:
    def __init__(
        self,
        detector: Detector,
        config: DetectorConfig,
        camera_id: str,
        stream_fps: float,
        on_event: Callable[[DetectionEvent, np.ndarray], None],
    ) -> None:
        self.detector = detector
        self.on_event = on_event
        rate = min(stream_fps, config.detect_fps or stream_fps)
        self.interval = 1.0 / rate
        self.tracker = EventTracker(camera_id, config.event_clear_after)
        self.latest: tuple[Detection, ...] = ()
        # (width, height) of the frame ``latest`` was found on: a detection
        # stream (``detect_source``) has its own size, the overlay scales.
        self.latest_size: tuple[int, int] | None = None
        self.latency = LatencyHistogram()  # cumulative, read by heartbeats
        self.runs = 0
        self.errors = 0
        self.wants_grey = bool(getattr(detector, "reads_grey", False))
        self._frame: DetectorInput | None = None
        self._ready = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name=f"detect-{camera_id}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 3.0) -> None:
        with self._ready:
            self._stop = True
            self._ready.notify()
        self._thread.join(timeout)

    def offer(self, frame: DetectorInput) -> None:
        """Called by capture at the detector's rate; the newest wins."""
        with self._ready:
            self._frame = frame
            self._ready.notify()

    def _take(self) -> DetectorInput | None:
        with self._ready:
            while self._frame is None and not self._stop:
                self._ready.wait()
            frame, self._frame = self._frame, None
            return None if self._stop else frame

    def _run(self) -> None:
        next_due = time.monotonic()
        while True:
            wait = next_due - time.monotonic()
            if wait > 0:
                with self._ready:
                    if self._ready.wait_for(lambda: self._stop, wait):
                        return
            taken = self._take()
            if taken is None:
                return
            started = time.monotonic()
            try:
                detections = tuple(self.detector.detect(taken.image, started))
            except Exception as exc:  # a plugin's bug must not stop the camera
                self.errors += 1
                if should_log(self.errors):
                    log.warning("detector failed on a frame", error=repr(exc), errors=self.errors)
                detections = ()
            finished = time.monotonic()
            self.runs += 1
            self.latency.record(finished - started)
            self.latest_size = (int(taken.image.shape[1]), int(taken.image.shape[0]))
            self.latest = detections
            event = self.tracker.update(detections, finished, time.time())
            if event is not None:
                self.on_event(event, taken.colour())  # the frame it was detected on
            next_due = max(started + self.interval, finished)
