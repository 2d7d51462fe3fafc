from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamd.video import annexb, sei
from streamd.video.annexb import Codec
from streamd.video.sei import UnitMeta
from streamd.video.units import Reason, check_unit

from . import video_clips

LIMIT = 1 << 20
CAMERA = "door-1"


def streamd_units(path: Path, codec: Codec) -> list[bytes]:
    """The clip as the child would publish it: our SEI in every unit."""
    units = []
    for seq, (data, keyframe, _, _) in enumerate(video_clips.packets(path)):
        meta = UnitMeta(CAMERA, seq, 1_000 + seq, keyframe, codec)
        units.append(annexb.join_nals(sei.insert_metadata(annexb.split_nals(data), meta)))
    return units


@pytest.fixture(scope="module")
def units(tmp_path_factory: pytest.TempPathFactory) -> dict[Codec, list[bytes]]:
    folder = tmp_path_factory.mktemp("clips")
    return {
        Codec.H264: streamd_units(video_clips.x264(folder, "a.h264", "main", 0), Codec.H264),
        Codec.H265: streamd_units(video_clips.x265(folder, "a.hevc"), Codec.H265),
    }


@pytest.mark.parametrize("codec", list(Codec))
def test_our_units_are_accepted_with_their_metadata(
    units: dict[Codec, list[bytes]], codec: Codec
) -> None:
    verdicts = [check_unit(u, codec, CAMERA, LIMIT) for u in units[codec]]
    assert all(v.ok for v in verdicts), [v.reason for v in verdicts]
    assert [v.meta.seq for v in verdicts if v.meta] == list(range(video_clips.FRAMES))
    assert [v.keyframe for v in verdicts].count(True) == 2


def _without(unit: bytes, codec: Codec, types: set[int]) -> bytes:
    nals = annexb.split_nals(unit)
    return annexb.join_nals(n for n in nals if annexb.nal_type(n, codec) not in types)


@pytest.mark.parametrize("codec", list(Codec))
def test_each_refusal_has_its_reason(units: dict[Codec, list[bytes]], codec: Codec) -> None:
    key, delta = units[codec][0], units[codec][1]
    other = Codec.H265 if codec is Codec.H264 else Codec.H264
    sei_type = 6 if codec is Codec.H264 else 39

    def reason(data: bytes, expected: Codec = codec, camera: str = CAMERA) -> Reason:
        return check_unit(data, expected, camera, LIMIT).reason

    assert check_unit(key, codec, CAMERA, len(key) - 1).reason is Reason.OVERSIZED
    assert reason(b"") is Reason.GARBAGE
    assert reason(b"\xff\xd8\xff\xe0 a JPEG") is Reason.GARBAGE
    assert reason(b"\x00\x00\x01\xff\xff") is Reason.GARBAGE  # forbidden bit
    assert reason(b"\x00\x00\x01" * 300 + b"\x41") is Reason.GARBAGE  # NAL flood
    assert reason(key, other) is Reason.WRONG_CODEC
    assert reason(delta, other) is Reason.WRONG_CODEC
    assert reason(_without(key, codec, set(annexb.PARAMETER_SET_TYPES[codec][-1:]))) is (
        Reason.MISSING_PARAMETER_SETS
    )
    assert reason(_without(delta, codec, {sei_type})) is Reason.NO_METADATA
    assert reason(key, camera="yard") is Reason.WRONG_CAMERA
    # Only the parameter sets and our SEI: no picture.
    keep = set(annexb.PARAMETER_SET_TYPES[codec]) | {sei_type}
    picture = {annexb.nal_type(n, codec) for n in annexb.split_nals(key)} - keep
    assert reason(_without(key, codec, picture)) is Reason.GARBAGE


def test_metadata_that_lies_about_the_unit_is_refused(units: dict[Codec, list[bytes]]) -> None:
    delta = annexb.split_nals(units[Codec.H264][1])
    no_sei = [n for n in delta if not sei.is_sei(n, Codec.H264)]
    lies = {
        Reason.BAD_METADATA: UnitMeta(CAMERA, 1, 2, True, Codec.H264),  # says keyframe
        Reason.WRONG_CODEC: UnitMeta(CAMERA, 1, 2, False, Codec.H265),  # says H.265
    }
    for expected, meta in lies.items():
        # An H.264 SEI NAL unit, whatever the payload claims.
        nal = sei.sei_nal(Codec.H264, sei.USER_DATA_UNREGISTERED, sei.pack_payload(meta))
        unit = annexb.join_nals([nal, *no_sei])
        assert check_unit(unit, Codec.H264, CAMERA, LIMIT).reason is expected
    broken = sei.sei_nal(Codec.H264, 5, sei.STREAMD_UUID.bytes + b"\x01")
    unit = annexb.join_nals([broken, *no_sei])
    assert check_unit(unit, Codec.H264, CAMERA, LIMIT).reason is Reason.BAD_METADATA


