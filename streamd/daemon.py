"""``streamd run``: wires supervisor, gateway and subscriber into one event loop,
reloads on SIGHUP, talks to systemd, and shuts down in a fixed order with a
deadline.

Signal handlers only record what was asked (``SignalRequests``, uvicorn's
habit); the run loop acts on it: SIGHUP starts a reload task (kept, one at a
time), the first SIGINT/SIGTERM starts the shutdown, a second one exits at once
(130). Shutdown order: STOPPING=1, stop accepting viewers and close them with
1001, stop the children (SIGTERM, grace, SIGKILL), then cancel the subscriber,
the status loops and any reload still running. If ``shutdown_timeout`` passes
first, the children are SIGKILLed, the rest is cancelled, and the exit code is 1.
"""

from __future__ import annotations

import asyncio
import os
import signal
import ssl
import time
from collections.abc import Collection
from dataclasses import replace
from pathlib import Path
from typing import Any

import structlog

from streamd.camera_status import CameraStatus, RecentFigures
from streamd.config import Config, ConfigError
from streamd.daemon_metrics import DaemonMetrics
from streamd.forkserver.client import ForkServerClient
from streamd.gateway.hub import Hub
from streamd.gateway.server import Gateway
from streamd.gateway_feeds import event_store, frame_subscriber
from streamd.redact import redact_url
from streamd.registry.connection import RegistryConnection
from streamd.registry.directory import CameraDirectory
from streamd.registry.node import NodeRegistry, default_node_name
from streamd.reload import read_config, reloaded, settle
from streamd.reporting import StatsReporter
from streamd.signals import SignalRequests
from streamd.starting import StartMethod
from streamd.states import ExitCode
from streamd.supervisor import Supervisor, child_environment
from streamd.systemd import Notifier, watchdog_interval
from streamd.transport.cluster import Topology

log = structlog.get_logger("streamd")
STATUS_INTERVAL_S = 5.0
FORK_SERVER_READY_S = 20.0


