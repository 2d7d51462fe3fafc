from __future__ import annotations

import contextlib
import dataclasses
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamd.video import annexb, reorder, sps
from streamd.video.annexb import Codec
from streamd.video.bits import BitReader, BitstreamError, BitWriter
from streamd.video.reorder import Reorder
from streamd.video.sps import (
    BitstreamRestriction,
    HighProfileInfo,
    Hrd,
    PocType1,
    Sps,
    Timing,
    VideoSignal,
    Vui,
)

from . import video_clips

H264 = Codec.H264

# -- bits ----------------------------------------------------------------------


@given(st.lists(st.tuples(st.integers(0, 2**32 - 2), st.integers(-(2**30), 2**30))))
def test_exp_golomb_round_trips(values: list[tuple[int, int]]) -> None:
    w = BitWriter()
    for unsigned, signed in values:
        w.ue(unsigned)
        w.se(signed)
    r = BitReader(w.rbsp())
    assert [(r.ue(), r.se()) for _ in values] == values
    r.trailing_bits()


def test_exp_golomb_codes() -> None:
    w = BitWriter()
    for value in (0, 1, 2, 3):
        w.ue(value)
    # 1 010 011 00100, then the stop bit and padding
    assert w.rbsp() == bytes((0b10100110, 0b01001000))
    with pytest.raises(BitstreamError):
        BitReader(bytes(8)).ue()  # 64 leading zeros


# -- generated SPS ---------------------------------------------------------------


def scaling_deltas(size: int) -> st.SearchStrategy[tuple[int, ...]]:
    def cut(deltas: list[int]) -> tuple[int, ...]:
        # Coding stops once the next scale is 0: keep what a decoder would read.
        last, out = 8, []
        for delta in deltas:
            out.append(delta)
            nxt = (last + delta + 256) % 256
            if nxt == 0:
                break
            last = nxt
        return tuple(out)

    return st.lists(st.integers(-128, 127), min_size=size, max_size=size).map(cut)


def high_info(chroma: int) -> st.SearchStrategy[HighProfileInfo]:
    count = 12 if chroma == 3 else 8
    lists = st.tuples(*(st.none() | scaling_deltas(16 if i < 6 else 64) for i in range(count)))
    return st.builds(
        HighProfileInfo,
        st.just(chroma),
        st.booleans() if chroma == 3 else st.just(False),
        st.integers(0, 6),
        st.integers(0, 6),
        st.booleans(),
        st.none() | lists,
    )


u32 = st.integers(0, 2**32 - 2)
hrds = st.builds(
    Hrd,
    st.integers(0, 15),
    st.integers(0, 15),
    st.lists(st.tuples(u32, u32, st.booleans()), min_size=1, max_size=32).map(tuple),
    *(st.integers(0, 31) for _ in range(4)),
)
restrictions = st.builds(
    BitstreamRestriction, st.booleans(), *(st.integers(0, 16) for _ in range(6))
)


@st.composite
def vuis(draw: st.DrawFn) -> Vui:
    aspect = draw(st.none() | st.integers(0, 255))
    sar = (draw(st.integers(0, 65535)), draw(st.integers(0, 65535))) if aspect == 255 else None
    signal = draw(
        st.none()
        | st.builds(
            VideoSignal,
            st.integers(0, 7),
            st.booleans(),
            st.none() | st.tuples(*(st.integers(0, 255) for _ in range(3))),
        )
    )
    nal_hrd, vcl_hrd = draw(st.none() | hrds), draw(st.none() | hrds)
    return Vui(
        aspect, sar, draw(st.none() | st.booleans()), signal,
        draw(st.none() | st.tuples(st.integers(0, 5), st.integers(0, 5))),
        draw(st.none() | st.builds(Timing, st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1),
                                   st.booleans())),
        nal_hrd, vcl_hrd,
        draw(st.booleans()) if nal_hrd or vcl_hrd else False,
        draw(st.booleans()), draw(st.none() | restrictions),
    )  # fmt: skip


@st.composite
def spss(draw: st.DrawFn) -> Sps:
    profile = draw(st.sampled_from([66, 77, 88, 100, 110, 122, 244, 44]))
    high = None
    if profile in sps.HIGH_PROFILES:
        high = draw(high_info(draw(st.integers(0, 3))))
    poc_type = draw(st.integers(0, 2))
    frame_mbs_only = draw(st.booleans())
    return Sps(
        profile, draw(st.integers(0, 255)), draw(st.integers(0, 255)), draw(st.integers(0, 31)),
        high, draw(st.integers(0, 12)), poc_type,
        draw(st.integers(0, 12)) if poc_type == 0 else None,
        draw(st.builds(PocType1, st.booleans(), st.integers(-(2**20), 2**20),
                       st.integers(-(2**20), 2**20),
                       st.lists(st.integers(-(2**20), 2**20), max_size=8).map(tuple)))
        if poc_type == 1 else None,
        draw(st.integers(0, 16)), draw(st.booleans()), draw(st.integers(0, 500)),
        draw(st.integers(0, 500)), frame_mbs_only,
        draw(st.booleans()) if not frame_mbs_only else False,
        draw(st.booleans()),
        draw(st.none() | st.tuples(*(st.integers(0, 100) for _ in range(4)))),
        draw(st.none() | vuis()),
    )  # fmt: skip


