"""The seed system's API: the video-stream router and camera runtime API of the
detection system streamd replaces, served so its frontend and detection
processes work unchanged. Errors use its ``{"detail": {"error", "message"}}``
shape; every guard of the gateway (Host allowlist, tokens, cross-site refusal,
limits) applies as everywhere."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import redis.asyncio as aioredis
import structlog
from aiohttp import web
from redis.exceptions import RedisError

from streamd.config import is_valid_camera_id
from streamd.gateway import seed_shapes
from streamd.gateway.auth import Need
from streamd.gateway.request_guards import cross_site_refusal, denied, json_object
from streamd.gateway.responses import BodyRefusal, json_response, read_body, response
from streamd.gateway.routes import Route, RouteKind
from streamd.gateway.seed_shapes import StreamConfig
from streamd.gateway.state import GatewayState
from streamd.transport.cluster import Topology, plain_client
from streamd.transport.frame import FrameError, FrameMeta, pack_frame, parse_frame
from streamd.transport.shard_clients import ShardClients

log = structlog.get_logger("streamd.gateway")
MAX_FOREIGN_CONFIGS = 256  # stream configs kept in memory for ids not configured here
MAX_JSON_BODY = 64 * 1024  # batch-status lists camera ids
# What this module answers (``camera_api`` has the seed paths streamd added).
ROUTE_KINDS = frozenset(
    {
        RouteKind.V1_STREAM_STATS,
        RouteKind.V1_STREAM_STATUS,
        RouteKind.V1_FRAME_PUSH,
        RouteKind.V1_STREAM_CONFIG,
        RouteKind.V1_CAMERAS,
        RouteKind.V1_BATCH_STATUS,
        RouteKind.V1_CAMERA,
    }
)


class SeedApi:
    def __init__(self, state: GatewayState, env: Mapping[str, str]) -> None:
        self.state = state
        self.push_token = env.get("VIDEO_PUSH_TOKEN") or None
        self.default_config = StreamConfig("", stream_interval=seed_shapes.default_interval(env))
        # Configs set through the seed API, newest last; ids not configured here are
        # kept only as a bounded LRU (and in Redis, where they expire).
        self.configs: OrderedDict[str, StreamConfig] = OrderedDict()
        self._redis: aioredis.Redis | None = None
        self._shards: ShardClients | None = None  # pushed frames' channels (a cluster)

    @property
    def redis(self) -> aioredis.Redis | None:
        config = self.state.config.redis
        if not config.enabled:
            return None
        if self._redis is None:
            self._redis = plain_client(config.url)
        return self._redis

    def _channel_clients(self) -> ShardClients:
        if self._shards is None:
            config = self.state.config.redis
            topology = Topology(config.url, cluster=config.cluster, seeds=config.seeds)
            self._shards = ShardClients(topology)
        return self._shards

    async def close(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()
        if self._shards is not None:
            await self._shards.aclose()

    def start_intervals(self) -> None:
        """``VIDEO_STREAM_INTERVAL`` applies to every camera run here from the start."""
        if self.default_config.publish_every != 1:
            for camera in self.state.config.cameras:
                self.state.control.set_publish_interval(
                    camera.id, self.default_config.publish_every
                )

    # --- helpers -------------------------------------------------------------------------
    def _refuse(self, reason: str, status: int, message: str, **fields: Any) -> web.Response:
        return self.state.refuse(reason, status, message, seed_errors=True, **fields)

    def _denied(
        self, need: Need, token: str | None, peer: str, camera_id: str | None = None
    ) -> web.Response | None:
        return denied(self.state, need, token, peer, camera_id, seed_errors=True)

    def _camera_or_refusal(self, camera_id: str) -> web.Response | None:
        if not is_valid_camera_id(camera_id):
            return self._refuse("not_found", 404, "invalid camera id")
        return None

    # --- dispatch --------------------------------------------------------------------------
    async def handle(
        self, request: web.BaseRequest, target: Route, token: str | None, peer: str
    ) -> web.Response:
        kind = target.kind
        if kind is RouteKind.V1_STREAM_STATS:
            return self._denied(Need.LIST, token, peer) or self.stream_stats(token)
        if kind is RouteKind.V1_CAMERAS:
            return self._denied(Need.LIST, token, peer) or self.cameras(token)
        if kind is RouteKind.V1_BATCH_STATUS:
            return self._denied(Need.LIST, token, peer) or await self.batch_status(request, token)
        refusal = self._camera_or_refusal(target.camera_id)
        if refusal is not None:
            return refusal
        camera_id = target.camera_id
        if kind is RouteKind.V1_FRAME_PUSH:
            return await self.push_frame(request, camera_id, token, peer)
        denied = self._denied(Need.VIEW, token, peer, camera_id)
        if denied is not None:
            return denied
        if kind is RouteKind.V1_STREAM_STATUS:
            viewers = self.state.hub.viewers(camera_id)
            body = {"camera_id": camera_id, "has_clients": viewers > 0, "client_count": viewers}
            return json_response(200, body)
        if kind is RouteKind.V1_STREAM_CONFIG:
            if request.method == "POST":
                return await self.set_config(request, camera_id, token, peer)
            return json_response(200, (await self.config_of(camera_id)).to_json())
        return self.camera_view(camera_id, target.action)

    # --- /api/v1/video-stream --------------------------------------------------------------
    def stream_stats(self, token: str | None) -> web.Response:
        hub = self.state.hub
        visible = self.state.visible_cameras(token)
        detail = {c: hub.viewers(c) for c in visible if hub.viewers(c) > 0}
        deliveries = [hub.delivery(c) for c in visible]
        body = {
            "total_connections": sum(detail.values()),
            "active_cameras": len(detail),
            "frames_sent": sum(d.sent for d in deliveries),
            "frames_dropped": hub.skipped_total,
            "frames_received": sum(d.received for d in deliveries),
            "active_cameras_detail": detail,
        }
        return json_response(200, body)

    async def push_frame(
        self, request: web.BaseRequest, camera_id: str, token: str | None, peer: str
    ) -> web.Response:
        """The seed system's HTTP frame push: a raw JPEG body, through the same validation
        and fan-out as a Redis frame, and out to Redis for other gateways."""
        # Raw JPEG bodies come from programs, not forms: only the origin is checked.
        refusal = cross_site_refusal(self.state, request, peer, seed_errors=True, raw_body=True)
        if refusal is not None:
            return refusal
        camera = self.state.config.camera(camera_id)
        if camera is not None and not camera.external:
            # streamd captures this camera itself: a push would overwrite its feed.
            return self._refuse(
                "push_conflict", 409, f"camera {camera_id} is captured by streamd itself"
            )
        presented = request.headers.get("X-Video-Token") or token
        if not (self.push_token and seed_shapes.push_token_matches(presented, self.push_token)):
            if self.push_token and not self.state.config.server.tokens:
                return self._refuse("unauthorized", 401, "invalid or missing X-Video-Token")
            denied = self._denied(Need.ADMIN, presented, peer)
            if denied is not None:
                return denied
        limit = self.state.config.server.max_frame_bytes
        body = await read_body(request, limit, self.state.config.server.handshake_timeout)
        if isinstance(body, BodyRefusal):
            return self._refuse(body.reason, body.status, body.message)
        if not body:
            return self._refuse("bad_request", 400, "empty frame")
        wire = _with_metadata(camera_id, body, limit)
        if wire is None or not self.state.ingest(camera_id, wire):
            return self._refuse("bad_frame", 400, "not a JPEG frame for this camera")
        await self._publish(camera_id, wire)
        return json_response(200, {"ok": True, "camera_id": camera_id, "size": len(body)})

    async def _publish(self, camera_id: str, wire: bytes) -> None:
        client = self.redis
        if client is None:
            return
        channel = self.state.config.redis.channel_prefix + camera_id
        try:
            if self.state.config.redis.cluster:
                # Gateways listen by SSUBSCRIBE on the channel's shard: a classic
                # PUBLISH would never reach them.
                shards = self._channel_clients()
                try:
                    await (await shards.for_name(channel)).spublish(channel, wire)
                except RedisError:
                    shards.failed()  # a failover or a moved slot: map read again
                    raise
            else:
                await client.publish(channel, wire)
        except (RedisError, OSError) as exc:
            self.state.refuse_quietly("push_redis_failed", error=type(exc).__name__)

    async def config_of(self, camera_id: str) -> StreamConfig:
        known = self.configs.get(camera_id)
        if known is not None:
            return known
        default = StreamConfig(camera_id, self.default_config.stream_interval)
        client = self.redis
        if client is None:
            return default
        try:
            fields = await client.hgetall(seed_shapes.CONFIG_HASH_PREFIX + camera_id)
        except (RedisError, OSError):
            return default
        stored = {_as_bytes(k): _as_bytes(v) for k, v in fields.items()}
        return seed_shapes.from_hash(camera_id, stored, default) if stored else default

    async def set_config(
        self, request: web.BaseRequest, camera_id: str, token: str | None, peer: str
    ) -> web.Response:
        refusal = cross_site_refusal(self.state, request, peer, seed_errors=True)
        if refusal is not None:
            return refusal
        denied = self._denied(Need.ADMIN, token, peer)
        if denied is not None:
            return denied
        body = await json_object(self.state, request, 4096, seed_errors=True)
        if isinstance(body, web.Response):
            return body
        try:
            config = seed_shapes.apply_update(await self.config_of(camera_id), body)
        except ValueError as exc:
            return self._refuse("bad_request", 422, str(exc))
        self._remember(camera_id, config)
        applied = self.state.control.set_publish_interval(camera_id, config.publish_every)
        client = self.redis
        if client is not None:
            key = seed_shapes.CONFIG_HASH_PREFIX + camera_id
            try:
                async with client.pipeline(transaction=True) as pipe:
                    pipe.hset(key, mapping=config.to_hash())
                    pipe.expire(key, seed_shapes.CONFIG_HASH_TTL_S)
                    await pipe.execute()
            except (RedisError, OSError) as exc:
                self.state.refuse_quietly("config_redis_failed", error=type(exc).__name__)
        log.info(
            "stream config",
            camera_id=camera_id,
            publish_every=config.publish_every,
            applied_here=applied,
            peer=peer,
        )
        message = "configuration updated" + (
            "" if applied else " (stored for the camera's publisher)"
        )
        return json_response(200, {**config.to_json(), "message": message})

    def _remember(self, camera_id: str, config: StreamConfig) -> None:
        self.configs[camera_id] = config
        self.configs.move_to_end(camera_id)
        configured = {c.id for c in self.state.config.cameras}
        foreign = [c for c in self.configs if c not in configured]
        for stale in foreign[: max(0, len(foreign) - MAX_FOREIGN_CONFIGS)]:
            del self.configs[stale]

    # --- /api/v1/cameras -------------------------------------------------------------------
    def _size(self, camera_id: str) -> tuple[int, int] | None:
        latest = self.state.hub.latest(camera_id)
        if latest is None or latest.meta is None:
            return None
        return latest.meta.width, latest.meta.height

    def cameras(self, token: str | None) -> web.Response:
        statuses = self.state.control.camera_statuses()
        visible = set(self.state.visible_cameras(token))
        entries = [
            seed_shapes.camera_entry(
                camera,
                statuses.get(camera.id),
                self._size(camera.id),
                self.state.camera_state(camera.id, statuses),
            )
            for camera in self.state.config.cameras
            if camera.id in visible
        ]
        directory = self.state.directory  # other nodes' cameras (the registry)
        if directory is not None:
            configured = {camera.id for camera in self.state.config.cameras}
            entries += [
                seed_shapes.remote_camera_entry(
                    camera_id,
                    directory.info(camera_id) or {},
                    self._size(camera_id),
                    self.state.camera_state(camera_id, statuses),
                )
                for camera_id in directory.ids()
                if camera_id in visible and camera_id not in configured
            ]
        return json_response(200, {"cameras": entries})

    async def batch_status(self, request: web.BaseRequest, token: str | None) -> web.Response:
        body = await json_object(self.state, request, MAX_JSON_BODY, seed_errors=True)
        if isinstance(body, web.Response):
            return body
        visible = self.state.visible_cameras(token)
        wanted = body.get("camera_ids")
        if wanted is None:
            wanted = visible
        if not isinstance(wanted, list) or not all(isinstance(c, str) for c in wanted):
            return self._refuse("bad_request", 422, "camera_ids must be a list of camera ids")
        statuses = self.state.control.camera_statuses()
        allowed = set(visible)
        return json_response(
            200,
            {
                c: seed_shapes.status_entry(c, statuses.get(c))
                for c in wanted[:1000]
                if c in allowed
            },
        )

    def camera_view(self, camera_id: str, view: str) -> web.Response:
        camera = self.state.config.camera(camera_id)
        statuses = self.state.control.camera_statuses()
        if view == "preview":
            latest = self.state.hub.latest(camera_id)
            if latest is None:
                return self._refuse("no_frame", 503, "no frame yet")
            return response(200, latest.payload, "image/jpeg")
        if camera is None and camera_id not in self.state.hub.feeds:
            return self._refuse("not_found", 404, f"camera {camera_id} not found")
        status = statuses.get(camera_id)
        if view == "status":
            return json_response(200, seed_shapes.status_entry(camera_id, status))
        if view == "stats":
            delivery = self.state.hub.delivery(camera_id)
            body = {
                **seed_shapes.status_entry(camera_id, status),
                "viewers": self.state.hub.viewers(camera_id),
                "frames_received": delivery.received,
                "frames_sent": delivery.sent,
                "bytes_sent": delivery.bytes_sent,
            }
            return json_response(200, body)
        if camera is None:
            return self._refuse("not_found", 404, f"camera {camera_id} is not configured here")
        state = self.state.camera_state(camera_id, statuses)
        entry = seed_shapes.camera_entry(camera, status, self._size(camera_id), state)
        return json_response(200, entry)


def _with_metadata(camera_id: str, body: bytes, limit: int) -> bytes | None:
    """A plain JPEG gets our metadata (a fresh seq, so the hub drops the copy
    that comes back from Redis); a streamd frame keeps its own."""
    try:
        parsed = parse_frame(body, limit)
    except FrameError:
        return None
    if parsed.meta is not None:
        return body
    now = time.time_ns()
    return pack_frame(FrameMeta(camera_id, now // 1000, now, now, 0, 0), parsed.payload)


def _as_bytes(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode()
