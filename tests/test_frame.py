from __future__ import annotations

import contextlib
import struct

import cv2
import numpy as np
import pytest

from streamd.transport.frame import MAGIC, FrameError, FrameMeta, pack_frame, parse_frame

LIMIT = 8 * 1024 * 1024


def jpeg(width: int = 64, height: int = 48) -> bytes:
    image = np.zeros((height, width, 3), np.uint8)
    image[:, : width // 2] = (0, 0, 255)
    ok, buf = cv2.imencode(".jpg", image)
    assert ok
    return bytes(buf.tobytes())


META = FrameMeta("door-1", 42, 1_700_000_000_000_000_000, 1_700_000_000_005_000_000, 64, 48)


def test_round_trip_and_still_a_valid_jpeg() -> None:
    payload = pack_frame(META, jpeg())
    parsed = parse_frame(payload, LIMIT)
    assert parsed.meta == META
    assert parsed.payload == payload
    image = cv2.imdecode(np.frombuffer(payload, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None and image.shape == (48, 64, 3)
    # The metadata segment sits right after SOI as a COM segment.
    assert payload[:4] == b"\xff\xd8\xff\xfe" and MAGIC in payload[:32]


def test_foreign_plain_jpeg_is_accepted_without_meta() -> None:
    plain = jpeg()
    parsed = parse_frame(plain, LIMIT)
    assert parsed.meta is None and parsed.payload == plain


def test_someone_elses_comment_is_a_plain_jpeg() -> None:
    plain = jpeg()
    comment = b"made by a camera"
    payload = plain[:2] + b"\xff\xfe" + struct.pack(">H", len(comment) + 2) + comment + plain[2:]
    assert parse_frame(payload, LIMIT).meta is None


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"", "not_jpeg"),
        (b"hello world", "not_jpeg"),
        (b"\xff\xd8", "not_jpeg"),
        (b'{"json": true}', "not_jpeg"),
        (b"\xff\xd8\xff\xfe\x00", "bad_metadata"),
        (b"\xff\xd8\xff\xfe\x00\x40STRMD", "bad_metadata"),  # segment longer than payload
    ],
)
def test_junk_is_rejected_with_a_reason(payload: bytes, reason: str) -> None:
    with pytest.raises(FrameError) as info:
        parse_frame(payload, LIMIT)
    assert info.value.reason == reason


def test_oversized_is_rejected() -> None:
    with pytest.raises(FrameError) as info:
        parse_frame(pack_frame(META, jpeg()), 100)
    assert info.value.reason == "too_large"


def test_bad_version_and_truncated_metadata() -> None:
    payload = bytearray(pack_frame(META, jpeg()))
    payload[6 + len(MAGIC)] = 99  # version byte
    with pytest.raises(FrameError, match="unsupported_version"):
        parse_frame(bytes(payload), LIMIT)
    good = pack_frame(META, jpeg())
    # Claim a camera id longer than the segment holds.
    broken = bytearray(good)
    broken[6 + len(MAGIC) + 1] = 60
    with pytest.raises(FrameError, match="bad_metadata"):
        parse_frame(bytes(broken), LIMIT)


def test_random_bytes_never_crash() -> None:
    rng = np.random.default_rng(7)
    base = pack_frame(META, jpeg())
    for _ in range(2000):
        data = bytearray(base[:80])
        for index in rng.integers(0, len(data), 4):
            data[index] = int(rng.integers(0, 256))
        with contextlib.suppress(FrameError):
            parse_frame(bytes(data), LIMIT)
