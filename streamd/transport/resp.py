"""RESP, the Redis protocol, for streamd's own connections (sans-I/O).

Writing: a command as RESP (``encode_command``), and a frame's ``PUBLISH`` /
``SPUBLISH`` packed with one copy of the JPEG (``pack_publish``: the camera
child's frame link).

Reading: a minimal RESP reader for a pub/sub connection, built to read into
one preallocated buffer: ``get_buffer`` gives the free space to ``recv_into``,
``advance(n)`` parses what arrived. A payload is copied once, from the buffer
into the ``bytes`` handed on; nothing else is copied on the way.

It reads what a subscribed connection receives, in RESP2 or RESP3: simple
strings, errors, integers, bulk strings and flat arrays or pushes of those
(``message``, ``smessage``, ``pmessage``, (un)subscribe confirmations, pongs).
Everything else, nested aggregates, bad lengths and over-long lines are a
``RespProtocolError``: the connection is then closed, never waited on.

Memory is bounded: a bulk string longer than ``max_bulk`` is read past without
being kept (it becomes ``Skipped(length)``), so the buffer never grows beyond
``max_bulk`` plus a header, whatever the peer sends.
"""

from __future__ import annotations

from dataclasses import dataclass

from redis.exceptions import RedisError

from streamd.transport.frame import SOI, FrameError, FrameMeta, metadata_prefix

INITIAL_BUFFER = 1 << 20  # several frames: a burst is read in few system calls
MIN_READ = 64 * 1024  # free space offered to one read, at least
MAX_LINE = 4096  # a type line (+, -, :, $, *): errors carry text, the rest a number
MAX_ARRAY = 16  # pub/sub replies have 2-4 elements
_CRLF = b"\r\n"


class RespProtocolError(RedisError):
    """The peer does not speak the RESP we read; the connection cannot be trusted."""


