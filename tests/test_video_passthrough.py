"""The passthrough path as the child will run it, on real streams: RTSP test
cameras (GStreamer, H.264/H.265), MP4/Matroska files (avcC/hvcC) and HTTP,
read by ``demux.Demuxer``, turned into messages by ``passthrough.Passthrough``,
then checked by ``units.check_unit`` (the gateway's verdict) and decoded one
message at a time by a fresh FFmpeg decoder (an independent reader)."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import http.server
import itertools
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from streamd.video import annexb, demux, reorder, sps
from streamd.video.annexb import Codec
from streamd.video.demux import AccessUnit, Demuxer, DemuxError, UnsupportedSource
from streamd.video.passthrough import Passthrough
from streamd.video.reorder import Reorder
from streamd.video.units import Reason, check_unit

from . import video_clips
from .cameras import Clip, RtspServer, make_clip
from .support import free_port
from .unit_publisher import decode_each

CAMERA = "cam-1"
H264_CLIP = Clip("h264", 320, 240)
H265_CLIP = Clip("h265", 320, 240)
MAX = 8 * 1024 * 1024


def camera_like_sps(nal: bytes) -> bytes:
    """The SPS as many cameras send it: no bitstream_restriction, so nothing
    says whether pictures are reordered."""
    parsed = sps.parse_nal(nal)
    assert parsed.vui is not None
    vui = dataclasses.replace(parsed.vui, restriction=None)
    return sps.serialize_nal(dataclasses.replace(parsed, vui=vui), nal[0])


def with_camera_like_sps(data: bytes) -> bytes:
    nals = annexb.split_nals(data)
    return annexb.join_nals(
        camera_like_sps(n) if annexb.nal_type(n, Codec.H264) == annexb.H264_SPS else n for n in nals
    )


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("clips")


@pytest.fixture(scope="module")
def cameras(folder: Path) -> Iterator[RtspServer]:
    make_clip(folder, H264_CLIP)
    make_clip(folder, H265_CLIP)
    # Cameras whose SPS does not state their reordering, keyframe every 10
    # frames: x264 without B-frames uses POC type 2 (output order is decoding
    # order, so the SPS alone decides), except interlaced (POC type 0: only
    # the timestamps can tell).
    for name, extra in (("poc2", ()), ("poc0", ("-x264-params", "interlaced=1"))):
        x264 = video_clips.x264(folder, "x264.h264", "high", 0, *extra)
        (folder / f"camera-{name}.h264").write_bytes(with_camera_like_sps(x264.read_bytes()))
        x264.unlink()
    server = RtspServer(clips=folder)
    server.start()
    yield server
    server.stop()


def publish(
    source: Demuxer | list[AccessUnit], pipeline: Passthrough, count: int | None = None
) -> list[bytes]:
    """Messages from the first ``count`` published units (all, for a file)."""
    messages = []
    for unit in source:
        message = pipeline.feed(unit, time.time_ns())
        if message is not None:
            messages.append(message)
            if len(messages) == count:
                break
    return messages


def published_sps(message: bytes) -> bytes:
    return next(
        n for n in annexb.split_nals(message) if annexb.nal_type(n, Codec.H264) == annexb.H264_SPS
    )


def assert_valid_messages(messages: list[bytes], codec: Codec) -> list[bool]:
    """Every message is accepted by the gateway's check, numbered 0, 1, 2...,
    starts at a keyframe; the keyframe flags."""
    verdicts = [check_unit(m, codec, CAMERA, MAX) for m in messages]
    assert [v.reason for v in verdicts] == [Reason.OK] * len(messages)
    metas = [v.meta for v in verdicts if v.meta is not None]
    assert [m.seq for m in metas] == list(range(len(messages)))
    assert all(m.camera_id == CAMERA and m.codec is codec for m in metas)
    keyframes = [m.keyframe for m in metas]
    assert keyframes[0], "the first message must be a starting point"
    return keyframes


# -- RTSP cameras ---------------------------------------------------------------


@pytest.mark.parametrize(("clip", "codec"), [(H264_CLIP, Codec.H264), (H265_CLIP, Codec.H265)])
def test_rtsp_camera_messages_decode_one_by_one_and_late_joiners_start_at_once(
    cameras: RtspServer, clip: Clip, codec: Codec
) -> None:
    with Demuxer(cameras.clip_url(clip)) as source:
        assert source.codec is codec
        # A short RTSP probe may end before the SPS is parsed: the size is then
        # unknown (0), never wrong. The decoded pictures' size is checked below.
        assert (source.width, source.height) in {(0, 0), (clip.width, clip.height)}
        pipeline = Passthrough(CAMERA, codec)
        messages = publish(source, pipeline, 45)  # 3 s: at least one more keyframe (GOP 2 s)
    keyframes = assert_valid_messages(messages, codec)
    size = (clip.width, clip.height)
    assert decode_each(codec, messages) == [size] * len(messages)
    # A viewer joining at a later keyframe: its first message alone is a picture.
    later = keyframes.index(True, 1)
    assert decode_each(codec, messages[later : later + 1]) == [size]
    assert decode_each(codec, messages[later:]) == [size] * (len(messages) - later)
    assert annexb.has_parameter_sets(annexb.split_nals(messages[later]), codec)
    # x264/x265 say "no reordering" themselves: the SPS is not touched.
    assert pipeline.reorder is (Reorder.ALREADY if codec is Codec.H264 else Reorder.KEEP)
    assert pipeline.stats.sps_rewritten == 0


@pytest.mark.parametrize(("name", "poc_type"), [("camera-poc2", 2), ("camera-poc0", 0)])
def test_rtsp_camera_without_stated_reordering_gets_a_sps_without_reorder_delay(
    cameras: RtspServer, folder: Path, name: str, poc_type: int
) -> None:
    with Demuxer(f"rtsp://127.0.0.1:{cameras.port}/{name}") as source:
        pipeline = Passthrough(CAMERA, Codec.H264)
        messages = publish(source, pipeline, 35)  # GOP 10: three keyframes or more
    keyframes = assert_valid_messages(messages, Codec.H264)
    at_keyframes = [published_sps(m) for m, key in zip(messages, keyframes, strict=True) if key]
    camera = sps.parse_nal(published_sps((folder / f"{name}.h264").read_bytes()))
    assert camera.pic_order_cnt_type == poc_type
    assert pipeline.reorder is Reorder.REWRITE
    # POC type 2 is decided by the SPS at once; type 0 after one GOP of PTS in
    # decode order, and the first keyframe keeps the camera's SPS meanwhile.
    kept = 0 if poc_type == 2 else 1
    assert [sps.parse_nal(n) for n in at_keyframes[:kept]] == [camera] * kept
    for nal in at_keyframes[kept:]:
        said = sps.parse_nal(nal)
        assert said.vui is not None and said.vui.restriction is not None
        assert said.vui.restriction.max_num_reorder_frames == 0
        assert dataclasses.replace(said, vui=camera.vui) == camera  # nothing else changed
    assert pipeline.stats.sps_rewritten == len(at_keyframes) - kept
    size = (176, 144)
    assert decode_each(Codec.H264, messages) == [size] * len(messages)


# -- files: avcC/hvcC samples, B-frames, losses -----------------------------------


@pytest.mark.parametrize(("name", "codec"), [("a.mp4", Codec.H264), ("a.mkv", Codec.H265)])
def test_length_prefixed_files_become_annex_b_with_parameter_sets_on_keyframes(
    tmp_path: Path, name: str, codec: Codec
) -> None:
    if codec is Codec.H264:
        path = video_clips.x264(tmp_path, name, "main", 0)
    else:
        path = video_clips.x265(tmp_path, name)
    raw = video_clips.packets(path)
    parsed = annexb.parse_extradata(video_clips.extradata(path), codec)
    assert parsed.length_size == 4  # the avcC/hvcC path, not Annex-B
    # The samples hold no parameter sets: only the extradata does.
    first_sample = annexb.split_length_prefixed(raw[0][0], 4)
    assert not annexb.has_parameter_sets(first_sample, codec)
    with Demuxer(str(path)) as source:
        messages = publish(source, Passthrough(CAMERA, codec))
    keyframes = assert_valid_messages(messages, codec)
    assert len(messages) == len(raw) == video_clips.FRAMES
    assert keyframes == [key for _, key, _, _ in raw]
    for message, key in zip(messages, keyframes, strict=True):
        assert annexb.has_parameter_sets(annexb.split_nals(message), codec) == key
    size = (176, 144)
    assert decode_each(codec, messages) == [size] * len(messages)
    assert decode_each(codec, messages[10:11]) == [size]  # the second keyframe alone


def test_b_frame_stream_whose_sps_does_not_say_is_left_alone(tmp_path: Path) -> None:
    path = video_clips.x264(tmp_path, "b.ts", "main", 2)  # MPEG-TS: Annex-B with timestamps
    with Demuxer(str(path)) as source:
        units = [dataclasses.replace(u, data=with_camera_like_sps(u.data)) for u in source]
    assert reorder.pts_reordered(u.pts for u in units if u.pts is not None)
    pipeline = Passthrough(CAMERA, Codec.H264)
    messages = publish(units, pipeline)
    keyframes = assert_valid_messages(messages, Codec.H264)
    assert keyframes.count(True) >= 2
    assert pipeline.reorder is Reorder.KEEP
    camera_sps = published_sps(units[0].data)
    assert {published_sps(m) for m, key in zip(messages, keyframes, strict=True) if key} == {
        camera_sps
    }
    assert video_clips.decode_units("h264", messages) == [(176, 144)] * len(units)


def test_after_a_lost_unit_nothing_is_published_until_the_next_keyframe(tmp_path: Path) -> None:
    path = video_clips.x264(tmp_path, "a.mkv", "main", 0)  # keyframes at 0 and 10
    with Demuxer(str(path)) as source:
        units = list(source)
    units[4] = dataclasses.replace(units[4], discontinuity=True)  # 3 was lost before it
    units.insert(12, dataclasses.replace(units[12], data=b"\x00\x00\x01junk"))
    pipeline = Passthrough(CAMERA, Codec.H264)
    messages = publish(units, pipeline)
    # 0-3, then 10-11, then nothing until a keyframe that never comes.
    assert len(messages) == 6
    keyframes = assert_valid_messages(messages, Codec.H264)
    assert keyframes == [True, False, False, False, True, False]
    assert pipeline.stats.dropped == {"waiting_for_keyframe": 6 + 8, "malformed": 1}
    assert video_clips.decode_units("h264", messages) == [(176, 144)] * 6


def test_units_before_the_first_keyframe_are_not_published(tmp_path: Path) -> None:
    path = video_clips.x264(tmp_path, "a.mkv", "main", 0)
    with Demuxer(str(path)) as source:
        units = list(source)
    messages = publish(units[3:], Passthrough(CAMERA, Codec.H264))  # joined mid-GOP
    assert len(messages) == video_clips.FRAMES - 10
    assert assert_valid_messages(messages, Codec.H264)[0]


# -- HTTP, and what the demuxer refuses -------------------------------------------


@contextlib.contextmanager
def http_folder(folder: Path) -> Iterator[str]:
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *args: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


def test_http_mpeg_ts_source(tmp_path: Path) -> None:
    video_clips.x265(tmp_path, "a.ts")
    with http_folder(tmp_path) as base, Demuxer(f"{base}/a.ts") as source:
        messages = publish(source, Passthrough(CAMERA, Codec.H265))
    assert_valid_messages(messages, Codec.H265)
    assert video_clips.decode_units("hevc", messages) == [(176, 144)] * video_clips.FRAMES


def test_oversized_packets_are_dropped_and_mark_a_discontinuity(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = video_clips.x264(tmp_path, "a.mkv", "main", 0)
    sizes = [len(data) for data, _, _, _ in video_clips.packets(path)]
    limit = sorted(sizes)[-3]  # the two biggest (the keyframes) are over it
    monkeypatch.setattr(demux, "MAX_UNIT_BYTES", limit)
    with Demuxer(str(path)) as source:
        units = list(source)
        assert source.stats.oversized == sum(size > limit for size in sizes) == 2
    assert len(units) == len(sizes) - 2
    assert units[0].discontinuity and units[9].discontinuity
    assert not any(u.discontinuity for u in units[1:9])
    assert publish(units, Passthrough(CAMERA, Codec.H264)) == []  # never a keyframe


def test_open_errors_are_typed_and_never_show_the_password(tmp_path: Path) -> None:
    with pytest.raises(DemuxError):
        Demuxer(str(tmp_path / "missing.mp4"))
    port = free_port()  # nothing listens there
    with pytest.raises(DemuxError) as caught:
        Demuxer(f"rtsp://admin:hunter2@127.0.0.1:{port}/stream")
    assert "hunter2" not in str(caught.value) and "127.0.0.1" in str(caught.value)
    make_clip(tmp_path, Clip("mjpeg", 160, 120), seconds=0.2)
    with pytest.raises(UnsupportedSource, match="mjpeg"):
        Demuxer(str(tmp_path / "mjpeg-160x120.mjpeg"))


def test_a_unit_of_another_codec_is_refused(tmp_path: Path) -> None:
    path = video_clips.x265(tmp_path, "a.mkv")
    with Demuxer(str(path)) as source:
        units = list(itertools.islice(source, 3))
    pipeline = Passthrough(CAMERA, Codec.H264)
    assert publish(units, pipeline) == []
    assert pipeline.stats.dropped == {"wrong_codec": 3}
