"""streamd's vocabulary in one place: every state, exit code and Redis name that
crosses a process, a wire or a log line (supervisord keeps its states the same way).

The enums are ``StrEnum`` / ``IntEnum`` whose values are the strings and numbers
streamd has always written, so JSON, heartbeats, log lines and exit statuses stay
byte-identical while code compares members instead of literals.
"""

from __future__ import annotations

import enum


class ChildState(enum.StrEnum):
    """The supervisor's view of one camera child (``lifecycle.Lifecycle``)."""

    STOPPED = "stopped"
    STARTING = "starting"
    RUNNING = "running"
    BACKOFF = "backoff"
    CONFIG_ERROR = "config_error"
    CONFLICT = "conflict"  # the id is configured on another node too, which publishes it


class SourceState(enum.StrEnum):
    """The camera's picture, as the child reports it in heartbeats."""

    CONNECTING = "connecting"  # opening the source for the first time
    LIVE = "live"
    RECONNECTING = "reconnecting"  # the source was lost; reopening with backoff
    STALLED = "stalled"  # open, but no frame for a while (judged, not reported by capture)
    OFFLINE = "offline"  # judged by the gateway: no frame ever seen from another node's camera


# One rule for "stalled", so a camera means the same by it wherever it is judged: by
# its own child (``worker.main``) and by a gateway for another node's camera
# (``gateway.protocol.camera_state``). Five frame intervals of a slow camera, or
# 3 s, whichever is longer: a 1 fps camera is not stalled after one late frame,
# and a silent camera shows ``stalled`` before its 5 s read timeout reopens it.
STALL_AFTER_S = 3.0
STALL_AFTER_FRAMES = 5


def picture_stalled(frame_age: float, fps: float | None = None) -> bool:
    """No frame for ``frame_age`` seconds: is the picture stalled? (pure)"""
    return frame_age > max(STALL_AFTER_S, STALL_AFTER_FRAMES / fps if fps else 0.0)


# What a viewer or the API is told: the child's own state while no child runs
# (or before its first heartbeat: ``starting``), else what its source does.
CameraState = ChildState | SourceState


class RedisState(enum.StrEnum):
    """The child's publisher connection, as reported in heartbeats."""

    DISABLED = "disabled"  # no Redis configured: frames go over the control socket
    CONNECTING = "connecting"  # until the first PING resolves
    UP = "up"
    DOWN = "down"
    UNKNOWN = "unknown"  # the supervisor has no heartbeat yet

    @property
    def uses_fallback(self) -> bool:
        """Frames reach the local gateway over the control socket, not Redis."""
        return self in (RedisState.DOWN, RedisState.DISABLED, RedisState.CONNECTING)


class ExitCode(enum.IntEnum):
    """Exit statuses of ``streamd`` and its children (sysexits.h where one fits)."""

    OK = 0
    FAILURE = 1  # the shutdown deadline passed; what was left was killed
    USAGE = 2
    UNAVAILABLE = 69  # EX_UNAVAILABLE: the CLI cannot reach the daemon, or systemd is absent
    NO_PERMISSION = 77  # EX_NOPERM: ``streamd install --systemd`` needs root
    CANNOT_LISTEN = 71  # EX_OSERR: the gateway cannot listen (port taken, bad TLS files)
    CONFIG = 78  # EX_CONFIG: unusable configuration; a child is not restarted
    FORCED = 130  # a second SIGINT/SIGTERM: exit at once (128 + SIGINT)


# Redis names. Frames go to the configured ``[redis] channel_prefix`` + camera id;
# everything else streamd keeps in Redis lives under ``streamd:``.
EVENT_CHANNEL_PREFIX = "streamd:events:"  # + camera id: detection events (JSON)
GATEWAY_CONTROL_CHANNEL = "streamd:gateway"  # always subscribed by the gateway
# + camera id: H.264/H.265 access units (docs/protocol.md, "passthrough"); not
# under ``video:`` so nothing subscribed to ``video:*`` ever sees them.
UNIT_CHANNEL_PREFIX = "au:"


def event_channel(camera_id: str) -> str:
    return EVENT_CHANNEL_PREFIX + camera_id


def unit_channel(camera_id: str) -> str:
    """The channel a camera's child publishes passthrough access units on."""
    return UNIT_CHANNEL_PREFIX + camera_id
