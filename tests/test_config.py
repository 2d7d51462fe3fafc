from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from streamd.config import (
    CameraConfig,
    Config,
    ConfigError,
    load_config,
    parse_camera,
    parse_config,
)
from streamd.redact import redact_url

from .conftest import ROOT, streamd_check

EXAMPLE = """
[redis]
url = "redis://127.0.0.1:6379/0"

[server]
listen = "127.0.0.1:8765"

[[cameras]]
id = "demo"
source = "synthetic:"        # also rtsp://…, http(s)://… MJPEG, a file path, device:0
fps = 10
width = 1280                 # resize target, aspect kept; optional
jpeg_quality = 80            # optional
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "streamd.toml"
    path.write_text(text)
    return path


def test_issue_example_loads_exactly_as_written(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, EXAMPLE), {})
    assert config.redis.enabled and config.redis.url == "redis://127.0.0.1:6379/0"
    assert (config.server.host, config.server.port) == ("127.0.0.1", 8765)
    (camera,) = config.cameras
    assert (camera.id, camera.source, camera.fps, camera.width, camera.jpeg_quality) == (
        "demo",
        "synthetic:",
        10.0,
        1280,
        80,
    )


def test_shipped_config_is_valid() -> None:
    config = load_config(ROOT / "etc" / "streamd.toml", {})
    assert [c.id for c in config.cameras] == ["demo"]


def test_defaults_suit_a_first_run() -> None:
    config = parse_config({"cameras": [{"id": "a", "source": "synthetic:"}]}, "x.toml", {})
    assert config.server.host == "127.0.0.1"  # loopback unless told otherwise
    assert config.cameras[0].width is None and config.cameras[0].jpeg_quality == 80


@pytest.mark.parametrize(
    ("text", "key", "problem"),
    [
        (
            '[[cameras]]\nid="a"\nsource="synthetic:"\n[[cameras]]\nid="b"\nsource="synthetic:"\nfps="fast"\n',
            "cameras[1].fps",
            "must be a number",
        ),
        ('[[cameras]]\nid="a"\nsource="synthetic:"\nfps=0\n', "cameras[0].fps", "between"),
        ('[[cameras]]\nid="a b"\nsource="synthetic:"\n', "cameras[0].id", "not a valid camera id"),
        (
            '[[cameras]]\nid="video:*"\nsource="synthetic:"\n',
            "cameras[0].id",
            "not a valid camera id",
        ),
        ('[[cameras]]\nsource="synthetic:"\n', "cameras[0].id", "is required"),
        ('[[cameras]]\nid="a"\n', "cameras[0].source", "is required"),
        ('[[cameras]]\nid="a"\nsource="ftp://x/y"\n', "cameras[0].source", "unsupported scheme"),
        ('[[cameras]]\nid="a"\nsource="device:cam"\n', "cameras[0].source", "device:0"),
        ('[[cameras]]\nid="a"\nsource="synthetic:"\nfsp=3\n', "cameras[0].fsp", "unknown key"),
        (
            '[[cameras]]\nid="a"\nsource="synthetic:"\njpeg_quality=101\n',
            "cameras[0].jpeg_quality",
            "between",
        ),
        (
            '[[cameras]]\nid="a"\nsource="synthetic:"\n[[cameras]]\nid="a"\nsource="synthetic:"\n',
            "cameras[1].id",
            "duplicate",
        ),
        ('[server]\nlisten="8765"\n', "server.listen", "HOST:PORT"),
        ('[redis]\nurl="http://x"\n', "redis.url", "redis://"),
        ('[redis]\nurl="redis://:pw@host:notaport/0"\n', "redis.url", "invalid Redis URL"),
        ('[redis]\nchannel_prefix="video:*"\n', "redis.channel_prefix", "glob"),
        ("cameras = 3\n", "cameras", "array of tables"),
        ('log_level = "loud"\n', "log_level", "must be"),
        (
            '[[cameras]]\nid="a"\nsource="synthetic:"\ndetector="hog"\n',
            "cameras[0].detector",
            "module:attribute",
        ),
        (
            '[[cameras]]\nid="a"\nsource="synthetic:"\ndetector="onnx"\n',
            "cameras[0].model",
            "required",
        ),
        (
            '[[cameras]]\nid="a"\nsource="synthetic:"\nignore_zones=[[[0,0],[1,1]]]\n',
            "cameras[0].ignore_zones[0]",
            "at least 3",
        ),
        (
            '[[cameras]]\nid="a"\nsource="synthetic:"\ndetect_fps=0\n',
            "cameras[0].detect_fps",
            "between",
        ),
    ],
)
def test_invalid_config_names_file_key_and_problem(
    tmp_path: Path, text: str, key: str, problem: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path, {})
    assert info.value.source == str(path)
    assert info.value.key == key
    assert problem in info.value.problem
    assert str(path) in str(info.value) and key in str(info.value)


def test_broken_toml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_config(write(tmp_path, "[[cameras]\n"), {})
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "nope.toml", {})


def test_env_redis_url_wins(tmp_path: Path) -> None:
    env = {"REDIS_URL": "redis://other:7000/3", "REDIS_HOST": "ignored"}
    config = load_config(write(tmp_path, EXAMPLE), env)
    assert config.redis.url == "redis://other:7000/3"


def test_env_redis_parts_build_a_url(tmp_path: Path) -> None:
    env = {
        "REDIS_HOST": "cache",
        "REDIS_PORT": "6380",
        "REDIS_DB": "2",
        "REDIS_PASSWORD": "p@ss/word",
    }
    config = load_config(write(tmp_path, EXAMPLE), env)
    assert config.redis.url == "redis://:p%40ss%2Fword@cache:6380/2"
    assert parse_config({}, "x", {"REDIS_PORT": "7001"}).redis.url == "redis://localhost:7001/0"


@pytest.mark.parametrize(
    ("value", "enabled"),
    [("0", False), ("false", False), ("no", False), ("1", True), ("yes", True), ("TRUE", True)],
)
def test_env_use_redis_switch(tmp_path: Path, value: str, enabled: bool) -> None:
    config = load_config(write(tmp_path, EXAMPLE), {"VIDEO_STREAM_USE_REDIS": value})
    assert config.redis.enabled is enabled


def test_env_use_redis_rejects_nonsense(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="VIDEO_STREAM_USE_REDIS"):
        load_config(write(tmp_path, EXAMPLE), {"VIDEO_STREAM_USE_REDIS": "maybe"})


def test_redact_url() -> None:
    assert redact_url("rtsp://admin:hunter2@10.0.0.5/h264") == "rtsp://admin:***@10.0.0.5/h264"
    assert redact_url("redis://:s3cret@host:6379/0") == "redis://:***@host:6379/0"
    assert redact_url("rtsp://cam.local/stream") == "rtsp://cam.local/stream"
    assert (
        redact_url("see rtsp://u:p@a and http://x:y@b/c")
        == "see rtsp://u:***@a and http://x:***@b/c"
    )


def test_check_prints_effective_config_redacted(tmp_path: Path) -> None:
    path = write(tmp_path, EXAMPLE.replace("synthetic:", "rtsp://admin:hunter2@cam/live"))
    result = streamd_check(path, {"REDIS_PASSWORD": "topsecret"})
    assert result.returncode == 0, result.stderr
    assert "hunter2" not in result.stdout and "topsecret" not in result.stdout
    assert 'source = "rtsp://admin:***@cam/live"' in result.stdout
    assert 'url = "redis://:***@localhost:6379/0"' in result.stdout


def test_check_fails_with_located_error(tmp_path: Path) -> None:
    path = write(tmp_path, EXAMPLE.replace("fps = 10", 'fps = "ten"'))
    result = streamd_check(path)
    assert result.returncode != 0
    assert f"{path}: cameras[0].fps: must be a number" in result.stderr


def test_version() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "streamd", "--version"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=30,
    )
    assert result.returncode == 0 and result.stdout.startswith("streamd ")


def test_secrets_from_file_and_credentials_directory(tmp_path: Path) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "redis").write_text("r3dis/pw\n")
    (creds / "cam").write_text("c@m")
    text = """
