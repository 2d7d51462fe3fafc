"""Entry point of one camera child: ``python -m streamd.worker --camera ID --control-fd N``.

The command line names the camera (``ps``, ``top`` and journald's ``_CMDLINE``
show which camera a process serves); the camera spec itself arrives over the
control socket. The child exits when the supervisor goes away: EOF on the control
socket, and as a second line of defence ``PR_SET_PDEATHSIG`` (started by exec:
the supervisor is its parent) or, forked by the fork server (whose death it must
survive), the supervisor's pidfd inherited from the fork server turning readable.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import os
import signal
import socket
import sys
import threading
import time
from typing import Any

import cv2
import structlog

from streamd.camera_status import Heartbeat
from streamd.config import ConfigError
from streamd.observability import configure_logging
from streamd.redact import redact_url
from streamd.states import ExitCode, SourceState, picture_stalled
from streamd.stats import CameraCounters
from streamd.transport.frame import EncodedFrame
from streamd.transport.local import (
    ControlSocketError,
    MessageType,
    decode_json,
    encode_json,
    encode_message,
    read_message,
)
from streamd.transport.publisher import FramePublisher, pack_for_sending
from streamd.worker.demand import DemandPolicy
from streamd.worker.detection_thread import DetectionRunner
from streamd.worker.detectors import DetectorError, build_detector
from streamd.worker.event_keeper import EventKeeper
from streamd.worker.frames import Source, SourceError
from streamd.worker.sources import open_source
from streamd.worker.spec import WorkerSpec
from streamd.worker.streams import CaptureHooks, Streams

log = structlog.get_logger("streamd.worker")
FALLBACK_BUFFER_LIMIT = 4 * 1024 * 1024  # bytes queued to the supervisor before we drop
SPEC_TIMEOUT_S = 10.0
# Capture and detection get 3 s each to stop, closing connections the rest.
STOP_DEADLINE_S = 10.0
CANCEL_ROUNDS, CANCEL_ROUND_S = 5, 0.5
PR_SET_PDEATHSIG = 1


def set_parent_death_signal() -> None:
    """Ask Linux to SIGTERM us when the supervisor dies (best effort)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        pass
    if os.getppid() == 1:  # the parent died before prctl took effect
        sys.exit(0)


