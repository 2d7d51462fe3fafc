"""Hostile or runaway config files are refused with exit 78, naming the file and
the limit: nesting depth, file size, cameras per node."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from streamd.config import ConfigError, load_config

from .conftest import ROOT, streamd_check

CAMERA = '[[cameras]]\nid = "cam{i}"\nsource = "synthetic:"\n'


@pytest.mark.parametrize(
    "text",
    [
        "a = " + "[" * 10_000 + "]" * 10_000 + "\n",
        "a = " + "{b = " * 10_000 + "1" + "}" * 10_000 + "\n",
        "[[cameras]]\n" + 'id = "x"\nsource = "synthetic:"\nignore_zones = ' + "[" * 5000 + "\n",
    ],
    ids=["arrays", "inline-tables", "unterminated"],
)
def test_deep_nesting_that_overflows_the_parser_is_a_config_error(
    tmp_path: Path, text: str
) -> None:
    path = tmp_path / "streamd.toml"
    path.write_text(text)
    result = streamd_check(path)
    assert result.returncode == 78, result.stderr
    assert f"{path}: nested deeper than the limit of 32 levels" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("a = " + "[" * 40 + "]" * 40 + "\n", "a"),
        ("a = " + "{b = " * 40 + "1" + "}" * 40 + "\n", "a"),
        ("x." * 40 + "y = 1\n", "x"),
        ("x." * 10_000 + "y = 1\n", "x"),  # dotted keys: the parser does not recurse
        ("[" + "t." * 50 + "u]\nv = 1\n", "t"),
    ],
    ids=["arrays", "inline-tables", "dotted", "dotted-10000", "table-header"],
)
def test_nesting_beyond_the_limit_is_refused_after_parsing(
    tmp_path: Path, text: str, key: str
) -> None:
    path = tmp_path / "streamd.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path, {})
    assert info.value.source == str(path) and info.value.key == key
    assert "nested deeper than the limit of 32 levels" in info.value.problem


def test_ordinary_nesting_is_fine(tmp_path: Path) -> None:
    path = tmp_path / "streamd.toml"
    path.write_text(
        CAMERA.format(i=0) + "ignore_zones = [[[0, 0], [10, 0], [10, 10]]]\n"
        '[[server.tokens]]\nsha256 = "' + "0" * 64 + '"\ncameras = ["cam0"]\n'
    )
    assert load_config(path, {}).cameras[0].detection.ignore_zones


def test_oversized_files_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "streamd.toml"
    path.write_text(CAMERA.format(i=0) + "# " + "x" * (1024 * 1024) + "\n")
    result = streamd_check(path)
    assert result.returncode == 78
    assert f"{path}: larger than the limit of 1 MiB" in result.stderr

    path.write_text(CAMERA.format(i=0))
    dropins = tmp_path / "streamd.d"
    dropins.mkdir()
    (dropins / "big.toml").write_text(CAMERA.format(i=1) + "#" * (1024 * 1024 + 1))
    with pytest.raises(ConfigError) as info:
        load_config(path, {})
    assert info.value.source == str(dropins / "big.toml") and "1 MiB" in info.value.problem


def test_camera_count_is_capped_by_default(tmp_path: Path) -> None:
    path = tmp_path / "streamd.toml"
    path.write_text("".join(CAMERA.format(i=i) for i in range(257)))
    with pytest.raises(ConfigError) as info:
        load_config(path, {})
    assert (info.value.source, info.value.key) == (str(path), "cameras")
    assert "257 cameras" in info.value.problem and "max_cameras = 256" in info.value.problem
    result = streamd_check(path)
    assert result.returncode == 78 and f"{path}: cameras: 257 cameras" in result.stderr
    path.write_text(
        "[supervisor]\nmax_cameras = 300\n" + "".join(CAMERA.format(i=i) for i in range(257))
    )
    assert len(load_config(path, {}).cameras) == 257


def test_camera_cap_counts_dropins(tmp_path: Path) -> None:
    path = tmp_path / "streamd.toml"
    path.write_text("[supervisor]\nmax_cameras = 2\n" + CAMERA.format(i=0))
    dropins = tmp_path / "streamd.d"
    dropins.mkdir()
    (dropins / "a.toml").write_text(CAMERA.format(i=1))
    assert len(load_config(path, {}).cameras) == 2
    (dropins / "b.toml").write_text(CAMERA.format(i=2))
    with pytest.raises(ConfigError) as info:
        load_config(path, {})
    assert (info.value.source, info.value.key) == (str(dropins / "b.toml"), "cameras")
    assert "max_cameras = 2" in info.value.problem


def test_a_200000_camera_file_is_refused_quickly_in_little_memory(tmp_path: Path) -> None:
    path = tmp_path / "streamd.toml"
    path.write_text("".join(CAMERA.format(i=i) for i in range(200_000)))
    assert path.stat().st_size > 8 * 1024 * 1024
    # Peak RSS (VmHWM: ru_maxrss would include the forking parent's) of a fresh
    # interpreter running the command, measured by itself.
    probe = (
        "import contextlib, io, pathlib, re\n"
        "from streamd.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        f"    code = main(['check', '-c', {str(path)!r}])\n"
        "status = pathlib.Path('/proc/self/status').read_text()\n"
        "print(code, re.search(r'VmHWM:\\s+(\\d+)', status).group(1))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    code, peak_kib = result.stdout.split()
    assert code == "78" and "limit of 1 MiB" in result.stderr
    assert int(peak_kib) < 100 * 1024, f"peak RSS {int(peak_kib) // 1024} MiB"
