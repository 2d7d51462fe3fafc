"""When detections change meaningfully, say so once (pure: ``now`` passed in).

An event fires when a label appears (motion starts, a class enters) or when a
label has been absent for ``clear_after`` seconds (it left): detections that
flicker frame to frame produce one event, not one per frame.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from streamd.worker.detectors import Detection


@dataclass(frozen=True)
class DetectionEvent:
    camera_id: str
    time: float  # wall clock, seconds
    appeared: tuple[str, ...]
    left: tuple[str, ...]
    detections: tuple[Detection, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "type": "detection",
            "camera_id": self.camera_id,
            "time": round(self.time, 3),
            "appeared": list(self.appeared),
            "left": list(self.left),
            "labels": sorted({d.label for d in self.detections}),
            "detections": [d.to_json() for d in self.detections],
        }


@dataclass
class EventTracker:
    camera_id: str
    clear_after: float = 2.0
    last_seen: dict[str, float] = field(default_factory=dict)  # label → monotonic time

    def update(
        self, detections: Sequence[Detection], now: float, wall: float
    ) -> DetectionEvent | None:
        labels = {d.label for d in detections}
        appeared = sorted(labels - set(self.last_seen))
        for label in labels:
            self.last_seen[label] = now
        left = sorted(
            label
            for label, seen in self.last_seen.items()
            if label not in labels and now - seen >= self.clear_after
        )
        for label in left:
            del self.last_seen[label]
        if not appeared and not left:
            return None
        return DetectionEvent(self.camera_id, wall, tuple(appeared), tuple(left), tuple(detections))

    @property
    def active(self) -> list[str]:
        return sorted(self.last_seen)
