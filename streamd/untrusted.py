"""Numbers and JSON from outside (HTTP parameters, Redis, the environment),
read by one set of rules (pure; unit-tested in tests/test_hostile_input.py).

Python's own readers are too generous for input someone else chose:

- ``str.isdigit()`` is true for ``"²"`` (which ``int`` refuses: a traceback) and
  ``\\d`` matches ``"٣"`` (which ``int`` reads as 3), so an id or a limit in
  Arabic-Indic digits would be accepted, and then break Redis. Here digits are
  ASCII ``0-9`` only.
- ``json.loads`` accepts ``NaN``/``Infinity`` and ``json.dumps`` writes them back:
  one such number makes every later answer that carries it invalid JSON for a
  browser. ``loads`` refuses them; ``dumps`` never writes them.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

_UINT = re.compile(r"[0-9]+", re.ASCII)
# Unix seconds as the events API takes them: plain decimal, no sign, exponent, "_" or spaces.
_DECIMAL = re.compile(r"[0-9]{1,15}(?:\.[0-9]{1,9})?", re.ASCII)


def is_ascii_digits(text: str | bytes) -> bool:
    """One or more of ``0-9`` and nothing else (no ``²``, ``٣``, sign or space)."""
    if isinstance(text, bytes):
        return bool(text) and text.isdigit()  # bytes.isdigit is ASCII-only
    return _UINT.fullmatch(text) is not None


def ascii_int(text: str, low: int = 0, high: int | None = None, max_digits: int = 19) -> int | None:
    """``text`` as an integer in ``[low, high]`` when it is at most ``max_digits``
    ASCII digits, else None (never an exception, whatever the text)."""
    if len(text) > max_digits or not is_ascii_digits(text):
        return None
    value = int(text)
    if value < low or (high is not None and value > high):
        return None
    return value


def ascii_decimal(text: str) -> float | None:
    """``1732860000`` or ``1732860000.5`` as a float, else None."""
    return float(text) if _DECIMAL.fullmatch(text) else None


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"non-finite number {name} in JSON")


def loads(text: str | bytes) -> Any:
    """``json.loads`` that refuses ``NaN``, ``Infinity`` and ``-Infinity``
    (ValueError), and numbers too large to be finite floats (``1e999``)."""
    return json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError("non-finite number in JSON")
    return value


def finite(value: Any) -> Any:
    """A copy of JSON-like data with non-finite floats replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def dumps(value: Any, *, compact: bool = False) -> str:
    """JSON a browser can always parse: ``allow_nan=False``; a non-finite float
    that got in anyway (a bug, not input: ``loads`` refuses them) goes out as null."""
    separators = (",", ":") if compact else None
    try:
        return json.dumps(value, allow_nan=False, separators=separators)
    except ValueError:
        return json.dumps(finite(value), allow_nan=False, separators=separators)
