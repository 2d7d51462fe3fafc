"""The frame wire format (sans-I/O): a complete JPEG with streamd metadata in a
COM (0xFFFE) segment right after SOI.

Layout of the payload published to ``{prefix}{camera_id}``::

    FF D8                      SOI
    FF FE LL LL                COM marker, big-endian length (includes these 2 bytes)
      "STRMD"                  magic (5 bytes)
      version    u8            FORMAT_VERSION
      id_len     u8            length of the camera id
      camera_id  id_len bytes  ASCII
      seq        u64           per-child frame counter
      capture_ns u64           CLOCK_REALTIME ns when the frame was captured
      publish_ns u64           CLOCK_REALTIME ns when it left the publisher
      width      u16
      height     u16
    <the rest of the JPEG, from its first marker after SOI>

Decoders skip COM segments, so old consumers that expect raw JPEG bytes keep
working. A plain JPEG without our segment is accepted with ``meta=None``.
Everything arriving here is untrusted: ``parse_frame`` raises ``FrameError`` with
a short machine-usable reason instead of crashing.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from streamd.errors import StreamdError

FORMAT_VERSION = 1
MAGIC = b"STRMD"
SOI = b"\xff\xd8"
COM = b"\xff\xfe"
_TAIL = struct.Struct(">QQQHH")
_HEAD_FIXED = len(MAGIC) + 2  # magic + version + id_len


class FrameError(StreamdError, ValueError):
    """A payload that is not a frame we accept; ``reason`` is a metrics label."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class FrameMeta:
    camera_id: str
    seq: int
    capture_ns: int
    publish_ns: int
    width: int
    height: int


@dataclass(frozen=True, slots=True)
class EncodedFrame:
    """A frame the child encoded, on its way out (capture → publisher queue)."""

    meta: FrameMeta  # publish_ns is filled in when the frame leaves the queue
    jpeg: bytes
    queued_at: float  # time.monotonic() at submit, for publish latency


@dataclass(frozen=True, slots=True)
class ParsedFrame:
    payload: bytes  # the complete JPEG as received, forwarded to viewers untouched
    meta: FrameMeta | None


def metadata_prefix(meta: FrameMeta, publish_ns: int) -> bytes:
    """SOI and the metadata segment: what goes before the JPEG's own bytes after
    its SOI (``publish_ns`` given apart, so sending needs no new ``FrameMeta``)."""
    cam = meta.camera_id.encode("ascii")
    body = (
        MAGIC
        + bytes((FORMAT_VERSION, len(cam)))
        + cam
        + _TAIL.pack(meta.seq, meta.capture_ns, publish_ns, meta.width, meta.height)
    )
    return SOI + COM + struct.pack(">H", len(body) + 2) + body


def pack_frame(meta: FrameMeta, jpeg: bytes, publish_ns: int | None = None) -> bytes:
    """Insert the metadata segment into an encoded JPEG (one copy of the body);
    ``publish_ns`` replaces the one in ``meta``."""
    if not jpeg.startswith(SOI):
        raise FrameError("not_jpeg")
    stamp = meta.publish_ns if publish_ns is None else publish_ns
    return b"".join((metadata_prefix(meta, stamp), memoryview(jpeg)[2:]))


def _parse_meta(segment: bytes) -> FrameMeta:
    if len(segment) < _HEAD_FIXED or not segment.startswith(MAGIC):
        raise FrameError("bad_metadata")
    version = segment[len(MAGIC)]
    if version != FORMAT_VERSION:
        raise FrameError("unsupported_version")
    id_len = segment[len(MAGIC) + 1]
    id_end = _HEAD_FIXED + id_len
    if len(segment) != id_end + _TAIL.size or id_len == 0:
        raise FrameError("bad_metadata")
    try:
        camera_id = segment[_HEAD_FIXED:id_end].decode("ascii")
    except UnicodeDecodeError:
        raise FrameError("bad_metadata") from None
    seq, capture_ns, publish_ns, width, height = _TAIL.unpack_from(segment, id_end)
    return FrameMeta(camera_id, seq, capture_ns, publish_ns, width, height)


def parse_frame(payload: bytes, max_bytes: int) -> ParsedFrame:
    """Validate an untrusted payload; return it with its metadata if it has any."""
    if len(payload) > max_bytes:
        raise FrameError("too_large")
    if len(payload) < 4 or not payload.startswith(SOI) or payload[2] != 0xFF:
        raise FrameError("not_jpeg")
    if payload[2:4] != COM:
        return ParsedFrame(payload, None)
    if len(payload) < 6:
        raise FrameError("bad_metadata")
    (seg_len,) = struct.unpack_from(">H", payload, 4)
    segment = payload[6 : 4 + seg_len]
    if seg_len < 2 or len(segment) != seg_len - 2:
        raise FrameError("bad_metadata")
    if not segment.startswith(MAGIC):
        return ParsedFrame(payload, None)  # someone else's comment: a plain JPEG
    return ParsedFrame(payload, _parse_meta(segment))
