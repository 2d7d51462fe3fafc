"""``/metrics`` series of the fork server and of how children were started
(daemon-wide, no camera label):

- ``streamd_forkserver_up`` (gauge, 1 while it serves; 0 starting, down or off)
- ``streamd_forkserver_restarts_total``: started again after it died
- ``streamd_child_starts_total{method}``: children forked (``fork``) or exec'd (``spawn``)
- ``streamd_child_spawn_fallbacks_total``: exec'd because the fork server was down
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from streamd.launch import Launcher


class ForkServerCollector(Collector):
    def __init__(self, launcher: Launcher) -> None:
        self.launcher = launcher

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        server = self.launcher.fork_server
        yield GaugeMetricFamily(
            "streamd_forkserver_up",
            "1 while the warm fork server serves",
            value=1.0 if server is not None and server.up else 0.0,
        )
        yield CounterMetricFamily(
            "streamd_forkserver_restarts",
            "Fork server started again after it died",
            value=server.restarts if server is not None else 0,
        )
        starts = CounterMetricFamily(
            "streamd_child_starts", "Camera children started, by method", labels=["method"]
        )
        for method, count in sorted(self.launcher.started.items()):
            starts.add_metric([method.value], count)
        yield starts
        yield CounterMetricFamily(
            "streamd_child_spawn_fallbacks",
            "Camera children started by exec because the fork server was down",
            value=self.launcher.fallbacks,
        )