class CameraWorker:
    def __init__(self, spec: WorkerSpec, source: Source, writer: asyncio.StreamWriter) -> None:
        self.spec = spec
        camera = spec.camera
        self.writer = writer
        self.loop = asyncio.get_running_loop()
        self.stats = CameraCounters()
        self.state = SourceState.CONNECTING
        self.publisher = FramePublisher(
            redis_url=spec.redis_url,
            channel=spec.channel,
            fallback=self._send_to_supervisor,
            stats=self.stats,
            cluster=spec.redis_cluster,
            seeds=spec.redis_seeds,
        )
        self.events = EventKeeper(spec, self.publisher, self.stats, writer)
        self.detector_state, self.detection = self._build_detection()
        self.demand = DemandPolicy(frame_interval=1.0 / camera.fps)
        self._watched = False  # read by the capture thread
        self.streams = Streams(
            spec,
            source,
            self.detection,
            CaptureHooks(
                frame=self._from_thread_frame,
                state=self._from_thread_state,
                idle_frame=self._from_thread_idle_frame,
                jpeg_wanted=lambda: self._watched,
            ),
            self._send_unit,
            self.stats,
        )
        self.capture = self.streams.capture
        self.started = time.monotonic()

    def _build_detection(self) -> tuple[str, DetectionRunner | None]:
        settings = self.spec.camera.detection
        try:
            detector = build_detector(settings)
        except DetectorError as exc:
            # Stream without detection rather than crash-loop; say so clearly.
            log.error(
                "detector failed to load; streaming without detection",
                detector=settings.kind,
                error=str(exc),
            )
            return f"failed: {exc}", None
        if detector is None:
            return "none", None
        runner = DetectionRunner(
            detector,
            settings,
            self.spec.camera.id,
            self.spec.camera.fps,
            self.events.from_thread_event,
        )
        return settings.kind, runner

    # --- called from the capture thread -------------------------------------------
    def _from_thread_frame(self, frame: EncodedFrame) -> None:
        with contextlib.suppress(RuntimeError):  # loop already closed at shutdown
            self.loop.call_soon_threadsafe(self.publisher.submit, frame)

    def _from_thread_idle_frame(self, frame: EncodedFrame) -> None:
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(self._send_idle_frame, frame)

    def _send_idle_frame(self, frame: EncodedFrame) -> None:
        self._send_to_supervisor(pack_for_sending(frame))

    def _from_thread_state(self, state: SourceState) -> None:
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(self._set_state, state)

    # --- event loop -----------------------------------------------------------------
    def _set_state(self, state: SourceState) -> None:
        # The supervisor logs state changes (it also sees stalls and exits).
        self.state = state
        self._send_status()

    def source_state(self) -> SourceState:
        """The capture state, or ``stalled`` when a live source stopped delivering."""
        last = self.capture.last_frame_at
        if (
            self.state is SourceState.LIVE
            and last is not None
            and picture_stalled(time.monotonic() - last, self.spec.camera.fps)
        ):
            return SourceState.STALLED
        return self.state

    def _send_to_supervisor(self, payload: bytes, kind: MessageType = MessageType.FRAME) -> bool:
        transport = self.writer.transport
        if transport.is_closing() or transport.get_write_buffer_size() > FALLBACK_BUFFER_LIMIT:
            return False
        self.writer.write(encode_message(kind, payload))
        return True

    def _send_unit(self, payload: bytes) -> bool:
        return self._send_to_supervisor(payload, MessageType.UNIT)

    def status(self) -> Heartbeat:
        capture = self.capture
        counters = self.stats.counters
        counters["captured"] = capture.captured
        counters["encoded"] = capture.encoded
        counters["encode_errors"] = capture.encode_errors
        counters["skipped_idle"] = capture.skipped_idle
        counters["passed_through"] = capture.passed_through
        decoding = capture.source.stats
        counters["decoded"] = decoding.decoded
        counters["converted"] = decoding.converted
        counters["planar"] = decoding.planar
        if self.detection is not None:
            counters["detect_runs"] = self.detection.runs
            self.stats.detect_latency = self.detection.latency.copy()
        self.streams.count(self.stats)
        return Heartbeat(
            state=self.source_state(),
            redis=self.publisher.redis_state,
            seq=capture.seq,
            uptime_s=round(time.monotonic() - self.started, 3),
            detector=self.detector_state,
            watched=self._watched,
            active_labels=tuple(self.detection.tracker.active) if self.detection else (),
            figures=self.stats,
        )

    def _send_status(self) -> None:
        if not self.writer.transport.is_closing():
            self.writer.write(encode_json(MessageType.STATUS, self.status().to_wire()))

    def set_local_demand(self, watched: bool, units: bool) -> None:
        self.demand.local = watched
        self.streams.demand.local = units
        self._refresh_watched()

    def _refresh_watched(self) -> None:
        watched = self.demand.watched(time.monotonic())
        if watched != self._watched:
            log.info("camera demand", watched=watched)
            self._watched = watched
            self._send_status()  # operators see it now, not at the next heartbeat
        self.streams.refresh_demand()

    async def demand_loop(self) -> None:
        """Follow who watches: our gateway's DEMAND messages and Redis listeners."""
        while True:
            remote = await self.publisher.watched_on_redis()
            now = time.monotonic()
            if remote is not None:
                self.demand.remote(remote, now)
            await self.streams.poll_demand(now)
            self._refresh_watched()
            await asyncio.sleep(min(self.demand.next_poll(now), self.streams.next_poll(now)))

    async def heartbeat(self) -> None:
        while True:
            self._send_status()
            await asyncio.sleep(self.spec.heartbeat_interval)


MAX_PUBLISH_EVERY = 1000


async def _watch_supervisor(reader: asyncio.StreamReader, worker: CameraWorker) -> None:
    """Apply DEMAND and TUNE messages; return when the supervisor closes the socket."""
    with contextlib.suppress(ControlSocketError, ConnectionError):
        while (message := await read_message(reader)) is not None:
            kind, body = message
            if kind is MessageType.DEMAND:
                demand = decode_json(body)
                worker.set_local_demand(bool(demand.get("watched")), bool(demand.get("au")))
            elif kind is MessageType.TUNE:
                every = decode_json(body).get("publish_every")
                if isinstance(every, int) and 1 <= every <= MAX_PUBLISH_EVERY:
                    worker.capture.publish_every = every
                    log.info("publish interval", publish_every=every)


async def _cancel_all(tasks: list[asyncio.Task[Any]]) -> None:
    """Cancel, and cancel again what swallowed it: a library that turns a
    ``CancelledError`` into its own error mid-connect (redis-py's PING during a
    reconnect) leaves a task retrying, then waiting, as if never cancelled."""
    pending = set(tasks)
    for _ in range(CANCEL_ROUNDS):
        for task in pending:
            task.cancel()
        _done, pending = await asyncio.wait(pending, timeout=CANCEL_ROUND_S)
        if not pending:
            break
    for task in tasks:
        if task.done() and not task.cancelled():
            task.exception()  # retrieved: a failed task is not news while stopping


