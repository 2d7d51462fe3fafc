"""Prometheus exposition for ``/metrics``: the same cumulative figures as the stats
line, read at scrape time (a custom collector, so nothing is double-counted).

Metric names (all labelled by ``camera`` unless noted):

- ``streamd_frames_captured_total``, ``streamd_frames_published_total``,
  ``streamd_frames_fallback_total``, ``streamd_publish_attempts_total``,
  ``streamd_publish_failures_total``, ``streamd_published_bytes_total``
- ``streamd_frames_dropped_total{camera,reason}``
- passthrough (``au:{id}``): ``streamd_units_total`` (made publishable),
  ``streamd_units_published_total``, ``streamd_units_fallback_total``,
  ``streamd_unit_publish_attempts_total``, ``streamd_unit_publish_failures_total``,
  ``streamd_unit_published_bytes_total``, ``streamd_units_dropped_total{camera,reason}``
- the detection stream (``detect_source``): ``streamd_detect_frames_captured_total``,
  ``streamd_detect_frames_decoded_total``
- ``streamd_detect_runs_total``, ``streamd_detection_events_total``,
  ``streamd_detection_events_dropped_total`` (the backlog waiting for Redis was
  full), ``streamd_detection_events_not_kept_total`` (Redis refused them)
- ``streamd_detect_seconds`` (per detector call),
  ``streamd_publish_latency_seconds`` (queue → Redis ack),
  ``streamd_capture_to_publish_seconds``, ``streamd_end_to_end_latency_seconds``
  (capture → sent to a viewer): histograms
- ``streamd_frames_sent_total`` (to viewers), ``streamd_viewers`` (gauge),
  ``streamd_child_restarts_total``, ``streamd_child_stalls_total``,
  ``streamd_camera_live`` (1 when streaming),
  ``streamd_child_start_timeouts_total`` (no first heartbeat within ``start_timeout``),
  ``streamd_child_started_by{camera,method}`` (1 for the running child: ``fork``
  from the warm fork server, or ``spawn`` by exec)
- the fork server's own series: ``launch_metrics.py``
- ``streamd_frames_rejected_total{reason}`` (no camera label): untrusted input dropped
- ``streamd_frames_untimed_total`` (no label): frames whose capture time was over
  an hour old or over 10 s ahead, forwarded but kept out of latency figures
- ``streamd_requests_refused_total{reason}``: viewers and requests refused
  (unauthorized, forbidden, origin, max_viewers, message_rate, message_size, …)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from streamd.reporting import CameraSample
from streamd.states import SourceState
from streamd.stats import LatencyHistogram

BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]
COUNTERS = (
    ("frames_captured", "captured", "Frames read from the source"),
    ("frames_decoded", "decoded", "Pictures the decoder produced (inter codecs: every frame)"),
    ("frames_converted", "converted", "Frames converted to a picture (BGR or decoder planes)"),
    ("frames_from_planes", "planar", "Of those, taken as the decoder's YUV planes: no BGR"),
    ("frames_encoded", "encoded", "Frames JPEG-encoded"),
    ("frames_passed_through", "passed_through", "Frames published as the camera's own JPEG"),
    ("frames_published", "published", "Frames published to Redis"),
    ("frames_fallback", "fallback", "Frames sent to the local gateway while Redis was down"),
    ("publish_attempts", "attempts", "Frames the publisher tried to send to Redis"),
    ("publish_failures", "failures", "Frames that did not reach Redis"),
    ("published_bytes", "bytes_published", "Bytes published to Redis"),
    ("detect_runs", "detect_runs", "Detector calls"),
    ("detection_events", "events", "Detection events (appeared/left)"),
    (
        "detection_events_dropped",
        "events_dropped",
        "Detection events dropped: the backlog waiting for Redis was full",
    ),
    (
        "detection_events_not_kept",
        "events_not_kept",
        "Detection events Redis refused to keep (an error reply): not published",
    ),
    ("detect_frames_captured", "detect_captured", "Frames read from the detection stream"),
    ("detect_frames_decoded", "detect_decoded", "Pictures decoded from the detection stream"),
    ("units", "units", "Access units made publishable by the passthrough pipeline"),
    ("units_published", "units_published", "Access units published to Redis (au:{id})"),
    ("units_fallback", "units_fallback", "Access units sent to the local gateway without Redis"),
    ("unit_publish_attempts", "unit_attempts", "Access units the publisher tried to send"),
    ("unit_publish_failures", "unit_failures", "Access units that did not reach Redis"),
    ("unit_published_bytes", "unit_bytes_published", "Access unit bytes published to Redis"),
)


# Drops by reason, per camera: frames and passthrough units alike.
DROPS: tuple[tuple[str, str, Callable[[CameraSample], Mapping[str, int]]], ...] = (
    ("frames_dropped", "Frames dropped, by reason", lambda s: s.figures.dropped),
    ("units_dropped", "Access units dropped, by reason", lambda s: s.figures.unit_dropped),
)

HISTOGRAMS: tuple[tuple[str, str, Callable[[CameraSample], LatencyHistogram]], ...] = (
    (
        "streamd_publish_latency_seconds",
        "Publish queue to Redis acknowledgement",
        lambda s: s.figures.publish_latency,
    ),
    (
        "streamd_capture_to_publish_seconds",
        "Capture to Redis acknowledgement",
        lambda s: s.figures.capture_to_publish,
    ),
    ("streamd_detect_seconds", "Time per detector call", lambda s: s.figures.detect_latency),
    (
        "streamd_end_to_end_latency_seconds",
        "Capture to frame sent to a viewer",
        lambda s: s.delivery.end_to_end,
    ),
)


def _histogram(
    name: str, doc: str, per_camera: Mapping[str, LatencyHistogram]
) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, doc, labels=["camera"])
    for camera, hist in per_camera.items():
        cumulative = hist.cumulative_at(BUCKETS)
        buckets = [(str(b), float(c)) for b, c in zip(BUCKETS, cumulative, strict=True)]
        buckets.append(("+Inf", float(hist.total)))
        family.add_metric([camera], buckets, hist.sum_s)
    return family


class StreamdCollector(Collector):
    def __init__(
        self,
        samples: Callable[[], Mapping[str, CameraSample]],
        rejected: Callable[[], Mapping[str, int]],
        refused: Callable[[], Mapping[str, int]],
        untimed: Callable[[], int | None],
    ) -> None:
        self._samples = samples
        self._rejected = rejected
        self._refused = refused
        self._untimed = untimed  # None: a scoped view without daemon-wide series

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily | HistogramMetricFamily]:
        samples = self._samples()
        for metric, key, doc in COUNTERS:
            family = CounterMetricFamily(f"streamd_{metric}", doc, labels=["camera"])
            for camera, sample in samples.items():
                family.add_metric([camera], sample.figures.counters[key])
            yield family
        for drop_metric, drop_doc, reasons_of in DROPS:
            drops = CounterMetricFamily(
                f"streamd_{drop_metric}", drop_doc, labels=["camera", "reason"]
            )
            for camera, sample in samples.items():
                for reason, count in sorted(reasons_of(sample).items()):
                    drops.add_metric([camera, reason], count)
            yield drops
        for name, doc, pick in HISTOGRAMS:
            yield _histogram(name, doc, {c: pick(s) for c, s in samples.items()})
        sent = CounterMetricFamily(
            "streamd_frames_sent", "Frames sent to viewers", labels=["camera"]
        )
        viewers = GaugeMetricFamily("streamd_viewers", "Connected viewers", labels=["camera"])
        restarts = CounterMetricFamily(
            "streamd_child_restarts", "Child restarts", labels=["camera"]
        )
        stalls = CounterMetricFamily(
            "streamd_child_stalls", "Children killed as hung", labels=["camera"]
        )
        live = GaugeMetricFamily(
            "streamd_camera_live", "1 when the camera streams", labels=["camera"]
        )
        start_timeouts = CounterMetricFamily(
            "streamd_child_start_timeouts",
            "Children replaced for sending no first heartbeat within start_timeout",
            labels=["camera"],
        )
        started_by = GaugeMetricFamily(
            "streamd_child_started_by",
            "1 for how the running child was started: fork (warm fork server) or spawn (exec)",
            labels=["camera", "method"],
        )
        for camera, sample in samples.items():
            start_timeouts.add_metric([camera], sample.start_timeouts)
            if sample.started_by is not None:
                started_by.add_metric([camera, sample.started_by], 1.0)
            sent.add_metric([camera], sample.delivery.sent)
            viewers.add_metric([camera], sample.viewers)
            restarts.add_metric([camera], sample.restarts)
            stalls.add_metric([camera], sample.stalls)
            live.add_metric([camera], 1.0 if sample.state is SourceState.LIVE else 0.0)
        yield from (sent, viewers, restarts, stalls, live, start_timeouts, started_by)
        untimed = self._untimed()
        if untimed is None:
            return
        yield CounterMetricFamily(
            "streamd_frames_untimed",
            "Frames forwarded but kept out of latency figures (capture time implausible)",
            value=untimed,
        )
        rejected = CounterMetricFamily(
            "streamd_frames_rejected", "Untrusted frames dropped, by reason", labels=["reason"]
        )
        for reason, count in sorted(self._rejected().items()):
            rejected.add_metric([reason], count)
        yield rejected
        refused = CounterMetricFamily(
            "streamd_requests_refused", "Viewers and requests refused, by reason", labels=["reason"]
        )
        for reason, count in sorted(self._refused().items()):
            refused.add_metric([reason], count)
        yield refused
