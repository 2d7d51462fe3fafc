"""Request checks that stop a web page or a rebound DNS name from using the
gateway through the operator's browser (pure decisions; see docs/security.md).

- ``host_allowed``: the ``Host`` header must name this daemon (an IP literal,
  ``localhost``, the listen host, or a configured ``server_names`` entry). A page
  on ``evil.example`` whose name was rebound to 127.0.0.1 sends
  ``Host: evil.example`` and is refused, on every endpoint.
- ``cross_site_refusal``: state-changing requests (start/stop/reload) must come
  from the page's own origin or a listed one, never ``Origin: null``, never with
  ``Sec-Fetch-Site: cross-site``, and must carry ``Content-Type:
  application/json``, which a browser cannot send cross-site without a CORS
  preflight that we do not grant to unlisted origins.
- ``duplicated``: a request carrying two ``Host``/``Origin``/``Authorization``
  headers is ambiguous (proxies and we might read different ones): refused.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
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


def cross_site_refusal(
    *,
    origin: str | None,
    sec_fetch_site: str | None,
    content_type: str | None,
    host_header: str | None,
    allowed_origins: Sequence[str],
) -> str | None:
    """Why a state-changing request must be refused, or None to let it through."""
    if origin is not None:
        if origin == "null":
            return "Origin null is not allowed"
        if not same_origin(origin, host_header) and not listed_origin(origin, allowed_origins):
            return "cross-site request refused"
    browser_says_cross_site = sec_fetch_site is not None and sec_fetch_site.lower() not in (
        "same-origin",
        "none",
    )
    if browser_says_cross_site and (origin is None or not listed_origin(origin, allowed_origins)):
        return "cross-site request refused"
    if media_type(content_type) != JSON_MEDIA_TYPE:
        return f"control requests need Content-Type: {JSON_MEDIA_TYPE}"
    return None


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
