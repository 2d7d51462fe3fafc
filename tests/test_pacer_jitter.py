"""The pacer with a live camera at exactly the configured rate, as real ones
deliver: with jitter. No frame may be lost to it, and thinning stays even."""

from __future__ import annotations

import random

from streamd.worker.capture import Pacer


def test_a_camera_at_our_fps_with_jitter_loses_no_frame() -> None:
    jitter = random.Random(7)
    pacer = Pacer(fps=15, now=0.0)
    arrivals = [i / 15 + jitter.uniform(-0.012, 0.012) for i in range(1, 301)]
    assert sum(pacer.take(t) for t in sorted(arrivals)) == 300


def test_thinning_30_to_15_keeps_every_other_frame() -> None:
    pacer = Pacer(fps=15, now=0.0)
    kept = [i for i in range(60) if pacer.take(i / 30)]
    assert kept == list(range(0, 60, 2))


def test_frames_late_in_a_burst_are_kept_when_paced_on_stream_time() -> None:
    # Stream timestamps stay 1/15 s apart however the frames arrive.
    pacer = Pacer(fps=15, now=0.0)
    assert sum(pacer.take(i / 15) for i in range(150)) == 150


def test_a_clock_jumping_back_restarts_the_pacer() -> None:
    pacer = Pacer(fps=15, now=5000.0)  # monotonic at start; stream time starts near 0
    assert pacer.take(0.0)
    assert not pacer.take(0.01)
    assert pacer.take(1 / 15)
