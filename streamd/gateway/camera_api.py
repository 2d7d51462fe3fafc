"""The seed system's camera paths that streamd added (issue 19), and the node list:

- ``GET /api/v1/cameras/{id}/logs?lines=N``: the camera's recent records from
  the supervisor's bounded ring (``camera_log.py``), scoped like the camera.
- ``POST /api/v1/cameras/{id}/test``: open the camera's source (or a URL in the
  body, validated like the config's and limited to network schemes), read one
  picture, report codec, size and frame rate. Control (admin), cross-site
  guarded; one probe child process per test (``streamd/probe.py``) with a
  deadline, at most ``MAX_PROBES`` at once (more: 429).
- ``GET /api/nodes``: each node's name, role, cameras owned and lease age, from
  the registry; scoped like ``/api/cameras``.

Errors use the seed system's ``{"detail": {"error", "message"}}`` shape on ``/api/v1``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from typing import Any

import structlog
from aiohttp import web

from streamd.camera_log import MAX_RECORDS, parse_lines
from streamd.child import child_environment
from streamd.config import is_valid_camera_id
from streamd.config.urls import has_raw_whitespace
from streamd.gateway.auth import Need
from streamd.gateway.request_guards import cross_site_refusal, denied, json_object
from streamd.gateway.responses import json_response
from streamd.gateway.routes import Route, RouteKind
from streamd.gateway.state import GatewayState
from streamd.redact import redact_url
from streamd.registry.directory import node_summaries

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
    state: GatewayState,
    probes: Probes,
    request: web.BaseRequest,
    target: Route,
    peer: str,
    token: str | None,
) -> web.Response:
    if target.kind is RouteKind.NODES:
        return denied(state, Need.LIST, token, peer) or nodes(state, token)
    camera_id = target.camera_id
    if not is_valid_camera_id(camera_id):
        return state.refuse("not_found", 404, "invalid camera id", seed_errors=True)
    if target.kind is RouteKind.V1_CAMERA_LOGS:
        return denied(state, Need.VIEW, token, peer, camera_id, seed_errors=True) or logs(
            state, request, camera_id
        )
    return await test_camera(state, probes, request, camera_id, peer, token)


def logs(state: GatewayState, request: web.BaseRequest, camera_id: str) -> web.Response:
    lines = parse_lines(request.query.getall("lines", []), MAX_RECORDS)
    if isinstance(lines, str):
        return state.refuse("bad_request", 400, lines, seed_errors=True)
    records = state.control.camera_log(camera_id, lines)
    if records is None:
        message = f"camera {camera_id} is not run on this node (no log here)"
        return state.refuse("not_found", 404, message, seed_errors=True)
    return json_response(200, {"camera_id": camera_id, "lines": lines, "records": records})


def nodes(state: GatewayState, token: str | None) -> web.Response:
    visible = set(state.visible_cameras(token))
    scoped = bool(state.config.server.tokens)
    this = state.control.this_node()
    found: list[dict[str, Any]] = []
    if this is not None:
        this = {**this, "cameras": [c for c in this["cameras"] if c in visible]}
        if this["cameras"] or not scoped:
            found.append(this)
    directory = state.directory
    if directory is not None:
        others = node_summaries(
            directory.entries.values(),
            directory.redis_now_ms(),
            state.config.redis.lease,
            visible,
        )
        found += [n for n in others if this is None or n["name"] != this["name"]]
    return json_response(200, {"nodes": found})


async def test_camera(
    state: GatewayState,
    probes: Probes,
    request: web.BaseRequest,
    camera_id: str,
    peer: str,
    token: str | None,
) -> web.Response:
    refusal = cross_site_refusal(state, request, peer, seed_errors=True)
    if refusal is None:
        refusal = denied(state, Need.ADMIN, token, peer, seed_errors=True)
    if refusal is not None:
        return refusal
    parsed = await json_object(state, request, MAX_TEST_BODY, seed_errors=True)
    if isinstance(parsed, web.Response):
        return parsed
    if "url" in parsed:
        problem = network_source_problem(parsed["url"])
        if problem is not None:
            return state.refuse("bad_request", 422, problem, seed_errors=True)
        source = str(parsed["url"])
    else:
        camera = state.config.camera(camera_id)
        if camera is None or camera.external:
            message = f'camera {camera_id} has no source here: give one as {{"url": …}}'
            return state.refuse("not_found", 404, message, seed_errors=True)
        source = camera.source
    if probes.running >= probes.limit:
        message = f"{probes.limit} camera tests are running; try again shortly"
        busy = state.refuse("probe_busy", 429, message, seed_errors=True)
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
        return state.refuse("camera_test_failed", status, error, seed_errors=True)
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
