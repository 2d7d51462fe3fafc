"""Redis and camera passwords never reach ``streamd check`` output, errors or
log lines, in every URL form redis-py accepts (and the malformed ones)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamd.config import ConfigError, load_config
from streamd.redact import MASK, redact_url

from .conftest import Daemon, RedisServer, streamd_check, wait_for

# Two distinctive halves, so a password cut at an odd character is still seen.
A, B = "Xq7Lm", "Zk9Wp"

PARSEABLE = [
    (f"redis://:{A}{B}@h:6379/0", "redis://:***@h:6379/0"),
    (f"redis://user:{A}{B}@h:6379/0", "redis://user:***@h:6379/0"),
    (f"redis://h:6379/0?password={A}{B}", "redis://h:6379/0?password=***"),
    (
        f"redis://h/0?db=1&password={A}{B}&socket_timeout=5",
        "redis://h/0?db=1&password=***&socket_timeout=5",
    ),
    (f"rediss://:{A}{B}@h:6380/0", "rediss://:***@h:6380/0"),
    (f"unix:///run/redis.sock?password={A}{B}&db=2", "unix:///run/redis.sock?password=***&db=2"),
    (f"unix://:{A}{B}@/run/redis.sock", "unix://:***@/run/redis.sock"),
    (f"redis://:{A}@{B}@h:6379/0", "redis://:***@h:6379/0"),  # redis-py splits at the last @
    (f"redis://u:{A}:{B}@h/0", "redis://u:***@h/0"),
    (f"redis://:{A}%2F{B}@h/0", "redis://:***@h/0"),
]
# Unencoded / ? # in the password: redis-py cannot parse these (or misreads them).
UNPARSEABLE = [
    f"redis://:{A}/{B}@h:6379/0",
    f"redis://user:{A}/{B}@h:6379/0",
    f"redis://:{A}?{B}@h/0",
    f"redis://:{A}#{B}@h/0",
    f"rediss://:{A}/{B}@h/0",
    f"redis://:1234/{A}{B}@h/0",  # parses as localhost:1234, path "/…@h/0"
    f"redis://:1234?{A}{B}@h/0",  # parses as localhost:1234, query "…@h/0"
    f"redis://:{A} {B}@h/0",
]


def leaks(text: str) -> bool:
    return A in text or B in text


@pytest.mark.parametrize(("url", "masked"), PARSEABLE)
def test_redact_url_masks_every_redis_form(url: str, masked: str) -> None:
    assert redact_url(url) == masked
    assert redact_url(f"error talking to {url} (refused)") == f"error talking to {masked} (refused)"


@pytest.mark.parametrize("url", [u for u in UNPARSEABLE if " " not in u])
def test_redact_url_masks_malformed_forms(url: str) -> None:
    assert not leaks(redact_url(url)) and MASK in redact_url(url)


def test_redact_url_masks_camera_query_secrets() -> None:
    assert (
        redact_url("http://cam/videostream.cgi?user=admin&pwd=hunter2&res=1")
        == "http://cam/videostream.cgi?user=admin&pwd=***&res=1"
    )


def check(tmp_path: Path, redis_url: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    path = tmp_path / "streamd.toml"
    path.write_text(f'[redis]\nurl = "{redis_url}"\n[[cameras]]\nid = "a"\nsource = "synthetic:"\n')
    result = streamd_check(path, env)
    return result.returncode, result.stdout + result.stderr


@pytest.mark.parametrize(("url", "masked"), PARSEABLE)
def test_check_masks_every_redis_form(tmp_path: Path, url: str, masked: str) -> None:
    code, output = check(tmp_path, url)
    assert code == 0, output
    assert not leaks(output) and f'url = "{masked}"' in output


@pytest.mark.parametrize("url", UNPARSEABLE)
def test_check_refuses_malformed_redis_urls_without_echoing_them(tmp_path: Path, url: str) -> None:
    code, output = check(tmp_path, url)
    assert code == 78, output
    assert "redis.url: invalid Redis URL" in output and "percent-encode" in output
    assert not leaks(output), output


@pytest.mark.parametrize("url", UNPARSEABLE)
def test_env_redis_url_errors_do_not_echo_it(tmp_path: Path, url: str) -> None:
    code, output = check(tmp_path, "redis://h/0", {"REDIS_URL": url})
    assert code == 78 and "REDIS_URL: invalid Redis URL" in output
    assert not leaks(output), output


def test_config_error_text_never_holds_the_password(tmp_path: Path) -> None:
    """What the reload log and the HTTP 422 body are made of."""
    path = tmp_path / "streamd.toml"
    for url in UNPARSEABLE:
        path.write_text(f'[redis]\nurl = "{url}"\n')
        with pytest.raises(ConfigError) as info:
            load_config(path, {})
        assert not leaks(str(info.value)) and not leaks(info.value.problem)


def test_camera_sources_with_spaces_are_refused_without_echo(tmp_path: Path) -> None:
    path = tmp_path / "streamd.toml"
    path.write_text(f'[[cameras]]\nid = "a"\nsource = "rtsp://admin:{A} {B}@cam/live"\n')
    with pytest.raises(ConfigError) as info:
        load_config(path, {})
    assert info.value.key == "cameras[0].source" and "percent-encode" in info.value.problem
    assert not leaks(str(info.value))


def test_startup_log_masks_a_query_password(
    redis_server: RedisServer, start_daemon: Callable[..., Daemon]
) -> None:
    daemon = start_daemon(
        redis_url=f"{redis_server.url}?password={A}{B}",
        cameras=[{"id": "cam", "source": "synthetic:?width=64&height=48"}],
    )
    wait_for(lambda: "video stream manager started" in daemon.log_text(), 10, "start-up line")
    started = next(e for e in daemon.log_events() if e["event"] == "video stream manager started")
    assert started["redis_url"] == f"{redis_server.url}?password=***"
    daemon.stop()
    assert not leaks(daemon.log_text())


# --- property: whatever the password, it is masked --------------------------------------

# Printable ASCII without whitespace; the query form also without "&", which ends a
# query value for redis-py as for everyone else.
PASSWORD = st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=24)
QUERY_PASSWORD = st.text(
    st.characters(min_codepoint=33, max_codepoint=126, exclude_characters="&"),
    min_size=1,
    max_size=24,
)
USER = st.text(st.sampled_from("abcdefghijklmnopqrstuvwxyz0123456789_.-"), max_size=8)
HOST = st.sampled_from(["h", "cache.local", "10.0.0.5:6379", "[::1]:6380", ""])
TAIL = st.sampled_from(["", "/0", "/3?db=3", "/run/redis.sock", "/0?socket_timeout=5"])
SCHEME = st.sampled_from(["redis", "rediss", "unix", "rtsp", "http"])


@given(SCHEME, USER, PASSWORD, HOST, TAIL)
def test_redacted_userinfo_never_shows_the_password(
    scheme: str, user: str, password: str, host: str, tail: str
) -> None:
    url = f"{scheme}://{user}:{password}@{host}{tail}"
    out = redact_url(f"connecting to {url} failed")
    assert out == f"connecting to {scheme}://{user}:{MASK}@{host}{tail} failed"


@given(SCHEME, HOST, TAIL, QUERY_PASSWORD, st.sampled_from(["", "&db=2", "&x=1&y=2"]))
def test_redacted_query_never_shows_the_password(
    scheme: str, host: str, tail: str, password: str, after: str
) -> None:
    joiner = "&" if "?" in tail else "?"
    url = f"{scheme}://{host}{tail}{joiner}password={password}{after}"
    out = redact_url(url)
    if len(password) >= 4 and password not in url.replace(password, " "):
        assert password not in out
    if "@" not in password:  # else masked from the port on: see streamd/redact.py
        assert out.replace(f"password={MASK}", f"password={password}") == url
