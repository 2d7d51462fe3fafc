from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from streamd.video.gop import MAX_LAG_NS, GopCache, Unit, ViewerQueue


def decodable(received: list[Unit], sent: list[Unit]) -> bool:
    """Each unit received is a keyframe, or the unit right after the previous
    one received, and that one directly followed it in what was sent (no
    gaps within a GOP); the stream starts with a keyframe."""
    position = {id(u): i for i, u in enumerate(sent)}
    for index, unit in enumerate(received):
        if unit.keyframe:
            continue
        if index == 0:
            return False
        previous = received[index - 1]
        if position[id(unit)] != position[id(previous)] + 1 or unit.seq != previous.seq + 1:
            return False
    return True


FRAME_NS = 66_666_667  # 15 fps


# A camera's units: mostly consecutive seqs, sometimes one lost; keyframes now
# and then; sizes that sometimes exceed the bounds.
@st.composite
def streams(draw: st.DrawFn) -> list[Unit]:
    units, seq, arrived = [], draw(st.integers(0, 5)), 0
    for _ in range(draw(st.integers(0, 80))):
        seq += 1 + draw(st.sampled_from([0] * 12 + [1]))
        keyframe = draw(st.sampled_from([True] + [False] * 6))
        # Arrival times: bursts (no time between units) and pauses.
        arrived += draw(st.sampled_from([0, 0, FRAME_NS, FRAME_NS, MAX_LAG_NS]))
        units.append(Unit(seq, keyframe, bytes(draw(st.integers(1, 40))), arrived))
    return units


# One step of the gateway: a unit arrives (offered to the cache and every
# viewer), a viewer joins, or a viewer sends what it can.
actions = st.lists(
    st.one_of(
        st.just(("unit", 0)),
        st.tuples(st.just("join"), st.integers(0, 2)),
        st.tuples(st.just("send"), st.integers(0, 2)),
    ),
    max_size=200,
)


@given(streams(), actions, st.integers(20, 200), st.integers(20, 200))
def test_every_viewer_receives_a_decodable_sequence(
    stream: list[Unit], steps: list[tuple[str, int]], cache_bytes: int, viewer_bytes: int
) -> None:
    cache = GopCache(cache_bytes)
    viewers: dict[int, ViewerQueue] = {}
    received: dict[int, list[Unit]] = {}
    source = iter(stream)
    for action, who in steps:
        if action == "unit":
            unit = next(source, None)
            if unit is None:
                break
            cache.push(unit)
            for queue in viewers.values():
                queue.offer(unit)
        elif action == "join" and who not in viewers:
            viewers[who] = ViewerQueue(viewer_bytes)
            received[who] = []
            for unit in cache.units():
                viewers[who].offer(unit)
        elif action == "send" and who in viewers:
            while (unit := viewers[who].take()) is not None:
                received[who].append(unit)
        # The cache always holds a decodable prefix of the current GOP.
        cached = cache.units()
        assert decodable(cached, stream)
        assert sum(len(u.data) for u in cached) <= cache_bytes
        assert not cached or cached[0].keyframe
    for who, queue in viewers.items():
        while (unit := queue.take()) is not None:
            received[who].append(unit)
        assert decodable(received[who], stream), [(u.seq, u.keyframe) for u in received[who]]


@given(streams(), st.integers(20, 200))
def test_a_viewer_that_keeps_up_misses_nothing_after_its_first_keyframe(
    stream: list[Unit], viewer_bytes: int
) -> None:
    queue = ViewerQueue(viewer_bytes)
    got = []
    for unit in stream:
        queue.offer(unit)
        if (taken := queue.take()) is not None:
            got.append(taken)
    # Everything from the first keyframe that fits is delivered, except what
    # a gap in the camera's own sequence made undecodable.
    assert decodable(got, stream)
    if any(u.keyframe and len(u.data) <= viewer_bytes for u in stream):
        assert got and got[0].keyframe
    in_order = all(b.seq == a.seq + 1 for a, b in itertools.pairwise(stream))
    if in_order and all(len(u.data) <= viewer_bytes for u in stream):
        assert queue.skips == 0
        first = next((i for i, u in enumerate(stream) if u.keyframe), len(stream))
        assert got == stream[first:]


