"""The verdict on an access unit read from Redis (``au:{camera_id}``), sans-I/O.

Anyone who can publish to Redis can put bytes on the channel, and a browser's
WebCodecs decoder is the last thing that should meet a hostile bitstream. The
gateway (later) forwards a unit only if ``check_unit`` accepts it, and counts
the others by ``Reason``. It never raises, whatever the bytes.

Accepted: at most ``max_bytes``; Annex-B NAL units with plausible headers for
the camera's codec; at least one slice; on a keyframe its parameter sets; our
metadata SEI before the first slice, for this camera and codec, whose keyframe
flag agrees with the bitstream.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from .annexb import (
    PARAMETER_SET_TYPES,
    AnnexBError,
    Codec,
    is_keyframe_nal,
    is_vcl,
    nal_type,
    split_nals,
)
from .sei import SeiError, UnitMeta, find_metadata

# More NAL units than any camera sends per picture (one slice per macroblock
# row of 4K is 135); bounds the work a unit of start codes can cause.
MAX_NALS = 256


class Reason(enum.StrEnum):
    OK = "ok"
    OVERSIZED = "oversized"
    GARBAGE = "garbage"  # not Annex-B, bad NAL headers, or no picture
    WRONG_CODEC = "wrong_codec"
    MISSING_PARAMETER_SETS = "missing_parameter_sets"  # a keyframe without them
    NO_METADATA = "no_metadata"  # no streamd SEI before the first slice
    BAD_METADATA = "bad_metadata"  # ours but malformed, or contradicting the unit
    WRONG_CAMERA = "wrong_camera"  # metadata of another camera than the channel's


@dataclass(frozen=True, slots=True)
class Verdict:
    reason: Reason
    meta: UnitMeta | None = None  # set when accepted

    @property
    def ok(self) -> bool:
        return self.reason is Reason.OK

    @property
    def keyframe(self) -> bool:
        return self.meta is not None and self.meta.keyframe


def _plausible(nal: bytes, codec: Codec) -> bool:
    """Header bits a conforming stream of ``codec`` has (forbidden bit 0;
    H.265: base layer, TemporalId + 1 ≥ 1; no unspecified/reserved types)."""
    if nal[0] & 0x80:
        return False
    if codec is Codec.H264:
        kind = nal[0] & 0x1F
        return 1 <= kind <= 12 or kind in (19, 20)
    if len(nal) < 2 or nal[1] & 0x07 == 0 or (nal[0] & 0x01) or (nal[1] & 0xF8):
        return False
    kind = (nal[0] >> 1) & 0x3F
    return kind <= 9 or 16 <= kind <= 21 or 32 <= kind <= 40


def _other(codec: Codec) -> Codec:
    return Codec.H265 if codec is Codec.H264 else Codec.H264


def check_unit(data: bytes, codec: Codec, camera_id: str, max_bytes: int) -> Verdict:
    """Accept ``data`` as one access unit of ``camera_id``'s ``codec`` stream, or say why not."""
    if len(data) > max_bytes:
        return Verdict(Reason.OVERSIZED)
    try:
        return _check(data, codec, camera_id)
    except (AnnexBError, SeiError):
        return Verdict(Reason.GARBAGE)


def _check(data: bytes, codec: Codec, camera_id: str) -> Verdict:
    # One scan of the unit: split_nals stops (AnnexBError: GARBAGE) past MAX_NALS.
    nals = split_nals(data, MAX_NALS)
    if not all(_plausible(n, codec) for n in nals):
        if all(_plausible(n, _other(codec)) for n in nals) and _has_slice(nals, _other(codec)):
            return Verdict(Reason.WRONG_CODEC)
        return Verdict(Reason.GARBAGE)
    if not _has_slice(nals, codec):
        return Verdict(Reason.GARBAGE)
    try:
        meta = find_metadata(nals, codec)
    except SeiError:
        return Verdict(Reason.BAD_METADATA)
    if meta is None:
        # Plausible both ways (an H.265 stream can read as H.264): our SEI for
        # the other codec settles it.
        other = _other(codec)
        if all(_plausible(n, other) for n in nals):
            try:
                if find_metadata(nals, other) is not None:
                    return Verdict(Reason.WRONG_CODEC)
            except (AnnexBError, SeiError):
                pass
        return Verdict(Reason.NO_METADATA)
    if meta.codec is not codec:
        return Verdict(Reason.WRONG_CODEC)
    if meta.camera_id != camera_id:
        return Verdict(Reason.WRONG_CAMERA)
    types = [nal_type(n, codec) for n in nals]
    keyframe = any(is_keyframe_nal(t, codec) for t in types)
    if meta.keyframe != keyframe:
        return Verdict(Reason.BAD_METADATA)
    if keyframe and not set(PARAMETER_SET_TYPES[codec]) <= set(types):
        return Verdict(Reason.MISSING_PARAMETER_SETS)
    return Verdict(Reason.OK, meta)


def _has_slice(nals: list[bytes], codec: Codec) -> bool:
    return any(is_vcl(nal_type(n, codec), codec) for n in nals)
