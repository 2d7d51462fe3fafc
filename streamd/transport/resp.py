"""Just enough RESP2 for the frame link (sans-I/O): a PUBLISH or SPUBLISH of one
frame packed into one buffer, and the integer replies those commands get.

The frame link sends nothing else, so any other reply (a bulk string, an array,
a RESP3 push, a line longer than any integer) means the connection is not what
we think it is: ``RespError``, and the caller drops the connection. An error
reply (``-MOVED ...``, ``-NOAUTH ...``) is returned as ``ReplyError`` for the
caller to count.
"""

from __future__ import annotations

from dataclasses import dataclass

from streamd.errors import StreamdError
from streamd.transport.frame import SOI, FrameError, FrameMeta, frame_header

CRLF = b"\r\n"
MAX_REPLY_LINE = 512  # ":<int>" or "-<short message>"; Redis' MOVED lines are < 100 bytes


class RespError(StreamdError, ValueError):
    """The server said something a publish-only connection never gets."""


@dataclass(frozen=True, slots=True)
class ReplyError:
    message: str


def publish_head(command: bytes, channel: bytes) -> bytes:
    """The part of ``COMMAND channel payload`` before the payload's length."""
    return b"*3\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(command), command, len(channel), channel)


def pack_publish(head: bytes, meta: FrameMeta, publish_ns: int, jpeg: bytes) -> tuple[bytes, int]:
    """One command carrying the frame's wire payload (``frame.pack_frame``'s
    bytes), built with one copy of the JPEG; and the payload's size."""
    if not jpeg.startswith(SOI):
        raise FrameError("not_jpeg")
    header = frame_header(meta, publish_ns)
    size = len(header) + len(jpeg) - len(SOI)
    command = b"".join((head, b"$%d\r\n" % size, header, memoryview(jpeg)[len(SOI) :], CRLF))
    return command, size


class IntegerReplies:
    """Splits a byte stream into integer and error replies."""

    def __init__(self) -> None:
        self._pending = b""

    def feed(self, data: bytes) -> list[int | ReplyError]:
        buffer = self._pending + data if self._pending else data
        replies: list[int | ReplyError] = []
        start = 0
        while (end := buffer.find(CRLF, start)) >= 0:
            replies.append(_reply(buffer[start:end]))
            start = end + 2
        self._pending = buffer[start:]
        if len(self._pending) > MAX_REPLY_LINE:
            raise RespError("reply line too long")
        return replies


def _reply(line: bytes) -> int | ReplyError:
    if len(line) > MAX_REPLY_LINE:
        raise RespError("reply line too long")
    kind, body = line[:1], line[1:]
    if kind == b":":
        try:
            return int(body)
        except ValueError:
            raise RespError("bad integer reply") from None
    if kind == b"-":
        return ReplyError(body.decode("utf-8", "replace"))
    raise RespError(f"unexpected reply type {kind!r}")
