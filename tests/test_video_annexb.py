from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamd.video import annexb
from streamd.video.annexb import AnnexBError, Codec

from . import video_clips

H264, H265 = Codec.H264, Codec.H265


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("clips")
    return {
        "h264": video_clips.x264(folder, "main.h264", "main", 0),
        "mp4": video_clips.x264(folder, "main.mp4", "main", 0),
        "hevc": video_clips.x265(folder, "clip.hevc"),
        "mkv": video_clips.x265(folder, "clip.mkv"),
    }


# -- emulation prevention ----------------------------------------------------


@given(st.binary(max_size=300))
def test_unescape_inverts_escape(rbsp: bytes) -> None:
    assert annexb.unescape(annexb.escape(rbsp)) == rbsp


# An RBSP ends in rbsp_trailing_bits, then possibly cabac_zero_words (00 00).
rbsps = st.builds(
    lambda body, stop, words: body + bytes((stop,)) + b"\x00\x00" * words,
    st.binary(max_size=300),
    st.integers(1, 255),
    st.integers(0, 3),
)


@given(rbsps)
def test_escape_round_trips_and_leaves_no_start_code_emulation(rbsp: bytes) -> None:
    escaped = annexb.escape(rbsp)
    assert annexb.unescape(escaped) == rbsp
    for code in (b"\x00\x00\x00", b"\x00\x00\x01", b"\x00\x00\x02"):
        assert code not in escaped
    assert not escaped.endswith(b"\x00")


def test_escape_examples() -> None:
    assert annexb.escape(b"\x00\x00\x01") == b"\x00\x00\x03\x01"
    assert annexb.escape(b"\x00\x00\x00\x00") == b"\x00\x00\x03\x00\x00\x03"
    assert annexb.escape(b"\x00\x00\x04") == b"\x00\x00\x04"  # 04 cannot start a start code
    assert annexb.unescape(b"\x00\x00\x03\x03") == b"\x00\x00\x03"


# -- split and join ----------------------------------------------------------

# A NAL unit: a header byte with the forbidden bit clear, then an escaped body
# that ends in rbsp_trailing_bits (as every real NAL unit does).
nal_units = st.builds(
    lambda head, body: bytes((head & 0x7F,)) + annexb.escape(body + b"\x80"),
    st.integers(0, 255),
    st.binary(max_size=60),
)


@given(st.lists(nal_units, min_size=1, max_size=8), st.lists(st.booleans(), min_size=8))
def test_split_inverts_join_with_3_and_4_byte_start_codes(
    nals: list[bytes], short: list[bool]
) -> None:
    assert annexb.split_nals(annexb.join_nals(nals)) == nals
    mixed = b"".join(
        (b"\x00\x00\x01" if s else b"\x00\x00\x00\x01") + n
        for n, s in zip(nals, short, strict=False)
    )
    assert annexb.split_nals(mixed) == nals


@given(st.binary(max_size=200))
def test_split_raises_only_annexb_error_on_any_bytes(data: bytes) -> None:
    try:
        nals = annexb.split_nals(data)
    except AnnexBError:
        return
    assert all(nals) and all(b"\x00\x00\x01" not in n for n in nals)


@pytest.mark.parametrize(
    "data",
    [b"", b"\x65\x88", b"\x01\x00\x00\x01\x65", b"\x00\x00\x01", b"\x00\x00\x01\x00\x00\x01\x65"],
)
def test_split_refuses_malformed_streams(data: bytes) -> None:
    with pytest.raises(AnnexBError):
        annexb.split_nals(data)


def test_trailing_zero_bytes_belong_to_no_nal_unit() -> None:
    data = b"\x00\x00\x01\x67\x42\x00\x00\x00\x00\x01\x68\xce\x00\x00"
    assert annexb.split_nals(data) == [b"\x67\x42", b"\x68\xce"]


# -- NAL types, keyframes, parameter sets on real streams ----------------------


def test_h264_types_keyframes_and_parameter_sets_agree_with_pyav(clips: dict[str, Path]) -> None:
    units = video_clips.packets(clips["h264"])
    keyframes = 0
    for data, keyframe, _, _ in units:
        nals = annexb.split_nals(data)
        assert annexb.is_keyframe(nals, H264) == keyframe
        if keyframe:
            keyframes += 1
            types = [annexb.nal_type(n, H264) for n in nals]
            assert annexb.H264_SPS in types and annexb.H264_PPS in types
            assert annexb.has_parameter_sets(nals, H264)
    assert keyframes == 2  # 20 frames, GOP 10


