"""The control channel between the supervisor and one camera child.

A ``socketpair`` whose child end is passed to the child by exec (``pass_fds``).
Each message is ``type u8 | length u32 (big-endian) | body``:

- ``SPEC``   supervisor → child: JSON camera spec (sent here, not on the command
  line, so RTSP credentials never show in ``ps``).
- ``STATUS`` child → supervisor: JSON heartbeat with state and counters.
- ``DEMAND`` supervisor → child: ``{"watched": bool}``, whether this daemon's own
  viewers watch the camera (Redis consumers are counted by ``PUBSUB NUMSUB``).
- ``FRAME``  child → supervisor: one wire-format frame (``transport.frame``), only
  while Redis is down or disabled: the embedded fallback.
- ``EVENT``  child → supervisor: a detection event (JSON), likewise only while
  Redis (``streamd:events:{camera_id}``) cannot take it.
- ``UNIT``   child → supervisor: one passthrough access unit (Annex-B with our
  SEI, docs/protocol.md), only while Redis (``au:{camera_id}``) cannot take it
  and this daemon's own passthrough viewers want it (``DEMAND``'s ``"au"``).

EOF on the child's side means the supervisor is gone: the child exits (no orphans).
"""

from __future__ import annotations

import asyncio
import enum
import json
import struct
from typing import Any

from streamd.errors import StreamdError

_HEADER = struct.Struct(">BI")
MAX_MESSAGE_BYTES = 64 * 1024 * 1024


class MessageType(enum.IntEnum):
    SPEC = 1
    STATUS = 2
    FRAME = 3
    EVENT = 4
    DEMAND = 5
    TUNE = 6  # down: {"publish_every": N}, applied live by the child
    UNIT = 7  # up: one passthrough access unit (the embedded fallback of au:{id})


class ControlSocketError(StreamdError, ValueError):
    """The peer sent something that is not a control message (named apart from
    ``websockets.exceptions.ControlSocketError``, which the gateway also meets)."""


def encode_message(kind: MessageType, body: bytes) -> bytes:
    return _HEADER.pack(kind, len(body)) + body


def encode_json(kind: MessageType, obj: Any) -> bytes:
    return encode_message(kind, json.dumps(obj, separators=(",", ":")).encode())


async def read_message(reader: asyncio.StreamReader) -> tuple[MessageType, bytes] | None:
    """Next message, or None at a clean EOF."""
    try:
        header = await reader.readexactly(_HEADER.size)
    except asyncio.IncompleteReadError as exc:
        if exc.partial:
            raise ControlSocketError("truncated header") from None
        return None
    kind_value, length = _HEADER.unpack(header)
    if length > MAX_MESSAGE_BYTES:
        raise ControlSocketError(f"message of {length} bytes is over the limit")
    try:
        kind = MessageType(kind_value)
    except ValueError:
        raise ControlSocketError(f"unknown message type {kind_value}") from None
    try:
        body = await reader.readexactly(length)
    except asyncio.IncompleteReadError:
        raise ControlSocketError("truncated body") from None
    return kind, body


def decode_json(body: bytes) -> dict[str, Any]:
    try:
        obj = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ControlSocketError(f"bad JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise ControlSocketError("JSON body must be an object")
    return obj
