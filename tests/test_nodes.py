"""Several streamd nodes on one Redis (issue 14): a camera node and a gateway
node, the registry's leases, the same camera id on two nodes. Real
redis-server, real daemons and children, real WebSocket viewers."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.asyncio.client import connect

from .conftest import Daemon, RedisServer, wait_for
from .scale_support import (
    FrameTap,
    api_cameras,
    events_named,
    node_config,
    start_node,
    state_of,
)
from .viewers import Watcher

LEASE_S = 2.0
FAR = {"id": "far", "source": "synthetic:?width=320&height=180", "fps": 10, "name": "Yard"}
DUP = {"id": "dup", "source": "synthetic:?width=320&height=180", "fps": 10}


@pytest.fixture
def nodes() -> Iterator[list[Daemon]]:
    started: list[Daemon] = []
    yield started
    for daemon in started:
        daemon.stop(signal.SIGKILL if daemon.process.poll() is None else signal.SIGTERM)


async def test_gateway_node_serves_a_camera_node(
    redis_server: RedisServer, tmp_path: Path, nodes: list[Daemon]
) -> None:
    config, port = node_config(
        tmp_path / "cam.toml", redis_url=redis_server.url, node="cams", cameras=[FAR], gateway=False
    )
    camera_node = start_node(config, port, gateway=False)
    nodes.append(camera_node)
    config, port = node_config(
        tmp_path / "gw.toml", redis_url=redis_server.url, node="gw", cameras=[]
    )
    gateway = start_node(config, port, gateway=True)
    nodes.append(gateway)

    # The camera node listens nowhere.
    with pytest.raises(OSError):
        camera_node.http("/healthz")
    wait_for(lambda: state_of(gateway, "far") == "live", 15, "far listed live on the gateway")
    info = api_cameras(gateway)["far"]
    assert info["node"] == "cams" and info["name"] == "Yard"
    status, body = gateway.http("/api/v1/cameras")  # the old server's list too
    assert status == 200, body
    old = {c["id"]: c for c in json.loads(body)["cameras"]}
    assert old["far"]["node"] == "cams" and old["far"]["state"] == "live"

    # The multiplexed wall: hello lists it, subscribing gives frames and a live state.
    async with connect(f"ws://{gateway.base}/ws", max_size=None) as ws:
        hello = json.loads(await ws.recv())
        assert hello["type"] == "hello" and "far" in hello["cameras"]
        await ws.send(json.dumps({"op": "subscribe", "cameras": ["far"]}))
        frames, states = 0, set()
        async with asyncio.timeout(10):
            while frames < 5 or "live" not in states:
                message = await ws.recv()
                if isinstance(message, bytes):
                    frames += 1
                else:
                    data = json.loads(message)
                    if data.get("type") == "state":
                        states.add(data["state"])
    # The old per-camera path too, with demand across nodes (the child encodes).
    async with Watcher(f"ws://{gateway.base}/ws/far") as viewer:
        await viewer.wait_frames(10, timeout=10)

        # The camera node dies without a word: its camera goes offline within the lease.
        camera_node.process.kill()
        camera_node.process.wait()
        killed = time.monotonic()
        wait_for(
            lambda: state_of(gateway, "far") == "offline", LEASE_S + 4, "far offline after kill"
        )
        took = time.monotonic() - killed
    print(f"offline {took:.2f} s after the kill (lease {LEASE_S} s)")
    assert took <= LEASE_S + 1.5, took
    assert "far" in api_cameras(gateway)  # listed as offline, not dropped or a live ghost


async def test_same_camera_on_two_nodes_one_publisher_then_takeover(
    redis_server: RedisServer, tmp_path: Path, nodes: list[Daemon]
) -> None:
    first_config, first_port = node_config(
        tmp_path / "a.toml", redis_url=redis_server.url, node="alpha", cameras=[DUP]
    )
    first = start_node(first_config, first_port, gateway=True)
    nodes.append(first)
    wait_for(lambda: state_of(first, "dup") == "live", 15, "dup live on alpha")
    second_config, second_port = node_config(
        tmp_path / "b.toml", redis_url=redis_server.url, node="beta", cameras=[DUP]
    )
    second = start_node(second_config, second_port, gateway=True)
    nodes.append(second)

    # Reported on both: log, state, metric.
    wait_for(lambda: state_of(second, "dup") == "conflict", 10, "conflict state on beta")
    assert api_cameras(second)["dup"]["pid"] is None
    wait_for(
        lambda: events_named(
            first, "camera id configured on several nodes; only the owner publishes"
        ),
        10,
        "conflict logged on alpha",
    )
    assert events_named(second, "camera id configured on several nodes; only the owner publishes")
    assert events_named(second, "camera published by another node; not running it here")
    assert (
        'streamd_camera_conflict_nodes{camera_id="dup"} 1.0' in second.http("/metrics")[1].decode()
    )
    assert 'streamd_camera_owned{camera_id="dup"} 1.0' in first.http("/metrics")[1].decode()
    assert len(second.child_pids()) == 0 and len(first.child_pids()) == 1

    # One publisher: the frames' sequence numbers only go up.
    tap = FrameTap(redis_server.client(), "video:dup")
    frames = await asyncio.to_thread(tap.read_for, 2.0)
    assert len(frames) >= 10
    seqs = [seq for _, seq in frames]
    assert seqs == sorted(set(seqs)), "two publishers interleave"

    # The owner dies: the standby takes over once the lease ends.
    first.process.kill()
    first.process.wait()
    killed = time.monotonic()
    wait_for(lambda: second.child_pids(), LEASE_S + 5, "beta starts its child")
    frames = await asyncio.to_thread(tap.read_for, 3.0 + LEASE_S)
    after = [(t, s) for t, s in frames if t > killed]
    assert after, "no frames after the takeover"
    assert after[0][0] - killed <= LEASE_S + 4
    wait_for(lambda: state_of(second, "dup") == "live", 10, "dup live on beta")
    assert events_named(second, "camera owned by this node")
    tap.close()
