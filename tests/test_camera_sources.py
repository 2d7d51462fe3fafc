"""Real cameras at the least CPU: H.264/H.265 over RTSP (GStreamer's RTSP server
serving clips encoded once by ffmpeg), RTSP/JPEG and HTTP MJPEG, read by the
camera child's capture loop. What is decoded, converted and re-encoded is
counted by the source itself."""

from __future__ import annotations

import struct
import threading
import time
from collections.abc import Callable, Iterator

import cv2
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from streamd.config import CameraConfig, DetectorConfig
from streamd.transport.frame import EncodedFrame, parse_frame
from streamd.transport.publisher import pack_for_sending
from streamd.worker.av_source import AvSource
from streamd.worker.capture import CaptureLoop
from streamd.worker.detection_thread import DetectionRunner
from streamd.worker.detectors import build_detector
from streamd.worker.frames import Source, SourceError
from streamd.worker.sources import open_source

from .cameras import Clip, MjpegHttpServer, RtspServer, make_clip
from .conftest import Daemon, RedisServer, wait_for
from .viewers import frames

H264_720 = Clip("h264", 1280, 720)
H265_720 = Clip("h265", 1280, 720)
H264_1080 = Clip("h264", 1920, 1080)
CLIPS = (H264_720, H265_720, H264_1080)


@pytest.fixture(scope="module")
def cameras(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RtspServer]:
    folder = tmp_path_factory.mktemp("clips")
    for clip in CLIPS:
        make_clip(folder, clip)
    server = RtspServer(clips=folder)
    server.start()
    yield server
    server.stop()


class Run:
    """A capture loop on a real source, collecting what it publishes."""

    def __init__(
        self,
        source_url: str,
        fps: float,
        detector: str = "none",
        detect_fps: float | None = None,
        width: int | None = None,
    ) -> None:
        settings = DetectorConfig(kind=detector, detect_fps=detect_fps, motion_warmup=0.5)
        self.camera = CameraConfig("cam", source_url, fps=fps, width=width, detection=settings)
        self.source: Source = open_source(source_url)
        self.published: list[EncodedFrame] = []
        self.decoded_at_publish: list[int] = []  # the source's decode count per frame
        self.watched = threading.Event()
        self.watched.set()
        detector_impl = build_detector(settings)
        self.detection = (
            DetectionRunner(detector_impl, settings, "cam", fps, lambda _e, _image: None)
            if detector_impl is not None
            else None
        )
        self.loop = CaptureLoop(
            self.source,
            self.camera,
            self._on_frame,
            lambda _state: None,
            detection=self.detection,
            wanted=self.watched.is_set,
        )

    def _on_frame(self, frame: EncodedFrame) -> None:
        # Called on the capture thread, so the count is exact for this frame.
        self.decoded_at_publish.append(self.source.stats.decoded)
        self.published.append(frame)

    def __enter__(self) -> Run:
        if self.detection is not None:
            self.detection.start()
        self.loop.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.loop.stop()
        if self.detection is not None:
            self.detection.stop()
        self.source.close()

    def wait_published(self, count: int, timeout: float = 20) -> None:
        target = len(self.published) + count
        wait_for(lambda: len(self.published) >= target, timeout, f"{count} frames published")


