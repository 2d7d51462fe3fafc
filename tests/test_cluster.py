"""streamd on a real Redis Cluster (issue 14): three masters and three replicas
started here, a camera node and a gateway node, frames over sharded pub/sub,
the registry in one slot, and a master killed under a live viewer."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import Daemon, wait_for
from .scale_support import RedisCluster, api_cameras, node_config, start_node, state_of
from .viewers import Watcher

CAMERA = {"id": "c1", "source": "synthetic:?width=320&height=180", "fps": 10}
CHANNEL = "video:c1"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    started = RedisCluster(tmp_path_factory.mktemp("cluster"))
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


def shard_channels(cluster: RedisCluster, port: int) -> list[bytes]:
    return list(cluster.client(port).execute_command("PUBSUB SHARDCHANNELS"))


async def test_sharded_frames_across_nodes_survive_a_master_failover(
    cluster: RedisCluster, tmp_path: Path, nodes: list[Daemon]
) -> None:
    others = ", ".join(f'"redis://127.0.0.1:{p}/0"' for p in cluster.ports[1:3])
    seeds = f"cluster = true\nstartup_nodes = [{others}]"
    config, port = node_config(
        tmp_path / "cam.toml",
        redis_url=cluster.url,
        node="cams",
        cameras=[CAMERA],
        gateway=False,
        redis_extra=seeds,
    )
    camera_node = start_node(config, port, gateway=False)
    nodes.append(camera_node)
    config, port = node_config(
        tmp_path / "gw.toml", redis_url=cluster.url, node="gw", cameras=[], redis_extra=seeds
    )
    gateway = start_node(config, port, gateway=True)
    nodes.append(gateway)
    wait_for(lambda: state_of(gateway, "c1") == "live", 20, "c1 listed live on the gateway")
    assert api_cameras(gateway)["c1"]["node"] == "cams"
    camera_pids = camera_node.child_pids()

    async with Watcher(f"ws://{gateway.base}/ws/c1") as viewer:
        await viewer.wait_frames(10, timeout=15)  # demand crossed nodes: SHARDNUMSUB
        # Sharded pub/sub, on the channel's own shard only.
        owner = cluster.master_port_for(CHANNEL)
        assert CHANNEL.encode() in shard_channels(cluster, owner)
        for other in set(cluster.master_ports()) - {owner}:
            assert CHANNEL.encode() not in shard_channels(cluster, other)
        assert cluster.client(owner).pubsub_numsub(CHANNEL) == [(CHANNEL.encode(), 0)]

        # Kill that shard's master: its replica is promoted, streamd follows.
        cluster.kill(owner)
        killed = time.monotonic()
        wait_for(lambda: cluster.master_port_for(CHANNEL) != owner, 20, "replica promoted")
        promoted = cluster.master_port_for(CHANNEL)
        await viewer.wait_frames(10, timeout=15)
        resumed = viewer.count_since(killed)
        gap = viewer.max_gap(killed, time.monotonic())
        assert resumed >= 10
        assert gap < 8.0, f"frames stopped for {gap:.1f} s"
        print(f"failover: frames stopped for {gap:.2f} s")
        await asyncio.to_thread(
            wait_for,
            lambda: CHANNEL.encode() in shard_channels(cluster, promoted),
            5,
            "gateway resubscribed on the promoted master",
        )

    # No restart of streamd: same processes, the move counted and logged.
    assert camera_node.process.poll() is None and gateway.process.poll() is None
    assert camera_node.child_pids() == camera_pids
    moved = [
        e
        for e in gateway.log_events()
        if e.get("event") == "shard channel moved to another master; resubscribing"
    ]
    assert any(e["channel"] == CHANNEL for e in moved)
    metrics = gateway.http("/metrics")[1].decode()
    assert "streamd_redis_shard_moves_total" in metrics
    moves = next(
        float(line.split()[1])
        for line in metrics.splitlines()
        if line.startswith("streamd_redis_shard_moves_total ")
    )
    assert moves >= 1
