"""What one camera child costs: CPU per published frame against the floor (the
same decode + JPEG encode in a tight loop, in another process), and idle
against watched.

Usage: python -m benchmarks.camera_cost  (part of ``python -m benchmarks``)
"""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from dataclasses import dataclass
from multiprocessing.queues import Queue
from pathlib import Path

import av
import cv2
import numpy as np
import redis
from av.video.frame import VideoFrame
from av.video.reformatter import VideoReformatter

from benchmarks._procs import CameraChild
from streamd.config import CameraConfig, DetectorConfig
from streamd.worker.planes import encode_jpeg as encode_planes
from streamd.worker.planes import from_packed_i420

JPEG_QUALITY = 80  # the camera default


def _cpu() -> float:
    times = os.times()
    return times.user + times.system


def clip_jpegs(path: Path) -> list[bytes]:
    """The JPEG images of an MJPEG clip, as a camera would send them."""
    with av.open(str(path)) as container:
        return [bytes(p) for p in container.demux(container.streams.video[0]) if p.size]


def _planes_jpeg(picture: VideoFrame) -> None:
    planes = from_packed_i420(
        picture.to_ndarray(), picture.width, picture.height, limited=picture.color_range != 2
    )
    encode_planes(planes, JPEG_QUALITY)


def _bgr_jpeg(picture: VideoFrame, reformatter: VideoReformatter) -> None:
    image = reformatter.reformat(picture, format="bgr24", threads=1).to_ndarray()
    cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])


def _floor_worker(path: str, frames: int, via_bgr: bool, out: Queue[float]) -> None:
    cv2.setNumThreads(1)  # as in the camera child
    done = 0
    opening = 0.0
    if path.endswith(".mjpeg"):
        jpegs = clip_jpegs(Path(path))
        start = _cpu()
        while done < frames:
            image = cv2.imdecode(np.frombuffer(jpegs[done % len(jpegs)], np.uint8), 1)
            assert image is not None
            cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
            done += 1
        out.put((_cpu() - start) / frames)
        return
    reformatter = VideoReformatter()
    start = _cpu()
    while done < frames:
        before = _cpu()
        container = av.open(path)
        stream = container.streams.video[0]
        stream.codec_context.thread_type = "NONE"  # as the camera child up to 1080p
        stream.codec_context.thread_count = 1
        opening += _cpu() - before  # probing a file is no part of a frame's cost
        for packet in container.demux(stream):
            for picture in stream.codec_context.decode(packet):
                if via_bgr:
                    _bgr_jpeg(picture, reformatter)
                else:
                    _planes_jpeg(picture)
                done += 1
            if done >= frames:
                break
        container.close()
    out.put((_cpu() - start - opening) / done)


def floor_per_frame(clip: Path, frames: int, *, via_bgr: bool = False) -> float:
    """CPU seconds per frame of the work a camera child does for each published
    frame, alone in a fresh process: decode + JPEG from the decoder's planes
    (MJPEG: JPEG decode + encode). ``via_bgr``: the way it was done before, decode
    + BGR conversion + OpenCV's encode, for comparison."""
    context = mp.get_context("fork")
    out: Queue[float] = context.Queue()
    process = context.Process(target=_floor_worker, args=(str(clip), frames, via_bgr, out))
    process.start()
    result = out.get(timeout=300)
    process.join()
    return result


@dataclass(frozen=True)
class ChildCost:
    cpu_per_s: float  # share of one core
    fps: float  # frames a subscriber received per second (0 when not watched)

    @property
    def per_frame(self) -> float:
        return self.cpu_per_s / self.fps if self.fps else float("nan")


def child_cost(
    redis_port: int,
    source: str,
    seconds: float,
    *,
    watched: bool,
    detector: str = "none",
    fps: float = 15,
    warmup: float = 4.0,
) -> ChildCost:
    camera = CameraConfig(
        "bench", source, fps=fps, detection=DetectorConfig(kind=detector, motion_warmup=1.0)
    )
    pubsub = redis.Redis(port=redis_port).pubsub()
    if watched:
        pubsub.subscribe(f"video:{camera.id}")
    child = CameraChild(camera, redis_port)
    try:
        time.sleep(warmup)  # open the stream, first keyframe, demand decisions
        while watched and pubsub.get_message(timeout=0.0) is not None:
            pass  # frames from start-up do not count
        start_cpu, start = child.cpu(), time.monotonic()
        received = 0
        while time.monotonic() < start + seconds:
            if watched:
                message = pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2)
                received += message is not None
            else:
                time.sleep(0.1)
        elapsed = time.monotonic() - start
        used = child.cpu() - start_cpu
    finally:
        child.stop()
        pubsub.close()
    return ChildCost(used / elapsed, received / elapsed)