class RespError(str):
    """An error reply (``-ERR ...``), as text."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class Skipped:
    """A bulk string longer than ``max_bulk``: read past, not kept."""

    length: int


Item = bytes | int | None | RespError | Skipped
Reply = Item | list[Item]


def _number(line: bytes | bytearray) -> int:
    # int() would accept "+1", " 1", "1_0": RESP lengths are plain digits.
    digits = line[1:] if line[:1] == b"-" else line
    if not digits or not digits.isdigit() or len(digits) > 19:
        raise RespProtocolError(f"bad number in reply: {bytes(line[:32])!r}")
    return int(line)


class RespReader:
    def __init__(
        self, max_bulk: int, initial_size: int = INITIAL_BUFFER, max_line: int = MAX_LINE
    ) -> None:
        self.max_bulk = max_bulk
        self.max_line = max_line
        self._buf = bytearray(max(initial_size, MIN_READ))
        self._view = memoryview(self._buf)
        self._start = 0  # first byte not yet parsed
        self._end = 0  # first free byte
        self._need = 0  # bytes from _start the element being read needs in one piece
        self._skip = 0  # bytes of an oversized bulk (and its CRLF) still to discard
        self._skipped = 0  # its length, for the Skipped item
        self._items: list[Item] | None = None  # the array being read
        self._remaining = 0  # its elements still to come
        self.skipped = 0  # bulk strings read past (counted for metrics)

    @property
    def buffer_size(self) -> int:
        return len(self._buf)

    @property
    def in_aggregate(self) -> bool:
        """An array (or an oversized bulk string) has begun and is not complete."""
        return self._items is not None or self._skip > 0

    def get_buffer(self) -> memoryview:
        """Free space for the next read (never empty)."""
        if self._start == self._end:
            self._start = self._end = 0  # all parsed: start over, nothing to move
        size = len(self._buf)
        if size - self._start < self._need or size - self._end < MIN_READ:
            pending = self._end - self._start
            if size < self._need or size - pending < MIN_READ:
                # The element is larger than the buffer: grow (bounded: an element
                # is at most a line or max_bulk plus its header).
                grown = bytearray(max(self._need, pending) + MIN_READ)
                grown[:pending] = self._view[self._start : self._end]
                self._buf, self._view = grown, memoryview(grown)
            else:  # move the unparsed tail to the front (memmove)
                self._view[:pending] = self._view[self._start : self._end]
            self._start, self._end = 0, pending
        return self._view[self._end :]

    def advance(self, nbytes: int) -> list[Reply]:
        """``nbytes`` were written at the start of ``get_buffer()``: the replies
        they completed, in order. Raises ``RespProtocolError`` on garbage."""
        self._end += nbytes
        replies: list[Reply] = []
        while True:
            if self._skip:
                taken = min(self._skip, self._end - self._start)
                self._skip -= taken
                self._start += taken
                if self._skip:
                    self._start = self._end = 0  # discarded
                    return replies
                self.skipped += 1
                self._item(Skipped(self._skipped), replies)
            if self._items is None and self._buf.startswith(_MESSAGE_HEADS, self._start):
                message = self._whole_message()
                if message is not None:
                    replies.append(message)
                    continue
            item = self._next_item()
            if item is _INCOMPLETE:
                return replies
            if item is not _OPENED:
                self._item(item, replies)  # type: ignore[arg-type]

    def feed(self, data: bytes) -> list[Reply]:
        """Copy ``data`` in (in as many reads as it takes) and parse it."""
        replies: list[Reply] = []
        view = memoryview(data)
        while view:
            space = self.get_buffer()
            n = min(len(space), len(view))
            space[:n] = view[:n]
            space.release()
            replies += self.advance(n)
            view = view[n:]
        return replies

    # --- parsing -------------------------------------------------------------------------
    def _item(self, item: Reply, replies: list[Reply]) -> None:
        """An element is complete: a reply, or one more of the array's."""
        items = self._items
        if items is None:
            replies.append(item)
            return
        items.append(item)  # type: ignore[arg-type]  # never a list: nesting is refused
        self._remaining -= 1
        if not self._remaining:
            replies.append(items)
            self._items = None

    def _whole_message(self) -> list[Item] | None:
        """The common reply, ``[kind, channel, data]`` of a (s)message, when it is
        all here and plain (no oversized or null bulk): read in one go. None
        leaves it to the element-by-element path, which reads everything."""
        start = self._start
        kind = _MESSAGE if self._buf[start + 5] == 0x37 else _SMESSAGE  # "$7" or "$8"
        channel = self._plain_bulk(start + 10 + len(kind))
        if channel is None:
            return None
        data = self._plain_bulk(channel[1])
        if data is None:
            return None
        self._start = data[1]
        self._need = 0
        return [kind, channel[0], data[0]]

    def _plain_bulk(self, at: int) -> tuple[bytes, int] | None:
        """A complete bulk string at ``at`` within ``max_bulk`` and where it ends."""
        buf, end = self._buf, self._end
        if at >= end or buf[at] != 0x24:
            return None
        eol = buf.find(_CRLF, at, min(end, at + 22))
        if eol < 0:
            return None
        digits = buf[at + 1 : eol]
        if not digits.isdigit():
            return None
        length = int(digits)
        data_end = eol + 2 + length
        if length > self.max_bulk or data_end + 2 > end or buf[data_end : data_end + 2] != _CRLF:
            return None
        return bytes(self._view[eol + 2 : data_end]), data_end + 2

    def _next_item(self) -> object:
        buf, start, end = self._buf, self._start, self._end
        if start == end:
            self._need = 0
            return _INCOMPLETE
        eol = buf.find(_CRLF, start, min(end, start + self.max_line))
        if eol < 0:
            if end - start >= self.max_line:
                raise RespProtocolError("reply line too long")
            self._need = 0
            return _INCOMPLETE
        kind = buf[start]
        body = start + 1
        if kind == 0x24:  # $ bulk string
            length = _number(buf[body:eol])
            if length < 0:
                if length != -1:
                    raise RespProtocolError("negative bulk length")
                self._start = eol + 2
                return None
            if length > self.max_bulk:
                self._skip, self._skipped = length + 2, length
                self._start = eol + 2
                return _OPENED
            data_end = eol + 2 + length
            if data_end + 2 > end:
                self._need = data_end + 2 - start
                return _INCOMPLETE
            if buf[data_end : data_end + 2] != _CRLF:
                raise RespProtocolError("bulk string not followed by CRLF")
            self._start = data_end + 2
            self._need = 0
            return bytes(self._view[eol + 2 : data_end])
        self._start = eol + 2
        if kind == 0x2A or kind == 0x3E:  # * array, > push
            count = _number(buf[body:eol])
            if self._items is not None:
                raise RespProtocolError("nested aggregate in a pub/sub reply")
            if count == -1:
                return None
            if count < 0 or count > MAX_ARRAY:
                raise RespProtocolError(f"array of {count} elements")
            if count == 0:
                return []
            self._items, self._remaining = [], count
            return _OPENED
        if kind == 0x2B:  # + simple string
            return bytes(buf[body:eol])
        if kind == 0x2D:  # - error
            return RespError(buf[body:eol].decode("utf-8", "replace"))
        if kind == 0x3A:  # : integer
            return _number(buf[body:eol])
        raise RespProtocolError(f"unsupported reply type {bytes((kind,))!r}")