@given(st.binary(max_size=400), st.sampled_from(list(Codec)))
def test_never_raises_on_any_bytes(data: bytes, codec: Codec) -> None:
    verdict = check_unit(data, codec, CAMERA, 300)
    assert verdict.ok == (verdict.meta is not None)


@given(st.data())
def test_never_raises_on_damaged_real_units(
    units: dict[Codec, list[bytes]], data: st.DataObject
) -> None:
    codec = data.draw(st.sampled_from(list(Codec)))
    unit = bytearray(data.draw(st.sampled_from(units[codec])))
    for _ in range(data.draw(st.integers(1, 8))):
        at = data.draw(st.integers(0, len(unit) - 1))
        unit[at] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(1, len(unit)))
    verdict = check_unit(bytes(unit[:cut]), codec, CAMERA, LIMIT)
    if verdict.ok:  # damage in slice data is not ours to see; the rest still holds
        assert verdict.meta is not None and verdict.meta.camera_id == CAMERA


def _head_and_tail(unit: bytes, codec: Codec) -> tuple[bytes, bytes]:
    """The unit up to its first slice's header, and everything after that."""
    nals = annexb.split_nals(unit)
    first = next(i for i, n in enumerate(nals) if annexb.is_vcl(annexb.nal_type(n, codec), codec))
    size = annexb.header_size(codec)
    head = annexb.join_nals(nals[:first]) + annexb.START_CODE + nals[first][:size]
    assert unit.startswith(head)
    return head, unit[len(head) :]


@given(st.data())
def test_what_follows_the_first_slice_header_is_not_read(
    units: dict[Codec, list[bytes]], data: st.DataObject
) -> None:
    """The verdict depends on the head only: slice data, further slices, forged
    start codes and NAL units after the first slice (even an SPS, or garbage a
    full scan would refuse) change nothing (docs/security.md "Access units")."""
    codec = data.draw(st.sampled_from(list(Codec)))
    unit = data.draw(st.sampled_from(units[codec]))
    head, _ = _head_and_tail(unit, codec)
    sps = annexb.PARAMETER_SET_TYPES[codec][-2]
    forged = annexb.START_CODE + bytes([sps << 1 if codec is Codec.H265 else 0x67, 1])
    tail = data.draw(
        st.one_of(
            st.binary(max_size=300),
            st.lists(
                st.sampled_from([forged, b"\x00\x00\x01\xff\xff", b"\x00\x00\x01", b"\x00"])
            ).map(b"".join),
        )
    )
    expected = check_unit(unit, codec, CAMERA, LIMIT)
    verdict = check_unit(head + tail, codec, CAMERA, LIMIT)
    assert verdict == expected
    assert verdict.ok


@given(st.data())
def test_a_damaged_head_is_still_refused(
    units: dict[Codec, list[bytes]], data: st.DataObject
) -> None:
    """Whatever follows the first slice, the head's classes of refusal stand: an
    implausible NAL header before it, no streamd SEI, a keyframe without its
    parameter sets, a unit with no slice at all, a NAL flood before the slice."""
    codec = data.draw(st.sampled_from(list(Codec)))
    unit = data.draw(st.sampled_from(units[codec]))
    key = units[codec][0]
    tail = data.draw(st.binary(max_size=200))
    sei_type = 6 if codec is Codec.H264 else 39
    head, _ = _head_and_tail(unit, codec)

    def reason(data: bytes) -> Reason:
        return check_unit(data + tail, codec, CAMERA, LIMIT).reason

    assert reason(b"\x00\x00\x01\xff\xff" + head) is Reason.GARBAGE  # forbidden bit first
    aud = b"\x09\xf0" if codec is Codec.H264 else b"\x46\x01\x50"
    assert reason((annexb.START_CODE + aud) * 300 + head) is Reason.GARBAGE  # NAL flood
    no_sei, _ = _head_and_tail(_without(unit, codec, {sei_type}), codec)
    assert reason(no_sei) is Reason.NO_METADATA
    key_head, _ = _head_and_tail(key, codec)
    without_pps = _without(key, codec, set(annexb.PARAMETER_SET_TYPES[codec][-1:]))
    assert reason(_head_and_tail(without_pps, codec)[0]) is Reason.MISSING_PARAMETER_SETS
    no_slice = key_head[: key_head.rfind(annexb.START_CODE)]
    assert check_unit(no_slice, codec, CAMERA, LIMIT).reason is Reason.GARBAGE
