"""Issue 20, worker side, with real parts: RTSP test cameras with a main stream
and a substream (tests/cameras.py), a real redis-server, a real daemon and a
real camera child. Units on ``au:{id}`` decode with PyAV unit by unit;
detection reads the substream; demand decides; without Redis the units go over
the control socket."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from streamd.config import CameraConfig, DetectorConfig
from streamd.transport.local import MessageType, encode_json
from streamd.video.annexb import Codec
from streamd.video.units import Verdict, check_unit
from streamd.worker.spec import WorkerSpec

from .cameras import Clip, RtspServer, make_clip
from .conftest import Daemon, RedisServer, wait_for
from .support import received_for
from .test_worker import spawn_worker

MAIN = Clip("h264", 1280, 720)
SUB = Clip("h264", 640, 360)
MAX_UNIT = 8 * 1024 * 1024


@pytest.fixture(scope="module")
def cameras(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RtspServer]:
    folder = tmp_path_factory.mktemp("clips")
    for clip in (MAIN, SUB):
        make_clip(folder, clip)
    server = RtspServer(clips=folder)
    server.start()
    yield server
    server.stop()


def units_of(pubsub: redis.client.PubSub, seconds: float, enough: int = 0) -> list[bytes]:
    got: list[bytes] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not (enough and len(got) >= enough):
        message = pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2)
        if message and message["type"] == "message":
            got.append(message["data"])
    return got


def verdict(unit: bytes, camera: str) -> Verdict:
    result = check_unit(unit, Codec.H264, camera, MAX_UNIT)
    assert result.ok, result.reason
    return result


def decode_each(units: list[bytes]) -> list[tuple[int, int]]:
    """Sizes of the pictures a fresh decoder gives for each unit, fed one by one
    (no flush: a unit that needs a later one to come out would show as [])."""
    decoder = av.CodecContext.create("h264", "r")
    sizes: list[tuple[int, int]] = []
    for unit in units:
        pictures = decoder.decode(av.Packet(unit))
        assert len(pictures) == 1, f"unit {len(sizes)} gave {len(pictures)} pictures"
        sizes.append((pictures[0].width, pictures[0].height))
    return sizes


def metrics(daemon: Daemon, camera: str) -> dict[str, float]:
    status, body = daemon.http("/metrics")
    assert status == 200
    return {
        sample.name.removeprefix("streamd_"): sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
        if sample.labels.get("camera") == camera and sample.name.endswith("_total")
        and "reason" not in sample.labels
    }  # fmt: skip


def test_units_decode_detection_reads_the_substream_and_demand_decides(
    cameras: RtspServer, redis_server: RedisServer, start_daemon: Callable[..., Daemon]
) -> None:
    daemon = start_daemon(
        redis_url=redis_server.url,
        cameras=[
            {
                "id": "door",
                "source": cameras.clip_url(MAIN),
                "detect_source": cameras.clip_url(SUB),
                "fps": 15,
                "detector": "motion",
                "detect_fps": 5,
                "motion_warmup": 0.5,
            }
        ],
    )
    wait_for(lambda: metrics(daemon, "door").get("detect_frames_decoded_total", 0) > 10, 30,
             "the substream decoded")  # fmt: skip
    # Demand: nobody subscribes au:door, so nothing is published. (Meanwhile the
    # main stream learns its keyframe interval: until then it decodes in full.)
    time.sleep(4.0)
    idle = metrics(daemon, "door")
    assert idle["units_published_total"] == 0 and idle["units_total"] == 0

    client = redis_server.client()
    viewer = client.pubsub()
    viewer.subscribe("au:door")
    units = units_of(viewer, 20, enough=45)
    assert len(units) >= 45, f"{len(units)} units"
    verdicts = [verdict(unit, "door") for unit in units]
    assert verdicts[0].keyframe  # publishing starts at a keyframe
    seqs = [v.meta.seq for v in verdicts if v.meta is not None]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # no gap
    assert set(decode_each(units)) == {(MAIN.width, MAIN.height)}

    # A late subscriber: its first keyframe decodes at once, alone.
    late = client.pubsub()
    late.subscribe("au:door")
    late_units = units_of(late, 10, enough=40)
    first_key = next(u for u in late_units if verdict(u, "door").keyframe)
    assert decode_each([first_key]) == [(MAIN.width, MAIN.height)]

    # Detection ran on the substream: the event's snapshot has its size...
    def kept_event() -> str | None:
        status, body = daemon.http("/api/events?camera=door")
        assert status == 200
        events = json.loads(body)["events"]
        return next((e["snapshot"] for e in events if e.get("snapshot")), None)

    snapshot_path = wait_for(kept_event, 30, "a motion event with a snapshot")
    status, jpeg = daemon.http(snapshot_path)
    assert status == 200
    picture = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert picture is not None and picture.shape == (SUB.height, SUB.width, 3)
    # ...and the main stream, watched by no JPEG viewer, was not decoded while
    # the substream was (but for a keyframe every 10 s for the local cache).
    figures = metrics(daemon, "door")
    detect_decoded = figures["detect_frames_decoded_total"] - idle["detect_frames_decoded_total"]
    main_decoded = figures["frames_decoded_total"] - idle["frames_decoded_total"]
    assert detect_decoded > 50 and main_decoded <= 4, (detect_decoded, main_decoded)
    assert figures["units_published_total"] >= 45
    assert figures["frames_published_total"] == 0  # nobody wanted JPEG

    # Demand ends with the last subscriber: publishing stops (after the 2 s hold).
    viewer.close()
    late.close()
    time.sleep(4.0)
    before = metrics(daemon, "door")["units_published_total"]
    time.sleep(2.5)
    assert metrics(daemon, "door")["units_published_total"] == before


def read_messages(sock: socket.socket, seconds: float, kind: MessageType) -> list[bytes]:
    """Bodies of ``kind`` messages the child sends within ``seconds``."""
    buffer, found = b"", []
    for chunk in received_for(sock, seconds, poll=0.2):
        buffer += chunk
        while len(buffer) >= 5:
            length = int.from_bytes(buffer[1:5], "big")
            if len(buffer) < 5 + length:
                break
            if buffer[0] == kind:
                found.append(buffer[5 : 5 + length])
            buffer = buffer[5 + length :]
    return found


def test_without_redis_units_go_over_the_control_socket_only_when_wanted(
    cameras: RtspServer, tmp_path: Path
) -> None:
    spec = WorkerSpec(
        CameraConfig("yard", cameras.clip_url(MAIN), fps=15, detection=DetectorConfig("none")),
        None,
        "video:yard",
    )
    process, control = spawn_worker(spec)
    try:
        assert read_messages(control, 3.0, MessageType.UNIT) == []  # nobody wants them
        control.sendall(encode_json(MessageType.DEMAND, {"watched": False, "au": True}))
        units = read_messages(control, 6.0, MessageType.UNIT)
    finally:
        control.close()
        process.wait(10)
    assert len(units) >= 30, f"{len(units)} units"
    assert verdict(units[0], "yard").keyframe
    assert set(decode_each(units)) == {(MAIN.width, MAIN.height)}
