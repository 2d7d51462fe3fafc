"""Detection on synthetic scenes whose right answer is known, the ONNX path with a
model the test builds, plugins, events and overlays, unit and end to end."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from streamd.config import DetectorConfig
from streamd.worker.detectors import (
    Detection,
    DetectorError,
    MotionDetector,
    OnnxDetector,
    build_detector,
    decode_yolo,
)
from streamd.worker.events import EventTracker
from streamd.worker.overlay import draw_overlay

from .conftest import Daemon, RedisServer, wait_for
from .plugins.detectors import FIXED_BOX

W, H = 640, 360


def background() -> np.ndarray:
    ys, xs = np.mgrid[0:H, 0:W]
    image = np.dstack(
        ((xs % 256).astype(np.uint8), (ys % 256).astype(np.uint8), np.full((H, W), 90, np.uint8))
    )
    cv2.circle(image, (500, 100), 40, (30, 200, 30), -1)
    return image


def scene_with_square(x: int, y: int = 150, size: int = 60) -> np.ndarray:
    image = background()
    cv2.rectangle(image, (x, y), (x + size, y + size), (255, 255, 255), -1)
    return image


def overlaps(box: tuple[int, int, int, int], other: tuple[int, int, int, int]) -> bool:
    ax, ay, aw, ah = box
    bx, by, bw, bh = other
    return ax < bx + bw and bx < ax + aw and ay < by + bh and by < ay + ah


def run_motion(config: DetectorConfig, frames: list[np.ndarray]) -> list[list[Detection]]:
    detector = MotionDetector(config)
    return [detector.detect(frame, i * 0.1) for i, frame in enumerate(frames)]


def test_moving_rectangle_yields_overlapping_motion_boxes() -> None:
    config = DetectorConfig(motion_warmup=1.0, motion_min_area=300)
    frames = [background() for _ in range(20)] + [scene_with_square(50 + 12 * i) for i in range(20)]
    results = run_motion(config, frames)
    assert all(r == [] for r in results[:10])  # warm-up
    moving = results[21:]
    hits = 0
    for i, detections in enumerate(moving, start=21):
        square = (50 + 12 * (i - 20), 150, 60, 60)
        assert all(d.label == "motion" for d in detections)
        hits += any(overlaps(d.box, square) for d in detections)
    assert hits >= len(moving) - 2


def test_static_scene_has_no_motion_after_warmup() -> None:
    config = DetectorConfig(motion_warmup=1.0)
    noise = np.random.default_rng(3)
    frames = []
    for _ in range(40):
        jitter = noise.integers(-2, 3, (H, W, 3))  # sensor noise, no motion
        frames.append(np.clip(background().astype(int) + jitter, 0, 255).astype(np.uint8))
    results = run_motion(config, frames)
    assert all(r == [] for r in results[15:])


def test_ignore_zone_suppresses_motion_inside_it() -> None:
    zone = ((0.0, 100.0), (640.0, 100.0), (640.0, 260.0), (0.0, 260.0))
    frames = [background() for _ in range(20)] + [scene_with_square(50 + 12 * i) for i in range(20)]
    with_zone = run_motion(DetectorConfig(motion_warmup=1.0, ignore_zones=(zone,)), frames)
    without = run_motion(DetectorConfig(motion_warmup=1.0), frames)
    assert sum(len(r) for r in without[21:]) > 10
    assert sum(len(r) for r in with_zone[21:]) == 0


def build_yolo_model(path: Path, size: int, rows: np.ndarray) -> None:
    """A model that ignores its input's content and outputs ``rows`` in the YOLOv8
    layout [1, 4 + classes, N] (the input is still wired in: 0 · mean(input))."""
    constant = numpy_helper.from_array(rows.astype(np.float32)[None], name="fixed")
    zero = numpy_helper.from_array(np.zeros((1,), np.float32), name="zero")
    nodes = [
        helper.make_node("ReduceMean", ["images"], ["mean"], keepdims=1),
        helper.make_node("Mul", ["mean", "zero"], ["nothing"]),
        helper.make_node("Reshape", ["nothing", "shape"], ["nothing3"]),
        helper.make_node("Add", ["fixed", "nothing3"], ["output0"]),
    ]
    shape = numpy_helper.from_array(np.array([1, 1, 1], np.int64), name="shape")
    graph = helper.make_graph(
        nodes,
        "fixed_yolo",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, size, size])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, list((1, *rows.shape)))],
        initializer=[constant, zero, shape],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


YOLO_ROWS = np.array(
    [  # columns are candidates: cx, cy, w, h, score(person), score(car)
        [16.0, 17.0, 48.0, 40.0],
        [16.0, 16.0, 40.0, 30.0],
        [8.0, 8.0, 10.0, 6.0],
        [8.0, 8.0, 12.0, 4.0],
        [0.9, 0.85, 0.05, 0.1],
        [0.0, 0.0, 0.7, 0.05],
    ]
)


def test_onnx_detector_puts_boxes_where_the_model_does(tmp_path: Path) -> None:
    model = tmp_path / "fixed.onnx"
    build_yolo_model(model, 64, YOLO_ROWS)
    config = DetectorConfig(
        kind="onnx",
        model=str(model),
        labels=("person", "car"),
        input_size=64,
        score_threshold=0.5,
        nms_threshold=0.45,
    )
    detector = build_detector(config)
    assert isinstance(detector, OnnxDetector)
    frame = np.zeros((480, 640, 3), np.uint8)  # scale: x 10, y 7.5
    detections = sorted(detector.detect(frame, 0.0), key=lambda d: d.label)
    assert [d.label for d in detections] == ["car", "person"]  # the duplicate went to NMS
    car, person = detections
    assert person.score == pytest.approx(0.9)
    assert person.box == (120, 90, 80, 60)  # ((16-4)·10, (16-4)·7.5, 8·10, 8·7.5)
    assert car.box == (430, 255, 100, 90)  # ((48-5)·10, (40-6)·7.5, 10·10, 12·7.5)
    assert car.score == pytest.approx(0.7)


def test_decode_yolo_accepts_the_transposed_layout() -> None:
    direct = decode_yolo(YOLO_ROWS[None], 1.0, 1.0, ["a", "b"], 0.5, 0.45)
    transposed = decode_yolo(YOLO_ROWS.T[None], 1.0, 1.0, ["a", "b"], 0.5, 0.45)
    assert direct == transposed and len(direct) == 2


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("tests.plugins.nonexistent:Thing", "cannot import plugin module"),
        ("tests.plugins.detectors:Missing", "has no 'Missing'"),
        ("tests.plugins.detectors:broken", "model weights missing"),
        ("tests.plugins.detectors:NOT_A_DETECTOR", "failed to start"),
    ],
)
def test_bad_plugins_fail_with_a_clear_cause(kind: str, message: str) -> None:
    with pytest.raises(DetectorError, match=message):
        build_detector(DetectorConfig(kind=kind))


def test_good_plugin_and_missing_model() -> None:
    detector = build_detector(DetectorConfig(kind="tests.plugins.detectors:FixedBox"))
    assert detector is not None
    assert detector.detect(np.zeros((10, 10, 3), np.uint8), 0.0)[0].box == FIXED_BOX
    with pytest.raises(DetectorError, match="cannot load ONNX model"):
        build_detector(DetectorConfig(kind="onnx", model="/nonexistent.onnx"))
    assert build_detector(DetectorConfig(kind="none")) is None


def test_events_fire_on_change_only() -> None:
    tracker = EventTracker("cam", clear_after=1.0)
    person = Detection("person", 0.9, (0, 0, 5, 5))
    car = Detection("car", 0.8, (5, 5, 5, 5))
    timeline: list[tuple[float, list[Detection], tuple[list[str], list[str]] | None]] = [
        (0.0, [], None),
        (0.1, [person], (["person"], [])),
        (0.2, [person], None),
        (0.3, [], None),  # flicker: not gone yet
        (0.4, [person, car], (["car"], [])),
        (1.0, [car], None),
        (1.5, [car], ([], ["person"])),
        (3.0, [], ([], ["car"])),
        (3.1, [], None),
    ]
    for now, detections, expected in timeline:
        event = tracker.update(detections, now, 1000 + now)
        if expected is None:
            assert event is None, now
        else:
            assert event is not None, now
            assert (list(event.appeared), list(event.left)) == (expected[0], expected[1])
            assert event.to_json()["camera_id"] == "cam"


def test_overlay_draws_only_when_there_is_something() -> None:
    image = background()
    assert draw_overlay(image, []) is image  # published untouched
    drawn = draw_overlay(image, [Detection("person", 0.9, (100, 100, 80, 60))])
    assert drawn is not image and np.array_equal(image, background())  # input unchanged
    changed = np.any(drawn != image, axis=2)
    assert changed[100, 100:180].all()  # the box's top edge
    assert not changed[300:, :].any()  # nothing far from the box


def frame_on_redis(redis_server: RedisServer, channel: str, timeout: float = 15) -> np.ndarray:
    pubsub = redis_server.client().pubsub()
    pubsub.subscribe(channel)
    deadline = time.monotonic() + timeout
    skip = 5  # let the detector produce detections first
    while time.monotonic() < deadline:
        message = pubsub.get_message(ignore_subscribe_messages=True, timeout=0.5)
        if message and message["type"] == "message":
            skip -= 1
            if skip <= 0:
                image = cv2.imdecode(np.frombuffer(message["data"], np.uint8), cv2.IMREAD_COLOR)
                assert image is not None
                return image
    raise AssertionError(f"no frame on {channel}")


STATIC = "synthetic:?width=320&height=240&pattern=static"


def test_overlay_on_and_off_end_to_end(
    redis_server: RedisServer, start_daemon: Callable[..., Daemon]
) -> None:
    plugin = "tests.plugins.detectors:FixedBox"
    start_daemon(
        redis_url=redis_server.url,
        cameras=[
            {"id": "on", "source": STATIC, "fps": 10, "detector": plugin},
            {"id": "off", "source": STATIC, "fps": 10, "detector": plugin, "overlay": False},
            {"id": "plain", "source": STATIC, "fps": 10, "detector": "none"},
        ],
    )
    on, off, plain = (frame_on_redis(redis_server, f"video:{c}") for c in ("on", "off", "plain"))
    x, y, w, _ = FIXED_BOX
    edge = (slice(y - 1, y + 2), slice(x, x + w))
    diff_on = np.abs(on[edge].astype(int) - plain[edge].astype(int)).mean()
    diff_off = np.abs(off.astype(int) - plain.astype(int)).mean()
    assert diff_on > 40  # a box edge is drawn
    assert diff_off < 2  # untouched (same JPEG encoder on the same pixels)


def test_events_and_failed_plugin_end_to_end(
    redis_server: RedisServer, start_daemon: Callable[..., Daemon]
) -> None:
    pubsub = redis_server.client().pubsub()
    pubsub.subscribe("streamd:events:moving", "streamd:events:still")
    daemon = start_daemon(
        redis_url=redis_server.url,
        cameras=[
            {
                "id": "moving",
                "source": "synthetic:?width=320&height=240",
                "fps": 10,
                "motion_warmup": 0.5,
            },
            {"id": "still", "source": STATIC, "fps": 10, "motion_warmup": 0.5},
            {
                "id": "broken",
                "source": STATIC,
                "fps": 10,
                "detector": "tests.plugins.detectors:broken",
            },
        ],
    )
    events = []
    deadline = time.monotonic() + 6
    while time.monotonic() < deadline:
        message = pubsub.get_message(ignore_subscribe_messages=True, timeout=0.5)
        if message and message["type"] == "message":
            events.append((message["channel"], json.loads(message["data"])))
    moving = [e for ch, e in events if ch == b"streamd:events:moving"]
    assert moving and moving[0]["appeared"] == ["motion"] and moving[0]["detections"]
    assert len(moving) <= 2  # steady motion: one event, not one per frame
    assert not [e for ch, e in events if ch == b"streamd:events:still"]
    logged = [e for e in daemon.log_events() if e["event"] == "detection event"]
    assert len(logged) == len(events)

    status, body = daemon.http("/api/cameras")
    assert status == 200
    cameras = json.loads(body)["cameras"]
    broken = cameras["broken"]
    assert broken["state"] == "live" and broken["restarts"] == 0  # streams, no crash loop
    assert (
        broken["detector"].startswith("failed:") and "model weights missing" in broken["detector"]
    )
    assert cameras["moving"]["last_event"]["camera_id"] == "moving"

    # The child's log line and its status reach the daemon by different paths:
    # the status being there does not mean the line is written yet.
    def load_errors() -> list[dict[str, object]]:
        return [e for e in daemon.log_events() if e["event"].startswith("detector failed to load")]

    errors = wait_for(load_errors, 10, "the child's log of the failed detector")
    assert errors[0]["camera_id"] == "broken"


def test_slow_detector_lowers_its_own_rate_not_the_stream(
    redis_server: RedisServer, start_daemon: Callable[..., Daemon]
) -> None:
    daemon = start_daemon(
        redis_url=redis_server.url,
        cameras=[
            {"id": "slow", "source": STATIC, "fps": 10, "detector": "tests.plugins.detectors:Slow"}
        ],
        head="stats_interval = 2.0",
    )
    watcher = redis_server.client().pubsub()  # someone watches, so frames are encoded
    watcher.subscribe("video:slow")
    line = wait_for(
        lambda: [
            e
            for e in daemon.log_events()
            if e["event"] == "camera stats" and e["interval_s"] > 0 and e["detect_fps"] > 0
        ],
        20,
        "a stats line with detections",
    )[0]
    assert line["fps_out"] >= 8.5  # the stream keeps its 10 fps
    assert 2.0 <= line["detect_fps"] <= 4.0  # ~1 / 0.3 s
    assert line["detect_p50_ms"] >= 280