def image_of(frame: EncodedFrame) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(frame.jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None
    return image


@pytest.mark.parametrize("clip", CLIPS, ids=lambda c: c.name)
def test_rtsp_h26x_frames_arrive_at_size_and_thinned_frames_are_never_converted(
    cameras: RtspServer, clip: Clip
) -> None:
    # The camera sends 15 fps; we keep 5: two frames in three are decoded (later
    # frames refer to them) but never converted to BGR.
    with Run(cameras.clip_url(clip), fps=5) as run:
        run.wait_published(10)
        stats, loop = run.source.stats, run.loop
    assert image_of(run.published[-1]).shape == (clip.height, clip.width, 3)
    assert (run.published[-1].meta.width, run.published[-1].meta.height) == (
        clip.width,
        clip.height,
    )
    assert stats.converted == loop.encoded  # one conversion per published frame, no more
    assert stats.decoded >= 2.5 * stats.converted
    # ... and that one is no BGR conversion: the JPEG is made from the decoder's planes.
    assert stats.planar == stats.converted


def test_motion_reads_the_grey_plane_and_events_keep_colour(cameras: RtspServer) -> None:
    snapshots: list[np.ndarray] = []
    with Run(cameras.clip_url(H264_720), fps=15, detector="motion", detect_fps=5) as run:
        assert run.detection is not None
        run.detection.on_event = lambda _event, image: snapshots.append(image)
        run.wait_published(30)
        wait_for(lambda: snapshots, 20, "a motion event")  # the test pattern moves
        stats = run.source.stats
    # Neither the published frames nor the detector's needed a BGR picture.
    assert stats.planar == stats.converted > 0
    snapshot = snapshots[0]
    assert snapshot.shape == (720, 1280, 3)
    blue, green, red = (snapshot[..., c].astype(int) for c in range(3))
    assert float(np.mean(np.abs(red - blue) + np.abs(green - blue))) > 20  # not grey


def test_unwatched_h264_camera_decodes_nothing_it_need_not_and_resumes_at_once(
    cameras: RtspServer,
) -> None:
    with Run(cameras.clip_url(H264_720), fps=15) as run:
        run.wait_published(15)
        run.watched.clear()
        wait_for(lambda: getattr(run.source, "keyframe_interval", None), 30, "keyframe interval")
        time.sleep(0.5)
        decoded, converted = run.source.stats.decoded, run.source.stats.converted
        time.sleep(4.0)  # two keyframes at 15 fps, GOP 30
        # Nobody needs a picture: not even the keyframes are decoded, only read.
        assert run.source.stats.decoded == decoded
        assert run.source.stats.converted == converted
        # Ask mid-GOP (5+ packets held, the next keyframe 1+ s away), so a source
        # that waited for the next keyframe would decode just that one picture.
        source = run.source
        assert isinstance(source, AvSource)
        wait_for(lambda: 5 <= source.held_packets <= 15, 10, "mid-GOP")
        held = source.held_packets
        published = len(run.published)
        run.watched.set()
        run.wait_published(published + 15)
    # The first picture after the ask came with the packets held since the keyframe
    # decoded in one go (packet order, not a timer: load cannot make this flaky).
    assert run.decoded_at_publish[published] - decoded >= held + 1
    # The skipped frames were decoded on resuming, so the first picture is whole:
    # it matches its neighbour (a broken reference would smear grey blocks).
    first, later = image_of(run.published[-15]), image_of(run.published[-14])
    assert first.shape == (720, 1280, 3)
    assert float(np.mean(cv2.absdiff(first, later))) < 20


def strip_metadata(payload: bytes) -> bytes:
    """The JPEG without streamd's COM segment (inserted right after SOI)."""
    assert payload[2:4] == b"\xff\xfe"
    (length,) = struct.unpack_from(">H", payload, 4)
    return payload[:2] + payload[4 + length :]


def camera_jpegs(count: int = 3, size: tuple[int, int] = (320, 240)) -> list[bytes]:
    out = []
    for i in range(count):
        image = np.full((size[1], size[0], 3), 40 * i, np.uint8)
        cv2.putText(image, f"frame {i}", (10, 120), cv2.FONT_HERSHEY_SIMPLEX, 1, (255,) * 3, 2)
        ok, buffer = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 70])
        assert ok
        out.append(buffer.tobytes())
    return out


def test_http_mjpeg_publishes_the_cameras_own_jpeg_bytes_through_redis(
    redis_server: RedisServer, start_daemon: Callable[..., Daemon]
) -> None:
    jpegs = camera_jpegs()
    with MjpegHttpServer(jpegs, fps=10) as camera:
        daemon = start_daemon(
            redis_url=redis_server.url,
            cameras=[{"id": "mjpeg", "source": camera.url, "fps": 10, "detector": "none"}],
        )
        pubsub = redis_server.client().pubsub()
        pubsub.subscribe("video:mjpeg")
        payloads: list[bytes] = []
        deadline = time.monotonic() + 30
        while len(payloads) < 6 and time.monotonic() < deadline:
            message = pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
            if message is not None:
                payloads.append(message["data"])
    assert len(payloads) == 6
    for payload in payloads:
        parsed = parse_frame(payload, 10 * 1024 * 1024)
        assert parsed.meta is not None and parsed.meta.camera_id == "mjpeg"
        assert (parsed.meta.width, parsed.meta.height) == (320, 240)
        assert strip_metadata(payload) in jpegs  # byte for byte what the camera sent
    figures = wait_for(
        lambda: decode_metrics(daemon, "mjpeg", "frames_passed_through"), 10, "heartbeat"
    )
    assert figures["frames_decoded"] == figures["frames_encoded"] == 0


