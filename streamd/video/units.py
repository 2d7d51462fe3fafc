"""The verdict on an access unit read from Redis (``au:{camera_id}``), sans-I/O.

Anyone who can publish to Redis can put bytes on the channel, and a browser's
WebCodecs decoder is the last thing that should meet a hostile bitstream. The
gateway (later) forwards a unit only if ``check_unit`` accepts it, and counts
the others by ``Reason``. It never raises, whatever the bytes.

Accepted: at most ``max_bytes``; Annex-B NAL units with plausible headers for
the camera's codec up to and including the first slice; on a keyframe (an
IDR/IRAP first slice) its parameter sets before that slice; our metadata SEI
before the first slice, for this camera and codec, whose keyframe flag agrees
with the bitstream.

Only the head of a unit is read: the NAL units before its first slice, and
that slice's header. What follows (the slice data, further slices of the
picture, anything a publisher appends) is not scanned: it is opaque to us and
the decoder's business, and scanning it for start codes cost more than the
rest of the gateway's work per unit. A hostile publisher gains nothing from
the gap (it may put the same NAL units before the slice, where they are
checked and accepted if plausible); docs/security.md "Access units" has the
reasoning. The work per unit is bounded by the head (at most ``MAX_NALS`` NAL
units), whatever the unit's size.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from .annexb import (
    PARAMETER_SET_TYPES,
    AnnexBError,
    Codec,
    header_size,
    is_keyframe_nal,
    is_vcl,
    nal_type,
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


_START = b"\x00\x00\x01"


def head_nals(data: bytes, codec: Codec, max_nals: int = MAX_NALS) -> list[bytes]:
    """The NAL units of ``data`` up to its first slice, that slice as its header
    bytes only (its data is not read), as ``annexb.split_nals`` splits them.

    Stops early at a NAL unit implausible for ``codec`` (the last of the list
    then). Raises ``AnnexBError`` like ``split_nals``: no start code first, an
    empty NAL unit, more than ``max_nals`` of them before the first slice."""
    first = data.find(_START)
    if first < 0 or data[:first].strip(b"\x00"):
        raise AnnexBError("no start code")
    size = header_size(codec)
    nals: list[bytes] = []
    start = first + 3
    while True:
        head = data[start : start + size]
        if len(head) == size and _plausible(head, codec) and is_vcl(nal_type(head, codec), codec):
            nals.append(head)  # the first slice: the rest of the unit is opaque
            return nals
        nxt = data.find(_START, start)
        end = len(data) if nxt < 0 else nxt
        nal = data[start:end].rstrip(b"\x00")
        if not nal:
            raise AnnexBError("empty NAL unit")
        nals.append(nal)
        if len(nals) > max_nals:
            raise AnnexBError("too many NAL units")
        if nxt < 0 or not _plausible(nal, codec):
            return nals
        start = nxt + 3


def _check(data: bytes, codec: Codec, camera_id: str) -> Verdict:
    # The head only, at most MAX_NALS NAL units (AnnexBError: GARBAGE). All but
    # its last NAL unit are plausible for ``codec`` (head_nals stops at the first
    # that is not); the last is the first slice, if the unit has one.
    nals = head_nals(data, codec)
    last = nals[-1]
    if not _plausible(last, codec):
        other = _other(codec)
        try:
            theirs = head_nals(data, other)
        except AnnexBError:
            return Verdict(Reason.GARBAGE)
        if _plausible(theirs[-1], other) and _is_slice(theirs[-1], other):
            return Verdict(Reason.WRONG_CODEC)
        return Verdict(Reason.GARBAGE)
    if not _is_slice(last, codec):
        return Verdict(Reason.GARBAGE)
    try:
        meta = find_metadata(nals, codec)
    except SeiError:
        return Verdict(Reason.BAD_METADATA)
    if meta is None:
        # Plausible both ways (an H.265 stream can read as H.264): our SEI for
        # the other codec settles it.
        other = _other(codec)
        try:
            theirs = head_nals(data, other)
            if _plausible(theirs[-1], other) and find_metadata(theirs, other):
                return Verdict(Reason.WRONG_CODEC)
        except (AnnexBError, SeiError):
            pass
        return Verdict(Reason.NO_METADATA)
    if meta.codec is not codec:
        return Verdict(Reason.WRONG_CODEC)
    if meta.camera_id != camera_id:
        return Verdict(Reason.WRONG_CAMERA)
    # All slices of a picture are IDR (H.264 7.4.1.2.4) or of one IRAP type
    # (H.265 7.4.2.4.4) alike: the first tells.
    keyframe = is_keyframe_nal(nal_type(last, codec), codec)
    if meta.keyframe != keyframe:
        return Verdict(Reason.BAD_METADATA)
    if keyframe and not set(PARAMETER_SET_TYPES[codec]) <= {nal_type(n, codec) for n in nals}:
        return Verdict(Reason.MISSING_PARAMETER_SETS)
    return Verdict(Reason.OK, meta)


def _is_slice(nal: bytes, codec: Codec) -> bool:
    return is_vcl(nal_type(nal, codec), codec)
