"""Masking of secrets before anything is printed or logged.

Camera URLs carry credentials (``rtsp://user:pass@cam``) and Redis URLs carry
passwords; both must never reach a log line or ``streamd check`` output.
"""

from __future__ import annotations

import re

MASK = "***"
# scheme://user:password@ or scheme://:password@ — the password part is masked.
_URL_CREDENTIALS = re.compile(
    r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^\s/@:]*:)(?P<secret>[^\s/@]+)@"
)


def redact_url(text: str) -> str:
    """Mask every URL password in ``text``; text without credentials is unchanged."""
    return _URL_CREDENTIALS.sub(lambda m: f"{m.group('head')}{MASK}@", text)
