from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamd.video import annexb, sei
from streamd.video.annexb import Codec
from streamd.video.sei import SeiError, UnitMeta

from . import video_clips

camera_ids = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", fullmatch=True)
metas = st.builds(
    UnitMeta,
    camera_id=camera_ids,
    seq=st.integers(0, 2**64 - 1),
    capture_ns=st.integers(0, 2**64 - 1),
    keyframe=st.booleans(),
    codec=st.sampled_from(list(Codec)),
)


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[Codec, Path]:
    folder = tmp_path_factory.mktemp("clips")
    return {
        Codec.H264: video_clips.x264(folder, "main.h264", "main", 0),
        Codec.H265: video_clips.x265(folder, "clip.hevc"),
    }


@given(metas)
def test_metadata_nal_round_trips_and_is_a_bounded_escaped_sei(meta: UnitMeta) -> None:
    nal = sei.metadata_nal(meta)
    assert sei.is_sei(nal, meta.codec)
    assert sei.find_metadata([nal], meta.codec) == meta
    body = nal[annexb.header_size(meta.codec) :]
    assert b"\x00\x00\x00" not in body and b"\x00\x00\x01" not in body
    assert len(nal) <= 2 + 2 + sei.MAX_PAYLOAD + 1 + 40  # worst case emulation bytes
    # One NAL unit in an Annex-B stream: splitting finds exactly it again.
    assert annexb.split_nals(annexb.join_nals([nal, nal])) == [nal, nal]


def test_uuid_and_layout_are_fixed() -> None:
    assert str(sei.STREAMD_UUID) == "e3913ec9-2473-427a-a6f6-e8af4ed47527"
    nal = sei.metadata_nal(UnitMeta("door", 1, 2, True, Codec.H264))
    assert nal[:3] == b"\x06\x05" + bytes((16 + 20 + 4,))
    assert nal[3:19] == sei.STREAMD_UUID.bytes
    assert nal.endswith(b"door\x80")
    assert sei.metadata_nal(UnitMeta("door", 1, 2, True, Codec.H265))[:2] == b"\x4e\x01"


def test_invalid_camera_id_is_refused_when_packing() -> None:
    with pytest.raises(ValueError):
        sei.metadata_nal(UnitMeta("no spaces", 1, 2, False, Codec.H264))


def test_someone_elses_user_data_is_not_ours() -> None:
    other = sei.sei_nal(Codec.H264, 5, bytes(16) + b"hello")
    assert sei.find_metadata([other], Codec.H264) is None
    mine = sei.metadata_nal(UnitMeta("door", 1, 2, False, Codec.H264))
    assert sei.find_metadata([other, mine], Codec.H264) is not None


def test_long_messages_use_ff_coding() -> None:
    nal = sei.sei_nal(Codec.H264, 300, b"x" * 600)
    assert sei.sei_messages(nal, Codec.H264) == [(300, b"x" * 600)]


def test_metadata_after_the_first_slice_does_not_count() -> None:
    mine = sei.metadata_nal(UnitMeta("door", 1, 2, False, Codec.H264))
    assert sei.find_metadata([b"\x41\x9a", mine], Codec.H264) is None


@pytest.mark.parametrize(
    "payload",
    [
        sei.STREAMD_UUID.bytes,  # too short
        sei.STREAMD_UUID.bytes + b"\x02\x00\x01" + bytes(16) + b"\x01a",  # version 2
        sei.STREAMD_UUID.bytes + b"\x01\x02\x01" + bytes(16) + b"\x01a",  # unknown flag
        sei.STREAMD_UUID.bytes + b"\x01\x00\x03" + bytes(16) + b"\x01a",  # unknown codec
        sei.STREAMD_UUID.bytes + b"\x01\x00\x01" + bytes(16) + b"\x02a",  # id length
        sei.STREAMD_UUID.bytes + b"\x01\x00\x01" + bytes(16) + b"\x01 ",  # id pattern
        sei.STREAMD_UUID.bytes + b"\x01\x00\x01" + bytes(16) + b"\x01\xff",  # not ASCII
    ],
)
def test_malformed_metadata_raises_sei_error(payload: bytes) -> None:
    with pytest.raises(SeiError):
        sei.find_metadata([sei.sei_nal(Codec.H264, 5, payload)], Codec.H264)


@given(st.binary(max_size=120), st.sampled_from(list(Codec)))
def test_parsing_any_sei_bytes_raises_only_sei_error(body: bytes, codec: Codec) -> None:
    head = b"\x06" if codec is Codec.H264 else b"\x4e\x01"
    with contextlib.suppress(SeiError):
        sei.find_metadata([head + body], codec)


@pytest.mark.parametrize(("codec", "decoder"), [(Codec.H264, "h264"), (Codec.H265, "hevc")])
def test_units_with_our_sei_still_decode_unit_by_unit(
    clips: dict[Codec, Path], codec: Codec, decoder: str
) -> None:
    units = []
    for seq, (data, keyframe, _, _) in enumerate(video_clips.packets(clips[codec])):
        meta = UnitMeta("door-1", seq, 1_700_000_000_000_000_000 + seq, keyframe, codec)
        nals = sei.insert_metadata(annexb.split_nals(data), meta)
        unit = annexb.join_nals(nals)
        assert sei.find_metadata(annexb.split_nals(unit), codec) == meta
        units.append(unit)
    assert video_clips.decode_units(decoder, units) == [(176, 144)] * video_clips.FRAMES


def test_metadata_goes_right_before_the_first_slice() -> None:
    meta = UnitMeta("door", 1, 2, True, Codec.H264)
    aud, sps, pps, idr = b"\x09\xf0", b"\x67\x42", b"\x68\xce", b"\x65\x88"
    assert sei.insert_metadata([aud, sps, pps, idr, idr], meta) == [
        aud, sps, pps, sei.metadata_nal(meta), idr, idr,
    ]  # fmt: skip
    with pytest.raises(SeiError):
        sei.insert_metadata([aud, sps], meta)
