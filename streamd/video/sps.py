"""H.264 sequence parameter set: parse and serialize (H.264 7.3.2.1.1, E.1.1),
sans-I/O. The rewrite that tells a decoder there is no frame reordering, and
when to make it, is ``reorder``.

Every field is kept as read (scaling lists as their raw deltas), so
``serialize(parse(x)) == x`` for any SPS we parse: a rewrite changes only the
VUI bits it means to.
"""

from __future__ import annotations

from dataclasses import dataclass

from .annexb import H264_SPS, escape, unescape
from .bits import BitReader, BitstreamError, BitWriter

# Profiles whose SPS carries chroma format, bit depths and scaling lists.
HIGH_PROFILES = frozenset({100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135})
BASELINE = 66
EXTENDED_SAR = 255


class SpsError(BitstreamError):
    """An SPS we cannot parse (then it is passed on untouched)."""


@dataclass(frozen=True, slots=True)
class Hrd:
    bit_rate_scale: int
    cpb_size_scale: int
    # (bit_rate_value_minus1, cpb_size_value_minus1, cbr_flag) per CPB, 1..32
    cpbs: tuple[tuple[int, int, bool], ...]
    initial_cpb_removal_delay_length_minus1: int
    cpb_removal_delay_length_minus1: int
    dpb_output_delay_length_minus1: int
    time_offset_length: int


@dataclass(frozen=True, slots=True)
class BitstreamRestriction:
    motion_vectors_over_pic_boundaries: bool
    max_bytes_per_pic_denom: int
    max_bits_per_mb_denom: int
    log2_max_mv_length_horizontal: int
    log2_max_mv_length_vertical: int
    max_num_reorder_frames: int
    max_dec_frame_buffering: int


@dataclass(frozen=True, slots=True)
class VideoSignal:
    video_format: int
    full_range: bool
    # (colour_primaries, transfer_characteristics, matrix_coefficients)
    colour: tuple[int, int, int] | None


@dataclass(frozen=True, slots=True)
class Timing:
    num_units_in_tick: int
    time_scale: int
    fixed_frame_rate: bool


@dataclass(frozen=True, slots=True)
class Vui:
    """None for an absent optional part (its present flag is 0)."""

    aspect_ratio_idc: int | None = None
    sar: tuple[int, int] | None = None  # only with aspect_ratio_idc == 255
    overscan_appropriate: bool | None = None
    video_signal: VideoSignal | None = None
    chroma_loc: tuple[int, int] | None = None
    timing: Timing | None = None
    nal_hrd: Hrd | None = None
    vcl_hrd: Hrd | None = None
    low_delay_hrd: bool = False  # coded only when there is an HRD
    pic_struct_present: bool = False
    restriction: BitstreamRestriction | None = None


@dataclass(frozen=True, slots=True)
class HighProfileInfo:
    chroma_format_idc: int
    separate_colour_plane: bool  # coded only with chroma_format_idc == 3
    bit_depth_luma_minus8: int
    bit_depth_chroma_minus8: int
    qpprime_y_zero_transform_bypass: bool
    # None: seq_scaling_matrix_present_flag = 0. Else one entry per list (8, or
    # 12 for 4:4:4): None if not present, else its delta_scale values as coded.
    scaling_lists: tuple[tuple[int, ...] | None, ...] | None


@dataclass(frozen=True, slots=True)
class PocType1:
    delta_pic_order_always_zero: bool
    offset_for_non_ref_pic: int
    offset_for_top_to_bottom_field: int
    offsets_for_ref_frame: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Sps:
    profile_idc: int
    constraint_flags: int  # constraint_set0..5 and reserved_zero_2bits, as one byte
    level_idc: int
    sps_id: int
    high: HighProfileInfo | None
    log2_max_frame_num_minus4: int
    pic_order_cnt_type: int
    log2_max_poc_lsb_minus4: int | None  # poc type 0
    poc_type1: PocType1 | None
    max_num_ref_frames: int
    gaps_in_frame_num_allowed: bool
    pic_width_in_mbs_minus1: int
    pic_height_in_map_units_minus1: int
    frame_mbs_only: bool
    mb_adaptive_frame_field: bool  # coded only without frame_mbs_only
    direct_8x8_inference: bool
    cropping: tuple[int, int, int, int] | None  # left, right, top, bottom offsets
    vui: Vui | None


# -- parsing -----------------------------------------------------------------


def _ue(r: BitReader, limit: int) -> int:
    value = r.ue()
    if value > limit:
        raise SpsError(f"value {value} above {limit}")
    return value


