"""The child's access-unit publisher (issue 20): passthrough units on
``au:{camera_id}``, by the same machinery as frames (``publisher.Publisher``:
a link of its own, adaptive batching, a bounded drop-oldest queue, the
embedded fallback over the control socket as ``UNIT`` messages), counted
apart (``unit_*`` counters, ``unit_dropped`` by reason).

A unit is published as it came (the payload is the whole message, metadata
in its SEI): no JPEG header to build. A unit dropped from the queue leaves a
gap in the SEI's ``seq``, which tells a consumer to wait for the next keyframe.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from streamd.stats import CameraCounters
from streamd.transport.outgoing import CounterNames
from streamd.transport.publisher import Publisher

# Two seconds at 15 fps: a GOP's worth may wait for one batch's replies; more
# means Redis is not keeping up, and the oldest go (a gap the gateway sees).
UNIT_QUEUE_SIZE = 32


@dataclass(frozen=True, slots=True)
class EncodedUnit:
    """One passthrough message on its way out (capture thread → publisher)."""

    payload: bytes  # Annex-B access unit with parameter sets on keyframes and our SEI
    capture_ns: int
    queued_at: float  # time.monotonic() at submit
    keyframe: bool


class UnitPublisher(Publisher[EncodedUnit]):
    names = CounterNames(
        attempts="unit_attempts",
        published="units_published",
        failures="unit_failures",
        fallback="units_fallback",
        bytes="unit_bytes_published",
    )

    def _dropped_counter(self, stats: CameraCounters) -> Counter[str]:
        return stats.unit_dropped

    def _pack(self, head: bytes, item: EncodedUnit, publish_ns: int) -> tuple[bytes, int]:
        payload = item.payload
        return b"".join((head, b"$%d\r\n" % len(payload), payload, b"\r\n")), len(payload)

    def _wire(self, item: EncodedUnit) -> bytes:
        return item.payload
