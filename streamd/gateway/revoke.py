"""Which open WebSockets lost access after a reload (pure; unit-tested in
tests/test_hostile_input.py). A token is checked at the handshake; a reload that
revokes it, narrows its cameras or stops accepting the page's origin closes the
sockets it opened, with a code a client can tell apart from a network failure."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from streamd.gateway.auth import Decision, Need

CLOSE_UNAUTHORIZED = 4401  # the token is no longer valid (HTTP 401's meaning)
CLOSE_FORBIDDEN = 4403  # valid, but no longer for this camera or from this origin (403)


@dataclass(frozen=True)
class ViewerAccess:
    """What a WebSocket was let in with (checked again on reload)."""

    token: str | None
    peer: str
    origin: str | None
    host: str | None
    camera_id: str | None  # /ws/{id}; None for /ws (its cameras are its subscriptions)


@dataclass(frozen=True)
class Revocation:
    code: int
    reason: str  # sent in the close frame: never the token


def _refusal(decision: Decision, what: str) -> Revocation:
    if decision.status == 401:
        return Revocation(CLOSE_UNAUTHORIZED, "token no longer valid")
    return Revocation(CLOSE_FORBIDDEN, f"access withdrawn: {what}")


def lost_access(
    access: ViewerAccess,
    cameras: Iterable[str],
    decide: Callable[[Need, str | None], Decision],
    origin_allowed: bool,
) -> Revocation | None:
    """None while the socket may stay open; else how to close it. ``decide(need,
    camera)`` judges with the reloaded settings; ``cameras`` are what it watches."""
    if not origin_allowed:
        return Revocation(CLOSE_FORBIDDEN, "access withdrawn: origin not allowed")
    need = Need.LIST if access.camera_id is None else Need.VIEW
    decision = decide(need, access.camera_id)
    if not decision.allowed:
        return _refusal(decision, decision.reason)
    for camera_id in sorted(cameras):
        decision = decide(Need.VIEW, camera_id)
        if not decision.allowed:
            return _refusal(decision, f"camera {camera_id}")
    return None