[redis]
url = "redis://cache.local:6379/1"
password_credential = "redis"

[[cameras]]
id = "door"
source = "rtsp://door.local/h264"
username = "viewer"
password_credential = "cam"
"""
    config = load_config(write(tmp_path, text), {"CREDENTIALS_DIRECTORY": str(creds)})
    assert config.redis.url == "redis://:r3dis%2Fpw@cache.local:6379/1"
    assert config.cameras[0].source == "rtsp://viewer:c%40m@door.local/h264"
    dumped = str(config.redacted())
    assert "r3dis" not in dumped and "c@m" not in dumped and "c%40m" not in dumped


@pytest.mark.parametrize(
    ("extra", "env", "key", "problem"),
    [
        (
            'password_credential = "cam"',
            {},
            "cameras[0].password_credential",
            "CREDENTIALS_DIRECTORY",
        ),
        ('password_file = "/nonexistent/pw"', {}, "cameras[0].password_file", "cannot read"),
        (
            'password_file = "/a"\npassword_credential = "b"',
            {},
            "cameras[0].password_file",
            "not both",
        ),
        ('username = "u"', {}, "cameras[0].username", "needs password_file"),
        (
            'password_credential = "../etc/shadow"',
            {"CREDENTIALS_DIRECTORY": "/tmp"},
            "cameras[0].password_credential",
            "invalid credential name",
        ),
    ],
)
def test_secret_errors_name_the_key(
    tmp_path: Path, extra: str, env: dict[str, str], key: str, problem: str
) -> None:
    text = f'[[cameras]]\nid = "a"\nsource = "rtsp://h/s"\n{extra}\n'
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text), env)
    assert info.value.key == key and problem in info.value.problem


def test_dropins_add_cameras_and_duplicates_name_both_files(tmp_path: Path) -> None:
    main = write(tmp_path, '[[cameras]]\nid = "a"\nsource = "synthetic:"\n')
    dropins = tmp_path / "streamd.d"
    dropins.mkdir()
    (dropins / "b.toml").write_text('[[cameras]]\nid = "b"\nsource = "synthetic:"\n')
    config = load_config(main, {})
    assert [c.id for c in config.cameras] == ["a", "b"]
    assert dict(config.origins)["b"] == str(dropins / "b.toml")
    (dropins / "c.toml").write_text('[[cameras]]\nid = "a"\nsource = "synthetic:"\n')
    with pytest.raises(ConfigError) as info:
        load_config(main, {})
    assert info.value.source == str(dropins / "c.toml") and str(main) in info.value.problem
    (dropins / "c.toml").write_text('[server]\nlisten = "0.0.0.0:1"\n')
    with pytest.raises(ConfigError, match="unknown key"):
        load_config(main, {})


def test_detection_settings_round_trip_through_the_worker_spec(tmp_path: Path) -> None:
    from streamd.worker.spec import WorkerSpec

    text = EXAMPLE + (
        'detector = "tests.plugins.detectors:FixedBox"\ndetect_fps = 2\noverlay = false\n'
        "ignore_zones = [[[0, 0], [10, 0], [10, 10]]]\n"
    )
    camera = load_config(write(tmp_path, text), {}).cameras[0]
    assert camera.detection.kind == "tests.plugins.detectors:FixedBox"
    assert camera.detection.detect_fps == 2.0 and camera.detection.overlay is False
    assert camera.detection.ignore_zones == (((0.0, 0.0), (10.0, 0.0), (10.0, 10.0)),)
    spec = WorkerSpec(camera, None, "video:demo")
    assert WorkerSpec.from_json(spec.to_json()).camera == camera


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('[server]\nlisten = ""\n', "server.listen"),
        ('[redis]\nurl = ""\n', "redis.url"),
        ('[redis]\nchannel_prefix = ""\n', "redis.channel_prefix"),
        ('log_level = ""\n', "log_level"),
        ('[[cameras]]\nid = "a"\nsource = "synthetic:"\ndetector = ""\n', "cameras[0].detector"),
        ('[[cameras]]\nid = "a"\nsource = "synthetic:"\nmodel = " "\n', "cameras[0].model"),
        (f'[[server.tokens]]\nname = ""\nsha256 = "{"0" * 64}"\n', "server.tokens[0].name"),
    ],
)
def test_an_empty_string_is_an_error_not_the_default(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text), {})
    assert info.value.key == key and "must not be empty" in info.value.problem


def test_defaults_are_the_models_defaults() -> None:
    assert parse_config({}, "x.toml", {}) == replace(Config(), source="x.toml")
    camera = parse_config({"cameras": [{"id": "a", "source": "synthetic:"}]}, "x", {}).cameras[0]
    assert camera == CameraConfig(id="a", source="synthetic:")


NEW_KEYS = f"""
[server]
server_names = ["cams.example.com", "*.Example.org", "wall.local."]
admin_token_sha256 = "{"ab" * 32}"

