"""The H.264 no-reorder rewrite and its decision (H.264 E.1.1, E.2.1), sans-I/O.

Why: without VUI ``bitstream_restriction``, a decoder must assume pictures may
be reordered and can hold up to a full DPB (16 frames in Chrome's hardware
path) before showing the first one. A camera without B-frames never reorders;
saying so (``max_num_reorder_frames = 0``) lets WebCodecs output each frame as
soon as it is decoded. Streams that may reorder are left alone: lying there
would show frames out of order. Parsing and serializing the SPS is ``sps``.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Iterable

from .annexb import AnnexBError
from .sps import BASELINE, BitstreamRestriction, Sps, Vui, parse_nal, serialize_nal

# What WebRTC's SPS VUI rewriter writes when it adds bitstream_restriction to
# an SPS without one: the values a decoder would otherwise infer, in effect.
_DEFAULT_RESTRICTION = BitstreamRestriction(
    motion_vectors_over_pic_boundaries=True,
    max_bytes_per_pic_denom=2,
    max_bits_per_mb_denom=1,
    log2_max_mv_length_horizontal=16,
    log2_max_mv_length_vertical=16,
    max_num_reorder_frames=0,
    max_dec_frame_buffering=1,
)


def without_reorder_delay(sps: Sps) -> Sps:
    """``sps`` saying: no reordering, a minimal DPB.

    ``max_dec_frame_buffering`` is ``max(1, max_num_ref_frames)`` rather than
    always 1: the standard requires it to be at least ``max_num_ref_frames``
    (E.2.1), and with no reordering a decoder outputs every frame at once
    whatever its DPB size, so 1 would gain nothing and make the stream invalid.
    """
    restriction = dataclasses.replace(
        (sps.vui and sps.vui.restriction) or _DEFAULT_RESTRICTION,
        max_num_reorder_frames=0,
        max_dec_frame_buffering=max(1, sps.max_num_ref_frames),
    )
    vui = dataclasses.replace(sps.vui or Vui(), restriction=restriction)
    return dataclasses.replace(sps, vui=vui)


class Reorder(enum.StrEnum):
    REWRITE = "rewrite"  # no reordering possible or seen: rewrite the SPS
    ALREADY = "already"  # the SPS already says max_num_reorder_frames = 0
    KEEP = "keep"  # the stream may reorder (B-frames): leave it alone
    UNDECIDED = "undecided"  # main/high without a verdict yet: observe PTS/DTS


def reorder_decision(sps: Sps, reordering_seen: bool | None) -> Reorder:
    """Whether to rewrite ``sps``. ``reordering_seen``: None before the caller
    observed a GOP, else whether PTS order differed from decode order in it."""
    restriction = sps.vui.restriction if sps.vui else None
    if restriction is not None:
        # The encoder stated its reordering; trust it either way.
        return Reorder.ALREADY if restriction.max_num_reorder_frames == 0 else Reorder.KEEP
    if sps.profile_idc == BASELINE:
        return Reorder.REWRITE  # baseline has no B slices
    if sps.pic_order_cnt_type == 2:
        return Reorder.REWRITE  # output order is decoding order (8.2.1.3)
    if reordering_seen is None:
        return Reorder.UNDECIDED
    return Reorder.KEEP if reordering_seen else Reorder.REWRITE


def pts_reordered(pts_in_decode_order: Iterable[int]) -> bool:
    """True if some picture is presented before one decoded earlier (B-frames)."""
    highest: int | None = None
    for pts in pts_in_decode_order:
        if highest is not None and pts < highest:
            return True
        highest = pts if highest is None else max(highest, pts)
    return False


def rewrite_nal(nal: bytes) -> bytes:
    """The SPS NAL unit without reorder delay; raises ``SpsError``/``AnnexBError``
    if it does not parse (the caller then keeps the original)."""
    if not nal:
        raise AnnexBError("empty NAL unit")
    return serialize_nal(without_reorder_delay(parse_nal(nal)), nal[0])
