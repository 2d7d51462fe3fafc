"""Messages between the supervisor and the fork server (pure).

One ``SOCK_SEQPACKET`` socket: each message is one JSON object in one packet, so
framing is the kernel's, and file descriptors travel with the packet they belong
to (``socket.send_fds``).

    server → supervisor   {"ready": PID}                       preloaded, serving
    supervisor → server   {"fork": N, "argv": [...], "env": {...}}  + the control fd
    server → supervisor   {"forked": N, "pid": PID}             + a pidfd of the child
                          {"failed": N, "error": "..."}
                          {"exited": PID, "code": C}            reaped (C as Popen's returncode)
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from streamd.errors import StreamdError

MAX_PACKET = 256 * 1024  # a request carries the child's environment


class ForkMessageError(StreamdError, ValueError):
    """A packet that is not one of the messages above."""


@dataclass(frozen=True)
class Ready:
    pid: int


@dataclass(frozen=True)
class ForkRequest:
    request_id: int
    argv: tuple[str, ...]
    env: Mapping[str, str]


@dataclass(frozen=True)
class Forked:
    request_id: int
    pid: int


@dataclass(frozen=True)
class Failed:
    request_id: int
    error: str


@dataclass(frozen=True)
class Exited:
    pid: int
    code: int


Message = Ready | ForkRequest | Forked | Failed | Exited


def encode(message: Message) -> bytes:
    body: dict[str, Any]
    if isinstance(message, Ready):
        body = {"ready": message.pid}
    elif isinstance(message, ForkRequest):
        body = {"fork": message.request_id, "argv": list(message.argv), "env": dict(message.env)}
    elif isinstance(message, Forked):
        body = {"forked": message.request_id, "pid": message.pid}
    elif isinstance(message, Failed):
        body = {"failed": message.request_id, "error": message.error}
    else:
        body = {"exited": message.pid, "code": message.code}
    return json.dumps(body, separators=(",", ":")).encode()


def _int(body: Mapping[str, Any], key: str) -> int:
    value = body.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ForkMessageError(f"{key} must be an integer")
    return value


def _strings(value: object, what: str) -> Sequence[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ForkMessageError(f"{what} must be a list of strings")
    return value


def decode(packet: bytes) -> Message:
    try:
        body = json.loads(packet)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ForkMessageError(f"not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ForkMessageError("not an object")
    if "ready" in body:
        return Ready(_int(body, "ready"))
    if "fork" in body:
        env = body.get("env")
        if not isinstance(env, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in env.items()
        ):
            raise ForkMessageError("env must map strings to strings")
        argv = tuple(_strings(body.get("argv"), "argv"))
        if not argv:
            raise ForkMessageError("argv is empty")
        return ForkRequest(_int(body, "fork"), argv, env)
    if "forked" in body:
        return Forked(_int(body, "forked"), _int(body, "pid"))
    if "failed" in body:
        return Failed(_int(body, "failed"), str(body.get("error")))
    if "exited" in body:
        return Exited(_int(body, "exited"), _int(body, "code"))
    raise ForkMessageError(f"unknown message: {sorted(body)}")