def test_h265_irap_and_vps_sps_pps(clips: dict[str, Path]) -> None:
    units = video_clips.packets(clips["hevc"])
    assert [k for _, k, _, _ in units].count(True) == 2
    for data, keyframe, _, _ in units:
        nals = annexb.split_nals(data)
        assert annexb.is_keyframe(nals, H265) == keyframe
        assert annexb.has_parameter_sets(nals, H265) == keyframe
    first = annexb.split_nals(units[0][0])
    assert sorted(annexb.parameter_sets(first, H265)) == [32, 33, 34]
    # Read as H.264, an H.265 keyframe has no IDR and no SPS/PPS.
    assert not annexb.has_parameter_sets(first, H264)


def test_keyframe_types() -> None:
    assert annexb.is_keyframe_nal(5, H264) and not annexb.is_keyframe_nal(1, H264)
    assert all(annexb.is_keyframe_nal(t, H265) for t in range(16, 24))
    assert not annexb.is_keyframe_nal(1, H265) and not annexb.is_keyframe_nal(32, H265)
    with pytest.raises(AnnexBError):
        annexb.nal_type(b"\x40", H265)


# -- extradata and length-prefixed samples -----------------------------------


@pytest.mark.parametrize(
    ("key", "codec", "decoder"), [("mp4", H264, "h264"), ("mkv", H265, "hevc")]
)
def test_avcc_hvcc_samples_become_decodable_annexb_units(
    clips: dict[str, Path], key: str, codec: Codec, decoder: str
) -> None:
    extra = annexb.parse_extradata(video_clips.extradata(clips[key]), codec)
    assert extra.length_size == 4
    assert [annexb.nal_type(n, codec) for n in extra.parameter_sets] == list(
        annexb.PARAMETER_SET_TYPES[codec]
    )
    units = []
    for sample, keyframe, _, _ in video_clips.packets(clips[key]):
        nals = annexb.split_nals(annexb.to_annexb(sample, extra.length_size))
        if keyframe:
            nals = annexb.with_parameter_sets(nals, codec, extra.parameter_sets)
        units.append(annexb.join_nals(nals))
    # A decoder that never saw the extradata decodes every frame.
    assert video_clips.decode_units(decoder, units) == [(176, 144)] * video_clips.FRAMES
    # Without the parameter sets it cannot (the check above can fail).
    bare = [annexb.to_annexb(s, 4) for s, _, _, _ in video_clips.packets(clips[key])]
    assert len(video_clips.decode_units(decoder, bare)) < video_clips.FRAMES


def test_annexb_extradata_is_split(clips: dict[str, Path]) -> None:
    first = video_clips.packets(clips["h264"])[0][0]
    sets = annexb.parameter_sets(annexb.split_nals(first), H264)
    extra = annexb.parse_extradata(annexb.join_nals(sets.values()), H264)
    assert extra.length_size is None and extra.parameter_sets == list(sets.values())
    assert annexb.to_annexb(first, None) == first


@given(st.binary(max_size=120), st.sampled_from([H264, H265]))
def test_extradata_parsers_raise_only_annexb_error(data: bytes, codec: Codec) -> None:
    with contextlib.suppress(AnnexBError):
        annexb.parse_extradata(data, codec)
    with contextlib.suppress(AnnexBError):
        annexb.split_length_prefixed(data, 4)


# -- parameter sets on keyframes ---------------------------------------------

SPS, PPS, IDR, SLICE, AUD = b"\x67\x42", b"\x68\xce", b"\x65\x88", b"\x41\x9a", b"\x09\xf0"


def test_parameter_sets_go_after_the_delimiter_and_replace_in_band_ones() -> None:
    new_sps = b"\x67\x4d"
    assert annexb.with_parameter_sets([AUD, IDR], H264, [SPS, PPS]) == [AUD, SPS, PPS, IDR]
    assert annexb.with_parameter_sets([IDR], H264, [SPS, PPS]) == [SPS, PPS, IDR]
    assert annexb.with_parameter_sets([AUD, SPS, PPS, IDR], H264, [new_sps, PPS]) == [
        AUD, new_sps, PPS, IDR,
    ]  # fmt: skip
    assert annexb.with_parameter_sets([AUD, SLICE], H264, [SPS, PPS]) == [AUD, SLICE]
    assert annexb.with_parameter_sets([IDR], H264, []) == [IDR]


def test_parameter_set_cache_keeps_the_newest() -> None:
    cache = annexb.ParameterSets(H264)
    cache.update([SPS, IDR])
    assert not cache.complete() and cache.nals() == [SPS]
    cache.update([b"\x67\x4d", PPS, SLICE])
    assert cache.complete() and cache.nals() == [b"\x67\x4d", PPS]
    with pytest.raises(ValueError):
        cache.replace(annexb.H264_IDR, IDR)
