"""A camera node's side of the registry: claim its cameras, run only those it
owns, announce their state, report conflicts loudly, hand over on a clean stop.

Every ``lease / 3`` seconds one pipeline claims every configured camera
(``store.claim``); ``lease.CameraLease`` decides; this module carries the
decisions out through ``Ownership`` (the supervisor) and announces the owned
cameras with their state and last-frame time (``store.announce``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Protocol

import structlog
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from redis.exceptions import RedisError

from streamd.camera_status import CameraStatus
from streamd.config import CameraConfig
from streamd.registry import store
from streamd.registry.connection import RegistryConnection
from streamd.registry.lease import Action, ActionKind, CameraLease, Role

log = structlog.get_logger("streamd.registry")
FIRST_CLAIM_TIMEOUT_S = 2.0


def default_node_name() -> str:
    host = "".join(c if c.isalnum() or c in "-_." else "-" for c in socket.gethostname())
    return f"{host[:48] or 'node'}-{os.getpid()}"


class Ownership(Protocol):
    """What the registry asks of the supervisor."""

    def release(self, camera_id: str) -> None: ...
    def hold(self, camera_id: str, owner: str) -> None: ...
    def set_conflict(self, camera_id: str, nodes: tuple[str, ...]) -> None: ...


class NodeRegistry:
    def __init__(
        self,
        connection: RegistryConnection,
        node: str,
        lease_s: float,
        ownership: Ownership,
        cameras: Callable[[], Iterable[CameraConfig]],
        statuses: Callable[[], Mapping[str, CameraStatus]],
        frame_seqs: Callable[[], Mapping[str, int | None]],
    ) -> None:
        self.connection = connection
        self.node = node
        self.lease_ms = int(lease_s * 1000)
        self.ownership = ownership
        self._cameras = cameras
        self._statuses = statuses
        self._frame_seqs = frame_seqs
        self.leases: dict[str, CameraLease] = {}
        self.conflicts_seen: Counter[str] = Counter()  # by camera, for the metric
        self.failures = 0
        self.renewed_at: float | None = None  # monotonic time of the last announce
        self._last_frame: dict[str, tuple[int | None, int | None]] = {}  # seq, wall ms

    @property
    def interval(self) -> float:
        return self.lease_ms / 3000

    async def first_round(self) -> None:
        """Before any child starts: claim, so a standby never publishes at all."""
        try:
            await asyncio.wait_for(self.tick(), FIRST_CLAIM_TIMEOUT_S)
        except TimeoutError:
            self._unreachable("no answer in time")

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self.tick()

    async def tick(self) -> None:
        configured = {c.id: c for c in self._cameras()}
        for camera_id in list(self.leases):
            if camera_id not in configured:
                del self.leases[camera_id]
        for camera_id in configured:
            self.leases.setdefault(camera_id, CameraLease(camera_id, self.node))
        try:
            client = await self.connection.client()
            claims = await store.claim(client, configured, self.node, self.lease_ms)
            now = time.monotonic()
            for camera_id, claim in claims.items():
                self._carry_out(self.leases[camera_id].on_claim(claim, now))
            await store.announce(client, self._announcements(configured), self.lease_ms)
            self.renewed_at = time.monotonic()
        except (RedisError, OSError) as exc:
            await self.connection.failed()
            self._unreachable(str(exc) or type(exc).__name__)
            return
        if self.failures:
            log.info("camera registry reachable again", failures=self.failures)
            self.failures = 0

    def summary(self) -> dict[str, Any]:
        """This node for ``GET /api/nodes``: its role, the cameras it owns, how long
        since it renewed its leases."""
        owned = sorted(c for c, lease in self.leases.items() if lease.role is Role.OWNER)
        roles = {lease.role for lease in self.leases.values()}
        if owned:
            role = "owner"
        elif Role.STANDBY in roles:
            role = "standby"  # configured here, owned and published by another node
        else:
            role = "unknown" if roles else "gateway"  # no answer from Redis yet; no cameras
        age = None if self.renewed_at is None else time.monotonic() - self.renewed_at
        return {
            "name": self.node,
            "role": role,
            "cameras": owned,
            "lease_age_s": None if age is None else round(age, 3),
            "this_node": True,
        }

    def _unreachable(self, error: str) -> None:
        self.failures += 1
        if self.failures == 1:
            log.warning("camera registry unreachable; ownership kept as it was", error=error)
        now = time.monotonic()
        for lease in self.leases.values():
            self._carry_out(lease.on_unreachable(now))

    def _carry_out(self, actions: list[Action]) -> None:
        for action in actions:
            camera_id = action.camera_id
            if action.kind is ActionKind.RUN:
                if action.owner is not None:
                    log.info("camera owned by this node", camera_id=camera_id, node=self.node)
                self.ownership.release(camera_id)
            elif action.kind is ActionKind.HOLD:
                assert action.owner is not None
                log.warning(
                    "camera published by another node; not running it here",
                    camera_id=camera_id,
                    owner=action.owner,
                    node=self.node,
                )
                self.ownership.hold(camera_id, action.owner)
            elif action.kind is ActionKind.CONFLICT:
                self.conflicts_seen[camera_id] += 1
                log.error(
                    "camera id configured on several nodes; only the owner publishes",
                    camera_id=camera_id,
                    owner=action.owner,
                    nodes=list(action.nodes),
                    node=self.node,
                )
                self.ownership.set_conflict(camera_id, action.nodes)
            else:
                log.info("camera id conflict cleared", camera_id=camera_id, node=self.node)
                self.ownership.set_conflict(camera_id, ())

    def _announcements(self, configured: Mapping[str, CameraConfig]) -> dict[str, dict[str, Any]]:
        statuses = self._statuses()
        seqs = self._frame_seqs()
        out = {}
        for camera_id, lease in self.leases.items():
            status = statuses.get(camera_id)
            if lease.role is not Role.OWNER or status is None:
                continue
            camera = configured[camera_id]
            out[camera_id] = {
                "node": self.node,
                "state": status.state.value,
                "last_frame_ms": self._last_frame_ms(camera_id, seqs.get(camera_id)),
                **({"name": camera.name} if camera.name else {}),
                **({"location": camera.location} if camera.location else {}),
            }
        return out

    def _last_frame_ms(self, camera_id: str, seq: int | None) -> int | None:
        """When the capture sequence last moved (this node's wall clock)."""
        previous_seq, previous_ms = self._last_frame.get(camera_id, (None, None))
        if seq is not None and seq != previous_seq:
            previous_ms = time.time_ns() // 1_000_000
        self._last_frame[camera_id] = (seq, previous_ms)
        return previous_ms

    async def forget(self, camera_ids: Iterable[str]) -> None:
        """Cameras a reload removed: unlisted now, not when their lease runs out
        (until then every gateway would show them as live)."""
        gone = [c for c in camera_ids if self.leases.pop(c, None) is not None]
        if not gone:
            return
        with contextlib.suppress(RedisError, OSError, TimeoutError):  # else they expire
            client = await self.connection.client()
            await asyncio.wait_for(store.release(client, gone, self.node, unlist=True), 2.0)

    async def release_all(self) -> None:
        """A clean stop: give up our leases now, so a standby takes over at once."""
        owned = [c for c, lease in self.leases.items() if lease.role is Role.OWNER]
        with contextlib.suppress(RedisError, OSError, TimeoutError):  # else they expire
            await asyncio.wait_for(
                store.release(await self.connection.client(), owned, self.node), 2.0
            )
        await self.connection.close()


class RegistryCollector:
    """Prometheus: who owns what, and how often a conflict was seen."""

    def __init__(self, registry: NodeRegistry) -> None:
        self.registry = registry

    def collect(self) -> Iterator[Metric]:
        owner = GaugeMetricFamily(
            "streamd_camera_owned",
            "1 if this node owns (publishes) the camera, 0 if another node does",
            labels=["camera_id"],
        )
        conflict = GaugeMetricFamily(
            "streamd_camera_conflict_nodes",
            "Other nodes that configure the same camera id (0: no conflict)",
            labels=["camera_id"],
        )
        seen = CounterMetricFamily(
            "streamd_camera_conflicts",
            "Times a camera id was found configured on another node too",
            labels=["camera_id"],
        )
        for camera_id, lease in self.registry.leases.items():
            owner.add_metric([camera_id], 1.0 if lease.role is Role.OWNER else 0.0)
            conflict.add_metric([camera_id], float(len(lease.others)))
            seen.add_metric([camera_id], float(self.registry.conflicts_seen[camera_id]))
        yield owner
        yield conflict
        yield seen
