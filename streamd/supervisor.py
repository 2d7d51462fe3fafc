"""Runs one child process per camera (``child.CameraChild``), the set of them:
start, reload by spec diff, ownership holds (the registry), stop in order.

Children are forked from the warm fork server (``forkserver``), or started by
exec (``python -m streamd.worker --camera ID``) while it is down; either way in
their own session, so a Ctrl-C in a terminal reaches the supervisor only and it
stops the children in order. At most ``starting.start_slots`` children are
starting (launched, no first heartbeat yet) at once. Each child gets one end of
a ``socketpair``: the camera spec goes down it, heartbeats and fallback frames
come up it. A child whose heartbeats stop for ``stall_timeout`` (hung,
``SIGSTOP``) is killed and restarted; the stall timer starts at its first.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from typing import Any

import structlog

from streamd.camera_log import CameraLog
from streamd.camera_status import CameraStatus
from streamd.child import CameraChild, FrameSink, child_environment
from streamd.child_status import ChildStatus
from streamd.config import Config
from streamd.forkserver.client import ForkServerClient
from streamd.launch import Launcher
from streamd.lifecycle import SpecDiff, diff_specs
from streamd.starting import start_slots
from streamd.states import SourceState
from streamd.worker.spec import WorkerSpec

log = structlog.get_logger("streamd.supervisor")
__all__ = ["CameraChild", "ChildStatus", "Supervisor", "child_environment"]


class Supervisor:
    def __init__(
        self,
        config: Config,
        on_frame: FrameSink,
        on_event: FrameSink = lambda _camera, _body: None,
        on_unit: FrameSink = lambda _camera, _body: None,
        parent_env: Mapping[str, str] | None = None,
        fork_server: ForkServerClient | None = None,
    ) -> None:
        self.config = config
        self.launcher = Launcher(fork_server)
        self.start_slots = start_slots(config.supervisor.max_starting)
        self._starting = asyncio.Semaphore(self.start_slots)
        self.on_frame = on_frame
        self.on_event = on_event
        self.on_unit = on_unit
        self.parent_env = dict(os.environ if parent_env is None else parent_env)
        self.children: dict[str, CameraChild] = {}
        # Each camera's recent records (camera_log.py), kept across its children
        # and config changes, dropped with the camera.
        self.logs: dict[str, CameraLog] = {}
        self.held: dict[str, str] = {}  # camera id → the node that owns it (registry)
        # With a registry, a camera's child starts only once this node owns it
        # (``release``); ``owned`` are those it was told it owns.
        self.wait_for_ownership = False
        self.owned: set[str] = set()
        self._holding: dict[str, asyncio.Task[None]] = {}  # children being stopped

    def specs(self, config: Config) -> dict[str, WorkerSpec]:
        redis = config.redis
        return {
            camera.id: WorkerSpec(
                camera=camera,
                redis_url=redis.url if redis.enabled else None,
                channel=redis.channel_prefix + camera.id,
                log_level=config.log_level,
                redis_cluster=redis.cluster,
                redis_seeds=redis.seeds if redis.cluster else (),
                events=config.events,
            )
            for camera in config.cameras
            if not camera.external  # another program publishes it: no child here
        }

    def start(self) -> None:
        for camera_id, spec in self.specs(self.config).items():
            self._start_child(camera_id, spec)

    def _start_child(self, camera_id: str, spec: WorkerSpec) -> None:
        env = child_environment(self.parent_env, spec.camera.source)
        journal = self.logs.setdefault(camera_id, CameraLog())
        child = CameraChild(
            spec,
            self.config.supervisor,
            self.on_frame,
            self.on_event,
            env,
            journal,
            on_unit=self.on_unit,
            launcher=self.launcher,
            start_slot=lambda: self._starting,
        )
        self.children[camera_id] = child
        if camera_id in self.held:
            child.status.held_by = self.held[camera_id]
        elif camera_id in self.owned or not self.wait_for_ownership:
            child.start()

    # --- ownership (the camera registry decides, see registry/node.py) -------------------
    def hold(self, camera_id: str, owner: str) -> None:
        """Another node owns the camera: stop our child and say so in its state."""
        self.held[camera_id] = owner
        self.owned.discard(camera_id)
        child = self.children.get(camera_id)
        if child is None:
            return
        child.status.held_by = owner
        child.status.last_error = f"camera id also configured on node {owner}, which publishes it"
        if child.running and camera_id not in self._holding:
            task = asyncio.create_task(child.stop(), name=f"hold-{camera_id}")
            self._holding[camera_id] = task
            task.add_done_callback(lambda _task: self._held_stopped(camera_id))

    def _held_stopped(self, camera_id: str) -> None:
        del self._holding[camera_id]
        if camera_id in self.owned:  # released while its child was stopping
            self.release(camera_id, again=True)

    def release(self, camera_id: str, *, again: bool = False) -> None:
        """This node owns the camera now: run its child (a takeover, or the start)."""
        if camera_id in self.owned and not again:
            return
        self.owned.add(camera_id)
        self.held.pop(camera_id, None)
        child = self.children.get(camera_id)
        if child is None or camera_id in self._holding:
            return  # started by start(), or once the stopping child is gone
        child.status.held_by = None
        child.status.last_error = None
        child.start()

    def set_conflict(self, camera_id: str, nodes: tuple[str, ...]) -> None:
        child = self.children.get(camera_id)
        if child is not None and child.status.held_by is None:
            child.status.last_error = (
                f"camera id also configured on node(s) {', '.join(nodes)}; this node publishes it"
                if nodes
                else None
            )

    def frame_seqs(self) -> dict[str, int | None]:
        return {
            cid: (c.status.heartbeat.seq if c.status.heartbeat else None)
            for cid, c in self.children.items()
        }

    async def apply(self, config: Config) -> SpecDiff:
        """Move to a new (already validated) config, touching only what changed."""
        old = {cid: child.spec for cid, child in self.children.items()}
        new = self.specs(config)
        diff = diff_specs(old, new)
        self.config = config
        stopping = [self.children.pop(cid) for cid in (*diff.removed, *diff.changed)]
        for camera_id in diff.removed:
            self.logs.pop(camera_id, None)
            self.owned.discard(camera_id)
            self.held.pop(camera_id, None)
        await asyncio.gather(*(child.stop() for child in stopping))
        for camera_id in (*diff.added, *diff.changed):
            self._start_child(camera_id, new[camera_id])
        for camera_id in diff.unchanged:
            # stall_timeout and stop_grace are read as they are used, so they apply
            # at once; the restart backoff and stable_after belong to the child's
            # Lifecycle, made when it was created: only added or changed cameras get them.
            self.children[camera_id].settings = config.supervisor
        return diff

    async def stop_camera(self, camera_id: str) -> bool:
        child = self.children.get(camera_id)
        if child is None:
            return False
        child.log.info("camera stop asked for")
        await child.stop()
        return True

    def start_camera(self, camera_id: str) -> bool:
        child = self.children.get(camera_id)
        if child is None or camera_id in self.held:  # another node publishes it
            return False
        child.log.info("camera start asked for")
        child.start()
        return True

    def camera_log(self, camera_id: str, lines: int) -> list[dict[str, Any]] | None:
        """The camera's newest records, or None if it is not run here."""
        journal = self.logs.get(camera_id)
        return None if journal is None else journal.tail(lines)

    def set_publish_every(self, camera_id: str, every: int) -> bool:
        child = self.children.get(camera_id)
        if child is None:
            return False
        child.set_publish_every(every)
        return True

    def set_demand(self, camera_id: str, watched: bool) -> None:
        child = self.children.get(camera_id)
        if child is not None:
            child.set_demand(watched)

    def set_unit_demand(self, camera_id: str, wanted: bool) -> None:
        child = self.children.get(camera_id)
        if child is not None:
            child.set_unit_demand(wanted)

    def fallback_active(self) -> bool:
        return any(c.status.redis_state.uses_fallback for c in self.children.values())

    def live_count(self) -> int:
        return sum(1 for c in self.children.values() if c.status.camera_state is SourceState.LIVE)

    def statuses(self) -> dict[str, CameraStatus]:
        return {cid: child.status.camera_status() for cid, child in self.children.items()}

    async def stop(self) -> None:
        await asyncio.gather(*(c.stop() for c in self.children.values()))

    def kill_all(self) -> None:
        for child in self.children.values():
            child.kill()