class Daemon:
    """The running service; also the gateway's ``Control`` implementation."""

    def __init__(self, config: Config, config_path: Path | None) -> None:
        self.config = config
        self.config_path = config_path
        self.notifier = Notifier(os.environ)
        self.watchdog_every = watchdog_interval(os.environ, os.getpid())
        self.hub = Hub()
        topology = Topology(
            config.redis.url, cluster=config.redis.cluster, seeds=config.redis.seeds
        )
        self.subscriber = frame_subscriber(
            config, topology, self._ingest, self._ingest_event, self._dropped
        )
        # The warm fork server children are forked from (started first in ``run``).
        self.fork_server_client = (
            ForkServerClient(child_environment(os.environ, ""))
            if config.supervisor.fork_server
            else None
        )
        self.supervisor = Supervisor(
            config,
            on_frame=self._ingest,
            on_event=self._ingest_child_event,
            on_unit=self._ingest_unit,
            parent_env=os.environ,
            fork_server=self.fork_server_client,
        )
        # The camera registry (Redis): this node's cameras and leases; every node's cameras.
        self.node_registry: NodeRegistry | None = None
        self.directory: CameraDirectory | None = None
        if config.redis.enabled:
            self.supervisor.wait_for_ownership = True
            self.node_registry = NodeRegistry(
                RegistryConnection(topology),
                config.redis.node_name or default_node_name(),
                config.redis.lease,
                self.supervisor,
                # External cameras have no child here: another program publishes them.
                cameras=lambda: [c for c in self.config.cameras if not c.external],
                statuses=self.supervisor.statuses,
                frame_seqs=self.supervisor.frame_seqs,
            )
            if config.server.enabled:
                self.directory = CameraDirectory(RegistryConnection(topology))
        self.gateway = Gateway(
            config,
            self.hub,
            self.subscriber,
            control=self,
            fallback_active=self.supervisor.fallback_active,
            directory=self.directory,
            env=os.environ,
            events=event_store(config, os.environ),
        )
        self.reporter = StatsReporter()
        self.reporter.tick(time.monotonic(), {})
        self.figures = DaemonMetrics(
            self.supervisor,
            self.hub,
            lambda: self.gateway.rejected,
            lambda: self.gateway.refused,
            self.node_registry,
            self.subscriber,
        )
        self._reload_lock = asyncio.Lock()
        self.signals = SignalRequests()
        self._reload_task: asyncio.Task[None] | None = None

    def _ingest(self, camera_id: str, payload: bytes) -> None:
        self.gateway.ingest(camera_id, payload)

    def _ingest_unit(self, camera_id: str, payload: bytes) -> None:
        """A child's access unit without Redis (checked and counted by the gateway)."""
        self.gateway.ingest_unit(camera_id, payload)

    def _ingest_event(self, camera_id: str, payload: bytes) -> None:
        self.gateway.ingest_event(camera_id, payload)

    def _dropped(self, camera_id: str, reason: str) -> None:
        self.gateway.reject(camera_id, reason)

    def _ingest_child_event(self, camera_id: str, body: bytes) -> None:
        """Without Redis a child sends the event's JSON, a NUL byte, its snapshot."""
        payload, _, snapshot = body.partition(b"\0")
        self.gateway.ingest_event(camera_id, payload, snapshot or None)

    # --- Control (gateway API) -------------------------------------------------------
    async def start_camera(self, camera_id: str) -> bool:
        return self.supervisor.start_camera(camera_id)

    async def stop_camera(self, camera_id: str) -> bool:
        return await self.supervisor.stop_camera(camera_id)

    def camera_statuses(self) -> dict[str, CameraStatus]:
        """Every supervised camera, with the figures of its last stats line."""
        lines = self.reporter.last_lines
        return {
            camera_id: replace(
                status, recent=RecentFigures.from_stats_line(lines.get(camera_id, {}))
            )
            for camera_id, status in self.supervisor.statuses().items()
        }

    def fork_server(self) -> dict[str, object] | None:
        """Its state, and how many children were forked, spawned, spawned as a fallback."""
        if self.fork_server_client is None:
            return None
        launcher = self.supervisor.launcher
        return {
            **self.fork_server_client.info().to_json(),
            "children_forked": launcher.started[StartMethod.FORK],
            "children_spawned": launcher.started[StartMethod.SPAWN],
            "spawn_fallbacks": launcher.fallbacks,
        }

    def viewers_changed(self, camera_id: str) -> None:
        """Local demand for the embedded path, JPEG and passthrough units apart
        (Redis consumers are seen by NUMSUB)."""
        self.supervisor.set_demand(camera_id, self.hub.viewers(camera_id) > 0)
        self.supervisor.set_unit_demand(camera_id, self.gateway.unit_viewers(camera_id) > 0)

    def set_publish_interval(self, camera_id: str, every: int) -> bool:
        return self.supervisor.set_publish_every(camera_id, every)

    def camera_log(self, camera_id: str, lines: int) -> list[dict[str, Any]] | None:
        return self.supervisor.camera_log(camera_id, lines)

    def this_node(self) -> dict[str, Any] | None:
        """This node for ``GET /api/nodes``: the registry's view, or (embedded, no
        registry) the cameras this daemon runs."""
        if self.node_registry is not None:
            return self.node_registry.summary()
        return {
            "name": self.config.redis.node_name or default_node_name(),
            "role": "embedded",
            "cameras": sorted(self.supervisor.children),
            "lease_age_s": None,
            "this_node": True,
        }

    def metrics(self, cameras: Collection[str] | None) -> bytes:
        return self.figures.text(cameras)

    async def _stats_loop(self) -> None:
        """One line per camera per ``stats_interval``: never one per frame."""
        while True:
            await asyncio.sleep(self.config.stats_interval)
            lines = self.reporter.tick(time.monotonic(), self.figures.samples())
            for camera_id, line in lines.items():
                log.info("camera stats", camera_id=camera_id, **line)

    async def reload(self) -> tuple[bool, str]:
        """Re-read the config and drop-ins; apply only the difference. An invalid
        config is logged with file, key and reason, and the old one keeps running."""
        if self.config_path is None:
            return False, "no config file to reload"
        async with self._reload_lock:
            self.notifier.reloading()
            try:
                return await self._reload(self.config_path)
            finally:
                self.notifier.ready()
                self._report_status()

    async def _reload(self, path: Path) -> tuple[bool, str]:
        new = await read_config(path, os.environ)
        if isinstance(new, ConfigError):
            return False, str(new)
        settled = settle(self.config, new)
        if settled.pending:
            log.warning("config changes not applied until the next restart", keys=settled.pending)
        self.config = settled.config
        self.gateway.apply_config(settled.config)  # its subscriptions follow the cameras
        diff = await self.supervisor.apply(settled.config)
        if self.node_registry is not None and diff.removed:
            await self.node_registry.forget(diff.removed)
            if self.directory is not None:
                await self.directory.refresh_quietly()  # this gateway's list, at once
        if self.node_registry is not None and diff.added:
            # Claimed now, not at the next registry round: their children start at once.
            await self.node_registry.tick()
        return True, reloaded(diff, settled)

    # --- systemd ---------------------------------------------------------------------
    def _report_status(self) -> None:
        total = len(self.supervisor.children)
        self.notifier.status(
            f"cameras live {self.supervisor.live_count()}/{total}, viewers {self.hub.viewers()}"
        )

    async def _status_loop(self) -> None:
        while True:
            self._report_status()
            await asyncio.sleep(STATUS_INTERVAL_S)

    async def _watchdog_loop(self, every: float) -> None:
        # Pinged from the event loop itself: a blocked loop stops the pings.
        while True:
            self.notifier.watchdog()
            await asyncio.sleep(every)

    # --- signals -----------------------------------------------------------------------
    def _install_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.signals.on_stop, signal.Signals(signum))
        loop.add_signal_handler(signal.SIGHUP, self.signals.on_reload)

    async def _exit_when_forced(self) -> None:
        """A second SIGINT/SIGTERM exits at once, whatever is still running."""
        await self.signals.forced.wait()
        assert self.signals.force is not None
        log.warning("second signal: exiting now", signal=self.signals.force.name)
        os._exit(ExitCode.FORCED)

    async def _serve_until_stopped(self) -> signal.Signals:
        """Act on what the signals asked for, until one asks to stop."""
        signals = self.signals
        while True:
            await signals.changed.wait()
            signals.changed.clear()
            if signals.stop is not None:
                return signals.stop
            reloading = self._reload_task is not None and not self._reload_task.done()
            if signals.reload and not reloading:
                self._reload_task = asyncio.create_task(self._reload_from_signal(), name="reload")
                # Look again when it ends: a SIGHUP may have come in meanwhile.
                self._reload_task.add_done_callback(lambda _task: signals.changed.set())

    async def _reload_from_signal(self) -> None:
        while self.signals.reload:
            self.signals.reload = False
            log.info("reload requested", signal="SIGHUP")
            await self.reload()

    # --- run ---------------------------------------------------------------------------
    async def run(self) -> int:
        # Handlers first: a SIGTERM during start-up must still stop children in order.
        self._install_signals()
        forced = asyncio.create_task(self._exit_when_forced(), name="forced-exit")
        try:
            return await self._run()
        finally:
            forced.cancel()

    async def _run(self) -> int:
        config = self.config
        if self.fork_server_client is not None:
            # First, and ready before the gateway answers: as with exec, a camera
            # has its child (a pid) as soon as /healthz does. Bounded: if it is
            # not ready by then, children are exec'd until it is.
            await self.fork_server_client.start()
            await self.fork_server_client.wait_ready(FORK_SERVER_READY_S)
        try:
            if config.server.enabled:
                await self.gateway.start()
        except (OSError, ssl.SSLError) as exc:
            # Port taken, address not on this host, unreadable TLS files: say which.
            log.error(
                "cannot start the gateway",
                listen=config.server.listen,
                tls_cert=config.server.tls_cert,
                error=str(exc),
            )
            if self.fork_server_client is not None:
                await self.fork_server_client.stop()
            return ExitCode.CANNOT_LISTEN
        if self.node_registry is not None:
            await self.node_registry.first_round()  # a standby never starts its child
        self.supervisor.start()
        background = [
            asyncio.create_task(self._status_loop(), name="status"),
            asyncio.create_task(self._stats_loop(), name="stats"),
        ]
        if self.node_registry is not None:
            background.append(asyncio.create_task(self.node_registry.run(), name="registry"))
        if self.directory is not None:
            background.append(asyncio.create_task(self.directory.run(), name="directory"))
        if self.subscriber is not None and config.server.enabled:
            background.append(asyncio.create_task(self.subscriber.run(), name="subscriber"))
        if self.watchdog_every is not None:
            background.append(asyncio.create_task(self._watchdog_loop(self.watchdog_every)))
        log.info(
            "video stream manager started",
            listen=f"{config.server.host}:{self.gateway.bound_port()}"
            if config.server.enabled
            else None,
            node=self.node_registry.node if self.node_registry else None,
            cameras=[c.id for c in config.cameras],
            config=config.source,
            redis_url=redact_url(config.redis.url) if config.redis.enabled else None,
            redis_enabled=config.redis.enabled,
        )
        self.notifier.ready()
        self._report_status()

        stopped_by = await self._serve_until_stopped()
        log.info("shutting down", signal=stopped_by.name)
        self.notifier.stopping()
        if self._reload_task is not None:
            background.append(self._reload_task)
        deadline = self.config.supervisor.shutdown_timeout
        try:
            await asyncio.wait_for(self._shutdown(), deadline)
        except TimeoutError:
            log.error("shutdown deadline passed; killing what is left", deadline_s=deadline)
            self.supervisor.kill_all()
            return ExitCode.FAILURE
        finally:
            await _cancel(background)
            if self.fork_server_client is not None:
                await self.fork_server_client.stop()
        log.info("video stream manager stopped")
        self.notifier.close()
        return ExitCode.OK

    async def _shutdown(self) -> None:
        await self.gateway.close()
        await self.supervisor.stop()
        if self.node_registry is not None:
            await self.node_registry.release_all()  # a standby takes over at once
        if self.directory is not None:
            await self.directory.close()


async def _cancel(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def run_daemon(config: Config, config_path: Path | None = None) -> int:
    return await Daemon(config, config_path).run()
