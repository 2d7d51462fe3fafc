"""The listening side: aiohttp's low-level server with connection admission at
accept time, a deadline for a connection to send its request, and malformed
HTTP turned into counted one-line refusals instead of tracebacks."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.http_parser import RawRequestMessage
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import RequestHandler

from streamd.gateway.admission import ConnectionGate, Refusal
from streamd.gateway.state import GatewayState

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


class BannerlessRequest(web.BaseRequest):
    """Answers without aiohttp's ``Server: Python/3.x aiohttp/3.x`` banner (it
    tells a scanner which CVEs to try). The hook runs once the headers are
    prepared, for every answer: ours, WebSocket upgrades and aiohttp's own errors."""

    async def _prepare_hook(self, response: web.StreamResponse) -> None:
        response.headers.popall("Server", None)


class GatedServer(web.Server):
    """aiohttp's low-level server with admission at accept and a deadline for a
    connection to send its request (slow handshakes are dropped, not served)."""

    def __init__(
        self,
        handler: Callable[[web.BaseRequest], Awaitable[web.StreamResponse]],
        state: GatewayState,
        gate: ConnectionGate,
        **kwargs: Any,
    ) -> None:
        super().__init__(handler, **kwargs)
        self.state = state
        self.gate = gate
        self.connections_info: dict[RequestHandler, Connection] = {}

    def _make_request(
        self,
        message: RawRequestMessage,
        payload: StreamReader,
        protocol: RequestHandler,
        writer: AbstractStreamWriter,
        task: asyncio.Task[None],
    ) -> web.BaseRequest:
        return BannerlessRequest(message, payload, protocol, writer, task, self._loop)

    def connection_made(self, handler: RequestHandler, transport: asyncio.Transport) -> None:
        super().connection_made(handler, transport)
        gate = self.gate
        if gate.flooded():
            self.state.refuse_quietly("connection_flood")
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
        timeout = self.state.config.server.handshake_timeout

        def check() -> None:
            if connection.upgraded or connection.in_flight or connection.requests != seen:
                if not connection.upgraded:
                    self._arm_deadline(handler, connection, transport)
                return
            self.state.refuse_quietly("handshake_timeout")
            transport.abort()

        connection.deadline = asyncio.get_running_loop().call_later(timeout, check)

    def connection_lost(self, handler: RequestHandler, exc: BaseException | None = None) -> None:
        super().connection_lost(handler, exc)
        connection = self.connections_info.pop(handler, None)
        if connection is not None:
            if connection.deadline is not None:
                connection.deadline.cancel()
            self.gate.release(connection.peer, connection.refusal)


FD_RESERVE = 256  # descriptors kept for children's sockets, Redis, files


def fd_budget() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard one (systemd's default soft
    limit is 1024) and say how many descriptors connections may take."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
    if soft < wanted:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
    return max(16, soft - FD_RESERVE)


def sample_accept_errors(state: GatewayState) -> None:
    """asyncio logs a traceback for every failed ``accept()`` (EMFILE under a
    flood); count them and log sparsely instead, leave other errors alone."""
    loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if str(context.get("message", "")).startswith("socket.accept() out of system resource"):
            state.refuse_quietly("accept_failed")
            return
        if previous is not None:
            previous(loop, context)
        else:
            loop.default_exception_handler(context)

    loop.set_exception_handler(handler)


class _HttpErrors(logging.Handler):
    """aiohttp reports malformed requests as exceptions with a traceback: for
    untrusted input that is a counted, sampled one-line refusal instead. Anything
    else is a bug of ours and keeps its traceback."""

    def __init__(self, state: GatewayState) -> None:
        super().__init__(logging.DEBUG)
        self.state = state

    def emit(self, record: logging.LogRecord) -> None:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, ConnectionError):
            self.state.refuse_quietly("client_gone")  # it left while we answered
        elif exc is None or isinstance(exc, HttpProcessingError):
            # Only the kind of error: aiohttp's message quotes the request line,
            # which may carry a ?token=.
            code = getattr(exc, "code", None)
            self.state.refuse_quietly("bad_http", error=type(exc).__name__, status=code)
        else:
            log.error("request failed", exc_info=record.exc_info)


def http_error_logger(state: GatewayState) -> logging.Logger:
    logger = logging.getLogger(f"streamd.gateway.http.{id(state)}")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.handlers = [_HttpErrors(state)]
    return logger