@given(spss())
def test_generated_sps_round_trips_through_bits_and_nal(value: Sps) -> None:
    assert sps.parse_rbsp(sps.serialize_rbsp(value)) == value
    nal = sps.serialize_nal(value)
    assert sps.parse_nal(nal) == value
    assert annexb.split_nals(annexb.join_nals([nal])) == [nal]


@given(spss())
def test_rewrite_says_no_reordering_changes_nothing_else_and_is_idempotent(value: Sps) -> None:
    once = reorder.without_reorder_delay(value)
    assert once.vui is not None and once.vui.restriction is not None
    assert once.vui.restriction.max_num_reorder_frames == 0
    assert once.vui.restriction.max_dec_frame_buffering == max(1, value.max_num_ref_frames)
    assert dataclasses.replace(once, vui=value.vui) == value
    if value.vui is not None:
        assert dataclasses.replace(once.vui, restriction=value.vui.restriction) == value.vui
    assert reorder.without_reorder_delay(once) == once
    nal = reorder.rewrite_nal(sps.serialize_nal(value))
    assert reorder.rewrite_nal(nal) == nal and sps.parse_nal(nal) == once
    assert reorder.reorder_decision(once, None) is Reorder.ALREADY


@given(st.binary(max_size=80))
def test_parsing_any_bytes_raises_only_bitstream_errors(data: bytes) -> None:
    with contextlib.suppress(BitstreamError):
        sps.parse_nal(b"\x67" + data)


# -- the decision --------------------------------------------------------------

BASE = Sps(77, 0, 30, 0, None, 0, 0, 4, None, 1, False, 10, 8, True, False, True, None, None)


@pytest.mark.parametrize(
    ("value", "seen", "verdict"),
    [
        (dataclasses.replace(BASE, profile_idc=66), None, Reorder.REWRITE),
        (dataclasses.replace(BASE, pic_order_cnt_type=2, log2_max_poc_lsb_minus4=None), None,
         Reorder.REWRITE),
        (BASE, None, Reorder.UNDECIDED),
        (BASE, True, Reorder.KEEP),
        (BASE, False, Reorder.REWRITE),
        (reorder.without_reorder_delay(BASE), True, Reorder.ALREADY),
        (dataclasses.replace(BASE, vui=Vui(restriction=BitstreamRestriction(True, 2, 1, 16, 16,
                                                                            2, 4))),
         False, Reorder.KEEP),
    ],
)  # fmt: skip
def test_reorder_decision(value: Sps, seen: bool | None, verdict: Reorder) -> None:
    assert reorder.reorder_decision(value, seen) is verdict


def test_pts_reordered() -> None:
    assert not reorder.pts_reordered([0, 1, 2, 3])
    assert not reorder.pts_reordered([])
    assert reorder.pts_reordered([0, 3, 1, 2])  # I P B B


# -- real SPS from libx264 -------------------------------------------------------

VARIANTS = {
    "baseline": ("baseline", 0),
    "main": ("main", 0),
    "main-b": ("main", 3),
    "high": ("high", 0),
    "high-b": ("high", 3),
    "high-interlaced": ("high", 0, "-x264-params", "interlaced=1"),
    "high-hrd-sar-colour": (
        "high", 0, "-x264-params", "nal-hrd=vbr", "-b:v", "300k", "-maxrate", "300k",
        "-bufsize", "600k", "-color_primaries", "bt709", "-color_trc", "bt709",
        "-colorspace", "bt709", "-vf", "setsar=64/45",
    ),
    "high444": ("high444", 0, "-pix_fmt", "yuv444p"),
}  # fmt: skip


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("clips")
    out = {}
    for name, (profile, bframes, *rest) in VARIANTS.items():
        extra = [str(arg) for arg in rest]
        out[name] = video_clips.x264(folder, f"{name}.h264", str(profile), int(bframes), *extra)
        # Raw H.264 has no timestamps: the PTS/DTS observation needs a container.
        out[f"{name}.mkv"] = video_clips.x264(
            folder, f"{name}.mkv", str(profile), int(bframes), *extra
        )
    return out


def reordering_seen(clips: dict[str, Path], name: str) -> bool:
    packets = video_clips.packets(clips[f"{name}.mkv"])
    assert all(pts is not None for _, _, pts, _ in packets)
    return reorder.pts_reordered(pts for _, _, pts, _ in packets if pts is not None)


def stream_sps(path: Path) -> bytes:
    nals = annexb.split_nals(path.read_bytes())
    return next(n for n in nals if annexb.nal_type(n, H264) == annexb.H264_SPS)


def replace_sps(path: Path, target: Path, new: bytes) -> Path:
    nals = annexb.split_nals(path.read_bytes())
    swapped = [new if annexb.nal_type(n, H264) == annexb.H264_SPS else n for n in nals]
    target.write_bytes(annexb.join_nals(swapped))
    return target


