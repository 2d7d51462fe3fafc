"""What a camera child reads and what it publishes besides JPEG (issue 20).

- **Main stream** (``source``): one capture thread (``capture.CaptureLoop``)
  over one demux. For an H.264/H.265 camera with passthrough on, the source's
  ``PacketTap`` (``units.UnitTap``) gets every packet before the decoder and
  publishes it as an access unit on ``au:{id}`` while someone wants units; the
  decoder runs only for what is used: JPEG while someone wants JPEG, the
  detector's frames when detection reads this stream. Otherwise (nobody wants
  JPEG, detection elsewhere) the source keeps to keyframes it never decodes
  (``decoding.keyframes_suffice``), but for one picture every 10 s for the
  local gateway's cache.
- **Detection stream** (``detect_source``, optional): a second capture
  thread over the camera's substream, decoded at its own (small) size, that
  only feeds the detector at ``detect_fps``; it never publishes. The main
  stream draws its detections scaled to its own size.
- **Units**: ``UnitPublisher`` on ``au:{id}`` (its own link, queue and
  counters), demand from ``PUBSUB NUMSUB au:{id}`` (patterns do not count: a
  ``PSUBSCRIBE *`` consumer wants no H.264) and the supervisor's ``DEMAND``
  (``"au"``: this daemon's passthrough viewers).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import structlog

from streamd.redact import redact_url
from streamd.states import SourceState
from streamd.stats import CameraCounters
from streamd.transport.frame import EncodedFrame
from streamd.transport.unit_publisher import UNIT_QUEUE_SIZE, EncodedUnit, UnitPublisher
from streamd.worker.av_source import AvSource
from streamd.worker.capture import CaptureLoop
from streamd.worker.demand import DemandPolicy
from streamd.worker.detection_thread import DetectionRunner
from streamd.worker.frames import Source
from streamd.worker.sources import open_source
from streamd.worker.spec import WorkerSpec
from streamd.worker.units import UnitTap, passthrough_enabled, unit_channel

log = structlog.get_logger("streamd.worker")


@dataclass(frozen=True)
class CaptureHooks:
    """The main capture's ways to the event loop (called from its thread)."""

    frame: Callable[[EncodedFrame], None]
    state: Callable[[SourceState], None]
    idle_frame: Callable[[EncodedFrame], None]
    jpeg_wanted: Callable[[], bool]


class Streams:
    def __init__(
        self,
        spec: WorkerSpec,
        source: Source,
        detection: DetectionRunner | None,
        hooks: CaptureHooks,
        unit_fallback: Callable[[bytes], bool],
        stats: CameraCounters,
    ) -> None:
        camera = spec.camera
        self.loop = asyncio.get_running_loop()
        self.detect_capture: CaptureLoop | None = None
        if detection is not None and camera.detect_source is not None:
            # Raises SourceError for an unusable URL, as the main source does.
            self.detect_capture = CaptureLoop(
                open_source(camera.detect_source, loop=camera.loop),
                dataclasses.replace(camera, source=camera.detect_source),
                on_frame=lambda _frame: None,
                on_state=self._detect_state,
                detection=detection,
                wanted=lambda: False,  # detection only: nothing is encoded
                name="detect",
            )
        self.capture = CaptureLoop(
            source,
            camera,
            hooks.frame,
            hooks.state,
            detection=None if self.detect_capture is not None else detection,
            wanted=hooks.jpeg_wanted,
            on_idle_frame=hooks.idle_frame,
            overlay=detection,
        )
        self.demand = DemandPolicy(frame_interval=1.0 / camera.fps)
        self._units_wanted = False  # read by the capture thread
        self.units: UnitPublisher | None = None
        self.tap: UnitTap | None = None
        if passthrough_enabled(camera) and isinstance(source, AvSource):
            self.units = UnitPublisher(
                redis_url=spec.redis_url,
                channel=unit_channel(camera.id),
                fallback=unit_fallback,
                stats=stats,
                queue_size=UNIT_QUEUE_SIZE,
                cluster=spec.redis_cluster,
                seeds=spec.redis_seeds,
            )
            self.tap = UnitTap(camera.id, lambda: self._units_wanted, self._from_thread_unit)
            source.tap = self.tap

    def start(self) -> None:
        if self.detect_capture is not None:
            log.info(
                "detection reads its own stream",
                detect_source=redact_url(self.detect_capture.camera.source),
            )
            self.detect_capture.start()
        self.capture.start()

    def stop(self) -> None:
        self.capture.stop()
        if self.detect_capture is not None:
            self.detect_capture.stop()

    def tasks(self) -> list[asyncio.Task[Any]]:
        runs: list[Coroutine[Any, Any, None]] = []
        if self.units is not None:
            runs.append(self.units.run())
        return [asyncio.create_task(run, name="units") for run in runs]

    # --- units ---------------------------------------------------------------------
    def _from_thread_unit(self, unit: EncodedUnit) -> None:
        assert self.units is not None
        with contextlib.suppress(RuntimeError):  # loop already closed at shutdown
            self.loop.call_soon_threadsafe(self.units.submit, unit)

    async def poll_demand(self, now: float) -> None:
        """Ask Redis whether anyone subscribes ``au:{id}`` (patterns do not count)."""
        if self.units is None:
            return
        remote = await self.units.watched_on_redis(patterns=False)
        if remote is not None:
            self.demand.remote(remote, now)
        self.refresh_demand()

    def next_poll(self, now: float) -> float:
        return self.demand.next_poll(now)

    def refresh_demand(self) -> None:
        wanted = self.units is not None and self.demand.watched(time.monotonic())
        if wanted != self._units_wanted:
            log.info("passthrough demand", wanted=wanted)
            self._units_wanted = wanted

    def _detect_state(self, state: SourceState) -> None:
        if state is not SourceState.LIVE:
            return  # the capture loop logs losses and retries itself
        log.info("detection stream live")

    # --- heartbeats ----------------------------------------------------------------
    def count(self, stats: CameraCounters) -> None:
        """Into the heartbeat's figures (the publisher counts its own)."""
        counters = stats.counters
        if self.detect_capture is not None:
            counters["detect_captured"] = self.detect_capture.captured
            counters["detect_decoded"] = self.detect_capture.source.stats.decoded
        if self.tap is not None:
            counters["units"] = self.tap.made
            for reason, count in self.tap.dropped().items():
                stats.unit_dropped[reason] = count