def units(*spec: str, apart_ns: int = FRAME_NS) -> list[Unit]:
    """``K`` keyframe, ``p`` other unit, ``_`` a lost seq; 10 bytes each,
    arriving ``apart_ns`` apart."""
    out = []
    for seq, kind in enumerate("".join(spec), start=1):
        if kind != "_":
            out.append(Unit(seq, kind == "K", bytes(10), seq * apart_ns))
    return out


def seqs(received: list[Unit]) -> list[int]:
    return [u.seq for u in received]


def test_cache_holds_the_current_gop_and_gives_it_to_a_joiner() -> None:
    cache = GopCache(1000)
    for unit in units("Kpp", "Kp"):
        cache.push(unit)
    assert seqs(cache.units()) == [4, 5]
    assert cache.size == 20


def test_cache_overflow_waits_for_the_next_keyframe() -> None:
    cache = GopCache(35)
    stream = units("Kppp", "pp", "Kp")
    for unit in stream[:4]:
        cache.push(unit)
    assert cache.units() == [] and cache.overflows == 1 and cache.dropped == 1
    for unit in stream[4:]:
        cache.push(unit)
    assert seqs(cache.units()) == [7, 8] and cache.dropped == 3


def test_cache_gap_cuts_the_gop() -> None:
    cache = GopCache(1000)
    for unit in units("Kp_p"):
        cache.push(unit)
    assert cache.units() == [] and cache.gaps == 1


def test_slow_viewer_skips_to_the_newest_keyframe() -> None:
    queue = ViewerQueue(1000)
    for unit in units("Kpp", "Kp", apart_ns=MAX_LAG_NS // 2):
        queue.offer(unit)
    assert queue.skips == 1 and queue.skipped == 3
    assert seqs([queue.take(), queue.take()]) == [4, 5]  # type: ignore[list-item]
    assert queue.take() is None


def test_a_burst_across_a_keyframe_loses_nothing() -> None:
    """The previous GOP's last units, pending when the keyframe arrives in the
    same burst, are sent before it: the viewer is not behind."""
    queue = ViewerQueue(1000)
    got = []
    stream = units("Kppp", "Kpp", apart_ns=FRAME_NS)
    for unit in stream[:2]:
        queue.offer(unit)
        got.append(queue.take())
    for unit in stream[2:]:  # a burst: nothing sent until it has all arrived
        queue.offer(unit)
    while (taken := queue.take()) is not None:
        got.append(taken)
    assert got == stream and queue.skips == 0


def test_a_backlog_over_the_bound_at_a_keyframe_is_dropped() -> None:
    queue = ViewerQueue(25)  # K + p pending (20 bytes): no room for a keyframe too
    for unit in units("Kp", "Kp", apart_ns=0):
        queue.offer(unit)
    assert queue.skips == 1 and seqs([queue.take(), queue.take()]) == [3, 4]  # type: ignore[list-item]


def test_viewer_over_its_bound_waits_for_a_keyframe() -> None:
    queue = ViewerQueue(25)
    for unit in units("Kppp", "Kp"):
        queue.offer(unit)
    got: list[Unit] = []
    while (taken := queue.take()) is not None:
        got.append(taken)
    assert seqs(got) == [5, 6]
    assert queue.skipped == 4


def test_viewer_waits_for_a_keyframe_after_a_gap() -> None:
    queue = ViewerQueue(1000)
    got = []
    for unit in units("Kp_ppKp"):
        queue.offer(unit)
        while (taken := queue.take()) is not None:
            got.append(taken)
    assert seqs(got) == [1, 2, 6, 7]
