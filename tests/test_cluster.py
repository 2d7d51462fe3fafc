"""streamd on a real Redis Cluster (issue 14): three masters and three replicas
started here, a camera node and a gateway node, frames over sharded pub/sub,
the registry in one slot, a master killed under a live viewer, and (issue 19)
every master killed in turn, the one named in ``[redis] url`` first."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from streamd.transport.frame import parse_frame

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
def whole_cluster(cluster: RedisCluster) -> RedisCluster:
    """The module's cluster with every node up and every replica in sync: a test
    before may have killed masters."""
    cluster.revive()
    return cluster


@pytest.fixture
def nodes() -> Iterator[list[Daemon]]:
    started: list[Daemon] = []
    yield started
    for daemon in started:
        daemon.stop(signal.SIGTERM)


def shard_channels(cluster: RedisCluster, port: int) -> list[bytes]:
    return list(cluster.client(port).execute_command("PUBSUB SHARDCHANNELS"))


async def test_sharded_frames_across_nodes_survive_a_master_failover(
    whole_cluster: RedisCluster, tmp_path: Path, nodes: list[Daemon]
) -> None:
    cluster = whole_cluster
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


def camera_per_master(cluster: RedisCluster, masters: list[int]) -> dict[int, str]:
    """One camera id per master whose frame channel hashes to that master's slots."""
    chosen: dict[int, str] = {}
    for index in range(200):
        camera = f"s{index}"
        master = cluster.master_port_for(f"video:{camera}")
        chosen.setdefault(master, camera)
        if len(chosen) == len(masters):
            return chosen
    raise AssertionError("no camera id for some master")


def first_captured_after(viewer: Watcher, wall_ns: int) -> float | None:
    """Arrival time of the first frame captured after ``wall_ns``: a frame that
    could only have travelled through a master still alive after the kill."""
    for arrived, payload in zip(viewer.arrivals, viewer.payloads, strict=True):
        meta = parse_frame(payload, 16 << 20).meta
        if meta is not None and meta.capture_ns > wall_ns:
            return arrived
    return None


def promoted_at(cluster: RedisCluster, name: str, old: int) -> float:
    """When the master serving ``name`` is no longer ``old`` (polled)."""
    wait_for(lambda: cluster.master_port_for(name) != old, 10, f"a new master for {name}")
    return time.monotonic()


async def test_every_master_killed_in_turn_the_configured_one_first(
    whole_cluster: RedisCluster, tmp_path: Path, nodes: list[Daemon]
) -> None:
    """Issue 19: ``[redis] url`` names one master and no ``startup_nodes`` are
    given; once that master is dead, only the nodes learned from the cluster map
    can serve as seeds. Each master is killed in turn (its replica takes over;
    the cluster stays whole enough to promote the next one): frames of the camera
    on that shard resume within 10 s, and the registry keeps every camera live."""
    cluster = whole_cluster
    masters = cluster.master_ports()
    configured = masters[0]
    cameras = camera_per_master(cluster, masters)
    url = f"redis://127.0.0.1:{configured}/0"
    specs = [
        {"id": camera, "source": "synthetic:?width=160&height=90", "fps": 10}
        for camera in cameras.values()
    ]
    config, port = node_config(
        tmp_path / "cam.toml",
        redis_url=url,
        node="cams",
        cameras=specs,
        gateway=False,
        redis_extra="cluster = true",
    )
    nodes.append(start_node(config, port, gateway=False))
    config, port = node_config(
        tmp_path / "gw.toml", redis_url=url, node="gw", cameras=[], redis_extra="cluster = true"
    )
    gateway = start_node(config, port, gateway=True)
    nodes.append(gateway)

    def all_live() -> bool:
        listed = api_cameras(gateway)
        return all(listed.get(c, {}).get("state") == "live" for c in cameras.values())

    wait_for(all_live, 20, "every camera listed live on the gateway")
    viewers = {
        camera: Watcher(f"ws://{gateway.base}/ws/{camera}", keep_payloads=True)
        for camera in cameras.values()
    }
    for viewer in viewers.values():
        await viewer.__aenter__()
    failover: dict[str, tuple[float, float]] = {}
    try:
        for viewer in viewers.values():
            await viewer.wait_frames(5, timeout=15)
        for master in [configured, *(m for m in masters if m != configured)]:
            camera = cameras[master]
            viewer = viewers[camera]
            cluster.kill(master)
            killed, killed_ns = time.monotonic(), time.time_ns()
            # Redis' own share of the outage: until the replica is promoted.
            promotion = asyncio.create_task(
                asyncio.to_thread(promoted_at, cluster, f"video:{camera}", master)
            )
            while (resumed := first_captured_after(viewer, killed_ns)) is None:
                waited = time.monotonic() - killed
                assert waited < 10, f"no frame of {camera} {waited:.0f} s after killing {master}"
                await asyncio.sleep(0.02)
            name = f"{master}{' (url)' if master == configured else ''}"
            failover[name] = (await promotion - killed, resumed - killed)
            # The next kill needs this shard's new master in place (frames imply it).
            await asyncio.to_thread(wait_for, cluster.healthy, 10, "cluster_state:ok")
            await asyncio.to_thread(wait_for, all_live, 10, "every camera listed live")
    finally:
        for viewer in viewers.values():
            await viewer.__aexit__()
    figures = {k: (round(p, 2), round(f, 2)) for k, (p, f) in failover.items()}
    print("failover, s from the kill to (promotion, first newer frame at the viewer):", figures)
    assert all(node.process.poll() is None for node in nodes)
