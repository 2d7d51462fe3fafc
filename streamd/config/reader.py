"""Typed, located reading of one TOML table.

Every accessor returns ``None`` for a missing key, so the dataclass field keeps
the only copy of each default (``present()`` drops the ``None``s before the
dataclass is built). A present value of the wrong type, out of range, or an
empty string is a ``ConfigError`` naming the file and the full key path.

Why a hand-written reader and not pydantic v2 or msgspec (weighed for this
split): both would still need everything that is not a type or a range here —
secrets from files, environment overrides, drop-ins, duplicate ids across files,
rules across keys (tls_cert with tls_key, onnx needs a model, loopback without
tokens), a flat camera table feeding a nested detector model — and their error
texts would need translating to keep ``FILE: cameras[1].fps: must be a number``:
msgspec reports an unknown key at the parent (``$.cameras[0]``), pydantic in
lax mode turns ``"10"`` into 10.0 and in strict mode refuses TOML arrays for
tuple fields, and puts the offending input (a Redis URL with its password) in
its errors. The reader below is ~150 lines; a library would replace perhaps a
third of it and add a dependency to every camera child, which parses its spec
with this code.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Mapping
from typing import Any

from streamd.config.model import ConfigError
from streamd.untrusted import is_ascii_digits


def present(**values: Any) -> dict[str, Any]:
    """The keyword arguments that were given: a missing key keeps the field's default."""
    return {name: value for name, value in values.items() if value is not None}


class TableReader:
    """Typed access to one TOML table, with errors that carry the full key path."""

    def __init__(self, source: str, prefix: str, table: Mapping[str, Any]) -> None:
        self.source = source
        self.prefix = prefix
        self.table = table
        self.used: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.prefix}.{name}" if self.prefix else name

    def error(self, name: str, problem: str) -> ConfigError:
        return ConfigError(self.source, self.key(name), problem)

    def value(self, name: str) -> Any:
        """The raw value, for shapes the typed accessors do not cover."""
        self.used.add(name)
        return self.table.get(name)

    def string(self, name: str) -> str | None:
        value = self.value(name)
        if value is None:
            return None
        if not isinstance(value, str):
            raise self.error(name, f"must be a string, got {type(value).__name__}")
        if not value.strip():
            raise self.error(name, "must not be empty (leave the key out for the default)")
        return value

    def required_string(self, name: str) -> str:
        value = self.string(name)
        if value is None:
            raise self.error(name, "is required")
        return value

    def boolean(self, name: str) -> bool | None:
        value = self.value(name)
        if value is not None and not isinstance(value, bool):
            raise self.error(name, f"must be true or false, got {type(value).__name__}")
        return value

    def number(self, name: str, low: float, high: float) -> float | None:
        value = self.value(name)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.error(name, f"must be a number, got {type(value).__name__}")
        if not low <= value <= high:
            raise self.error(name, f"must be between {low:g} and {high:g}, got {value!r}")
        return float(value)

    def integer(self, name: str, low: int, high: int) -> int | None:
        value = self.value(name)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(name, f"must be an integer, got {type(value).__name__}")
        if not low <= value <= high:
            raise self.error(name, f"must be between {low} and {high}, got {value}")
        return value

    def strings(self, name: str, problem: str) -> tuple[str, ...] | None:
        """A list of strings; ``problem`` says what the list should look like."""
        value = self.value(name)
        if value is None:
            return None
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise self.error(name, problem)
        return tuple(value)

    def array(self, name: str, problem: str) -> list[Any] | None:
        """A list whose items the caller checks (arrays of tables)."""
        value = self.value(name)
        if value is not None and not isinstance(value, list):
            raise self.error(name, problem)
        return value

    def table_of(self, name: str) -> TableReader:
        """A sub-table's reader (empty when the table is absent)."""
        value = self.value(name)
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise self.error(name, "must be a table")
        return TableReader(self.source, self.key(name), value)

    def reject_unknown(self) -> None:
        unknown = sorted(set(self.table) - self.used)
        if unknown:
            raise self.error(toml_key(unknown[0]), "unknown key (check the spelling)")


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def toml_key(name: str) -> str:
    """``name`` as TOML writes it: bare if it can be, else quoted (``""``, ``"a.b"``)."""
    return name if _BARE_KEY.fullmatch(name) else json.dumps(name, ensure_ascii=False)


def parse_listen(source: str, key: str, value: str) -> tuple[str, int]:
    host, sep, port_text = value.rpartition(":")
    if not sep or not is_ascii_digits(port_text) or len(port_text) > 5 or not host:
        raise ConfigError(source, key, f"must look like HOST:PORT, got {value!r}")
    port = int(port_text)
    if not 0 <= port <= 65535:
        raise ConfigError(source, key, f"port must be 0-65535, got {port}")
    return host.strip("[]"), port


_SIZE = re.compile(r"([0-9]+)([KMGT]?)")
_SIZE_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


def byte_size(r: TableReader, name: str, low: int, high: int) -> int | None:
    """Bytes from an integer or a string with a 1024-based suffix: ``"512M"``."""
    value = r.value(name)
    if value is None:
        return None
    match = _SIZE.fullmatch(value) if isinstance(value, str) else None
    if isinstance(value, int) and not isinstance(value, bool):
        size = value
    elif match is not None:
        size = int(match.group(1)) * _SIZE_UNITS[match.group(2)]
    else:
        raise r.error(name, 'must be bytes or a size like "512M" (K, M, G, T: 1024-based)')
    if not low <= size <= high:
        raise r.error(name, f"must be between {low} and {high} bytes, got {size}")
    return size


# RFC 1123 labels; a name may start with "*." to cover every subdomain of the rest.
_HOST_LABEL = r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)"
_HOST_NAME = re.compile(rf"(\*\.)?{_HOST_LABEL}(\.{_HOST_LABEL})*")


def is_host_name(name: str) -> bool:
    return len(name) <= 253 and _HOST_NAME.fullmatch(name) is not None


# Bidirectional overrides and isolates reorder what is displayed around them.
_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def display_text(r: TableReader, name: str, max_length: int) -> str | None:
    """A short label for people: no control characters, bounded length."""
    value = r.string(name)
    if value is None:
        return None
    if len(value) > max_length:
        raise r.error(name, f"must be at most {max_length} characters, got {len(value)}")
    for char in value:
        if unicodedata.category(char) in ("Cc", "Zl", "Zp") or char in _BIDI_CONTROLS:
            raise r.error(name, f"must not contain control characters (found U+{ord(char):04X})")
    return value
