"""The pure pieces behind logs and reloads, tested directly: the stats line
(``StatsReporter``) and the reload diff (``diff_specs``)."""

from __future__ import annotations

from collections import Counter

from streamd.lifecycle import diff_specs
from streamd.reporting import CameraSample, StatsReporter
from streamd.states import CameraState, SourceState
from streamd.stats import CameraCounters, DeliveryStats


def sample(state: CameraState = SourceState.LIVE, viewers: int = 1, **counts: int) -> CameraSample:
    figures = CameraCounters(counters=Counter(counts))
    return CameraSample(
        figures, DeliveryStats(sent=counts.get("published", 0)), state, viewers, 0, 0
    )


def test_stats_line_is_the_difference_of_two_snapshots() -> None:
    reporter = StatsReporter()
    first = reporter.tick(100.0, {"a": sample(captured=10, attempts=8, published=8)})["a"]
    assert first["interval_s"] == 0.0 and first["fps_in"] == 0.0  # no interval yet
    assert first["frames_captured"] == 10 and first["success_rate_pct"] == 100.0
    second = reporter.tick(
        102.0,
        {"a": sample(captured=30, attempts=28, published=23, failures=5, fallback=3)},
    )["a"]
    assert second["interval_s"] == 2.0
    assert second["frames_captured"] == 20 and second["fps_in"] == 10.0
    assert second["frames_published"] == 15 and second["frames_fallback"] == 3
    assert second["fps_out"] == 9.0  # (15 published + 3 local) / 2 s
    assert second["success_rate_pct"] == 75.0  # 15 of 20 attempts
    assert second["frames_sent"] == 15 and second["frames_published_total"] == 23
    assert reporter.last_lines == {"a": second}


def test_stats_reporter_forgets_removed_cameras_and_starts_new_ones_afresh() -> None:
    reporter = StatsReporter()
    reporter.tick(0.0, {"a": sample(captured=5), "b": sample(captured=5)})
    lines = reporter.tick(1.0, {"b": sample(captured=6)})
    assert set(lines) == {"b"} and lines["b"]["frames_captured"] == 1
    back = reporter.tick(2.0, {"a": sample(captured=50), "b": sample(captured=7)})["a"]
    assert back["interval_s"] == 0.0 and back["frames_captured"] == 50  # not 45
    idle = reporter.tick(3.0, {"a": sample(captured=50), "b": sample(captured=7)})["a"]
    assert idle["success_rate_pct"] is None and idle["fps_out"] == 0.0


def test_diff_specs_sorts_cameras_by_what_a_reload_does() -> None:
    old = {"keep": 1, "change": 2, "gone": 3}
    new = {"change": 20, "keep": 1, "new": 4}
    diff = diff_specs(old, new)
    assert diff.added == ("new",) and diff.removed == ("gone",)
    assert diff.changed == ("change",) and diff.unchanged == ("keep",)
    same = diff_specs(old, dict(old))
    assert same.unchanged == ("keep", "change", "gone")
    assert same.added == same.removed == same.changed == ()
