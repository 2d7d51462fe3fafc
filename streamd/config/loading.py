"""Files: the main TOML file plus every ``*.toml`` drop-in (cameras only) in
``/etc/streamd.d`` beside ``/etc/streamd.toml``, each read and decoded with
errors that name the file."""

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


def read_toml(path: Path) -> dict[str, Any]:
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(source, "", "file not found") from None
    except OSError as exc:
        raise ConfigError(source, "", f"cannot read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(source, "", "not UTF-8 text") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, "", f"invalid TOML: {exc}") from None


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
    for dropin in dropin_files(dropin_dir or default_dropin_dir(path)):
        reader = TableReader(str(dropin), "", read_toml(dropin))
        cameras = parse_cameras(reader, env)
        reader.reject_unknown()  # drop-ins hold [[cameras]] only
        origins += [(c, str(dropin), i) for i, c in enumerate(cameras)]
    check_unique(origins)
    return replace(
        config,
        cameras=tuple(c for c, _, _ in origins),
        origins=tuple((c.id, source) for c, source, _ in origins),
    )
