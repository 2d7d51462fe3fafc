"""Several streamd nodes for the scaling tests: config files with roles, a
daemon started without waiting for a listener (camera nodes have none), and a
Redis subscriber that reads frames' metadata."""

from __future__ import annotations

import json
import random
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import redis
from redis.crc import key_slot

from streamd.transport.frame import parse_frame

from .conftest import Daemon, free_port, wait_for


def node_config(
    path: Path,
    *,
    redis_url: str,
    node: str,
    cameras: list[dict[str, Any]],
    gateway: bool = True,
    lease: float = 2.0,
    redis_extra: str = "",
) -> tuple[Path, int]:
    port = free_port()
    lines = [
        "[redis]",
        f'url = "{redis_url}"',
        f'node_name = "{node}"',
        f"lease = {lease}",
        redis_extra,
        "",
        "[server]",
        f"enabled = {'true' if gateway else 'false'}",
        f'listen = "127.0.0.1:{port}"',
        "",
    ]
    for camera in cameras:
        lines.append("[[cameras]]")
        lines += [f"{key} = {json.dumps(value)}" for key, value in camera.items()]
        lines.append("")
    path.write_text("\n".join(lines))
    return path, port


def start_node(config: Path, port: int, *, gateway: bool) -> Daemon:
    daemon = Daemon(config, port)
    if gateway:
        daemon.wait_healthy()
    else:
        wait_for(lambda: _started(daemon), 20, "camera node start-up")
    return daemon


def _started(daemon: Daemon) -> bool:
    assert daemon.process.poll() is None, f"node exited:\n{daemon.log_text()}"
    return any(e.get("event") == "video stream manager started" for e in daemon.log_events())


def api_cameras(daemon: Daemon) -> dict[str, Any]:
    status, body = daemon.http("/api/cameras")
    assert status == 200, body
    cameras: dict[str, Any] = json.loads(body)["cameras"]
    return cameras


def state_of(daemon: Daemon, camera_id: str) -> str | None:
    info = api_cameras(daemon).get(camera_id)
    return None if info is None else str(info["state"])


def events_named(daemon: Daemon, name: str) -> list[dict[str, Any]]:
    return [e for e in daemon.log_events() if e.get("event") == name]


class FrameTap:
    """A classic or sharded Redis subscriber that keeps each frame's metadata."""

    def __init__(self, client: redis.Redis, channel: str, *, sharded: bool = False) -> None:
        self.pubsub = client.pubsub()
        self.sharded = sharded
        if sharded:
            self.pubsub.ssubscribe(channel)
        else:
            self.pubsub.subscribe(channel)
        self.frames: list[tuple[float, int]] = []  # arrival, seq

    def read_for(self, seconds: float) -> list[tuple[float, int]]:
        end = time.monotonic() + seconds
        got = []
        while time.monotonic() < end:
            if self.sharded:
                message = self.pubsub.get_sharded_message(timeout=0.1)
            else:
                message = self.pubsub.get_message(timeout=0.1)
            if message and message["type"] in ("message", "smessage"):
                meta = parse_frame(message["data"], 64 << 20).meta
                assert meta is not None
                got.append((time.monotonic(), meta.seq))
        self.frames += got
        return got

    def close(self) -> None:
        self.pubsub.close()


def cluster_port() -> int:
    """A free port whose cluster bus port (+10000) is free and valid too."""
    for _ in range(200):
        port = random.randint(20000, 50000)
        try:
            for candidate in (port, port + 10000):
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", candidate))
        except OSError:
            continue
        return port
    raise AssertionError("no free port pair for a cluster node")


