"""The old API's camera paths that were missing (issue 19), and the node list:

- ``GET /api/v1/cameras/{id}/logs?lines=N``: the camera's recent records from
  the supervisor's bounded ring (``camera_log.py``), scoped like the camera.
- ``POST /api/v1/cameras/{id}/test``: open the camera's source (or a URL in the
  body, validated like the config's and limited to network schemes), read one
  picture, report codec, size and frame rate. Control (admin), cross-site
  guarded; one probe child process per test (``streamd/probe.py``) with a
  deadline, at most ``MAX_PROBES`` at once (more: 429).
- ``GET /api/nodes``: each node's name, role, cameras owned and lease age, from
  the registry; scoped like ``/api/cameras``.

Errors use the old ``{"detail": {"error", "message"}}`` shape on ``/api/v1``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from typing import TYPE_CHECKING, Any

import structlog
from aiohttp import web

from streamd.camera_log import MAX_RECORDS, parse_lines
from streamd.child import child_environment
from streamd.config import is_valid_camera_id
from streamd.config.urls import has_raw_whitespace
from streamd.gateway import protocol
from streamd.gateway.auth import Need
from streamd.gateway.responses import BodyRefusal, json_response, read_body
from streamd.gateway.routes import Route, RouteKind
from streamd.redact import redact_url
from streamd.registry.directory import node_summaries

if TYPE_CHECKING:
    from streamd.gateway.server import Gateway

log = structlog.get_logger("streamd.gateway")
ROUTE_KINDS = frozenset({RouteKind.V1_CAMERA_LOGS, RouteKind.V1_CAMERA_TEST, RouteKind.NODES})
MAX_PROBES = 2  # tests running at once (each is a process decoding video)
PROBE_DEADLINE_S = 15.0  # the source opens in ≤ 5 s and reads in ≤ 5 s; then the answer
MAX_PROBE_OUTPUT = 16 * 1024
MAX_TEST_BODY = 4096
MAX_URL_CHARS = 2048
# What a URL from the network may name: no files or devices (the config may, its
# author has the machine), no exec-like or other FFmpeg protocols (pipe:, concat:, …).
NETWORK_SCHEMES = ("rtsp://", "rtsps://", "http://", "https://", "synthetic:")


def network_source_problem(url: object) -> str | None:
    """Why a source URL from a request body may not be opened (pure), or None."""
    if not isinstance(url, str) or not url:
        return "url must be a non-empty string"
    if len(url) > MAX_URL_CHARS:
        return f"url is longer than {MAX_URL_CHARS} characters"
    if not url.startswith(NETWORK_SCHEMES):
        return "url must be an rtsp://, rtsps://, http:// or https:// URL"
    if has_raw_whitespace(url):
        return "a URL must not contain spaces or control characters (percent-encode: %20)"
    return None


class Probes:
    """How many tests run now (bounded by ``MAX_PROBES``)."""

    def __init__(self, limit: int = MAX_PROBES) -> None:
        self.limit = limit
        self.running = 0


async def handle(
    gateway: Gateway, request: web.BaseRequest, target: Route, peer: str, token: str | None
) -> web.Response:
    if target.kind is RouteKind.NODES:
        return _denied(gateway, Need.LIST, token, peer, seed_errors=False) or nodes(gateway, token)
    camera_id = target.camera_id
    if not is_valid_camera_id(camera_id):
        return gateway.refuse("not_found", 404, "invalid camera id", seed_errors=True)
    if target.kind is RouteKind.V1_CAMERA_LOGS:
        return _denied(gateway, Need.VIEW, token, peer, camera_id) or logs(
            gateway, request, camera_id
        )
    return await test_camera(gateway, request, camera_id, peer, token)


def _denied(
    gateway: Gateway,
    need: Need,
    token: str | None,
    peer: str,
    camera_id: str | None = None,
    *,
    seed_errors: bool = True,
) -> web.Response | None:
    decision = gateway.decide(need, token, peer, camera_id)
    if decision.allowed:
        return None
    reason = "unauthorized" if decision.status == 401 else "forbidden"
    return gateway.refuse(
        reason, decision.status, decision.reason, seed_errors=seed_errors, peer=peer
    )


def logs(gateway: Gateway, request: web.BaseRequest, camera_id: str) -> web.Response:
    lines = parse_lines(request.query.getall("lines", []), MAX_RECORDS)
    if isinstance(lines, str):
        return gateway.refuse("bad_request", 400, lines, seed_errors=True)
    records = gateway.control.camera_log(camera_id, lines)
    if records is None:
        message = f"camera {camera_id} is not run on this node (no log here)"
        return gateway.refuse("not_found", 404, message, seed_errors=True)
    return json_response(200, {"camera_id": camera_id, "lines": lines, "records": records})


def nodes(gateway: Gateway, token: str | None) -> web.Response:
    visible = set(gateway.visible_cameras(token))
    scoped = bool(gateway.config.server.tokens)
    this = gateway.control.this_node()
    found: list[dict[str, Any]] = []
    if this is not None:
        this = {**this, "cameras": [c for c in this["cameras"] if c in visible]}
        if this["cameras"] or not scoped:
            found.append(this)
    directory = gateway.directory
    if directory is not None:
        others = node_summaries(
            directory.entries.values(),
            directory.redis_now_ms(),
            gateway.config.redis.lease,
            visible,
        )
        found += [n for n in others if this is None or n["name"] != this["name"]]
    return json_response(200, {"nodes": found})


async def test_camera(
    gateway: Gateway, request: web.BaseRequest, camera_id: str, peer: str, token: str | None
) -> web.Response:
    refusal = gateway.cross_site_refusal(request, peer, seed_errors=True)
    if refusal is not None:
        return refusal
    denied = _denied(gateway, Need.ADMIN, token, peer)
    if denied is not None:
        return denied
    body = await read_body(request, MAX_TEST_BODY, gateway.config.server.handshake_timeout)
    if isinstance(body, BodyRefusal):
        return gateway.refuse(body.reason, body.status, body.message, seed_errors=True)
    parsed: object = {}
    if body.strip():
        try:
            parsed = protocol.loads_bounded(body)
        except ValueError:
            parsed = None
    if not isinstance(parsed, dict):
        return gateway.refuse(
            "bad_request", 400, "the body must be a JSON object", seed_errors=True
        )
    if "url" in parsed:
        problem = network_source_problem(parsed["url"])
        if problem is not None:
            return gateway.refuse("bad_request", 422, problem, seed_errors=True)
        source = str(parsed["url"])
    else:
        camera = gateway.config.camera(camera_id)
        if camera is None or camera.external:
            message = f'camera {camera_id} has no source here: give one as {{"url": …}}'
            return gateway.refuse("not_found", 404, message, seed_errors=True)
        source = camera.source
    probes = gateway.probes
    if probes.running >= probes.limit:
        message = f"{probes.limit} camera tests are running; try again shortly"
        busy = gateway.refuse("probe_busy", 429, message, seed_errors=True)
        busy.headers["Retry-After"] = "5"
        return busy
    probes.running += 1
    try:
        result = await run_probe(source, PROBE_DEADLINE_S)
    finally:
        probes.running -= 1
    log.info("camera test", camera_id=camera_id, ok=result.get("ok"), peer=peer)
    if not result.get("ok"):
        status = 504 if result.get("timeout") else 502
        error = str(result.get("error", "the source gave no picture"))[:300]
        return gateway.refuse("camera_test_failed", status, error, seed_errors=True)
    answer = {
        "ok": True,
        "camera_id": camera_id,
        "source": redact_url(source),
        **{key: result.get(key) for key in ("codec", "width", "height", "fps")},
    }
    return json_response(200, answer)


async def run_probe(source: str, deadline: float) -> dict[str, Any]:
    """``python -m streamd.probe`` with the source on stdin, killed at ``deadline``
    or when the request is cancelled (its client left)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "streamd.probe",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,  # FFmpeg's words may quote the URL
        env=child_environment(os.environ, source),
        start_new_session=True,
    )
    try:
        async with asyncio.timeout(deadline):
            out, _ = await process.communicate(json.dumps({"source": source}).encode())
    except TimeoutError:
        return {"ok": False, "timeout": True, "error": f"no picture within {deadline:g} s"}
    finally:
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
    try:
        result = json.loads(out[:MAX_PROBE_OUTPUT])
    except ValueError:
        result = None
    if not isinstance(result, dict):
        return {"ok": False, "error": f"the probe failed (exit {process.returncode})"}
    return result
