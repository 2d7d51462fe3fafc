"""Property: any TOML document gives a valid Config or a ConfigError whose key
names a location in it; never another exception."""

from __future__ import annotations

import json
import re
import string
import tempfile
from datetime import UTC
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamd.config import ConfigError, load_config

REDIS_KEYS = ["url", "enabled", "channel_prefix", "password_file", "password_credential"]
SERVER_KEYS = [
    "listen",
    "max_frame_bytes",
    "allow_anonymous",
    "allowed_origins",
    "tls_cert",
    "tls_key",
    "max_viewers",
    "max_viewers_per_address",
    "max_messages_per_second",
    "handshake_timeout",
    "server_names",
    "admin_token_sha256",
]
TOKEN_KEYS = ["name", "sha256", "cameras", "admin"]
SUPERVISOR_KEYS = [
    "restart_delay_initial",
    "restart_delay_max",
    "stop_grace",
    "stall_timeout",
    "stable_after",
    "shutdown_timeout",
    "max_cameras",
    "child_memory_max",
]
CAMERA_KEYS = [
    "id",
    "source",
    "fps",
    "width",
    "jpeg_quality",
    "loop",
    "username",
    "password_file",
    "password_credential",
    "name",
    "location",
    "detector",
    "detect_fps",
    "overlay",
    "overlay_timestamp",
    "motion_min_area",
    "motion_warmup",
    "ignore_zones",
    "model",
    "labels",
    "input_size",
    "score_threshold",
    "nms_threshold",
    "event_clear_after",
]
TOP_KEYS = ["redis", "server", "supervisor", "cameras", "log_level", "stats_interval"]
JUNK_KEYS = ["", "fsp", "ünïcode", "a.b", "cameras[0]", " "]
WORDS = [
    "synthetic:",
    "synthetic:?width=64",
    "rtsp://u:p@cam/live",
    "http://cam/mjpg",
    "ftp://x",
    "device:0",
    "device:x",
    "/tmp/video.mp4",
    "redis://h:1/0",
    "redis://:p/w@h/0",
    "unix:///tmp/r.sock?password=x",
    "127.0.0.1:8765",
    "0.0.0.0:80",
    "[::1]:1",
    "motion",
    "none",
    "onnx",
    "tests.plugins.detectors:FixedBox",
    "*",
    "a" * 64,
    "0" * 64,
    "512M",
    "1G",
    "cams.example.com",
    "*.example.com",
    "debug",
    "info",
    "video:",
    "/nonexistent",
    "/",
    "bad\x00path",
    "",
    " ",
]

scalars = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(),
    st.text(max_size=12),
    st.sampled_from(WORDS),
    st.datetimes(),
    st.datetimes(timezones=st.just(UTC)),
    st.dates(),
    st.times(),
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.text(string.ascii_lowercase, max_size=4), inner, max_size=3)
    ),
    max_leaves=8,
)


# Mostly values that pass the type check, so generation reaches the later checks.
numbers = st.integers(min_value=-1, max_value=300) | st.floats(min_value=0, max_value=130)
PLAUSIBLE: dict[str, st.SearchStrategy[Any]] = {
    "enabled": st.booleans(),
    "loop": st.booleans(),
    "overlay": st.booleans(),
    "admin": st.booleans(),
    "allow_anonymous": st.booleans(),
    "cameras": st.lists(st.sampled_from(["*", "a", "door", "a b"]), max_size=2),
    "allowed_origins": st.lists(st.sampled_from(["https://x.example", "null", ""]), max_size=2),
    "server_names": st.lists(st.sampled_from(WORDS), max_size=2),
    "ignore_zones": st.lists(st.lists(st.lists(numbers, max_size=3), max_size=4), max_size=2),
    "labels": st.lists(st.sampled_from(["person", "", "car"]), max_size=2),
    "password_file": st.sampled_from(["/nonexistent", "/", "bad\x00path", "/proc/self"]),
    "password_credential": st.sampled_from(["x", "../x", "a\x00b"]),
    "username": st.sampled_from(["admin", "", "a:b"]),
    "url": st.sampled_from([w for w in WORDS if "://" in w]),
    "source": st.sampled_from(WORDS),
    "detector": st.sampled_from(["motion", "none", "onnx", "x:y", "hog"]),
    "child_memory_max": st.sampled_from(["512M", "1G", "0", "12X", "-1", ""]) | numbers,
    "admin_token_sha256": st.sampled_from(["0" * 64, "A" * 64, "x"]),
    "name": st.text(max_size=8) | st.just("x" * 300),
    "location": st.text(max_size=8),
}


