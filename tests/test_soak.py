"""A one-minute version of ``benchmarks/soak.py`` in the suite: real daemon, three
synthetic cameras, steady, never-reading and short-lived viewers; no streamd
process may grow fast, leak fds, restart, or starve the steady viewers.

The RSS bound is looser than the benchmark's target (5 MB per 10 minutes) because
a slope fitted over 40 s is extrapolated 15 times: one allocator step of 1 MB
inside the window already reads as ~15 MB per 10 minutes. 40 MB per 10 minutes
(4 MB per minute) still catches a leak per frame or per viewer of any size that
matters; the 10-minute benchmark measures the real slope."""

from __future__ import annotations

from pathlib import Path

from benchmarks.soak import report, soak

SOAK_SECONDS = 60.0
WARMUP_SECONDS = 20.0
RSS_SLOPE_BOUND_MB_PER_10_MIN = 40.0
FD_TOLERANCE = 2  # a child's redis pool may hold one more connection than before
FPS_TOLERANCE = 0.8  # of the configured fps, on a shared, busy 2-core machine


async def test_one_minute_soak(tmp_path: Path) -> None:
    result = await soak(tmp_path, SOAK_SECONDS, cameras=3, interval=2.0, warmup=WARMUP_SECONDS)
    print(report(result))
    assert result.daemon_alive
    assert result.tracebacks == 0
    assert {p.label for p in result.processes} == {
        "daemon",
        "forkserver",
        "child:soak0",
        "child:soak1",
        "child:soak2",
    }
    for figures in result.processes:
        assert figures.restarts == 0, figures.line()
        assert figures.slope_mb_per_10_min < RSS_SLOPE_BOUND_MB_PER_10_MIN, figures.line()
    for label, (start, end) in result.quiet_fds.items():
        assert end <= start + FD_TOLERANCE, (label, start, end)
    assert set(result.quiet_fds) == {p.label for p in result.processes}
    assert result.churned >= 100 and result.churn_failed == 0, result.churn_errors
    for viewer, (got, configured) in result.viewer_fps.items():
        assert got >= FPS_TOLERANCE * configured, (viewer, got, configured)
