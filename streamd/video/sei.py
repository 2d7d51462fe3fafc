"""streamd's metadata in an SEI ``user_data_unregistered`` NAL unit, sans-I/O.

The metadata rides inside the bitstream, so an access unit stays one opaque
byte string end to end (like the COM segment of our JPEGs) and any decoder
skips it: SEI payload type 5 is user data identified by a UUID (H.264 D.1.7,
H.265 D.2.7). H.264 uses an SEI NAL (type 6), H.265 a prefix SEI (type 39).

Payload after the 16-byte UUID ``STREAMD_UUID``::

    version     u8   METADATA_VERSION
    flags       u8   bit 0: keyframe
    codec       u8   1 = H.264, 2 = H.265
    seq         u64  per-child unit counter, big-endian
    capture_ns  u64  CLOCK_REALTIME ns when the unit was read from the camera
    id_len      u8   1..64
    camera_id   id_len bytes, ASCII, CAMERA_ID_PATTERN

At most 16 + 84 bytes, so payload_size is always one byte. There is no
publish time (the JPEG path has one): stamping it at send time would mean
re-escaping the NAL in the publisher.
"""

from __future__ import annotations

import struct
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from streamd.config.model import CAMERA_ID_PATTERN
from streamd.errors import StreamdError

from .annexb import AnnexBError, Codec, escape, is_vcl, nal_type, unescape

# Fixed forever (a uuid4 drawn once for streamd): the key that tells our SEI
# from any other user data a camera puts in its stream.
STREAMD_UUID = uuid.UUID("e3913ec9-2473-427a-a6f6-e8af4ed47527")
METADATA_VERSION = 1
USER_DATA_UNREGISTERED = 5
_FIXED = struct.Struct(">BBBQQB")
_CODEC_BYTE = {Codec.H264: 1, Codec.H265: 2}
_BYTE_CODEC = {v: k for k, v in _CODEC_BYTE.items()}
_HEADER = {Codec.H264: b"\x06", Codec.H265: b"\x4e\x01"}  # nal_ref_idc 0 / layer 0, tid 1
MAX_PAYLOAD = 16 + _FIXED.size + 64


class SeiError(StreamdError, ValueError):
    """An SEI NAL unit that does not parse, or our metadata that is malformed."""


@dataclass(frozen=True, slots=True)
class UnitMeta:
    camera_id: str
    seq: int
    capture_ns: int
    keyframe: bool
    codec: Codec


def pack_payload(meta: UnitMeta) -> bytes:
    cam = meta.camera_id.encode("ascii")
    if not CAMERA_ID_PATTERN.fullmatch(meta.camera_id):
        raise ValueError(f"invalid camera id {meta.camera_id!r}")
    fixed = _FIXED.pack(
        METADATA_VERSION,
        int(meta.keyframe),
        _CODEC_BYTE[meta.codec],
        meta.seq,
        meta.capture_ns,
        len(cam),
    )
    return STREAMD_UUID.bytes + fixed + cam


def parse_payload(payload: bytes) -> UnitMeta:
    """Our user data (UUID included); raises ``SeiError``."""
    if len(payload) < 16 + _FIXED.size or payload[:16] != STREAMD_UUID.bytes:
        raise SeiError("not streamd metadata")
    version, flags, codec, seq, capture_ns, id_len = _FIXED.unpack_from(payload, 16)
    if version != METADATA_VERSION:
        raise SeiError("unsupported metadata version")
    if codec not in _BYTE_CODEC or flags & ~1:
        raise SeiError("bad metadata")
    start = 16 + _FIXED.size
    if len(payload) != start + id_len:
        raise SeiError("bad metadata length")
    try:
        camera_id = payload[start:].decode("ascii")
    except UnicodeDecodeError:
        raise SeiError("bad camera id") from None
    if not CAMERA_ID_PATTERN.fullmatch(camera_id):
        raise SeiError("bad camera id")
    return UnitMeta(camera_id, seq, capture_ns, bool(flags & 1), _BYTE_CODEC[codec])


def _ff_coded(value: int) -> bytes:
    """payload_type / payload_size coding: 0xFF per 255, then the rest."""
    return b"\xff" * (value // 255) + bytes((value % 255,))


def sei_nal(codec: Codec, payload_type: int, payload: bytes) -> bytes:
    """One SEI NAL unit holding one message (escaped, with rbsp_trailing_bits)."""
    rbsp = _ff_coded(payload_type) + _ff_coded(len(payload)) + payload + b"\x80"
    return _HEADER[codec] + escape(rbsp)


def metadata_nal(meta: UnitMeta) -> bytes:
    return sei_nal(meta.codec, USER_DATA_UNREGISTERED, pack_payload(meta))


def sei_messages(nal: bytes, codec: Codec) -> list[tuple[int, bytes]]:
    """(payload_type, payload) of each message of an SEI NAL unit."""
    head = 1 if codec is Codec.H264 else 2
    rbsp = unescape(nal[head:])
    messages: list[tuple[int, bytes]] = []
    pos = 0
    # more_rbsp_data(): anything left before the final 0x80 byte.
    while pos < len(rbsp) and rbsp[pos:] != b"\x80":
        values = []
        for _ in range(2):
            value = 0
            while pos < len(rbsp) and rbsp[pos] == 0xFF:
                value += 255
                pos += 1
            if pos >= len(rbsp):
                raise SeiError("truncated SEI message")
            values.append(value + rbsp[pos])
            pos += 1
        kind, size = values
        if pos + size > len(rbsp):
            raise SeiError("truncated SEI message")
        messages.append((kind, rbsp[pos : pos + size]))
        pos += size
    if pos >= len(rbsp):
        raise SeiError("SEI without rbsp_trailing_bits")
    return messages


def is_sei(nal: bytes, codec: Codec) -> bool:
    try:
        kind = nal_type(nal, codec)
    except AnnexBError:
        return False
    return kind == (6 if codec is Codec.H264 else 39)


def find_metadata(nals: Sequence[bytes], codec: Codec) -> UnitMeta | None:
    """Our metadata from the SEI NAL units before the first slice, or None.
    Raises ``SeiError`` if our UUID is there with a malformed payload, or an
    SEI NAL unit is malformed."""
    for nal in nals:
        kind = nal_type(nal, codec)
        if is_vcl(kind, codec):
            return None
        if not is_sei(nal, codec):
            continue
        for payload_type, payload in sei_messages(nal, codec):
            if payload_type == USER_DATA_UNREGISTERED and payload[:16] == STREAMD_UUID.bytes:
                return parse_payload(payload)
    return None


def insert_metadata(nals: Sequence[bytes], meta: UnitMeta) -> list[bytes]:
    """The unit with our SEI right before its first slice: after any parameter
    sets and the camera's own SEI (a buffering-period SEI must stay first)."""
    for index, nal in enumerate(nals):
        if is_vcl(nal_type(nal, meta.codec), meta.codec):
            return [*nals[:index], metadata_nal(meta), *nals[index:]]
    raise SeiError("access unit without a slice")
