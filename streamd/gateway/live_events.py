"""A live detection event as viewers get it, rebuilt from checked fields only
(pure; unit-tested in tests/test_hostile_input.py).

Events arrive on ``streamd:events:{camera}``, where anyone who can ``PUBLISH``
on our Redis can write. Nothing a publisher sent is passed through as sent:

- ``snapshot`` is never the publisher's URL (the wall fetches it with its token):
  it is rebuilt as ``/api/events/{id}/snapshot.jpg`` from a checked id, and only
  when the event says it has one.
- numbers must be finite (``NaN`` is refused when parsing) and of the right kind;
  strings and lists are bounded; unknown fields are left out.
- an ``id`` far from the time the event arrives is ignored (the event goes out
  without an id and a snapshot): a far-future id would become every wall's
  ``lastEventId`` and make ``events_since`` replay nothing after a reconnect.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from streamd.errors import StreamdError
from streamd.eventlog.records import parse_stream_id

# Stream ids are Redis' clock in ms; the event is published right after XADD.
MAX_ID_AHEAD_MS = 60_000  # clock skew between Redis and this gateway tolerated
MAX_ID_BEHIND_MS = 3_600_000  # a live event kept more than an hour ago is not live
MAX_LABELS = 64
MAX_LABEL = 64
MAX_DETECTIONS = 256
_TYPE = re.compile(r"[a-z][a-z_]{0,31}", re.ASCII)


class BadEventError(StreamdError, ValueError):
    """Not an event we forward (counted as ``bad_event``)."""


@dataclass(frozen=True)
class LiveEvent:
    event: dict[str, Any]  # what viewers get
    id_ignored: bool = False  # it carried an implausible id (counted, left out)


def plausible_live_id(ident: tuple[int, int], arrived_ms: int) -> bool:
    """Could a live event with this stream id have been kept just now?"""
    return arrived_ms - MAX_ID_BEHIND_MS <= ident[0] <= arrived_ms + MAX_ID_AHEAD_MS


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _labels(value: Any) -> list[str]:
    if not isinstance(value, list):
        return []
    return [v for v in value[:MAX_LABELS] if isinstance(v, str) and 0 < len(v) <= MAX_LABEL]


def _detection(value: Any) -> dict[str, Any] | None:
    if not isinstance(value, Mapping):
        return None
    label, score, box = value.get("label"), _number(value.get("score")), value.get("box")
    if not isinstance(label, str) or not 0 < len(label) <= MAX_LABEL or score is None:
        return None
    if not isinstance(box, list) or len(box) != 4:
        return None
    numbers = [_number(v) for v in box]
    if any(n is None for n in numbers):
        return None
    return {"label": label, "score": value["score"], "box": list(box)}


def viewer_event(camera_id: str, raw: Any, arrived_ms: int) -> LiveEvent:
    """The event viewers get for an untrusted, already parsed ``raw``; BadEventError
    when it is not an event of ``camera_id``."""
    if not isinstance(raw, Mapping) or raw.get("camera_id") != camera_id:
        raise BadEventError("not an event for this camera")
    kind = raw.get("type", "detection")
    if not isinstance(kind, str) or not _TYPE.fullmatch(kind):
        raise BadEventError("bad type")
    when = raw.get("time")
    if _number(when) is None:
        raise BadEventError("time must be a finite number")
    event: dict[str, Any] = {
        "type": kind,
        "camera_id": camera_id,
        "time": when,
        "appeared": _labels(raw.get("appeared")),
        "left": _labels(raw.get("left")),
        "labels": _labels(raw.get("labels")),
    }
    detections = raw.get("detections")
    if isinstance(detections, list):
        checked = (_detection(d) for d in detections[:MAX_DETECTIONS])
        event["detections"] = [d for d in checked if d is not None]
    else:
        event["detections"] = []
    ident = raw.get("id")
    if ident is None:
        return LiveEvent(event)
    parsed = parse_stream_id(ident) if isinstance(ident, str) else None
    if parsed is None:
        raise BadEventError("not an event id")
    if not plausible_live_id(parsed, arrived_ms):
        return LiveEvent(event, id_ignored=True)
    event["id"] = ident
    # Our own URL for our own id, never the publisher's (a wall fetches it with its token).
    event["snapshot"] = f"/api/events/{ident}/snapshot.jpg" if raw.get("snapshot") else None
    return LiveEvent(event)
