"""The capture thread: source → pace → (detections overlaid) → resize → JPEG
(once) → hand to the loop.

Only what is used is decoded: frames the pacer drops are never converted to BGR,
the detector's frames are converted at the detector's rate, an MJPEG camera's
own JPEG is published as it came when nothing is drawn on it, and an unwatched
camera decodes keyframes only when that is all its detector needs
(``worker/decoding.py`` decides).

Blocking OpenCV calls live here so the child's event loop (publisher, heartbeats)
never stalls on a camera. A lost source is reopened with capped backoff; the
thread reports ``connecting`` / ``live`` / ``reconnecting`` through ``on_state``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import cv2
import structlog

from streamd.backoff import Backoff
from streamd.config import CameraConfig
from streamd.retry import Retry
from streamd.states import SourceState
from streamd.transport.frame import EncodedFrame, FrameMeta
from streamd.worker.decoding import can_pass_through, keyframes_suffice
from streamd.worker.demand import IDLE_REFRESH_S
from streamd.worker.detection_thread import DetectionRunner, DetectorInput
from streamd.worker.detectors import Detection
from streamd.worker.encode import EncodeError, encode_jpeg, resize_to_width
from streamd.worker.frames import Frame, Source, SourceError
from streamd.worker.overlay import draw_overlay, scale_detections
from streamd.worker.planes import encode_jpeg as encode_planes
from streamd.worker.planes import resize_to_width as resize_planes
from streamd.worker.planes import to_bgr as planes_to_bgr

log = structlog.get_logger("streamd.capture")
# A camera that comes back (reboot, network) must stream again within seconds, so
# the reopen delay stays small; one failed connect every few seconds costs nothing.
REOPEN_BACKOFF = Backoff(initial=0.5, cap=2.0)


class _SourceLost(Exception):
    """The source stopped delivering (end of file, camera gone): reopen it."""


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
        overlay: DetectionRunner | None = None,
        name: str = "capture",
    ) -> None:
        self.detection = detection  # offered frames from this source
        # Whose detections are drawn: this source's, or a detection stream's.
        self.overlay = overlay or detection
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
        self.paced = 0
        self.skipped_interval = 0
        self.publish_every = 1  # set live from the event loop (the old API's stream_interval)
        self.encode_errors = 0
        self.skipped_idle = 0
        self.passed_through = 0  # published as the camera's own JPEG bytes
        self.seq = 0
        self.last_frame_at: float | None = None  # monotonic, read by heartbeats
        self._thread = threading.Thread(target=self._run, name=f"{name}-{camera.id}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 3.0) -> None:
        self.stop_event.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        retry = Retry(self.reopen, (SourceError, _SourceLost), sleep=self.stop_event.wait)
        self._state = SourceState.CONNECTING
        retry.call_with_retry(lambda: self._session(retry), self._on_session_failed)

    def _session(self, retry: Retry) -> None:
        """Open the source and stream until it is lost (raises) or we are stopped."""
        if self.stop_event.is_set():
            return
        self.on_state(self._state)
        self._state = SourceState.RECONNECTING
        self.source.open()
        try:
            if self._stream(self.source):
                retry.succeeded()  # frames came: a later loss starts the backoff over
        finally:
            self.source.close()
        if not self.stop_event.is_set():
            raise _SourceLost

    def _on_session_failed(self, exc: Exception, failures: int, delay: float) -> None:
        if isinstance(exc, _SourceLost):
            log.warning("source lost; reopening", retry_in_s=round(delay, 2))
        else:
            log.warning(
                "source open failed", error=str(exc), retry_in_s=round(delay, 2), attempt=failures
            )

    def _stream(self, source: Source) -> bool:
        """Read until the source is lost or we are stopped; True if any frame came."""
        source.keyframes_only_when(self._keyframes_suffice)
        pacer = Pacer(self.camera.fps, time.monotonic())
        detect_pacer = (
            Pacer(1.0 / self.detection.interval, time.monotonic()) if self.detection else None
        )
        got_any = False
        while not self.stop_event.is_set():
            if not source.live:
                wait = pacer.wait_time(time.monotonic())
                if wait > 0 and self.stop_event.wait(wait):
                    break
            frame = source.read()
            if frame is None:
                return got_any
            self.captured += 1
            self.last_frame_at = time.monotonic()
            if not got_any:
                got_any = True
                self.on_state(SourceState.LIVE)
            watched = self.wanted()
            now = time.monotonic()
            if not pacer.take(self._pace_clock(source, frame, now)):
                continue  # a live source delivering faster than the configured fps
            self.paced += 1
            try:
                if detect_pacer is not None and detect_pacer.take(now):
                    self._offer_to_detector(frame)
                self._publish(frame, watched, self.paced % self.publish_every == 0)
            except SourceError as exc:  # a frame that would not decode
                self.encode_errors += 1
                log.warning("frame dropped: decode failed", error=str(exc))
        return got_any

    @staticmethod
    def _pace_clock(source: Source, frame: Frame, now: float) -> float:
        # A live stream is thinned on its own timestamps: frames that arrive in a
        # burst after a network hiccup are still a steady 15 fps of the scene.
        if source.live and frame.media_time is not None:
            return frame.media_time
        return now

    def _keyframes_suffice(self, keyframe_interval: float | None) -> bool:
        return keyframes_suffice(
            watched=self.wanted(),
            detect_interval=self.detection.interval if self.detection else None,
            keyframe_interval=keyframe_interval,
        )

    def _offer_to_detector(self, frame: Frame) -> None:
        # Converted at the detector's rate, not the stream's; the detector thread
        # takes the newest frame.
        assert self.detection is not None
        planes = frame.planes() if self.detection.wants_grey else None
        if planes is None:
            image = frame.image()
            grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if self.detection.wants_grey else None
            self.detection.offer(DetectorInput(image if grey is None else grey, lambda: image))
        else:
            self.detection.offer(DetectorInput(planes.y, lambda: planes_to_bgr(planes)))

    def _publish(self, frame: Frame, watched: bool, on_interval: bool) -> None:
        capture_ns = time.time_ns()
        settings = self.camera.detection
        if not on_interval:
            self.skipped_interval += 1  # the old API's stream_interval: detected, not sent
            return
        deliver = self.on_frame
        if not watched:
            now = time.monotonic()
            due = self._last_idle_frame is None or now - self._last_idle_frame >= IDLE_REFRESH_S
            if self.on_idle_frame is None or not due:
                self.skipped_idle += 1  # nobody watches: detection goes on, no encoding
                return
            self._last_idle_frame = now
            deliver = self.on_idle_frame
        overlay = self.overlay
        detections = (
            scale_detections(overlay.latest, overlay.latest_size, (frame.width, frame.height))
            if overlay is not None
            else ()
        )
        stamp = capture_ns / 1e9 if settings.overlay_timestamp else None
        drawing = settings.draws_overlay and (bool(detections) or stamp is not None)
        if can_pass_through(frame.jpeg, frame.width, self.camera.width, drawing):
            assert frame.jpeg is not None
            jpeg, width, height = frame.jpeg, frame.width, frame.height
            self.passed_through += 1
        else:
            try:
                jpeg, width, height = self._encode(frame, drawing, detections, stamp)
            except (EncodeError, ValueError) as exc:
                self.encode_errors += 1
                log.warning("frame dropped: encode failed", error=str(exc))
                return
            self.encoded += 1
        self.seq += 1
        meta = FrameMeta(self.camera.id, self.seq, capture_ns, 0, width, height)
        deliver(EncodedFrame(meta, jpeg, time.monotonic()))

    def _encode(
        self,
        frame: Frame,
        drawing: bool,
        detections: tuple[Detection, ...],
        stamp: float | None,
    ) -> tuple[bytes, int, int]:
        """JPEG, width, height. Straight from the decoder's planes when nothing is
        drawn; through a BGR picture only to draw on it (or when the source has
        no planes: V4L2, synthetic, MJPEG)."""
        planes = None if drawing else frame.planes()
        if planes is not None:
            sized = resize_planes(planes, self.camera.width)
            return encode_planes(sized, self.camera.jpeg_quality), sized.width, sized.height
        image = frame.image()
        if drawing:
            image = draw_overlay(image, detections, timestamp=stamp)
        resized = resize_to_width(image, self.camera.width)
        jpeg = encode_jpeg(resized, self.camera.jpeg_quality)
        return jpeg, int(resized.shape[1]), int(resized.shape[0])


class Pacer:
    """Decides which frames to keep for a target fps (pure: ``now`` is passed in)."""

    def __init__(self, fps: float, now: float) -> None:
        self.interval = 1.0 / fps
        # A live camera at exactly our fps delivers with jitter: a frame a little
        # early is still the one due (dropping it cost viewers 1 frame in 20).
        self.early = self.interval / 4
        self.next_due = now

    def wait_time(self, now: float) -> float:
        return max(0.0, self.next_due - now)

    def take(self, now: float) -> bool:
        """True if a frame arriving at ``now`` should be published."""
        if now < self.next_due - max(1.0, 4 * self.interval):
            self.next_due = now + self.interval  # the clock jumped back: start afresh
            return True
        if now < self.next_due - self.early:
            return False
        # Schedule from the due time, not from now, so the average rate is exact;
        # but after a stall longer than one interval start afresh (no catch-up burst).
        self.next_due += self.interval
        if self.next_due <= now:
            self.next_due = now + self.interval
        return True
