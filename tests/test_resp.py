"""The pub/sub RESP reader (``transport.resp``) under hypothesis: any chunking of
a valid stream gives the same replies, oversized bulk strings are read past
without being kept, and garbage ends in ``RespProtocolError`` with the buffer
bounded (never another exception, never a wait for bytes that cannot come)."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from streamd.transport.resp import (
    MAX_ARRAY,
    MAX_LINE,
    MIN_READ,
    Reply,
    RespError,
    RespProtocolError,
    RespReader,
    Skipped,
    encode_command,
)

SMALL_BUFFER = 1  # the reader rounds it up to MIN_READ: payloads below cross its end


def bulk(data: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(data), data)


def array(items: list[bytes], kind: bytes = b"*") -> bytes:
    return kind + b"%d\r\n" % len(items) + b"".join(items)


# (wire bytes, the reply expected when max_bulk is `limit`) for each kind of reply
payloads = st.one_of(
    st.binary(max_size=64),
    st.binary(min_size=MIN_READ - 100, max_size=MIN_READ + 100),  # around the buffer size
    st.integers(0, 3 * MIN_READ).map(lambda n: bytes(n % 251 for n in range(n))),
)
channels = st.binary(min_size=1, max_size=40)


@st.composite
def replies(draw: st.DrawFn, limit: int) -> tuple[bytes, Reply]:
    choice = draw(st.integers(0, 8))

    def kept(data: bytes) -> bytes | Skipped:
        return data if len(data) <= limit else Skipped(len(data))

    if choice <= 2:  # the common case: a (s)message, as an array or a RESP3 push
        kind = draw(st.sampled_from([b"message", b"smessage"]))
        channel, data = draw(channels), draw(payloads)
        head = draw(st.sampled_from([b"*", b">"]))
        return array([bulk(kind), bulk(channel), bulk(data)], head), [
            kept(kind),
            kept(channel),
            kept(data),
        ]
    if choice == 3:  # pmessage: four elements
        pattern, channel, data = draw(channels), draw(channels), draw(payloads)
        wire = array([bulk(b"pmessage"), bulk(pattern), bulk(channel), bulk(data)])
        return wire, [kept(b"pmessage"), kept(pattern), kept(channel), kept(data)]
    if choice == 4:  # subscribe confirmation: a bulk and an integer
        channel, count = draw(channels), draw(st.integers(0, 10**6))
        return array([bulk(b"subscribe"), bulk(channel), b":%d\r\n" % count]), [
            kept(b"subscribe"),
            kept(channel),
            count,
        ]
    if choice == 5:
        return b"*2\r\n$4\r\npong\r\n$0\r\n\r\n", [kept(b"pong"), b""]
    if choice == 6:
        text = draw(st.text(st.characters(codec="utf-8", exclude_characters="\r\n"), max_size=60))
        return b"-" + text.encode() + b"\r\n", RespError(text)
    if choice == 7:
        word = draw(st.binary(max_size=30).filter(lambda b: b"\r" not in b and b"\n" not in b))
        return b"+" + word + b"\r\n", word
    empty: list[tuple[bytes, Reply]] = [(b"$-1\r\n", None), (b"*-1\r\n", None), (b"*0\r\n", [])]
    return draw(st.sampled_from(empty))


def cuts(draw: st.DrawFn, size: int) -> list[int]:
    points = draw(st.lists(st.integers(0, size), max_size=12))
    return sorted(set(points) | {0, size})


def read_in_chunks(reader: RespReader, wire: bytes, bounds: list[int], short: int) -> list[Reply]:
    """Feed ``wire`` cut at ``bounds``, each read writing at most ``short`` bytes
    into the buffer (as a recv_into that returns less than it was offered)."""
    out: list[Reply] = []
    for start, end in itertools.pairwise(bounds):
        at = start
        while at < end:
            space = reader.get_buffer()
            assert len(space) > 0
            n = min(len(space), end - at, short)
            space[:n] = wire[at : at + n]
            out += reader.advance(n)
            at += n
    return out


@settings(max_examples=300, deadline=None)
@given(st.data(), st.integers(16, 4 * MIN_READ))
def test_any_chunking_of_valid_replies_gives_the_same_replies(
    data: st.DataObject, limit: int
) -> None:
    stream = data.draw(st.lists(replies(limit), min_size=1, max_size=8))
    wire = b"".join(w for w, _ in stream)
    expected = [r for _, r in stream]
    bounds = data.draw(st.composite(lambda draw: cuts(draw, len(wire)))())
    short = data.draw(st.sampled_from([1, 7, 1000, len(wire) + 1]))
    reader = RespReader(limit, initial_size=SMALL_BUFFER)
    assert read_in_chunks(reader, wire, bounds, short) == expected
    # whole in one piece: the same again
    assert RespReader(limit).feed(wire) == expected
    # never more than one element plus a read's worth of room
    assert reader.buffer_size <= max(MIN_READ, limit + MAX_LINE + 2 * MIN_READ)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=3000), st.integers(1, 64), st.integers(0, 100))
def test_garbage_is_a_protocol_error_or_replies_never_anything_else(
    junk: bytes, limit: int, split: int
) -> None:
    reader = RespReader(limit, initial_size=SMALL_BUFFER)
    try:
        reader.feed(junk[:split])
        reader.feed(junk[split:])
    except RespProtocolError:
        pass
    assert reader.buffer_size <= max(MIN_READ, limit + MAX_LINE + 2 * MIN_READ)


@given(st.sampled_from([b"*", b"$", b":", b"+", b"-"]))
def test_a_line_without_end_is_refused_once_it_is_too_long_to_be_one(kind: bytes) -> None:
    reader = RespReader(1024)
    assert reader.feed(kind + b"1" * (MAX_LINE - 2)) == []  # could still end
    try:
        reader.feed(b"1" * 10)
    except RespProtocolError as exc:
        assert "too long" in str(exc)
    else:
        raise AssertionError("an endless line was waited on")


def test_malformed_replies_say_what_is_wrong() -> None:
    cases = {
        b"?3\r\n": "unsupported reply type",
        b"%1\r\n": "unsupported reply type",  # RESP3 maps are not pub/sub replies
        b"*2\r\n*1\r\n": "nested",
        b"*99\r\n": "array of 99",
        b"*-5\r\n": "array of -5",
        b"$-2\r\n": "negative bulk length",
        b"$3\r\nabcXY": "not followed by CRLF",
        b"$ 3\r\n": "bad number",
        b"$+3\r\n": "bad number",
        b":1_000\r\n": "bad number",
        b"$99999999999999999999\r\n": "bad number",
    }
    for wire, reason in cases.items():
        try:
            RespReader(1024).feed(wire)
        except RespProtocolError as exc:
            assert reason in str(exc), (wire, exc)
        else:
            raise AssertionError(f"{wire!r} was accepted")
    assert MAX_ARRAY < 99


def test_an_oversized_bulk_is_read_past_in_constant_memory() -> None:
    reader = RespReader(max_bulk=1000, initial_size=SMALL_BUFFER)
    size = 20 * 1024 * 1024
    header = b"*3\r\n$7\r\nmessage\r\n$5\r\nvideo\r\n$%d\r\n" % size
    assert reader.feed(header) == []
    chunk = bytes(256 * 1024)
    for _ in range(size // len(chunk)):
        assert reader.feed(chunk) == []
        assert reader.buffer_size == MIN_READ  # discarded as it came
    replies = reader.feed(b"\r\n" + array([bulk(b"message"), bulk(b"video"), bulk(b"ok")]))
    assert replies == [[b"message", b"video", Skipped(size)], [b"message", b"video", b"ok"]]
    assert reader.skipped == 1


def test_a_bulk_larger_than_the_buffer_grows_it_once_and_arrives_whole() -> None:
    payload = bytes(range(256)) * (5 * MIN_READ // 256)
    reader = RespReader(max_bulk=len(payload), initial_size=SMALL_BUFFER)
    wire = array([bulk(b"message"), bulk(b"c"), bulk(payload)])
    assert read_in_chunks(reader, wire, [0, len(wire)], 4096) == [[b"message", b"c", payload]]
    assert len(payload) < reader.buffer_size <= len(payload) + MAX_LINE + 2 * MIN_READ


def test_commands_are_arrays_of_bulk_strings() -> None:
    wire = encode_command("SUBSCRIBE", b"video:a", "b")
    assert wire == b"*3\r\n$9\r\nSUBSCRIBE\r\n$7\r\nvideo:a\r\n$1\r\nb\r\n"
    assert RespReader(100).feed(wire) == [[b"SUBSCRIBE", b"video:a", b"b"]]