def _scaling_list(r: BitReader, size: int) -> tuple[int, ...]:
    deltas: list[int] = []
    last = 8
    for _ in range(size):
        delta = r.se()
        if not -128 <= delta <= 127:
            raise SpsError("delta_scale out of range")
        deltas.append(delta)
        nxt = (last + delta + 256) % 256
        if nxt == 0:  # the rest of the list repeats the last scale: not coded
            break
        last = nxt
    return tuple(deltas)


def _hrd(r: BitReader) -> Hrd:
    count = _ue(r, 31) + 1
    bit_rate_scale, cpb_size_scale = r.u(4), r.u(4)
    cpbs = tuple((r.ue(), r.ue(), r.flag()) for _ in range(count))
    return Hrd(bit_rate_scale, cpb_size_scale, cpbs, r.u(5), r.u(5), r.u(5), r.u(5))


def _vui(r: BitReader) -> Vui:
    aspect = sar = None
    if r.flag():
        aspect = r.u(8)
        if aspect == EXTENDED_SAR:
            sar = (r.u(16), r.u(16))
    overscan = r.flag() if r.flag() else None
    signal = None
    if r.flag():
        fmt, full = r.u(3), r.flag()
        colour = (r.u(8), r.u(8), r.u(8)) if r.flag() else None
        signal = VideoSignal(fmt, full, colour)
    chroma_loc = (_ue(r, 5), _ue(r, 5)) if r.flag() else None
    timing = Timing(r.u(32), r.u(32), r.flag()) if r.flag() else None
    nal_hrd = _hrd(r) if r.flag() else None
    vcl_hrd = _hrd(r) if r.flag() else None
    low_delay = r.flag() if nal_hrd or vcl_hrd else False
    pic_struct = r.flag()
    restriction = None
    if r.flag():
        restriction = BitstreamRestriction(
            r.flag(), _ue(r, 16), _ue(r, 16), _ue(r, 16), _ue(r, 16), _ue(r, 16), _ue(r, 16)
        )
    return Vui(
        aspect, sar, overscan, signal, chroma_loc, timing, nal_hrd, vcl_hrd, low_delay,
        pic_struct, restriction,
    )  # fmt: skip


def parse_rbsp(rbsp: bytes) -> Sps:
    """An SPS from its RBSP (after the NAL header, emulation prevention removed)."""
    r = BitReader(rbsp)
    profile, constraints, level = r.u(8), r.u(8), r.u(8)
    sps_id = _ue(r, 31)
    high = None
    if profile in HIGH_PROFILES:
        chroma = _ue(r, 3)
        separate = r.flag() if chroma == 3 else False
        depth_luma, depth_chroma = _ue(r, 6), _ue(r, 6)
        bypass = r.flag()
        lists = None
        if r.flag():
            lists = tuple(
                (_scaling_list(r, 16 if i < 6 else 64) if r.flag() else None)
                for i in range(8 if chroma != 3 else 12)
            )
        high = HighProfileInfo(chroma, separate, depth_luma, depth_chroma, bypass, lists)
    log2_frame_num = _ue(r, 12)
    poc_type = _ue(r, 2)
    poc_lsb = _ue(r, 12) if poc_type == 0 else None
    poc1 = None
    if poc_type == 1:
        always_zero, non_ref, top_bottom = r.flag(), r.se(), r.se()
        cycle = _ue(r, 255)
        poc1 = PocType1(always_zero, non_ref, top_bottom, tuple(r.se() for _ in range(cycle)))
    max_refs = _ue(r, 16)
    gaps = r.flag()
    width, height = r.ue(), r.ue()
    frame_mbs_only = r.flag()
    mbaff = r.flag() if not frame_mbs_only else False
    direct = r.flag()
    cropping = (r.ue(), r.ue(), r.ue(), r.ue()) if r.flag() else None
    vui = _vui(r) if r.flag() else None
    r.trailing_bits()
    return Sps(
        profile, constraints, level, sps_id, high, log2_frame_num, poc_type, poc_lsb, poc1,
        max_refs, gaps, width, height, frame_mbs_only, mbaff, direct, cropping, vui,
    )  # fmt: skip


def parse_nal(nal: bytes) -> Sps:
    """An SPS NAL unit (header included, as split from Annex-B)."""
    if not nal or nal[0] & 0x9F != H264_SPS:  # forbidden bit 0, type 7
        raise SpsError("not an H.264 SPS NAL unit")
    return parse_rbsp(unescape(nal[1:]))


# -- serializing -------------------------------------------------------------


def _write_hrd(w: BitWriter, hrd: Hrd) -> None:
    w.ue(len(hrd.cpbs) - 1)
    w.u(4, hrd.bit_rate_scale)
    w.u(4, hrd.cpb_size_scale)
    for bit_rate, cpb_size, cbr in hrd.cpbs:
        w.ue(bit_rate)
        w.ue(cpb_size)
        w.flag(cbr)
    w.u(5, hrd.initial_cpb_removal_delay_length_minus1)
    w.u(5, hrd.cpb_removal_delay_length_minus1)
    w.u(5, hrd.dpb_output_delay_length_minus1)
    w.u(5, hrd.time_offset_length)