def test_mjpeg_is_decoded_only_for_the_detector() -> None:
    jpegs = camera_jpegs(count=1)  # a still scene: no motion, nothing drawn
    camera = MjpegHttpServer(jpegs, fps=10)
    with camera, Run(camera.url, fps=10, detector="motion", detect_fps=2) as run:
        run.wait_published(5)
        started, before = time.monotonic(), len(run.published)
        run.wait_published(20)
        rate = (len(run.published) - before) / (time.monotonic() - started)
        assert run.detection is not None
        runs = run.detection.runs
        stats, loop = run.source.stats, run.loop
    # Every frame the camera sends (HTTP MJPEG has no timestamps of its own:
    # FFmpeg's invented 25 fps clock must not pace it).
    assert rate >= 9.0
    assert loop.encoded == 0 and loop.passed_through >= 25
    assert all(f.jpeg == jpegs[0] for f in run.published)
    assert runs >= 3
    # converted at the detector's 2 fps, not the stream's 10
    assert stats.converted <= 0.4 * loop.passed_through


def test_rtsp_jpeg_is_passed_through_without_decoding(cameras: RtspServer) -> None:
    with Run(cameras.url, fps=10) as run:
        run.wait_published(10)
        stats, loop = run.source.stats, run.loop
    assert stats.decoded == 0 and stats.converted == 0
    assert loop.passed_through == len(run.published) and loop.encoded == 0
    assert image_of(run.published[-1]).shape == (240, 320, 3)
    packed = pack_for_sending(run.published[-1])
    assert strip_metadata(packed) == run.published[-1].jpeg


def test_mjpeg_resized_when_a_width_is_asked(cameras: RtspServer) -> None:
    with Run(cameras.url, fps=10, width=160) as run:
        run.wait_published(5)
    assert image_of(run.published[-1]).shape == (120, 160, 3)
    assert run.loop.encoded >= 5


async def test_h265_camera_through_the_daemon_to_a_viewer(
    cameras: RtspServer, redis_server: RedisServer, start_daemon: Callable[..., Daemon]
) -> None:
    daemon = start_daemon(
        redis_url=redis_server.url,
        cameras=[{"id": "h265", "source": cameras.clip_url(H265_720), "fps": 15, "width": 640}],
    )
    got = await frames(f"ws://{daemon.base}/ws/h265", 10, timeout=30)
    image = cv2.imdecode(np.frombuffer(got[-1], np.uint8), cv2.IMREAD_COLOR)
    assert image is not None and image.shape == (360, 640, 3)
    # /metrics says what was decoded, and that no frame needed a BGR conversion.
    figures = wait_for(lambda: decode_metrics(daemon, "h265", "frames_encoded"), 10, "heartbeat")
    assert figures["frames_decoded"] >= figures["frames_encoded"] >= 10
    assert figures["frames_from_planes"] == figures["frames_converted"] > 0
    assert figures["frames_passed_through"] == 0


def decode_metrics(daemon: Daemon, camera: str, needed: str) -> dict[str, float] | None:
    """The camera's decode counters from /metrics, once ``needed`` is above 0."""
    status, body = daemon.http("/metrics")
    assert status == 200
    wanted = ("decoded", "converted", "from_planes", "encoded", "passed_through")
    figures = {
        family.name: sample.value
        for family in text_string_to_metric_families(body.decode())
        if family.name in {f"streamd_frames_{name}" for name in wanted}
        for sample in family.samples
        if sample.labels.get("camera") == camera and sample.name.endswith("_total")
    }
    figures = {name.removeprefix("streamd_"): value for name, value in figures.items()}
    return figures if figures.get(needed, 0) > 0 else None


def test_clips_have_the_promised_gop(cameras: RtspServer) -> None:
    """The test cameras are what they claim: codec, size and a keyframe every 2 s."""
    with Run(cameras.clip_url(H265_720), fps=15) as run:
        wait_for(lambda: getattr(run.source, "keyframe_interval", None), 30, "keyframe interval")
        interval = getattr(run.source, "keyframe_interval", None)
    assert interval is not None and abs(interval - 2.0) < 0.1


def test_a_device_is_read_through_v4l2_and_a_missing_one_is_named() -> None:
    # device: is the only spec OpenCV's capture serves; files and streams go through PyAV.
    source = open_source("device:99")
    assert source.live
    with pytest.raises(SourceError, match=r"^cannot open device:99$"):
        source.open()
    assert source.read() is None
