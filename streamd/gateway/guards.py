"""Request checks that stop a web page or a rebound DNS name from using the
gateway through the operator's browser (pure decisions; see docs/security.md).

- ``host_allowed``: the ``Host`` header must name this daemon (an IP literal,
  ``localhost``, the listen host, or a configured ``server_names`` entry). A page
  on ``evil.example`` whose name was rebound to 127.0.0.1 sends
  ``Host: evil.example`` and is refused, on every endpoint.
- ``cross_site``: the one guard of every state-changing request (start/stop/
  restart/test/reload/config/push), returning a ``SiteCheck``. It rests on what
  browsers send (OWASP's Fetch Metadata and Origin checks): ``Origin`` on every
  cross-origin POST, ``Sec-Fetch-Site`` on every fetch. A request is refused (403)
  from another origin unless listed, from ``Origin: null``, or with
  ``Sec-Fetch-Site: cross-site``/``same-site``. A JSON body (which no page can
  send cross-site without a preflight we do not grant) is let through; so is a
  request *without a body* whose browser says it is same-origin (``Origin`` of
  this host, ``Sec-Fetch-Site: same-origin``) or comes from a listed origin: the
  old frontend's bodiless ``http.post('/cameras/{id}/start')``. Anything else,
  form-encoded and ``text/plain`` bodies included, is 415.
- ``forwarded``: a request carrying ``X-Forwarded-For``, ``Forwarded`` or
  ``X-Real-IP`` came through a proxy: its client is somewhere else, so it is
  never taken for a loopback client (``peer_of``).
- ``duplicated``: a request carrying two ``Host``/``Origin``/``Authorization``
  headers is ambiguous (proxies and we might read different ones): refused.
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

# Headers whose meaning changes if a second copy is read instead of the first.
SINGLE_HEADERS = (
    "Host",
    "Origin",
    "Authorization",
    "Sec-Fetch-Site",
    "Content-Type",
    "Content-Length",
    "Transfer-Encoding",
)
JSON_MEDIA_TYPE = "application/json"


def duplicated(header_names: Iterable[str]) -> str | None:
    """The first security-relevant header that appears more than once."""
    seen: set[str] = set()
    wanted = {name.lower() for name in SINGLE_HEADERS}
    for name in header_names:
        lower = name.lower()
        if lower not in wanted:
            continue
        if lower in seen:
            return name
        seen.add(lower)
    return None


def host_name(host_header: str) -> str | None:
    """``Host`` without its port, lowercased, without a trailing dot; None if malformed."""
    value = host_header.strip().lower()
    if value.startswith("["):  # [v6]:port
        end = value.find("]")
        if end < 0:
            return None
        rest = value[end + 1 :]
        if rest and not (rest.startswith(":") and rest[1:].isdigit()):
            return None
        return value[1:end]
    name, sep, port = value.rpartition(":")
    if not sep:
        name = value
    elif not port.isdigit() or not name:
        return None
    name = name.rstrip(".")
    return name or None


def _is_ip_literal(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def name_matches(name: str, pattern: str) -> bool:
    """``*.example.com`` covers subdomains of example.com, not example.com itself."""
    if pattern.startswith("*."):
        return name.endswith(pattern[1:]) and len(name) > len(pattern) - 1
    return name == pattern


def host_allowed(host_header: str | None, listen_host: str, server_names: Sequence[str]) -> bool:
    """Rebinding guard. No ``Host`` at all is not a browser (HTTP/1.0 tools): allowed."""
    if host_header is None:
        return True
    name = host_name(host_header)
    if name is None:
        return False
    if _is_ip_literal(name) or name == "localhost":
        return True
    if name == listen_host.lower().rstrip("."):
        return True
    return any(name_matches(name, pattern) for pattern in server_names)


def same_origin(origin: str, host_header: str | None) -> bool:
    parts = urlsplit(origin)
    return bool(host_header) and parts.scheme in ("http", "https") and parts.netloc == host_header


def listed_origin(origin: str, allowed_origins: Sequence[str]) -> bool:
    """Explicitly listed. ``*`` opens viewing to any origin, never control."""
    return origin in allowed_origins


def media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


class SiteVerdict(enum.Enum):
    ALLOW = "allow"
    FORBIDDEN = "forbidden"  # another site, or Origin null: 403
    MEDIA_TYPE = "media_type"  # a body a cross-site form could send: 415

    @property
    def status(self) -> int:
        return {"allow": 200, "forbidden": 403, "media_type": 415}[self.value]


@dataclass(frozen=True)
class SiteCheck:
    verdict: SiteVerdict
    reason: str = ""

    @property
    def allowed(self) -> bool:
        return self.verdict is SiteVerdict.ALLOW


SITE_ALLOWED = SiteCheck(SiteVerdict.ALLOW)
_SAME_ORIGIN_SITES = ("same-origin", "none")  # "none": typed in the address bar, a bookmark


def cross_site(
    *,
    origin: str | None,
    sec_fetch_site: str | None,
    content_type: str | None,
    has_body: bool,
    host_header: str | None,
    allowed_origins: Sequence[str],
) -> SiteCheck:
    """May this state-changing request go on? See the module docstring."""
    listed = origin is not None and listed_origin(origin, allowed_origins)
    if origin is not None:
        if origin == "null":
            return SiteCheck(SiteVerdict.FORBIDDEN, "Origin null is not allowed")
        if not listed and not same_origin(origin, host_header):
            return SiteCheck(SiteVerdict.FORBIDDEN, "cross-site request refused")
    site = None if sec_fetch_site is None else sec_fetch_site.strip().lower()
    if site is not None and site not in _SAME_ORIGIN_SITES and not listed:
        return SiteCheck(SiteVerdict.FORBIDDEN, "cross-site request refused")
    media = media_type(content_type)
    if media == JSON_MEDIA_TYPE:
        return SITE_ALLOWED
    # The browser vouches for a bodiless POST: it named this origin (or a listed
    # one) or said same-origin. Without either, it may be a browser too old to say.
    vouched = origin is not None or site in _SAME_ORIGIN_SITES
    if not has_body and not media and vouched:
        return SITE_ALLOWED
    return SiteCheck(
        SiteVerdict.MEDIA_TYPE,
        f"control requests need Content-Type: {JSON_MEDIA_TYPE} "
        "(or no body, from this page or a listed origin)",
    )


FORWARDING_HEADERS = ("X-Forwarded-For", "Forwarded", "X-Real-IP")
PROXIED = " via proxy"


def forwarded(headers: Mapping[str, str]) -> bool:
    """Did a proxy pass this request on (any forwarding header, any value)?"""
    return any(name in headers for name in FORWARDING_HEADERS)


def peer_of(address: str, headers: Mapping[str, str]) -> str:
    """The peer that authorization sees: the socket's address, marked when a proxy
    forwarded the request so it never counts as loopback (``auth.is_loopback``
    only accepts a bare address). The forwarded address itself is not trusted."""
    return address + PROXIED if forwarded(headers) else address


def embeddable(sec_fetch_site: str | None, allowed_origins: Sequence[str]) -> bool:
    """May a picture go to this request? Not to another site's ``<img>``
    (``Sec-Fetch-Site: cross-site``/``same-site``) unless the operator listed
    origins that use streamd from elsewhere; tools send no such header."""
    if sec_fetch_site is None or sec_fetch_site.lower() in ("same-origin", "none"):
        return True
    return bool(allowed_origins)


def viewer_origin_allowed(
    origin: str | None, host_header: str | None, allowed_origins: Sequence[str]
) -> bool:
    """Cross-site WebSocket hijacking guard: no Origin (not a browser), the
    page's own origin, or one listed in ``allowed_origins`` (``*`` for any)."""
    if origin is None:
        return True
    if origin == "null":
        return "*" in allowed_origins
    return "*" in allowed_origins or origin in allowed_origins or same_origin(origin, host_header)
