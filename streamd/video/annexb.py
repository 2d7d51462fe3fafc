"""Annex-B access units (ITU-T H.264 Annex B, H.265 Annex B), sans-I/O.

An access unit here is the bytes of one picture: NAL units, each after a start
code. We write 4-byte start codes (``00 00 00 01``) and read both 3- and 4-byte
ones. A NAL unit never ends in ``00`` (rbsp_trailing_bits end in a 1 bit and a
final cabac_zero_word gets an emulation-prevention ``03``), so zero bytes before
a start code are trailing_zero_8bits / the 4-byte form's leading zero and are
dropped when splitting.

Everything that takes bytes from outside raises ``AnnexBError`` (a ValueError)
on malformed input, never anything else.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from streamd.errors import StreamdError

START_CODE = b"\x00\x00\x00\x01"
_SHORT_START = b"\x00\x00\x01"


class AnnexBError(StreamdError, ValueError):
    """Bytes that are not what the function was promised."""


class Codec(enum.StrEnum):
    H264 = "h264"
    H265 = "h265"


# H.264 nal_unit_type (Table 7-1).
H264_SLICE = 1
H264_IDR = 5
H264_SEI = 6
H264_SPS = 7
H264_PPS = 8
H264_AUD = 9
# H.265 nal_unit_type (Table 7-1).
H265_IRAP_FIRST = 16  # BLA_W_LP
H265_IRAP_LAST = 23  # RSV_IRAP_VCL23
H265_VPS = 32
H265_SPS = 33
H265_PPS = 34
H265_AUD = 35
H265_PREFIX_SEI = 39

# The parameter-set types a keyframe needs, in the order they are sent.
PARAMETER_SET_TYPES: dict[Codec, tuple[int, ...]] = {
    Codec.H264: (H264_SPS, H264_PPS),
    Codec.H265: (H265_VPS, H265_SPS, H265_PPS),
}
AUD_TYPE = {Codec.H264: H264_AUD, Codec.H265: H265_AUD}


def header_size(codec: Codec) -> int:
    return 1 if codec is Codec.H264 else 2


# -- splitting and joining ---------------------------------------------------


def split_nals(data: bytes, max_nals: int | None = None) -> list[bytes]:
    """The NAL units of an Annex-B byte stream, without start codes.

    The stream must begin with a start code (after optional leading zero bytes);
    empty NAL units (two start codes in a row) are an error, and so are more
    than ``max_nals`` (checked as it goes: a hostile stream of start codes
    costs no more than ``max_nals`` of them).
    """
    first = data.find(_SHORT_START)
    if first < 0 or data[:first].strip(b"\x00"):
        raise AnnexBError("no start code")
    nals: list[bytes] = []
    start = first + 3
    while True:
        nxt = data.find(_SHORT_START, start)
        end = len(data) if nxt < 0 else nxt
        nal = data[start:end].rstrip(b"\x00")
        if not nal:
            raise AnnexBError("empty NAL unit")
        nals.append(nal)
        if max_nals is not None and len(nals) > max_nals:
            raise AnnexBError("too many NAL units")
        if nxt < 0:
            return nals
        start = nxt + 3


def join_nals(nals: Iterable[bytes]) -> bytes:
    """An Annex-B byte stream: each NAL unit after a 4-byte start code."""
    parts: list[bytes] = []
    for nal in nals:
        if not nal:
            raise AnnexBError("empty NAL unit")
        parts += (START_CODE, nal)
    return b"".join(parts)


# -- emulation prevention (7.4.1) -------------------------------------------


def unescape(ebsp: bytes) -> bytes:
    """Remove emulation-prevention bytes: ``00 00 03`` → ``00 00`` (NAL payload → RBSP)."""
    out = bytearray()
    pos = 0
    while True:
        hit = ebsp.find(b"\x00\x00\x03", pos)
        if hit < 0:
            out += ebsp[pos:]
            return bytes(out)
        out += ebsp[pos : hit + 2]
        pos = hit + 3


def escape(rbsp: bytes) -> bytes:
    """Insert emulation-prevention bytes so no ``00 00 0x`` (x ≤ 3) appears,
    and none at the very end (RBSP → NAL payload)."""
    if b"\x00\x00" not in rbsp:
        return rbsp
    out = bytearray()
    zeros = 0
    for byte in rbsp:
        if zeros >= 2 and byte <= 3:
            out.append(3)
            zeros = 0
        out.append(byte)
        zeros = zeros + 1 if byte == 0 else 0
    if zeros >= 2:  # an RBSP ending in 00 00 (cabac_zero_words)
        out.append(3)
    return bytes(out)


# -- NAL headers -------------------------------------------------------------


def nal_type(nal: bytes, codec: Codec) -> int:
    if len(nal) < header_size(codec):
        raise AnnexBError("NAL unit shorter than its header")
    if codec is Codec.H264:
        return nal[0] & 0x1F
    return (nal[0] >> 1) & 0x3F


def is_vcl(kind: int, codec: Codec) -> bool:
    """A NAL type that carries picture data (a slice)."""
    if codec is Codec.H264:
        return 1 <= kind <= 5
    return kind <= 31


def is_keyframe_nal(kind: int, codec: Codec) -> bool:
    """IDR (H.264) or IRAP (H.265: BLA, IDR, CRA): decoding can start here."""
    if codec is Codec.H264:
        return kind == H264_IDR
    return H265_IRAP_FIRST <= kind <= H265_IRAP_LAST


def is_keyframe(nals: Sequence[bytes], codec: Codec) -> bool:
    return any(is_keyframe_nal(nal_type(n, codec), codec) for n in nals)


def parameter_sets(nals: Iterable[bytes], codec: Codec) -> dict[int, bytes]:
    """The last parameter set of each type among ``nals`` (type → NAL unit)."""
    wanted = PARAMETER_SET_TYPES[codec]
    found: dict[int, bytes] = {}
    for nal in nals:
        kind = nal_type(nal, codec)
        if kind in wanted:
            found[kind] = nal
    return found


def has_parameter_sets(nals: Sequence[bytes], codec: Codec) -> bool:
    return set(PARAMETER_SET_TYPES[codec]) <= {nal_type(n, codec) for n in nals}


class ParameterSets:
    """The newest parameter sets of a stream, as seen in-band or in extradata.

    One per type: cameras send a single SPS/PPS (id 0). A stream using several
    ids would need them keyed by id; ``units`` then still refuses a keyframe
    whose own parameter sets are missing, so the gap is visible, not silent.
    """

    def __init__(self, codec: Codec) -> None:
        self.codec = codec
        self._sets: dict[int, bytes] = {}

    def update(self, nals: Iterable[bytes]) -> None:
        self._sets.update(parameter_sets(nals, self.codec))

    def complete(self) -> bool:
        return all(kind in self._sets for kind in PARAMETER_SET_TYPES[self.codec])

    def nals(self) -> list[bytes]:
        return [self._sets[k] for k in PARAMETER_SET_TYPES[self.codec] if k in self._sets]

    def get(self, kind: int) -> bytes | None:
        return self._sets.get(kind)

    def replace(self, kind: int, nal: bytes) -> None:
        if kind not in PARAMETER_SET_TYPES[self.codec]:
            raise ValueError(f"{kind} is not a parameter set type")
        self._sets[kind] = nal


def with_parameter_sets(nals: Sequence[bytes], codec: Codec, sets: Sequence[bytes]) -> list[bytes]:
    """The unit's NAL units with ``sets`` on a keyframe: the in-band parameter
    sets are replaced by ``sets`` (one source of truth, e.g. a rewritten SPS),
    inserted after an access unit delimiter if there is one (it must stay
    first). A non-keyframe, or no ``sets``, leaves the unit unchanged."""
    if not sets or not is_keyframe(nals, codec):
        return list(nals)
    wanted = PARAMETER_SET_TYPES[codec]
    rest = [n for n in nals if nal_type(n, codec) not in wanted]
    at = 1 if rest and nal_type(rest[0], codec) == AUD_TYPE[codec] else 0
    return [*rest[:at], *sets, *rest[at:]]


# -- length-prefixed (MP4/Matroska) framing and extradata ---------------------


def split_length_prefixed(data: bytes, length_size: int = 4) -> list[bytes]:
    """NAL units of a length-prefixed sample (avcC/hvcC framing)."""
    if length_size not in (1, 2, 4):
        raise AnnexBError(f"bad NAL length size {length_size}")
    nals: list[bytes] = []
    pos = 0
    while pos < len(data):
        if pos + length_size > len(data):
            raise AnnexBError("truncated NAL length")
        size = int.from_bytes(data[pos : pos + length_size], "big")
        pos += length_size
        if size == 0 or pos + size > len(data):
            raise AnnexBError("bad NAL length")
        nals.append(data[pos : pos + size])
        pos += size
    if not nals:
        raise AnnexBError("empty sample")
    return nals


@dataclass(frozen=True, slots=True)
class Extradata:
    """What a container's codec extradata says: the parameter sets and, for
    avcC/hvcC, the NAL length size of its samples (None: samples are Annex-B)."""

    parameter_sets: list[bytes]
    length_size: int | None


def _read_u16_blocks(data: bytes, pos: int, count: int) -> tuple[list[bytes], int]:
    out: list[bytes] = []
    for _ in range(count):
        if pos + 2 > len(data):
            raise AnnexBError("truncated extradata")
        size = int.from_bytes(data[pos : pos + 2], "big")
        pos += 2
        if size == 0 or pos + size > len(data):
            raise AnnexBError("truncated extradata")
        out.append(data[pos : pos + size])
        pos += size
    return out, pos


def parse_avcc(data: bytes) -> Extradata:
    """AVCDecoderConfigurationRecord (ISO/IEC 14496-15 5.3.3.1)."""
    if len(data) < 7 or data[0] != 1:
        raise AnnexBError("not an avcC record")
    length_size = (data[4] & 0x03) + 1
    sps, pos = _read_u16_blocks(data, 6, data[5] & 0x1F)
    if pos >= len(data):
        raise AnnexBError("truncated extradata")
    pps, _ = _read_u16_blocks(data, pos + 1, data[pos])
    if length_size == 3:
        raise AnnexBError("bad NAL length size 3")
    return Extradata(sps + pps, length_size)


def parse_hvcc(data: bytes) -> Extradata:
    """HEVCDecoderConfigurationRecord (ISO/IEC 14496-15 8.3.3.1)."""
    if len(data) < 23 or data[0] != 1:
        raise AnnexBError("not an hvcC record")
    length_size = (data[21] & 0x03) + 1
    if length_size == 3:
        raise AnnexBError("bad NAL length size 3")
    nals: list[bytes] = []
    pos = 23
    for _ in range(data[22]):
        if pos + 3 > len(data):
            raise AnnexBError("truncated extradata")
        count = int.from_bytes(data[pos + 1 : pos + 3], "big")
        block, pos = _read_u16_blocks(data, pos + 3, count)
        nals += block
    # hvcC may also hold declarative SEI (x265's settings): not parameter sets.
    wanted = PARAMETER_SET_TYPES[Codec.H265]
    return Extradata([n for n in nals if nal_type(n, Codec.H265) in wanted], length_size)


def parse_extradata(data: bytes, codec: Codec) -> Extradata:
    """Extradata as PyAV gives it: avcC/hvcC (MP4, Matroska) or Annex-B (RTSP
    sprop-parameter-sets, raw streams, MPEG-TS)."""
    if data.startswith(_SHORT_START) or data.startswith(START_CODE):
        return Extradata(split_nals(data), None)
    return parse_avcc(data) if codec is Codec.H264 else parse_hvcc(data)


def to_annexb(sample: bytes, length_size: int | None) -> bytes:
    """A container sample as an Annex-B access unit."""
    if length_size is None:
        return sample
    return join_nals(split_length_prefixed(sample, length_size))