def _write_vui(w: BitWriter, v: Vui) -> None:
    w.flag(v.aspect_ratio_idc is not None)
    if v.aspect_ratio_idc is not None:
        w.u(8, v.aspect_ratio_idc)
        if v.aspect_ratio_idc == EXTENDED_SAR:
            sar = v.sar or (0, 0)
            w.u(16, sar[0])
            w.u(16, sar[1])
    w.flag(v.overscan_appropriate is not None)
    if v.overscan_appropriate is not None:
        w.flag(v.overscan_appropriate)
    w.flag(v.video_signal is not None)
    if v.video_signal is not None:
        w.u(3, v.video_signal.video_format)
        w.flag(v.video_signal.full_range)
        w.flag(v.video_signal.colour is not None)
        for value in v.video_signal.colour or ():
            w.u(8, value)
    w.flag(v.chroma_loc is not None)
    for value in v.chroma_loc or ():
        w.ue(value)
    w.flag(v.timing is not None)
    if v.timing is not None:
        w.u(32, v.timing.num_units_in_tick)
        w.u(32, v.timing.time_scale)
        w.flag(v.timing.fixed_frame_rate)
    for hrd in (v.nal_hrd, v.vcl_hrd):
        w.flag(hrd is not None)
        if hrd is not None:
            _write_hrd(w, hrd)
    if v.nal_hrd or v.vcl_hrd:
        w.flag(v.low_delay_hrd)
    w.flag(v.pic_struct_present)
    w.flag(v.restriction is not None)
    if (b := v.restriction) is not None:
        w.flag(b.motion_vectors_over_pic_boundaries)
        for value in (
            b.max_bytes_per_pic_denom,
            b.max_bits_per_mb_denom,
            b.log2_max_mv_length_horizontal,
            b.log2_max_mv_length_vertical,
            b.max_num_reorder_frames,
            b.max_dec_frame_buffering,
        ):
            w.ue(value)


def serialize_rbsp(sps: Sps) -> bytes:
    w = BitWriter()
    w.u(8, sps.profile_idc)
    w.u(8, sps.constraint_flags)
    w.u(8, sps.level_idc)
    w.ue(sps.sps_id)
    if sps.profile_idc in HIGH_PROFILES:
        h = sps.high
        if h is None:
            raise ValueError("a high-profile SPS needs HighProfileInfo")
        w.ue(h.chroma_format_idc)
        if h.chroma_format_idc == 3:
            w.flag(h.separate_colour_plane)
        w.ue(h.bit_depth_luma_minus8)
        w.ue(h.bit_depth_chroma_minus8)
        w.flag(h.qpprime_y_zero_transform_bypass)
        w.flag(h.scaling_lists is not None)
        for deltas in h.scaling_lists or ():
            w.flag(deltas is not None)
            for delta in deltas or ():
                w.se(delta)
    w.ue(sps.log2_max_frame_num_minus4)
    w.ue(sps.pic_order_cnt_type)
    if sps.pic_order_cnt_type == 0:
        w.ue(sps.log2_max_poc_lsb_minus4 or 0)
    elif sps.pic_order_cnt_type == 1:
        p = sps.poc_type1 or PocType1(False, 0, 0, ())
        w.flag(p.delta_pic_order_always_zero)
        w.se(p.offset_for_non_ref_pic)
        w.se(p.offset_for_top_to_bottom_field)
        w.ue(len(p.offsets_for_ref_frame))
        for offset in p.offsets_for_ref_frame:
            w.se(offset)
    w.ue(sps.max_num_ref_frames)
    w.flag(sps.gaps_in_frame_num_allowed)
    w.ue(sps.pic_width_in_mbs_minus1)
    w.ue(sps.pic_height_in_map_units_minus1)
    w.flag(sps.frame_mbs_only)
    if not sps.frame_mbs_only:
        w.flag(sps.mb_adaptive_frame_field)
    w.flag(sps.direct_8x8_inference)
    w.flag(sps.cropping is not None)
    for offset in sps.cropping or ():
        w.ue(offset)
    w.flag(sps.vui is not None)
    if sps.vui is not None:
        _write_vui(w, sps.vui)
    return w.rbsp()


def serialize_nal(sps: Sps, header: int = 0x67) -> bytes:
    """An SPS NAL unit; ``header`` keeps the original nal_ref_idc (0x67: 3)."""
    return bytes((header,)) + escape(serialize_rbsp(sps))