[supervisor]
child_memory_max = "512M"
max_cameras = 10

[[cameras]]
id = "door"
source = "synthetic:"
name = "Front door"
location = "Building A, ground floor — north side"
"""


def test_new_keys_are_parsed_and_shown(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, NEW_KEYS), {})
    assert config.server.server_names == ("cams.example.com", "*.example.org", "wall.local")
    assert config.server.admin_token_sha256 == "ab" * 32
    assert config.supervisor.child_memory_max == 512 * 1024 * 1024
    assert config.supervisor.max_cameras == 10
    camera = config.cameras[0]
    assert (camera.name, camera.location) == ("Front door", "Building A, ground floor — north side")
    shown = config.redacted()
    assert shown["server"]["server_names"] == list(config.server.server_names)
    assert shown["server"]["admin_token_sha256"] == "***"
    assert shown["supervisor"]["child_memory_max"] == 512 * 1024 * 1024
    assert shown["cameras"][0]["name"] == "Front door"
    result = streamd_check(write(tmp_path, NEW_KEYS))
    assert result.returncode == 0, result.stderr
    assert "ab" * 32 not in result.stdout and 'location = "Building A' in result.stdout


def test_new_keys_default_to_off() -> None:
    config = parse_config({"cameras": [{"id": "a", "source": "synthetic:"}]}, "x", {})
    assert config.server.server_names == () and config.server.admin_token_sha256 is None
    assert config.supervisor.child_memory_max is None and config.supervisor.max_cameras == 256
    assert config.cameras[0].name is None and config.cameras[0].location is None
    assert "admin_token_sha256" not in config.redacted()["server"]


@pytest.mark.parametrize(
    ("value", "expected"),
    [("512M", 512 << 20), ("1G", 1 << 30), ("40960K", 40 << 20), (200_000_000, 200_000_000)],
)
def test_child_memory_max_sizes(value: str | int, expected: int) -> None:
    config = parse_config({"supervisor": {"child_memory_max": value}}, "x", {})
    assert config.supervisor.child_memory_max == expected


@pytest.mark.parametrize(
    ("table", "key", "problem"),
    [
        (
            {"server": {"server_names": ["http://cams.example.com"]}},
            "server.server_names[0]",
            "host name",
        ),
        (
            {"server": {"server_names": ["x", "cams.example.com:8765"]}},
            "server.server_names[1]",
            "host name",
        ),
        (
            {"server": {"server_names": ["cams.example.com/wall"]}},
            "server.server_names[0]",
            "host name",
        ),
        ({"server": {"server_names": ["*"]}}, "server.server_names[0]", "host name"),
        ({"server": {"server_names": ["a.*.example.com"]}}, "server.server_names[0]", "host name"),
        ({"server": {"server_names": ["-bad.example.com"]}}, "server.server_names[0]", "host name"),
        ({"server": {"server_names": [""]}}, "server.server_names[0]", "host name"),
        ({"server": {"server_names": "cams.example.com"}}, "server.server_names", "list"),
        (
            {"server": {"admin_token_sha256": "AB" * 32}},
            "server.admin_token_sha256",
            "64 lowercase hex",
        ),
        (
            {"server": {"admin_token_sha256": "hunter2"}},
            "server.admin_token_sha256",
            "64 lowercase hex",
        ),
        (
            {"supervisor": {"child_memory_max": "512MB"}},
            "supervisor.child_memory_max",
            'like "512M"',
        ),
        ({"supervisor": {"child_memory_max": "-1"}}, "supervisor.child_memory_max", 'like "512M"'),
        ({"supervisor": {"child_memory_max": "1M"}}, "supervisor.child_memory_max", "between"),
        ({"supervisor": {"child_memory_max": True}}, "supervisor.child_memory_max", 'like "512M"'),
        ({"supervisor": {"max_cameras": 0}}, "supervisor.max_cameras", "between"),
        (
            {"cameras": [{"id": "a", "source": "synthetic:", "name": "x" * 201}]},
            "cameras[0].name",
            "at most 200",
        ),
        (
            {"cameras": [{"id": "a", "source": "synthetic:", "name": "a\nb"}]},
            "cameras[0].name",
            "control",
        ),
        (
            {"cameras": [{"id": "a", "source": "synthetic:", "location": "\u202eevil"}]},
            "cameras[0].location",
            "control",
        ),
        (
            {"cameras": [{"id": "a", "source": "synthetic:", "location": ""}]},
            "cameras[0].location",
            "empty",
        ),
    ],
)
def test_new_keys_are_validated(table: dict[str, Any], key: str, problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(table, "x.toml", {})
    assert info.value.key == key and problem in info.value.problem


def test_camera_name_and_location_reach_the_child() -> None:
    from streamd.worker.spec import WorkerSpec

    camera = parse_camera(
        "x", 0, {"id": "a", "source": "synthetic:", "name": "Hall", "location": "L1"}
    )
    spec = WorkerSpec(camera, None, "video:a")
    assert WorkerSpec.from_json(spec.to_json()).camera == camera


def test_detect_source_is_validated_masked_and_shares_the_cameras_account(
    tmp_path: Path,
) -> None:
    cam = EXAMPLE.replace("synthetic:", "rtsp://admin:hunter2@cam/main")
    path = write(tmp_path, cam + 'detect_source = "rtsp://admin:hunter3@cam/sub"\n')
    result = streamd_check(path)
    assert result.returncode == 0, result.stderr
    assert "hunter3" not in result.stdout and "hunter2" not in result.stdout
    assert 'detect_source = "rtsp://admin:***@cam/sub"' in result.stdout
    for bad, problem in (
        ('"ftp://cam/sub"', "unsupported scheme"),
        ('"synthetic:"', "must be a camera stream"),
        ('""', "must not be empty"),
    ):
        with pytest.raises(ConfigError, match=problem) as caught:
            load_config(write(tmp_path, EXAMPLE + f"detect_source = {bad}\n"), {})
        assert "cameras[0].detect_source" in str(caught.value)
    creds = tmp_path / "pw"
    creds.write_text("c@m")
    text = EXAMPLE.replace("synthetic:", "rtsp://cam/main") + (
        f'detect_source = "rtsp://cam/sub"\nusername = "v"\npassword_file = "{creds}"\n'
    )
    camera = load_config(write(tmp_path, text), {}).cameras[0]
    assert camera.detect_source == "rtsp://v:c%40m@cam/sub"
    assert "c%40m" not in str(load_config(write(tmp_path, text), {}).redacted())


def test_passthrough_is_on_for_rtsp_cameras_unless_said_and_needs_a_stream(
    tmp_path: Path,
) -> None:
    from streamd.worker.units import passthrough_enabled

    rtsp = EXAMPLE.replace("synthetic:", "rtsp://cam/main")
    assert passthrough_enabled(load_config(write(tmp_path, rtsp), {}).cameras[0])
    off = load_config(write(tmp_path, rtsp + "passthrough = false\n"), {}).cameras[0]
    assert not passthrough_enabled(off)
    assert not passthrough_enabled(load_config(write(tmp_path, EXAMPLE), {}).cameras[0])
    with pytest.raises(ConfigError, match=r"cameras\[0\]\.passthrough"):
        load_config(write(tmp_path, EXAMPLE + "passthrough = true\n"), {})
