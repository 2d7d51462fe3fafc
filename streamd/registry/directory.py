"""The gateway's view of every node's cameras, read from the registry.

``DirectoryEntry.state_at`` is the pure decision: an announcement whose lease
ended is ``offline`` (its node died or was cut off), never a ghost of its last
state. ``CameraDirectory`` polls the registry once a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Any

import structlog
from redis.exceptions import RedisError

from streamd.config import is_valid_camera_id
from streamd.registry import store
from streamd.registry.connection import RegistryConnection
from streamd.states import CameraState, ChildState, SourceState

log = structlog.get_logger("streamd.registry")
POLL_S = 1.0
_STATES: dict[str, CameraState] = {s.value: s for s in (*ChildState, *SourceState)}


@dataclass(frozen=True)
class DirectoryEntry:
    camera_id: str
    node: str
    state: CameraState
    expires_ms: int
    last_frame_ms: int | None
    name: str | None = None
    location: str | None = None

    @classmethod
    def parse(cls, camera_id: str, expires_ms: int, raw: str) -> DirectoryEntry | None:
        """Announcements are untrusted like frames: a malformed one is skipped."""
        try:
            data = json.loads(raw)
            state = _STATES[str(data["state"])]
            last = data.get("last_frame_ms")
            name, location = data.get("name"), data.get("location")
            return cls(
                camera_id,
                str(data["node"])[:128],
                state,
                expires_ms,
                int(last) if isinstance(last, int) else None,
                name[:200] if isinstance(name, str) else None,
                location[:200] if isinstance(location, str) else None,
            )
        except (ValueError, KeyError, TypeError):
            return None

    def state_at(self, now_ms: int) -> CameraState:
        return self.state if now_ms < self.expires_ms else SourceState.OFFLINE

    def to_json(self, now_ms: int) -> dict[str, Any]:
        return {
            "state": self.state_at(now_ms).value,
            "node": self.node,
            "lease_left_s": round(max(0, self.expires_ms - now_ms) / 1000, 3),
            "last_frame_ms": self.last_frame_ms,
            **({"name": self.name} if self.name else {}),
            **({"location": self.location} if self.location else {}),
        }


def node_summaries(
    entries: Iterable[DirectoryEntry], now_ms: int, lease_s: float, visible: Collection[str]
) -> list[dict[str, Any]]:
    """Every node that announces a visible camera (pure; for ``GET /api/nodes``).
    Only a camera's owner announces it, so these nodes are owners; a node whose
    every lease has ended is ``offline``. The lease age (time since the node last
    renewed) is our ``lease`` minus what is left: the nodes of one cluster share
    the setting."""
    by_node: dict[str, list[DirectoryEntry]] = {}
    for entry in entries:
        if entry.camera_id in visible:
            by_node.setdefault(entry.node, []).append(entry)
    nodes = []
    for node, owned in sorted(by_node.items()):
        left_ms = max(0, max(e.expires_ms for e in owned) - now_ms)
        nodes.append(
            {
                "name": node,
                "role": "owner" if left_ms else "offline",
                "cameras": sorted(e.camera_id for e in owned),
                "lease_age_s": round(max(0.0, lease_s - left_ms / 1000), 3) if left_ms else None,
                "lease_left_s": round(left_ms / 1000, 3),
            }
        )
    return nodes


class CameraDirectory:
    def __init__(self, connection: RegistryConnection) -> None:
        self.connection = connection
        self.entries: dict[str, DirectoryEntry] = {}
        self.now_ms = 0  # Redis' clock at the last read
        self.read_failures = 0
        self._read_at = 0.0  # our monotonic clock at that read

    def ids(self) -> list[str]:
        return sorted(self.entries)

    def redis_now_ms(self) -> int:
        """Redis' clock now, extrapolated from the last read."""
        loop = asyncio.get_running_loop()
        return self.now_ms + int((loop.time() - self._read_at) * 1000)

    def state(self, camera_id: str) -> CameraState | None:
        entry = self.entries.get(camera_id)
        return None if entry is None else entry.state_at(self.redis_now_ms())

    def info(self, camera_id: str) -> dict[str, Any] | None:
        entry = self.entries.get(camera_id)
        return None if entry is None else entry.to_json(self.redis_now_ms())

    async def refresh(self) -> None:
        client = await self.connection.client()
        snapshot = await store.read(client)
        entries = {}
        for camera_id, (expires_ms, raw) in snapshot.entries.items():
            if not is_valid_camera_id(camera_id):
                continue
            entry = DirectoryEntry.parse(camera_id, expires_ms, raw)
            if entry is not None:
                entries[camera_id] = entry
        self.entries = entries
        self.now_ms = snapshot.now_ms
        self._read_at = asyncio.get_running_loop().time()

    async def refresh_quietly(self) -> None:
        """Refresh; a failure is counted and logged once, never raised."""
        try:
            await self.refresh()
            if self.read_failures:
                log.info("camera registry readable again", failures=self.read_failures)
                self.read_failures = 0
        except (RedisError, OSError) as exc:
            self.read_failures += 1
            if self.read_failures == 1:
                log.warning("camera registry unreadable", error=str(exc) or type(exc).__name__)
            await self.connection.failed()

    async def run(self) -> None:
        while True:
            await self.refresh_quietly()
            await asyncio.sleep(POLL_S)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.connection.close()
