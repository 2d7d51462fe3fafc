"""The capture thread: source → pace → (detections overlaid) → resize → JPEG
(once) → hand to the loop.

Blocking OpenCV calls live here so the child's event loop (publisher, heartbeats)
never stalls on a camera. A lost source is reopened with capped backoff; the
thread reports ``connecting`` / ``live`` / ``reconnecting`` through ``on_state``.
"""

from __future__ import annotations

import enum
import threading
import time
from collections.abc import Callable

import numpy as np
import structlog

from streamd.backoff import Backoff
from streamd.config import CameraConfig
from streamd.transport.frame import FrameMeta
from streamd.transport.publisher import EncodedFrame
from streamd.worker.demand import IDLE_REFRESH_S
from streamd.worker.detection import DetectionRunner
from streamd.worker.encode import EncodeError, encode_jpeg, resize_to_width
from streamd.worker.overlay import draw_overlay
from streamd.worker.sources import Pacer, Source, SourceError

log = structlog.get_logger("streamd.capture")
# A camera that comes back (reboot, network) must stream again within seconds, so
# the reopen delay stays small; one failed connect every few seconds costs nothing.
REOPEN_BACKOFF = Backoff(initial=0.5, cap=2.0)


class SourceState(enum.Enum):
    CONNECTING = "connecting"
    LIVE = "live"
    RECONNECTING = "reconnecting"


class CaptureLoop:
    def __init__(
        self,
        source: Source,
        camera: CameraConfig,
        on_frame: Callable[[EncodedFrame], None],
        on_state: Callable[[SourceState], None],
        reopen: Backoff = REOPEN_BACKOFF,
        detection: DetectionRunner | None = None,
        wanted: Callable[[], bool] = lambda: True,
        on_idle_frame: Callable[[EncodedFrame], None] | None = None,
    ) -> None:
        self.detection = detection
        self.wanted = wanted  # someone watches: encode and publish
        self.on_idle_frame = on_idle_frame  # else now and then to the local gateway only
        self._last_idle_frame: float | None = None
        self.source = source
        self.camera = camera
        self.on_frame = on_frame
        self.on_state = on_state
        self.reopen = reopen
        self.stop_event = threading.Event()
        self.captured = 0
        self.encoded = 0
        self.encode_errors = 0
        self.skipped_idle = 0
        self.seq = 0
        self.last_frame_at: float | None = None  # monotonic, read by heartbeats
        self._thread = threading.Thread(target=self._run, name=f"capture-{camera.id}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 3.0) -> None:
        self.stop_event.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        source = self.source
        failures = 0
        state = SourceState.CONNECTING
        while not self.stop_event.is_set():
            self.on_state(state)
            try:
                source.open()
            except SourceError as exc:
                failures += 1
                delay = self.reopen.delay(failures)
                log.warning(
                    "source open failed",
                    error=str(exc),
                    retry_in_s=round(delay, 2),
                    attempt=failures,
                )
                self.stop_event.wait(delay)
                state = SourceState.RECONNECTING
                continue
            if self._stream(source):
                failures = 0
            source.close()
            state = SourceState.RECONNECTING
            if not self.stop_event.is_set():
                failures += 1
                delay = self.reopen.delay(failures)
                log.warning("source lost; reopening", retry_in_s=round(delay, 2))
                self.stop_event.wait(delay)

    def _stream(self, source: Source) -> bool:
        """Read until the source is lost or we are stopped; True if any frame came."""
        pacer = Pacer(self.camera.fps, time.monotonic())
        got_any = False
        while not self.stop_event.is_set():
            if not source.live:
                wait = pacer.wait_time(time.monotonic())
                if wait > 0 and self.stop_event.wait(wait):
                    break
            image = source.read()
            if image is None:
                return got_any
            self.captured += 1
            self.last_frame_at = time.monotonic()
            if not got_any:
                got_any = True
                self.on_state(SourceState.LIVE)
            if not pacer.take(time.monotonic()):
                continue  # a live source delivering faster than the configured fps
            self._publish(image)
        return got_any

    def _publish(self, image: np.ndarray) -> None:
        capture_ns = time.time_ns()
        settings = self.camera.detection
        if self.detection is not None:
            self.detection.offer(image)  # the detector thread takes the newest frame
        deliver = self.on_frame
        if not self.wanted():
            now = time.monotonic()
            due = self._last_idle_frame is None or now - self._last_idle_frame >= IDLE_REFRESH_S
            if self.on_idle_frame is None or not due:
                self.skipped_idle += 1  # nobody watches: detection goes on, no encoding
                return
            self._last_idle_frame = now
            deliver = self.on_idle_frame
        if settings.overlay:
            detections = self.detection.latest if self.detection is not None else ()
            stamp = capture_ns / 1e9 if settings.overlay_timestamp else None
            image = draw_overlay(image, detections, timestamp=stamp)
        try:
            resized = resize_to_width(image, self.camera.width)
            jpeg = encode_jpeg(resized, self.camera.jpeg_quality)
        except (EncodeError, ValueError) as exc:
            self.encode_errors += 1
            log.warning("frame dropped: encode failed", error=str(exc))
            return
        self.seq += 1
        self.encoded += 1
        meta = FrameMeta(
            self.camera.id, self.seq, capture_ns, 0, int(resized.shape[1]), int(resized.shape[0])
        )
        deliver(EncodedFrame(meta, jpeg, time.monotonic()))
