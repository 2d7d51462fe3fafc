"""Files: the main TOML file plus every ``*.toml`` drop-in (cameras only) in
``/etc/streamd.d`` beside ``/etc/streamd.toml``, each read and decoded with
errors that name the file.

Every file is untrusted input with limits: at most ``MAX_FILE_BYTES`` (read no
further), values nested at most ``MAX_NESTING_DEPTH`` deep (tomllib recurses on
nested arrays and inline tables, so a deeper file may overflow the parser
itself: that is caught and reported as the same limit), and the cameras of all
files together at most ``[supervisor] max_cameras``.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from streamd.config.model import Config, ConfigError
from streamd.config.reader import TableReader
from streamd.config.sections import check_unique, parse_cameras, parse_config


def default_dropin_dir(path: Path) -> Path:
    """``/etc/streamd.toml`` → ``/etc/streamd.d``."""
    return path.parent / f"{path.stem}.d"


MAX_FILE_BYTES = 1024 * 1024
MAX_NESTING_DEPTH = 32
_TOO_DEEP = f"nested deeper than the limit of {MAX_NESTING_DEPTH} levels"


def read_toml(path: Path) -> dict[str, Any]:
    source = str(path)
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(source, "", "file not found") from None
    except OSError as exc:
        raise ConfigError(source, "", f"cannot read: {exc.strerror}") from None
    if len(data) > MAX_FILE_BYTES:
        raise ConfigError(source, "", f"larger than the limit of 1 MiB ({MAX_FILE_BYTES} bytes)")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(source, "", "not UTF-8 text") from None
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, "", f"invalid TOML: {exc}") from None
    except RecursionError:
        raise ConfigError(source, "", _TOO_DEEP) from None
    too_deep = too_deep_key(document, MAX_NESTING_DEPTH)
    if too_deep is not None:
        raise ConfigError(source, too_deep, _TOO_DEEP)
    return document


def too_deep_key(document: dict[str, Any], limit: int) -> str | None:
    """The top-level key under which tables and arrays nest deeper than ``limit``;
    walked with an explicit stack, as the document may be 10,000 levels deep."""
    stack: list[tuple[Any, int, str]] = [(value, 1, key) for key, value in document.items()]
    while stack:
        value, depth, top_key = stack.pop()
        if isinstance(value, dict):
            children: Any = value.values()
        elif isinstance(value, list):
            children = value
        else:
            continue
        if depth > limit:
            return top_key
        stack.extend((child, depth + 1, top_key) for child in children)
    return None


def dropin_files(directory: Path) -> list[Path]:
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.glob("*.toml") if p.is_file())


def load_config(path: Path, env: Mapping[str, str], dropin_dir: Path | None = None) -> Config:
    """Read and validate ``path`` plus every ``*.toml`` drop-in (cameras only) in
    ``dropin_dir`` (default: ``/etc/streamd.d`` beside ``/etc/streamd.toml``).
    Every failure is a ``ConfigError`` naming the file and the key."""
    config = parse_config(read_toml(path), str(path), env)
    origins = [(c, str(path), i) for i, c in enumerate(config.cameras)]
    cap = config.supervisor.max_cameras
    for dropin in dropin_files(dropin_dir or default_dropin_dir(path)):
        reader = TableReader(str(dropin), "", read_toml(dropin))
        cameras = parse_cameras(reader, env, room=cap - len(origins), cap=cap)
        reader.reject_unknown()  # drop-ins hold [[cameras]] only
        origins += [(c, str(dropin), i) for i, c in enumerate(cameras)]
    check_unique(origins)
    return replace(
        config,
        cameras=tuple(c for c, _, _ in origins),
        origins=tuple((c.id, source) for c, source, _ in origins),
    )
