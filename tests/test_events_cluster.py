"""Kept events and pushed frames on a real Redis Cluster (issue 19): the stream
and its snapshots in one hash-tagged slot, written by a camera node's child and
read by a gateway node (``/api/events``, snapshots, ``/ws`` replay); a frame
pushed over HTTP to one gateway reaches a viewer of another by SPUBLISH."""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect

from streamd.eventlog.records import CLUSTER_KEYS

from .conftest import Daemon, wait_for
from .scale_support import RedisCluster, node_config, start_node, state_of
from .test_events import STORM, events, get, key
from .test_seed_api import call, jpeg_bytes, same_jpeg

PUSHED = {"id": "pushed", "source": "external:"}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    started = RedisCluster(tmp_path_factory.mktemp("cluster"), masters=3, replicas=0)
    try:
        started.start()
        yield started
    finally:
        started.stop()


@pytest.fixture
def nodes() -> Iterator[list[Daemon]]:
    started: list[Daemon] = []
    yield started
    for daemon in started:
        daemon.stop(signal.SIGTERM)
    for daemon in started:
        assert "Traceback" not in daemon.log_text(), daemon.log_text()[-3000:]


def node(
    cluster: RedisCluster,
    path: Path,
    name: str,
    cameras: list[dict[str, Any]],
    *,
    gateway: bool,
) -> Daemon:
    config, port = node_config(
        path,
        redis_url=cluster.url,
        node=name,
        cameras=cameras,
        gateway=gateway,
        redis_extra="cluster = true",
    )
    return start_node(config, port, gateway=gateway)


def kept_ids(client: Any) -> list[str]:
    return [bytes(i).decode() for i, _ in client.xrange(CLUSTER_KEYS.stream)]


async def _replay(url: str, since: str, live_count: int) -> tuple[list[str], list[str]]:
    replayed: list[str] = []
    live: list[str] = []
    async with connect(url, max_size=None, open_timeout=5) as ws:
        subscribe = {"op": "subscribe", "cameras": ["storm"], "events_since": since}
        await ws.send(json.dumps(subscribe))
        async with asyncio.timeout(15):
            while len(live) < live_count:
                message = await ws.recv()
                if isinstance(message, bytes):
                    continue
                data = json.loads(message)
                if data["type"] == "events":
                    replayed += [e["id"] for e in data["events"]]
                elif data["type"] == "event":
                    live.append(data["event"]["id"])
    return replayed, live


async def test_events_are_kept_read_and_replayed_in_a_cluster(
    cluster: RedisCluster, tmp_path: Path, nodes: list[Daemon]
) -> None:
    storm = {**STORM, "fps": 5}
    nodes.append(node(cluster, tmp_path / "cam.toml", "cams", [storm], gateway=False))
    gateway = node(cluster, tmp_path / "gw.toml", "gw", [], gateway=True)
    nodes.append(gateway)
    await asyncio.to_thread(
        wait_for, lambda: state_of(gateway, "storm") == "live", 20, "storm live"
    )
    # Kept: the stream, its snapshots and their index all on one master.
    await asyncio.to_thread(
        wait_for, lambda: len(events(gateway, "camera=storm")) >= 4, 20, "kept events"
    )
    kept = await asyncio.to_thread(events, gateway, "camera=storm")
    owner = cluster.client(cluster.master_port_for(CLUSTER_KEYS.stream))
    assert owner.xlen(CLUSTER_KEYS.stream) >= 4
    assert owner.llen(CLUSTER_KEYS.snapshot_index) >= 1
    stream_ids = kept_ids(owner)
    assert [e["id"] for e in kept] == stream_ids[: len(kept)]
    with_snapshot = next(e for e in kept if e["snapshot"])
    status, jpeg = await asyncio.to_thread(get, gateway, with_snapshot["snapshot"])
    assert status == 200 and jpeg[:2] == b"\xff\xd8"
    # /ws replay from the first kept event: everything after it, then live.
    since = kept[0]["id"]
    replayed, live = await _replay(f"ws://{gateway.base}/ws", since, 2)
    now_kept = kept_ids(owner)
    after = [i for i in now_kept if key(i) > key(since)]
    assert len(replayed) >= 3 and replayed == after[: len(replayed)]
    assert key(live[0]) > key(replayed[-1]) and set(live).isdisjoint(replayed)


async def test_a_frame_pushed_to_one_gateway_reaches_a_viewer_of_another(
    cluster: RedisCluster, tmp_path: Path, nodes: list[Daemon]
) -> None:
    first = node(cluster, tmp_path / "a.toml", "gw-a", [PUSHED], gateway=True)
    nodes.append(first)
    second = node(cluster, tmp_path / "b.toml", "gw-b", [PUSHED], gateway=True)
    nodes.append(second)
    owner = cluster.master_port_for("video:pushed")
    await asyncio.to_thread(
        wait_for,
        lambda: b"video:pushed" in cluster.client(owner).execute_command("PUBSUB SHARDCHANNELS"),
        10,
        "the gateways subscribed to the pushed camera's shard channel",
    )
    frame = jpeg_bytes(99)
    async with connect(f"ws://{second.base}/ws/pushed") as viewer:
        for _attempt in range(20):  # until one arrives (the viewer may be late)
            status, _ = await asyncio.to_thread(
                call, first, "/api/v1/video-stream/frame/pushed", "POST", frame
            )
            assert status == 200
            try:
                received = await asyncio.wait_for(viewer.recv(), 0.5)
            except TimeoutError:
                continue
            assert isinstance(received, bytes) and same_jpeg(received, frame)
            break
        else:
            raise AssertionError("no pushed frame reached the other gateway in 20 pushes")
    refused = first.http("/metrics")[1].decode()
    assert 'reason="push_redis_failed"' not in refused
