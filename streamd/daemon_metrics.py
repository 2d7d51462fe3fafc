"""The daemon's figures at scrape time: each camera's sample (the children's
cumulative counters beside the hub's deliveries) and the Prometheus registry
over them, whole or limited to the cameras a scoped token may see."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Collection

from prometheus_client import CollectorRegistry, generate_latest

from streamd.gateway.hub import Hub
from streamd.launch_metrics import ForkServerCollector
from streamd.metrics import StreamdCollector
from streamd.registry.node import NodeRegistry, RegistryCollector
from streamd.reporting import CameraSample
from streamd.supervisor import Supervisor
from streamd.transport.sharded import ShardedFrameSubscriber, ShardMovesCollector


class DaemonMetrics:
    def __init__(
        self,
        supervisor: Supervisor,
        hub: Hub,
        rejected: Callable[[], Counter[str]],
        refused: Callable[[], Counter[str]],
        node_registry: NodeRegistry | None,
        subscriber: object,
    ) -> None:
        self.supervisor = supervisor
        self.hub = hub
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(
            StreamdCollector(self.samples, rejected, refused, lambda: hub.untimed)
        )
        self.registry.register(ForkServerCollector(supervisor.launcher))
        if node_registry is not None:
            self.registry.register(RegistryCollector(node_registry))
        if isinstance(subscriber, ShardedFrameSubscriber):
            self.registry.register(ShardMovesCollector(subscriber))

    def samples(self) -> dict[str, CameraSample]:
        return {
            camera_id: CameraSample(
                figures=child.status.totals(),
                delivery=self.hub.delivery(camera_id).copy(),
                state=child.status.camera_state,
                viewers=self.hub.viewers(camera_id),
                restarts=child.status.lifecycle.restarts,
                stalls=child.status.stalls,
                started_by=child.status.started_by if child.status.pid is not None else None,
                start_timeouts=child.status.start_timeouts,
            )
            for camera_id, child in self.supervisor.children.items()
        }

    def text(self, cameras: Collection[str] | None) -> bytes:
        """Prometheus text; ``cameras`` limits it to those cameras' series (a
        scoped token), leaving out the daemon-wide ones."""
        if cameras is None:
            return bytes(generate_latest(self.registry))
        allowed = frozenset(cameras)
        scoped = CollectorRegistry(auto_describe=False)
        scoped.register(
            StreamdCollector(
                lambda: {c: s for c, s in self.samples().items() if c in allowed},
                Counter,
                Counter,
                lambda: None,
            )
        )
        return bytes(generate_latest(scoped))