def value_for(key: str) -> st.SearchStrategy[Any]:
    usual = PLAUSIBLE.get(key, st.sampled_from(WORDS) | numbers)
    return st.one_of(usual, usual, usual, values)


def table(keys: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    return st.builds(
        dict,
        st.lists(
            st.sampled_from(keys + JUNK_KEYS[:2]).flatmap(
                lambda key: st.tuples(st.just(key), value_for(key))
            ),
            max_size=5,
            unique_by=lambda item: item[0],
        ),
    )


def with_required(
    required: dict[str, st.SearchStrategy[Any]], keys: list[str]
) -> st.SearchStrategy[dict[str, Any]]:
    return st.builds(
        lambda base, extra: {**base, **extra}, st.fixed_dictionaries(required), table(keys)
    )


camera = with_required(
    {"id": st.sampled_from(["a", "b", "door", "a b"]), "source": st.sampled_from(WORDS)},
    CAMERA_KEYS,
)
token = with_required({"sha256": st.sampled_from(["0" * 64, "x"])}, TOKEN_KEYS)
server = st.builds(
    lambda base, tokens: {**base, **({"tokens": tokens} if tokens else {})},
    table(SERVER_KEYS),
    st.lists(token, max_size=2),
)
shaped = st.fixed_dictionaries(
    {},
    optional={
        "redis": table(REDIS_KEYS),
        "server": server,
        "supervisor": table(SUPERVISOR_KEYS),
        "cameras": st.lists(camera, max_size=3) | values,
        "log_level": st.sampled_from(WORDS) | values,
        "stats_interval": value_for("stats_interval"),
        "fsp": values,
    },
)
anything = st.dictionaries(st.sampled_from(TOP_KEYS + JUNK_KEYS), values, max_size=4)
# Documents that load, so the accepted branch of the property is reached (the
# shapes above almost never give a valid camera).
accepted = st.fixed_dictionaries(
    {
        "cameras": st.lists(
            st.fixed_dictionaries(
                {"id": st.sampled_from(["a", "b", "door"]), "source": st.sampled_from(WORDS[:4])},
                optional={"fps": st.integers(1, 30), "overlay": st.booleans()},
            ),
            min_size=1,
            max_size=3,
            unique_by=lambda c: str(c["id"]),
        )
    }
)


def located(error: ConfigError, document: dict[str, Any]) -> bool:
    """The error's key starts with a key of the document (``server.tokens[0].name``)."""
    match = re.match(r'"(?:[^"\\]|\\.)*"|[^.\[]*', error.key)
    assert match is not None
    first = json.loads(match.group()) if match.group().startswith('"') else match.group()
    return error.key != "" and first in document


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(shaped, anything, accepted))
def test_any_toml_gives_a_config_or_a_located_config_error(document: dict[str, Any]) -> None:
    text = tomli_w.dumps(document)
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "streamd.toml"
        path.write_text(text, encoding="utf-8")
        try:
            config = load_config(path, {})
        except ConfigError as error:
            assert error.source == str(path)
            assert located(error, document), (error.key, document)
        else:
            # Accepted: the cameras are the document's own, in the order written.
            written = document.get("cameras", [])
            assert [c.id for c in config.cameras] == [c["id"] for c in written], document


@pytest.mark.parametrize("where", ["redis", "camera"])
@pytest.mark.parametrize(
    ("secret_path", "problem"), [("bad\x00path", "invalid path"), ("/dev/zero", "larger")]
)
def test_unusable_password_files_are_config_errors(
    where: str, secret_path: str, problem: str
) -> None:
    document: dict[str, Any] = (
        {"redis": {"password_file": secret_path}}
        if where == "redis"
        else {"cameras": [{"id": "a", "source": "rtsp://h/s", "password_file": secret_path}]}
    )
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "streamd.toml"
        path.write_text(tomli_w.dumps(document))
        with pytest.raises(ConfigError) as info:
            load_config(path, {})
    assert info.value.key.endswith("password_file") and problem in info.value.problem
