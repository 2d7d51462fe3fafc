"""A reverse proxy on the same host (issue 19, part 3): through a real nginx in
front of a real daemon, every client arrives from 127.0.0.1. A request carrying
``X-Forwarded-For``, ``X-Real-IP`` or ``Forwarded`` is remote: with no tokens it
may never control, and views only with ``allow_anonymous = true``. nginx runs
as a non-daemon child of the test, with its own prefix, config and pid file."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from .conftest import Daemon, write_config
from .http_client import request
from .support import RedisServer, free_port, wait_for

SYNTH = {"source": "synthetic:", "fps": 10, "width": 160, "detector": "none"}
JSON_TYPE = {"Content-Type": "application/json"}
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"

# Three front ends on one nginx, each marking the request in one of the three
# ways (the first is Debian's /etc/nginx/proxy_params), all keeping the upstream's
# Host (nginx's default), with the WebSocket upgrade passed on.
NGINX_CONF = """
daemon off;
master_process off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    map $http_upgrade $connection_upgrade {{ default upgrade; '' close; }}
    server {{
        listen 127.0.0.1:{xff};
        location / {{
            proxy_pass http://127.0.0.1:{upstream};
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_set_header X-Real-IP $remote_addr;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
        }}
    }}
    server {{
        listen 127.0.0.1:{real_ip};
        location / {{
            proxy_pass http://127.0.0.1:{upstream};
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_set_header X-Real-IP $remote_addr;
        }}
    }}
    server {{
        listen 127.0.0.1:{forwarded};
        location / {{
            proxy_pass http://127.0.0.1:{upstream};
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_set_header Forwarded "for=$remote_addr";
        }}
    }}
}}
"""


class Nginx:
    """nginx in front of ``upstream``: one port per way of marking a request."""

    def __init__(self, prefix: Path, upstream: int) -> None:
        self.prefix = prefix
        self.ports = {"xff": free_port(), "real_ip": free_port(), "forwarded": free_port()}
        conf = prefix / "nginx.conf"
        conf.write_text(NGINX_CONF.format(prefix=prefix, upstream=upstream, **self.ports))
        self.process = subprocess.Popen(
            [NGINX, "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        wait_for(self._listening, 10, "nginx listening")

    def _listening(self) -> bool:
        assert self.process.poll() is None, self.log_text()
        try:
            return all(self.get(port, "/healthz")[0] == 200 for port in self.ports.values())
        except OSError:
            return False

    def log_text(self) -> str:
        path = self.prefix / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def get(self, port: int, path: str, method: str = "GET", **kw: object) -> tuple[int, bytes]:
        # Reuse the tests' client: it speaks to a Daemon-like object's ``base``.
        return request(_At(port), path, method, **kw)  # type: ignore[arg-type]

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class _At:
    def __init__(self, port: int) -> None:
        self.base = f"127.0.0.1:{port}"


def _daemon(path: Path, redis_url: str, server_extra: str, camera: str = "door") -> Daemon:
    port = free_port()
    write_config(path, redis_url=redis_url, port=port, cameras=[{"id": camera, **SYNTH}])
    path.write_text(path.read_text().replace("[server]\n", "[server]\n" + server_extra))
    daemon = Daemon(path, port)
    daemon.wait_healthy()
    return daemon


@pytest.fixture(scope="module")
def default_install(
    module_redis: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Daemon, Nginx]]:
    """The default install (loopback, no tokens) behind nginx."""
    if not Path(NGINX).exists():
        pytest.fail("nginx is not installed (scripts/test installs it)")
    base = tmp_path_factory.mktemp("proxied")
    daemon = _daemon(base / "streamd.toml", module_redis.url, "")
    nginx = Nginx(base, daemon.port)
    yield daemon, nginx
    nginx.stop()
    daemon.stop()
    text = daemon.log_text()
    assert "Traceback" not in text, text[-3000:]


@pytest.fixture(scope="module")
def anonymous_install(
    module_redis: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Daemon, Nginx]]:
    """Loopback, no tokens, ``allow_anonymous = true``, behind nginx."""
    base = tmp_path_factory.mktemp("anonymous")
    # Its own camera id: both daemons share one Redis, where only one node may own "door".
    daemon = _daemon(base / "streamd.toml", module_redis.url, "allow_anonymous = true\n", "gate")
    nginx = Nginx(base, daemon.port)
    yield daemon, nginx
    nginx.stop()
    daemon.stop()


def _child_of(daemon: Daemon, camera: str = "door") -> str:
    body = json.loads(request(daemon, "/api/cameras")[1])
    return str(body["cameras"][camera]["child"])


def test_proxied_clients_cannot_control_or_view_a_default_install(
    default_install: tuple[Daemon, Nginx],
) -> None:
    daemon, nginx = default_install
    for way, port in nginx.ports.items():
        # The request the issue names: a JSON stop through the proxy.
        status, body = nginx.get(port, "/api/v1/cameras/door/stop", "POST", headers=JSON_TYPE)
        assert status == 403, (way, body)
        assert b"loopback" in body
        for path in ("/api/v1/reload", "/api/v1/cameras/door/restart"):
            assert nginx.get(port, path, "POST", headers=JSON_TYPE)[0] == 403, (way, path)
        # Viewing: no tokens and no allow_anonymous, so nothing to see from afar.
        for path in (
            "/api/cameras",
            "/snapshot/door.jpg",
            "/api/v1/cameras",
            "/api/v1/cameras/door/status",
            "/api/v1/cameras/door/logs",
            "/api/nodes",
            "/metrics",
        ):
            status, body = nginx.get(port, path)
            assert status == 403, (way, path, status, body)
        assert nginx.get(port, "/healthz")[0] == 200  # health stays open
    assert _child_of(daemon) != "stopped"
    # Directly on loopback (no proxy), control still works as before.
    local = request(daemon, "/api/v1/cameras/door/restart", "POST", JSON_TYPE, b"{}")
    assert local[0] == 200, local


async def test_proxied_websockets_are_refused_on_a_default_install(
    default_install: tuple[Daemon, Nginx],
) -> None:
    _, nginx = default_install
    for way, port in nginx.ports.items():
        for path in ("/ws/door", "/ws", "/api/v1/video-stream/ws/door"):
            with pytest.raises(InvalidStatus) as refused:
                async with connect(f"ws://127.0.0.1:{port}{path}"):
                    pass
            assert refused.value.response.status_code == 403, (way, path)


async def test_allow_anonymous_lets_proxied_clients_watch_but_never_control(
    anonymous_install: tuple[Daemon, Nginx],
) -> None:
    daemon, nginx = anonymous_install
    for way, port in nginx.ports.items():
        status, body = nginx.get(port, "/api/cameras")
        assert status == 200 and "gate" in json.loads(body)["cameras"], (way, body)
        # The WebSocket upgrade goes through nginx, and frames come back.
        async with connect(f"ws://127.0.0.1:{port}/ws/gate", max_size=None) as ws:
            assert isinstance(await ws.recv(), bytes), way
        stop = nginx.get(port, "/api/v1/cameras/gate/stop", "POST", headers=JSON_TYPE)
        assert stop[0] == 403, (way, stop)
        # The old frontend's bodiless button through the proxy: same answer.
        same = {"Origin": f"http://127.0.0.1:{port}", "Sec-Fetch-Site": "same-origin"}
        assert nginx.get(port, "/api/v1/cameras/gate/stop", "POST", headers=same)[0] == 403
    assert _child_of(daemon, "gate") != "stopped"
