"""structlog setup shared by the supervisor and every child.

A pipeline of small processors: level filter → level and timestamp → secret
redaction (any ``scheme://user:pass@`` in any string value) → renderer. Under
systemd (``$JOURNAL_STREAM`` is stdout) events go to journald natively with
fields (``journald.py``); otherwise JSON lines when stdout is not a terminal
(pipes, files) and readable lines on a TTY.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog

from streamd.journald import JournaldLoggerFactory, JournaldRenderer, stdout_is_journal
from streamd.redact import redact_url

LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def redact_secrets(
    _logger: Any, _method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    for key, value in event.items():
        if isinstance(value, str) and "://" in value:
            event[key] = redact_url(value)
    return event


def add_static_context(context: dict[str, Any]) -> structlog.types.Processor:
    """Fields on every line of this process (``camera_id``, ``pid`` in children);
    unlike contextvars these also reach lines logged from the capture thread."""

    def processor(
        _logger: Any, _method: str, event: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        for key, value in context.items():
            event.setdefault(key, value)
        return event

    return processor


def configure_logging(
    level: str = "info",
    stream: TextIO | None = None,
    *,
    json_lines: bool | None = None,
    context: dict[str, Any] | None = None,
) -> None:
    out = stream or sys.stdout
    logger_factory: Any = structlog.PrintLoggerFactory(out)
    renderer: Any
    if json_lines is None and stdout_is_journal(out, os.environ):
        renderer = JournaldRenderer()
        logger_factory = JournaldLoggerFactory(os.environ, out)
    elif json_lines if json_lines is not None else not out.isatty():
        renderer = structlog.processors.JSONRenderer(sort_keys=False)
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=False)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            add_static_context(context or {}),
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            redact_secrets,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(LEVELS.get(level, logging.INFO)),
        logger_factory=logger_factory,
        cache_logger_on_first_use=False,
    )
