"""Who may do what on the gateway (pure decisions, no sockets).

Tokens are configured as SHA-256 hashes (never plain), each scoped to a list of
cameras or ``*``, optionally with the admin scope (control endpoints). A token
is presented as ``Authorization: Bearer T``, as a ``Sec-WebSocket-Protocol``
value ``token.T`` (browsers cannot set headers on WebSockets), or as
``?token=T``. Comparison is in constant time over every configured token.

Without tokens (loopback-only installs) viewing is open to loopback clients, and
to others only with ``allow_anonymous = true``; control is allowed from loopback
only, unless ``admin_token_sha256`` is set: then control needs that token (or an
admin-scoped one) from everywhere, loopback included. A request a proxy forwarded
(``guards.peer_of``) is not a loopback client, whatever its socket says.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

from streamd.config import TokenConfig

SUBPROTOCOL = "streamd"
TOKEN_SUBPROTOCOL_PREFIX = "token."  # noqa: S105 - a prefix, not a secret


class Need(enum.Enum):
    VIEW = "view"  # a camera's frames, snapshot, state
    LIST = "list"  # the camera list, metrics
    ADMIN = "admin"  # start/stop/reload


@dataclass(frozen=True)
class Decision:
    allowed: bool
    status: int = 200
    reason: str = ""

    @property
    def refusal(self) -> str:
        """The name a refusal is counted under: no valid token, or not this one's."""
        return "unauthorized" if self.status == 401 else "forbidden"


ALLOW = Decision(True)


def is_loopback(address: str) -> bool:
    """A bare loopback address; a peer marked as proxied (``guards.peer_of``) is not."""
    try:
        return ipaddress.ip_address(address.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def presented_token(
    authorization: str | None, protocol_headers: Sequence[str], path_and_query: str
) -> str | None:
    """The token from ``Authorization: Bearer``, the WebSocket subprotocols
    (``Sec-WebSocket-Protocol`` values), or the ``token`` query parameter."""
    scheme, _, value = (authorization or "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    for header in protocol_headers:
        for item in header.split(","):
            item = item.strip()
            if item.startswith(TOKEN_SUBPROTOCOL_PREFIX) and len(item) > len(
                TOKEN_SUBPROTOCOL_PREFIX
            ):
                return item[len(TOKEN_SUBPROTOCOL_PREFIX) :]
    values = parse_qs(urlsplit(path_and_query).query).get("token")
    return values[0] if values and values[0] else None


def match_token(presented: str | None, tokens: Sequence[TokenConfig]) -> TokenConfig | None:
    if presented is None:
        return None
    digest = hashlib.sha256(presented.encode()).hexdigest()
    found = None
    for token in tokens:  # no early exit: the time taken does not reveal which matched
        if hmac.compare_digest(digest, token.sha256):
            found = token
    return found


def authorize(
    need: Need,
    *,
    tokens: Sequence[TokenConfig],
    presented: str | None,
    peer: str,
    camera_id: str | None = None,
    admin_token_sha256: str | None = None,
    allow_anonymous: bool = False,
) -> Decision:
    if need is Need.ADMIN and admin_token_sha256 is not None:
        # Control needs a token even from loopback (installs behind a local proxy,
        # where every caller is loopback): the control token or an admin-scoped one.
        if presented is None:
            return Decision(False, 401, "control token required")
        digest = hashlib.sha256(presented.encode()).hexdigest()
        if hmac.compare_digest(digest, admin_token_sha256):
            return ALLOW
        token = match_token(presented, tokens)
        if token is None:
            return Decision(False, 401, "invalid token")
        return ALLOW if token.admin else Decision(False, 403, "token lacks the admin scope")
    if not tokens:
        if is_loopback(peer):
            return ALLOW
        if need is Need.ADMIN:
            return Decision(False, 403, "control is allowed from loopback only")
        if allow_anonymous:
            return ALLOW
        return Decision(
            False, 403, "remote clients need a token (or allow_anonymous = true in [server])"
        )
    if presented is None:
        return Decision(False, 401, "token required")
    token = match_token(presented, tokens)
    if token is None:
        return Decision(False, 401, "invalid token")
    if need is Need.ADMIN:
        return ALLOW if token.admin else Decision(False, 403, "token lacks the admin scope")
    if need is Need.VIEW and camera_id is not None and not token.allows(camera_id):
        return Decision(False, 403, "token not valid for this camera")
    return ALLOW


def visible_cameras(
    camera_ids: Sequence[str], tokens: Sequence[TokenConfig], presented: str | None
) -> list[str]:
    if not tokens:
        return list(camera_ids)
    token = match_token(presented, tokens)
    if token is None:
        return []
    return [c for c in camera_ids if token.allows(c)]