# The (s)message replies of RESP2 arrays and RESP3 pushes, up to the channel's "$".
_MESSAGE_HEADS = tuple(
    b"%s3\r\n$%d\r\n%s\r\n" % (kind, len(name), name)
    for kind in (b"*", b">")
    for name in (b"message", b"smessage")
)
_MESSAGE, _SMESSAGE = b"message", b"smessage"
_INCOMPLETE = object()  # more bytes are needed
_OPENED = object()  # an array or a skip began: no item yet


# --- writing --------------------------------------------------------------------------
def encode_command(*args: str | bytes) -> bytes:
    """A command as a RESP array of bulk strings."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg.encode() if isinstance(arg, str) else arg
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


def publish_head(command: bytes, channel: bytes) -> bytes:
    """The part of ``COMMAND channel payload`` before the payload's length."""
    return b"*3\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(command), command, len(channel), channel)


def pack_publish(head: bytes, meta: FrameMeta, publish_ns: int, jpeg: bytes) -> tuple[bytes, int]:
    """One command carrying the frame's wire payload (``frame.pack_frame``'s
    bytes), built with one copy of the JPEG; and the payload's size."""
    if not jpeg.startswith(SOI):
        raise FrameError("not_jpeg")
    header = metadata_prefix(meta, publish_ns)
    size = len(header) + len(jpeg) - len(SOI)
    command = b"".join((head, b"$%d\r\n" % size, header, memoryview(jpeg)[len(SOI) :], _CRLF))
    return command, size


# --- the replies a publish gets -------------------------------------------------------------
class IntegerReplies:
    """Replies on a connection that only publishes: integers (receivers) and
    errors (``-MOVED`` after a failover, ``-NOPERM``). Anything else means the
    connection is not what we think it is: ``RespProtocolError``."""

    def __init__(self) -> None:
        # ":<int>" or "-<short message>": Redis' MOVED lines are under 100 bytes.
        self._reader = RespReader(max_bulk=0, initial_size=MIN_READ, max_line=512)

    def feed(self, data: bytes) -> list[int | RespError]:
        replies = self._reader.feed(data)
        if self._reader.in_aggregate:
            raise RespProtocolError("an aggregate reply to a publish")
        for reply in replies:
            if isinstance(reply, bool) or not isinstance(reply, int | RespError):
                raise RespProtocolError(f"a {type(reply).__name__} reply to a publish")
        return replies  # type: ignore[return-value]  # checked just above
