"""The multiplexed viewer protocol on ``/ws`` (sans-I/O; see docs/protocol.md).

Binary server → client message: a header, then the JPEG or the access unit::

    type u8 | id_len u8 | camera_id (ASCII) | seq u64 | capture_ns u64 | …
    type 1 (JPEG):              … | JPEG
    type 2 (H.264), 3 (H.265):  … | flags u8 (bit 0 keyframe) | Annex-B access unit

Type 1 was the "version" byte before passthrough: clients that skip anything
but 1 keep working. Text messages are JSON objects; clients send ``{"op":
"subscribe" | "unsubscribe", "cameras": [...]}`` (a subscribe may name a
``format``: ``jpeg``, ``h264`` or ``h265``) or ``{"op": "ping"}``.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import Any

from streamd.config import is_valid_camera_id
from streamd.errors import StreamdError
from streamd.eventlog.records import parse_stream_id
from streamd.gateway.hub import HubFrame
from streamd.gateway.unit_hub import Format, HubUnit, parse_format
from streamd.states import CameraState, SourceState, picture_stalled
from streamd.untrusted import dumps, loads
from streamd.video.annexb import Codec

VERSION = 1
JPEG_TYPE = 1  # the binary message's first byte (once "version")
UNIT_TYPES = {Codec.H264: 2, Codec.H265: 3}
KEYFRAME_FLAG = 1
MAX_CAMERAS_PER_MESSAGE = 64
MAX_JSON_DEPTH = 16  # our messages nest 3 deep; more is an attack on the parser
_TAIL = struct.Struct(">QQ")
_WS_LEN16 = struct.Struct(">BBH")
_WS_LEN64 = struct.Struct(">BBQ")


class ClientMessageError(StreamdError, ValueError):
    """A client message we cannot accept; ``reason`` goes back to the client."""


@dataclass(frozen=True)
class ClientCommand:
    op: str  # subscribe | unsubscribe | ping
    cameras: tuple[str, ...] = ()
    events_since: str | None = None  # subscribe: replay kept events after this id
    format: Format = Format.JPEG  # subscribe: JPEG frames or passthrough units


def websocket_binary_header(length: int) -> bytes:
    """RFC 6455 header of one unmasked, unfragmented binary message (server → client)."""
    if length < 126:
        return bytes((0x82, length))
    if length < 1 << 16:
        return _WS_LEN16.pack(0x82, 126, length)
    return _WS_LEN64.pack(0x82, 127, length)


def frame_header(camera_id: str, seq: int, capture_ns: int) -> bytes:
    cam = camera_id.encode("ascii")
    return bytes((VERSION, len(cam))) + cam + _TAIL.pack(seq, capture_ns)


def encode_frame(frame: HubFrame) -> bytes:
    meta = frame.meta
    header = frame_header(frame.camera_id, meta.seq if meta else 0, meta.capture_ns if meta else 0)
    return header + frame.payload


def encode_unit(unit: HubUnit) -> bytes:
    """The ``/ws`` message of an access unit, built once for all its viewers."""
    message = unit.messages.get("multiplexed")
    if message is None:
        cam = unit.camera_id.encode("ascii")
        message = b"".join(
            (
                bytes((UNIT_TYPES[unit.codec], len(cam))),
                cam,
                _TAIL.pack(unit.seq, unit.capture_ns),
                bytes((KEYFRAME_FLAG if unit.keyframe else 0,)),
                unit.data,
            )
        )
        unit.messages["multiplexed"] = message
    return message


def decode_frame(message: bytes) -> tuple[str, int, int, bytes]:
    """Client-side parser (used by tests and documented for client writers)."""
    if len(message) < 2 or message[0] != VERSION:
        raise ValueError("not a streamd frame message")
    id_len = message[1]
    end = 2 + id_len
    seq, capture_ns = _TAIL.unpack_from(message, end)
    return message[2:end].decode("ascii"), seq, capture_ns, message[end + _TAIL.size :]


@dataclass(frozen=True)
class UnitMessage:
    camera_id: str
    codec: Codec
    seq: int
    capture_ns: int
    keyframe: bool
    data: bytes  # the Annex-B access unit


def decode_unit(message: bytes) -> UnitMessage:
    """Client-side parser of a type 2/3 ``/ws`` message (tests, client writers)."""
    codecs = {kind: codec for codec, kind in UNIT_TYPES.items()}
    if len(message) < 2 or message[0] not in codecs:
        raise ValueError("not a streamd access unit message")
    end = 2 + message[1]
    seq, capture_ns = _TAIL.unpack_from(message, end)
    flags = message[end + _TAIL.size]
    camera_id = message[2:end].decode("ascii")
    data = message[end + _TAIL.size + 1 :]
    return UnitMessage(camera_id, codecs[message[0]], seq, capture_ns, bool(flags & 1), data)


def nesting_depth(text: str) -> int:
    """How deep JSON arrays and objects nest, strings skipped (no recursion)."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def loads_bounded(data: str | bytes, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """``json.loads`` for untrusted input: ValueError for anything nested deeper
    than ``max_depth`` instead of a RecursionError deep in the parser, and for
    ``NaN``/``Infinity`` (``untrusted.loads``)."""
    text = data.decode("utf-8") if isinstance(data, bytes) else data
    # Counting brackets is C-fast; the exact scan runs only when it could matter.
    if text.count("[") + text.count("{") > max_depth and nesting_depth(text) > max_depth:
        raise ValueError(f"JSON nested deeper than {max_depth}")
    try:
        return loads(text)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


def parse_client_message(text: str) -> ClientCommand:
    if text == "ping":
        return ClientCommand("ping")
    try:
        data = loads_bounded(text)
    except ValueError as exc:
        reason = "not JSON" if isinstance(exc, json.JSONDecodeError) else str(exc)
        raise ClientMessageError(reason) from None
    if not isinstance(data, dict):
        raise ClientMessageError("expected a JSON object")
    op = data.get("op")
    if op == "ping":
        return ClientCommand("ping")
    if op not in ("subscribe", "unsubscribe"):
        raise ClientMessageError('op must be "subscribe", "unsubscribe" or "ping"')
    cameras = data.get("cameras")
    if not isinstance(cameras, list) or not cameras:
        raise ClientMessageError("cameras must be a non-empty list of camera ids")
    if len(cameras) > MAX_CAMERAS_PER_MESSAGE:
        raise ClientMessageError(f"at most {MAX_CAMERAS_PER_MESSAGE} cameras per message")
    if not all(isinstance(c, str) and is_valid_camera_id(c) for c in cameras):
        raise ClientMessageError("invalid camera id")
    since = data.get("events_since")
    if since is not None and (
        op != "subscribe" or not isinstance(since, str) or parse_stream_id(since) is None
    ):
        raise ClientMessageError(
            'events_since must be an event id like "1732860000000-0" (subscribe only)'
        )
    asked = data.get("format")
    fmt = parse_format(asked) if isinstance(asked, str) or asked is None else None
    if fmt is None or (asked is not None and op != "subscribe"):
        raise ClientMessageError('format must be "jpeg", "h264" or "h265" (subscribe only)')
    return ClientCommand(op, tuple(dict.fromkeys(cameras)), since, fmt)


def text(message_type: str, **fields: Any) -> str:
    return dumps({"type": message_type, **fields}, compact=True)


class RateLimiter:
    """Token bucket (pure: ``now`` passed in)."""

    def __init__(self, rate: float, burst: float | None = None) -> None:
        self.rate = rate
        self.capacity = burst if burst is not None else max(1.0, rate)
        self.tokens = self.capacity
        self.updated: float | None = None

    def allow(self, now: float) -> bool:
        if self.updated is not None:
            self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


def camera_state(supervised: CameraState | None, last_frame_age: float | None) -> CameraState:
    """What a viewer should be told: the supervisor's word for our own cameras,
    otherwise judged by frame age (cameras on other nodes)."""
    if supervised is not None:
        return supervised
    if last_frame_age is None:
        return SourceState.OFFLINE
    return SourceState.STALLED if picture_stalled(last_frame_age) else SourceState.LIVE