def _exit_at_deadline() -> None:
    log.error("camera child did not stop in time; exiting", deadline_s=STOP_DEADLINE_S)
    os._exit(ExitCode.FAILURE)


def _watch_pidfd(pidfd: int, gone: asyncio.Event) -> None:
    """``gone`` is set when the process behind ``pidfd`` exits (the supervisor)."""
    loop = asyncio.get_running_loop()

    def on_exit() -> None:
        loop.remove_reader(pidfd)
        gone.set()

    loop.add_reader(pidfd, on_exit)


async def run_worker(control_fd: int, supervisor_pidfd: int | None = None) -> int:
    sock = socket.socket(fileno=control_fd)
    reader, writer = await asyncio.open_unix_connection(sock=sock)
    try:
        message = await asyncio.wait_for(read_message(reader), SPEC_TIMEOUT_S)
        if message is None or message[0] is not MessageType.SPEC:
            log.error("no camera spec from the supervisor")
            return ExitCode.CONFIG
        spec = WorkerSpec.from_json(decode_json(message[1]))
    except (ConfigError, ControlSocketError, TimeoutError) as exc:
        log.error("unusable camera spec", error=str(exc))
        return ExitCode.CONFIG
    configure_logging(spec.log_level, context=_log_context(spec.camera.id))
    try:
        source = open_source(spec.camera.source, loop=spec.camera.loop)
    except SourceError as exc:
        log.error("unusable camera source", error=str(exc))
        return ExitCode.CONFIG

    try:
        worker = CameraWorker(spec, source, writer)
    except SourceError as exc:  # an unusable detect_source
        log.error("unusable camera source", error=str(exc))
        return ExitCode.CONFIG
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    log.info(
        "camera child started",
        source=redact_url(spec.camera.source),
        fps=spec.camera.fps,
        redis=worker.publisher.redis_state,
        channel=spec.channel,
    )
    if worker.detection is not None:
        worker.detection.start()
    worker.streams.start()
    tasks = [
        asyncio.create_task(worker.publisher.run(), name="publisher"),
        asyncio.create_task(worker.heartbeat(), name="heartbeat"),
        asyncio.create_task(worker.demand_loop(), name="demand"),
        asyncio.create_task(worker.events.keep_events(), name="events"),
        *worker.streams.tasks(),
    ]
    watcher = asyncio.create_task(_watch_supervisor(reader, worker), name="control")
    supervisor_gone = asyncio.Event()
    if supervisor_pidfd is not None:
        _watch_pidfd(supervisor_pidfd, supervisor_gone)
    watcher_of_pidfd = asyncio.create_task(supervisor_gone.wait(), name="supervisor-pidfd")
    stopper = asyncio.create_task(stop.wait(), name="stop")
    await asyncio.wait(
        [watcher, watcher_of_pidfd, stopper, *tasks], return_when=asyncio.FIRST_COMPLETED
    )
    reason = (
        "signal"
        if stop.is_set()
        else "supervisor gone"
        if watcher.done() or supervisor_gone.is_set()
        else "task ended"
    )
    log.info("camera child stopping", reason=reason)
    # Whatever a task or a plugin does with its cancellation, the child exits:
    # with the supervisor gone nobody else would end it (never an orphan).
    deadline = threading.Timer(STOP_DEADLINE_S, _exit_at_deadline)
    deadline.daemon = True
    deadline.start()
    await asyncio.to_thread(worker.streams.stop)
    if worker.detection is not None:
        await asyncio.to_thread(worker.detection.stop)
    await _cancel_all([watcher, watcher_of_pidfd, stopper, *tasks])
    with contextlib.suppress(ConnectionError, OSError):
        writer.close()
    return 0


def _log_context(camera_id: str) -> dict[str, Any]:
    return {"camera_id": camera_id, "pid": os.getpid()}


def main(argv: list[str] | None = None, supervisor_pidfd: int | None = None) -> int:
    """``supervisor_pidfd``: set when forked by the fork server (``forkserver.entry``)."""
    parser = argparse.ArgumentParser(prog="streamd.worker", description=__doc__)
    parser.add_argument("--camera", required=True, help="camera id (shown in ps/journal)")
    parser.add_argument("--control-fd", type=int, required=True)
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    if supervisor_pidfd is None:
        set_parent_death_signal()
    # OpenCV's own thread pool (resize, blur, MOG2) costs more in hand-offs than it
    # saves on a detector's small frames, and a box with many cameras gets its
    # parallelism from them: one thread per child, like the decoder.
    cv2.setNumThreads(1)
    configure_logging(args.log_level, context=_log_context(args.camera))
    return asyncio.run(run_worker(args.control_fd, supervisor_pidfd))