class RedisCluster:
    """A throwaway Redis Cluster: ``masters`` masters with one replica each, on
    free loopback ports, a short node timeout so a failover takes ~2 s."""

    def __init__(self, workdir: Path, masters: int = 3, replicas: int = 1) -> None:
        self.workdir = workdir
        self.ports = [cluster_port() for _ in range(masters * (1 + replicas))]
        self.replicas = replicas
        self.processes: dict[int, subprocess.Popen[bytes]] = {}

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.ports[0]}/0"

    def start(self) -> None:
        for port in self.ports:
            self._start_node(port)
        wait_for(lambda: all(self._ping(p) for p in self.ports), 10, "every cluster node up")
        subprocess.run(
            [
                "redis-cli",
                "--cluster",
                "create",
                *(f"127.0.0.1:{p}" for p in self.ports),
                "--cluster-replicas",
                str(self.replicas),
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
        wait_for(self.healthy, 30, "cluster_state:ok on every node")
        wait_for(self.replicas_synced, 30, "every replica in sync (so it can be promoted)")

    def start_single_master(self) -> None:
        """One master holding every slot (``redis-cli --cluster create`` needs 3)."""
        assert len(self.ports) == 1
        self._start_node(self.ports[0])
        wait_for(lambda: self._ping(self.ports[0]), 10, "the cluster node up")
        self.client(self.ports[0]).execute_command("CLUSTER", "ADDSLOTSRANGE", 0, 16383)
        wait_for(self.healthy, 30, "cluster_state:ok")

    def _start_node(self, port: int) -> None:
        node_dir = self.workdir / str(port)
        node_dir.mkdir(exist_ok=True)
        self.processes[port] = subprocess.Popen(
            [
                "redis-server",
                "--port", str(port),
                "--bind", "127.0.0.1",
                "--cluster-enabled", "yes",
                "--cluster-config-file", str(node_dir / "nodes.conf"),
                "--cluster-node-timeout", "1000",
                "--repl-diskless-sync-delay", "0",
                "--save", "",
                "--appendonly", "no",
                "--dir", str(node_dir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip

    def client(self, port: int) -> redis.Redis:
        return redis.Redis(port=port, socket_timeout=5)

    def _ping(self, port: int) -> bool:
        try:
            return bool(self.client(port).ping())
        except redis.RedisError:
            return False

    def healthy(self) -> bool:
        live = [p for p, proc in self.processes.items() if proc.poll() is None]
        try:
            infos = [self.client(p).execute_command("CLUSTER", "INFO") for p in live]
            return all(b"cluster_state:ok" in info for info in infos)
        except redis.RedisError:
            return False

    def replicas_synced(self) -> bool:
        roles = [self.client(p).info("replication") for p in self.ports]
        replicas = [r for r in roles if r["role"] == "slave"]
        return len(replicas) == len(self.ports) - len(self.ports) // (1 + self.replicas) and all(
            r["master_link_status"] == "up" for r in replicas
        )

    def master_port_for(self, name: str) -> int:
        """The port of the master serving ``name`` now (asked of a live node)."""
        slot = key_slot(name.encode())
        for port, process in self.processes.items():
            if process.poll() is not None:
                continue
            for start, end, master, *_ in self.client(port).execute_command("CLUSTER SLOTS"):
                if start <= slot <= end:
                    return int(master[1])
        raise AssertionError(f"no master for {name}")

    def master_ports(self) -> list[int]:
        live = next(p for p, proc in self.processes.items() if proc.poll() is None)
        return sorted(
            {int(row[2][1]) for row in self.client(live).execute_command("CLUSTER SLOTS")}
        )

    def kill(self, port: int) -> None:
        process = self.processes[port]
        process.kill()
        process.wait()

    def revive(self) -> None:
        """Restart every killed node (its nodes.conf makes it rejoin, as a replica
        of the master promoted in its place) and wait until the cluster is whole
        again: every node up, every replica in sync."""
        dead = [p for p, proc in self.processes.items() if proc.poll() is not None]
        for port in dead:
            self._start_node(port)
        if dead:
            wait_for(lambda: all(self._ping(p) for p in dead), 10, "killed nodes back up")
        wait_for(self.healthy, 30, "cluster_state:ok on every node")
        wait_for(self.replicas_synced, 30, "every replica in sync (so it can be promoted)")

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.kill()
                process.wait()
