"""One exception root: every error streamd raises on purpose is a StreamdError
(found by walking the package, not listed by hand), and none is named like a
websockets exception."""

from __future__ import annotations

import asyncio
import builtins
import importlib
import pkgutil
import re

import pytest
import websockets.exceptions
from redis.exceptions import RedisError

import streamd
from streamd import errors
from streamd.errors import StreamdError
from streamd.transport.frame import FrameError, parse_frame
from streamd.transport.local import ControlSocketError, decode_json, read_message


def streamd_exceptions() -> list[type[BaseException]]:
    """Every exception class streamd defines, found by importing each module."""
    found: list[type[BaseException]] = []
    for module in pkgutil.walk_packages(streamd.__path__, "streamd."):
        if module.name.rpartition(".")[2] == "__main__":
            continue  # running it is what importing it does
        namespace = vars(importlib.import_module(module.name))
        found += [
            value
            for value in namespace.values()
            if isinstance(value, type)
            and issubclass(value, BaseException)
            and value.__module__ == module.name
        ]
    return found


def stands_in_for_a_library_error(error: type[BaseException]) -> bool:
    # Raised where redis-py's own handling must catch it; private ones are control flow.
    return issubclass(error, RedisError) or error.__name__.startswith("_")


OURS = [e for e in streamd_exceptions() if not stands_in_for_a_library_error(e)]


# errors.py's tree: "├── Name (Builtin)" a line, the builtin base kept for old excepts.
TREE = dict(re.findall(r"[├└]── (\w+)(?: \((\w+)\))?", errors.__doc__ or ""))


def test_the_tree_in_errors_py_names_every_error_the_walk_finds() -> None:
    assert {e.__name__ for e in OURS} == {*TREE, "StreamdError"}


@pytest.mark.parametrize("error", OURS, ids=lambda e: f"{e.__module__}.{e.__name__}")
def test_each_error_keeps_the_builtin_base_the_tree_names(error: type[BaseException]) -> None:
    builtin = TREE.get(error.__name__)
    assert not builtin or issubclass(error, getattr(builtins, builtin))


@pytest.mark.parametrize("error", OURS, ids=lambda e: f"{e.__module__}.{e.__name__}")
def test_errors_share_one_root_and_are_not_named_like_websockets_ones(
    error: type[BaseException],
) -> None:
    assert issubclass(error, StreamdError)
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
