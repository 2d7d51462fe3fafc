"""Masking of secrets before anything is printed or logged.

Camera URLs carry credentials (``rtsp://user:pass@cam``, ``?pwd=…``) and Redis
URLs carry passwords in every form redis-py accepts (``redis://:pw@h``,
``redis://user:pw@h``, ``?password=pw``, ``rediss://``, ``unix://``); none may
reach a log line, ``streamd check`` output or an error message.

A URL here runs from its ``scheme://`` to the next whitespace (the config
refuses URLs with raw whitespace, so a password never spans two words). Two
spans are masked, and when they overlap, everything they cover:

- userinfo: from the first ``:`` after ``scheme://`` to the **last** ``@`` of
  the URL. A password with an unencoded ``/ ? # @`` is still masked whole; the
  price is that a URL whose only ``@`` is in its query (``h:6379/0?x=a@b``) is
  masked from its port on, which errs on the safe side.
- query secrets (``password``, ``pwd``, ``token``, …): the value, up to the next
  ``&name=`` (where redis-py, like everyone, ends it) or the end of the URL.
"""

from __future__ import annotations

import re

MASK = "***"
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://\S*")
_SECRET_PARAM = re.compile(
    r"[?&;](?:password|passwd|pwd|pass|token|secret|key|auth)=", re.IGNORECASE
)
_NEXT_PARAM = re.compile(r"&[A-Za-z_][\w.-]*=")


def _secret_spans(url: str) -> list[tuple[int, int]]:
    spans = []
    authority = url.index("://") + 3
    at = url.rfind("@")
    colon = url.find(":", authority, at) if at > authority else -1
    if colon != -1:
        spans.append((colon + 1, at))
    for param in _SECRET_PARAM.finditer(url):
        following = _NEXT_PARAM.search(url, param.end())
        spans.append((param.end(), following.start() if following else len(url)))
    merged: list[tuple[int, int]] = []
    for start, end in sorted(s for s in spans if s[1] > s[0]):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


def _mask(match: re.Match[str]) -> str:
    url = match.group(0)
    out, shown_up_to = [], 0
    for start, end in _secret_spans(url):
        out += [url[shown_up_to:start], MASK]
        shown_up_to = end
    out.append(url[shown_up_to:])
    return "".join(out)


def redact_url(text: str) -> str:
    """Mask every URL password in ``text``; text without credentials is unchanged."""
    if "://" not in text:
        return text
    return _URL.sub(_mask, text)
