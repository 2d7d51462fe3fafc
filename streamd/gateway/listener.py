"""The listening side: aiohttp's low-level server with connection admission at
accept time, a deadline for a connection to send its request, and malformed
HTTP turned into counted one-line refusals instead of tracebacks."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

import structlog
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestHandler

from streamd.gateway.admission import Refusal

if TYPE_CHECKING:
    from streamd.gateway.server import Gateway

log = structlog.get_logger("streamd.gateway")


class Connection:
    """Bookkeeping for one TCP connection, from accept to close."""

    def __init__(self, peer: str, refusal: Refusal | None) -> None:
        self.peer = peer
        self.refusal = refusal
        self.requests = 0
        self.in_flight = 0
        self.upgraded = False
        self.deadline: asyncio.TimerHandle | None = None


class GatedServer(web.Server):
    """aiohttp's low-level server with admission at accept and a deadline for a
    connection to send its request (slow handshakes are dropped, not served)."""

    def __init__(self, gateway: Gateway, **kwargs: Any) -> None:
        super().__init__(gateway.dispatch, **kwargs)
        self.gateway = gateway
        self.connections_info: dict[RequestHandler, Connection] = {}

    def connection_made(self, handler: RequestHandler, transport: asyncio.Transport) -> None:
        super().connection_made(handler, transport)
        gate = self.gateway.gate
        if gate.flooded():
            self.gateway.refuse_quietly("connection_flood")
            transport.abort()
            return
        address = transport.get_extra_info("peername")
        peer = str(address[0]) if address else ""
        refusal = gate.admit(peer)
        connection = self.connections_info[handler] = Connection(peer, refusal)
        self._arm_deadline(handler, connection, transport)

    def _arm_deadline(
        self, handler: RequestHandler, connection: Connection, transport: asyncio.Transport
    ) -> None:
        seen = connection.requests
        timeout = self.gateway.config.server.handshake_timeout

        def check() -> None:
            if connection.upgraded or connection.in_flight or connection.requests != seen:
                if not connection.upgraded:
                    self._arm_deadline(handler, connection, transport)
                return
            self.gateway.refuse_quietly("handshake_timeout")
            transport.abort()

        connection.deadline = asyncio.get_running_loop().call_later(timeout, check)

    def connection_lost(self, handler: RequestHandler, exc: BaseException | None = None) -> None:
        super().connection_lost(handler, exc)
        connection = self.connections_info.pop(handler, None)
        if connection is not None:
            if connection.deadline is not None:
                connection.deadline.cancel()
            self.gateway.gate.release(connection.peer, connection.refusal)


class _HttpErrors(logging.Handler):
    """aiohttp reports malformed requests as exceptions with a traceback: for
    untrusted input that is a counted, sampled one-line refusal instead. Anything
    else is a bug of ours and keeps its traceback."""

    def __init__(self, gateway: Gateway) -> None:
        super().__init__(logging.DEBUG)
        self.gateway = gateway

    def emit(self, record: logging.LogRecord) -> None:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is None or isinstance(exc, HttpProcessingError | ConnectionError):
            reason = getattr(exc, "message", None) or str(exc or record.getMessage())
            self.gateway.refuse_quietly("bad_http", detail=reason.strip()[:200])
        else:
            log.error("request failed", exc_info=record.exc_info)


def http_error_logger(gateway: Gateway) -> logging.Logger:
    logger = logging.getLogger(f"streamd.gateway.http.{id(gateway)}")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.handlers = [_HttpErrors(gateway)]
    return logger
