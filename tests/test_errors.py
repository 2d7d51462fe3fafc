"""One exception root: every error streamd raises on purpose is a StreamdError,
keeps its builtin base, and none is named like a websockets exception."""

from __future__ import annotations

import asyncio

import pytest
import websockets.exceptions

from streamd.config import ConfigError
from streamd.credentials import SecretError
from streamd.errors import StreamdError
from streamd.transport.frame import FrameError, parse_frame
from streamd.transport.local import ControlSocketError, decode_json, read_message
from streamd.worker.detectors import DetectorError
from streamd.worker.encode import EncodeError


@pytest.mark.parametrize(
    ("error", "builtin"),
    [
        (ConfigError, ValueError),
        (SecretError, ValueError),
        (ControlSocketError, ValueError),
        (FrameError, ValueError),
        (EncodeError, RuntimeError),
        (DetectorError, RuntimeError),
    ],
)
def test_errors_share_one_root_and_keep_their_builtin_base(
    error: type[Exception], builtin: type[Exception]
) -> None:
    assert issubclass(error, StreamdError) and issubclass(error, builtin)
    assert not hasattr(websockets.exceptions, error.__name__)


async def test_a_truncated_control_message_raises_control_socket_error() -> None:
    reader = asyncio.StreamReader()
    reader.feed_data(b"\x02\x00")  # half a header
    reader.feed_eof()
    with pytest.raises(ControlSocketError, match="truncated header"):
        await read_message(reader)
    with pytest.raises(StreamdError, match="must be an object"):
        decode_json(b"[1]")


def test_a_refused_frame_is_a_streamd_error() -> None:
    with pytest.raises(StreamdError) as info:
        parse_frame(b"GIF89a", 1024)
    assert isinstance(info.value, FrameError) and info.value.reason == "not_jpeg"