def ffprobe_frames(path: Path) -> tuple[int, int, int, int]:
    """(frames decoded, width, height, has_b_frames) as ffprobe sees the stream."""
    ffprobe = shutil.which("ffprobe")
    assert ffprobe
    out = subprocess.run(
        [ffprobe, "-v", "error", "-count_frames", "-select_streams", "v:0", "-show_entries",
         "stream=nb_read_frames,width,height,has_b_frames", "-of", "json", str(path)],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    stream = json.loads(out)["streams"][0]
    return (
        int(stream["nb_read_frames"]),
        stream["width"],
        stream["height"],
        stream["has_b_frames"],
    )


@pytest.mark.parametrize("name", list(VARIANTS))  # the .h264 files
def test_real_sps_round_trips_bit_exactly(clips: dict[str, Path], name: str) -> None:
    nal = stream_sps(clips[name])
    parsed = sps.parse_nal(nal)
    assert sps.serialize_nal(parsed, nal[0]) == nal
    # x264 states its reordering itself.
    expected = Reorder.KEEP if name.endswith("-b") else Reorder.ALREADY
    assert reorder.reorder_decision(parsed, None) is expected


def camera_like(nal: bytes, keep_vui: bool) -> bytes:
    """The SPS as many cameras send it: no bitstream_restriction, or no VUI."""
    parsed = sps.parse_nal(nal)
    assert parsed.vui is not None
    vui = dataclasses.replace(parsed.vui, restriction=None) if keep_vui else None
    return sps.serialize_nal(dataclasses.replace(parsed, vui=vui), nal[0])


@pytest.mark.parametrize("keep_vui", [True, False])
@pytest.mark.parametrize("name", ["baseline", "main", "high", "high-interlaced",
                                  "high-hrd-sar-colour", "high444"])  # fmt: skip
def test_rewritten_stream_decodes_every_frame_without_reorder_delay(
    clips: dict[str, Path], tmp_path: Path, name: str, keep_vui: bool
) -> None:
    original = clips[name]
    frames, width, height, _ = ffprobe_frames(original)
    stripped = replace_sps(original, tmp_path / "camera.h264",
                           camera_like(stream_sps(original), keep_vui))  # fmt: skip
    camera_sps = sps.parse_nal(stream_sps(stripped))
    seen = reordering_seen(clips, name)
    assert not seen
    verdict = reorder.reorder_decision(camera_sps, seen)
    assert verdict is Reorder.REWRITE, verdict
    rewritten = replace_sps(stripped, tmp_path / "rewritten.h264",
                            reorder.rewrite_nal(stream_sps(stripped)))  # fmt: skip
    said = sps.parse_nal(stream_sps(rewritten))
    assert said.vui is not None and said.vui.restriction is not None
    assert said.vui.restriction.max_num_reorder_frames == 0
    # FFmpeg guesses has_b_frames = 0 even without the restriction (Chrome's
    # hardware path does not), so this only checks that it reads the stream.
    assert ffprobe_frames(rewritten) == (frames, width, height, 0)
    units = [data for data, _, _, _ in video_clips.packets(rewritten)]
    assert video_clips.decode_units("h264", units) == [(width, height)] * frames


def test_b_frame_streams_are_kept_when_the_camera_does_not_say(clips: dict[str, Path]) -> None:
    for name in ("main-b", "high-b"):
        camera_sps = sps.parse_nal(camera_like(stream_sps(clips[name]), keep_vui=False))
        assert reorder.reorder_decision(camera_sps, None) is Reorder.UNDECIDED
        assert reorder.reorder_decision(camera_sps, reordering_seen(clips, name)) is Reorder.KEEP


def test_explicit_scaling_lists_decode_like_the_flat_default(
    clips: dict[str, Path], tmp_path: Path
) -> None:
    """Scaling lists as coded by us are read by FFmpeg: eight explicit flat
    lists (first delta 8 → 16, then 0) must decode to the same pictures as
    none at all, which means flat."""
    import av

    original = clips["high"]
    parsed = sps.parse_nal(stream_sps(original))
    assert parsed.high is not None and parsed.high.scaling_lists is None
    flat = tuple((8,) + (0,) * (15 if i < 6 else 63) for i in range(8))
    explicit = dataclasses.replace(
        parsed, high=dataclasses.replace(parsed.high, scaling_lists=flat)
    )
    path = replace_sps(original, tmp_path / "flat.h264", sps.serialize_nal(explicit))
    wrong = tuple((9,) + (0,) * (15 if i < 6 else 63) for i in range(8))  # all 17: different
    other = replace_sps(
        original,
        tmp_path / "wrong.h264",
        sps.serialize_nal(
            dataclasses.replace(parsed, high=dataclasses.replace(parsed.high, scaling_lists=wrong))
        ),
    )

    def pictures(p: Path) -> list[bytes]:
        with av.open(str(p)) as container:
            return [bytes(f.planes[0]) for f in container.decode(video=0)]

    assert pictures(path) == pictures(original)
    assert pictures(other) != pictures(original)  # the check can fail
