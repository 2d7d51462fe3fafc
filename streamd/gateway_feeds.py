"""What feeds the gateway from outside this process, built from the config: the
Redis subscriber for frames and live events (sharded pub/sub in a cluster) and
the store of kept events (Redis' stream, or this daemon's own log without
Redis). The daemon wires them to the gateway; what they subscribe to is the
gateway's ``Subscriptions``."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

from streamd.config import Config
from streamd.eventlog.local_log import LocalEventLog, default_directory
from streamd.eventlog.records import event_keys
from streamd.eventlog.redis_log import RedisEventStore
from streamd.gateway.state import MAX_EVENT_BYTES
from streamd.transport.cluster import Topology
from streamd.transport.shard_clients import ShardClients
from streamd.transport.sharded import ShardedFrameSubscriber
from streamd.transport.subscriber import FrameSubscriber


def frame_subscriber(
    config: Config,
    topology: Topology,
    on_frame: Callable[[str, bytes], None],
    on_event: Callable[[str, bytes], None],
    on_dropped: Callable[[str, str], None],
) -> FrameSubscriber | None:
    """None without Redis (frames come over the children's control sockets)."""
    redis = config.redis
    if not redis.enabled:
        return None
    # Larger messages are read past by the subscriber (the gateway would refuse them).
    max_message_bytes = max(config.server.max_frame_bytes, MAX_EVENT_BYTES)
    if redis.cluster:
        return ShardedFrameSubscriber(
            topology,
            redis.channel_prefix,
            on_frame=on_frame,
            on_event=on_event,
            max_message_bytes=max_message_bytes,
            on_dropped=on_dropped,
        )
    return FrameSubscriber(
        redis.url,
        redis.channel_prefix,
        on_frame=on_frame,
        on_event=on_event,
        max_message_bytes=max_message_bytes,
        on_dropped=on_dropped,
    )


def event_store(config: Config, env: Mapping[str, str]) -> RedisEventStore | LocalEventLog:
    """Kept events: read from Redis' stream, or kept here without Redis."""
    if config.redis.enabled:
        redis = config.redis
        topology = Topology(redis.url, cluster=redis.cluster, seeds=redis.seeds)
        return RedisEventStore(ShardClients(topology, max_connections=4), event_keys(redis.cluster))
    events = config.events
    directory = Path(events.directory) if events.directory else default_directory(env)
    return LocalEventLog(events, directory)
