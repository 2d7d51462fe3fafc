"""Pure decision logic: backoff, pacing, queues, mailboxes, lifecycle, histogram."""

from __future__ import annotations

import asyncio

import pytest

from streamd.backoff import Backoff
from streamd.gateway.hub import Hub, HubFrame
from streamd.lifecycle import Lifecycle
from streamd.states import ChildState, ExitCode
from streamd.stats import LatencyHistogram, bucket_upper_edge
from streamd.transport.frame import EncodedFrame, FrameMeta
from streamd.transport.outgoing import DropOldestQueue
from streamd.worker.capture import Pacer


def test_backoff_grows_exponentially_to_the_cap() -> None:
    policy = Backoff(initial=0.5, cap=60.0, jitter=0.0)
    assert [policy.delay(n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 4.0, 8.0]
    assert policy.delay(100) == 60.0
    assert policy.delay(10_000) == 60.0  # a night of failures does not overflow


def test_backoff_jitter_bounds() -> None:
    policy = Backoff(initial=1.0, cap=10.0, jitter=0.5)
    assert policy.delay(3, draw=lambda: 0.0) == 4.0
    assert policy.delay(3, draw=lambda: 1.0) == 2.0
    assert all(2.0 <= policy.delay(3) <= 4.0 for _ in range(200))


def test_pacer_keeps_configured_rate_from_a_faster_source() -> None:
    pacer = Pacer(fps=10, now=0.0)
    # A live source delivering 30 fps for 3 s: about 30 frames kept.
    kept = sum(pacer.take(i / 30) for i in range(90))
    assert 29 <= kept <= 31


def test_pacer_does_not_burst_after_a_stall() -> None:
    pacer = Pacer(fps=10, now=0.0)
    assert pacer.take(0.0)
    assert pacer.take(5.0)  # after a 5 s stall: one frame
    assert not pacer.take(5.01)  # and no catch-up burst
    assert pacer.wait_time(5.01) == pytest.approx(0.09)


def frame(seq: int) -> EncodedFrame:
    return EncodedFrame(FrameMeta("a", seq, 0, 0, 1, 1), b"\xff\xd8\xff\xd9", 0.0)


def test_drop_oldest_queue_keeps_the_newest_in_order() -> None:
    queue: DropOldestQueue[EncodedFrame] = DropOldestQueue(3)
    assert [queue.push(frame(i)) for i in range(5)] == [0, 0, 0, 1, 1]
    assert [f.meta.seq for f in queue.take_all()] == [2, 3, 4]
    assert len(queue) == 0


def hub_frame(camera: str, seq: int | None) -> HubFrame:
    meta = FrameMeta(camera, seq, 0, 0, 1, 1) if seq is not None else None
    return HubFrame(camera, b"jpeg%d" % (seq or 0), meta, 0)


async def test_hub_mailbox_latest_wins_and_counts_skips() -> None:
    hub = Hub()
    slow = hub.attach("a")
    fast = hub.attach("a")
    for seq in range(1, 6):
        hub.publish(hub_frame("a", seq))
        got = await fast.get()
        assert got.meta is not None and got.meta.seq == seq
    latest = await slow.get()
    assert latest.meta is not None and latest.meta.seq == 5
    assert slow.skipped == 4 and fast.skipped == 0
    assert hub.skipped_total == 4


async def test_hub_new_viewer_gets_cached_frame_at_once() -> None:
    hub = Hub()
    hub.publish(hub_frame("a", 7))
    mailbox = hub.attach("a")
    got = await asyncio.wait_for(mailbox.get(), 0.1)
    assert got.meta is not None and got.meta.seq == 7


async def test_hub_writes_to_idle_viewers_at_once_and_leaves_busy_ones_to_their_task() -> None:
    hub = Hub()
    hub.publish(hub_frame("a", 1))
    written: list[int] = []
    busy = False

    def send_now(frame: HubFrame) -> bool:
        if busy:
            return False
        assert frame.meta is not None
        written.append(frame.meta.seq)
        return True

    direct = hub.attach("a", send_now=send_now)  # the cached frame goes out at once
    plain = hub.attach("a")
    hub.publish(hub_frame("a", 2))
    assert written == [1, 2] and direct.take() is None and direct.delivered == 2
    busy = True  # its socket still sends: frames wait in the mailbox, latest wins
    hub.publish(hub_frame("a", 3))
    hub.publish(hub_frame("a", 4))
    busy = False
    hub.publish(hub_frame("a", 5))  # one is waiting: no jumping ahead of it
    assert written == [1, 2] and direct.skipped == 2
    waiting = await direct.get()
    assert waiting.meta is not None and waiting.meta.seq == 5
    hub.publish(hub_frame("a", 6))
    assert written == [1, 2, 6]
    # Counted once per viewer reached: 3 direct writes; the mailbox deliveries are
    # counted by the viewers' tasks (record_sent), not here.
    assert hub.delivery("a").sent == 3
    assert plain.skipped == 5  # never read: holds 6, replaced 1 to 5
    latest = hub.latest("a")
    assert latest is not None
    latest.message = b"built by a viewer"
    hub.detach(direct)
    hub.detach(plain)
    assert latest.message is None  # an unwatched feed keeps one copy of its frame


async def test_hub_drops_duplicate_seq_and_bounds_unwatched_foreign_cameras() -> None:
    hub = Hub(pinned=["a"], max_idle_foreign=2)
    hub.publish(hub_frame("a", 1))
    hub.publish(hub_frame("a", 1))
    assert hub.duplicates == 1
    mailbox = hub.attach("foreign")
    hub.publish(hub_frame("foreign", None))
    hub.detach(mailbox)
    assert hub.latest("foreign") is not None  # kept for a viewer who joins soon
    for name in ("x1", "x2", "x3"):  # a publisher inventing ids
        hub.publish(hub_frame(name, None))
    assert set(hub.feeds) == {"a", "x2", "x3"}  # LRU of 2 idle foreign feeds
    kept = hub.attach("a")
    hub.detach(kept)
    assert hub.latest("a") is not None
    hub.pin([])  # a reload removed "a": it joins the LRU and pushes out the oldest
    assert set(hub.feeds) == {"a", "x3"}


def state(life: Lifecycle) -> ChildState:
    # A call, so mypy does not carry a narrowed literal across transitions.
    return life.state


def test_lifecycle_transitions() -> None:
    life = Lifecycle(Backoff(initial=1.0, cap=8.0, jitter=0.0), stable_after=3.0)
    assert state(life) is ChildState.STOPPED
    life.on_spawned(0.0)
    assert state(life) is ChildState.STARTING
    life.on_frames(1.0)
    assert state(life) is ChildState.STARTING  # not yet stable
    life.on_frames(3.5)
    assert state(life) is ChildState.RUNNING
    delays = []
    now = 10.0
    for _ in range(6):  # crash loop: backoff grows to the cap
        delay = life.on_exit(now, 1)
        assert delay is not None and state(life) is ChildState.BACKOFF
        delays.append(delay)
        now += delay
        life.on_spawned(now)
    assert delays == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    assert life.restarts == 6
    life.on_frames(now + 3.0)
    assert state(life) is ChildState.RUNNING and life.failures == 0
    assert life.on_exit(now + 4, 1) == 1.0  # a stable run resets the backoff


def test_lifecycle_config_error_is_not_restarted() -> None:
    life = Lifecycle(Backoff(initial=1.0, cap=8.0))
    life.on_spawned(0.0)
    assert life.on_exit(0.5, ExitCode.CONFIG) is None
    assert life.state is ChildState.CONFIG_ERROR


def test_histogram_percentiles_are_ordered_and_bounded() -> None:
    hist = LatencyHistogram()
    for i in range(1, 1001):
        hist.record(i / 1000)  # 1 ms … 1 s
    p50, p95, p99 = (hist.percentile(q) for q in (0.5, 0.95, 0.99))
    assert p50 is not None and p95 is not None and p99 is not None
    assert p50 <= p95 <= p99
    assert p50 == pytest.approx(0.5, rel=0.1)
    assert p99 == pytest.approx(0.99, rel=0.1)
    top = hist.counts[-1]
    for _ in range(10_000):
        hist.record(1e6)  # far beyond the last bucket: clamped into it, not lost
    assert hist.counts[-1] == top + 10_000 and sum(hist.counts) == 11_000
    assert hist.percentile(0.99) == bucket_upper_edge(len(hist.counts) - 1)  # finite
    assert LatencyHistogram().percentile(0.5) is None


def test_demand_policy() -> None:
    from streamd.worker.demand import IDLE_POLL_S, WATCHED_POLL_S, DemandPolicy

    policy = DemandPolicy(frame_interval=0.1, off_after=2.0)
    assert not policy.watched(0.0)
    assert policy.next_poll(0.0) == IDLE_POLL_S  # idle: twice a second, not every frame
    policy.remote(True, 1.0)
    assert policy.watched(1.0) and policy.next_poll(1.0) == WATCHED_POLL_S
    policy.remote(False, 2.0)
    assert policy.watched(2.9)  # held: a reconnecting viewer does not flap encoding
    assert not policy.watched(3.1)
    policy.local = True
    assert policy.watched(100.0)
    assert DemandPolicy(frame_interval=0.01).next_poll(0.0) == IDLE_POLL_S  # never busy
    assert DemandPolicy(frame_interval=2.0).next_poll(0.0) == 2.0  # a slow camera: per frame
