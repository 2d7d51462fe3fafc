"""The two viewer loops over an upgraded aiohttp WebSocket.

Each viewer has its own sender task fed by latest-wins mailboxes, so a viewer on
a slow link only ever slows itself: a send waits for that socket to drain (the
transport's buffer stays bounded), frames that arrive meanwhile replace each
other in the mailbox. Every message from the client, WebSocket pings included,
counts toward ``max_messages_per_second``; pongs are sent by us (``autoping`` is
off) so a ping flood is refused, and a client that never reads is dropped by
the heartbeat instead of making us queue pongs.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable, Collection, Coroutine
from typing import Any, TypeVar

import structlog
from aiohttp import WSMsgType, web
from redis.exceptions import RedisError

from streamd.eventlog.records import EventQuery
from streamd.gateway import protocol
from streamd.gateway.hub import HubFrame, Mailbox, SendNow
from streamd.gateway.session import MultiplexSession, Refused, Replay, Reply, Unwatch, Watch
from streamd.gateway.state import GatewayState
from streamd.gateway.unit_hub import Format, HubUnit, SendUnitNow, UnitViewer
from streamd.states import CameraState

_Item = TypeVar("_Item")  # what a viewer is sent: a frame or an access unit
log = structlog.get_logger("streamd.gateway")
CLOSE_POLICY = 1008
# /ws/{id}?format=…: the camera sends the other codec (4000-4999 are ours; 415
# as HTTP's "unsupported media type"). The reason names the format to ask for.
CLOSE_CODEC_MISMATCH = 4415
CLOSE_GOING_AWAY = 1001
CLOSE_TOO_BIG = 1009
# Viewers only send small text (ping, JSON). The limit is ours, checked on whole
# messages so the close is a full handshake: when aiohttp's own limit trips mid-message
# it drops the socket with the client's later fragments unread, and the kernel's RST
# can discard the close frame. aiohttp's limit stays as a backstop that bounds memory.
MAX_VIEWER_MESSAGE = 4096
MAX_VIEWER_MESSAGE_BACKSTOP = 64 * 1024
MAX_TEXT_BACKLOG = 64  # JSON messages queued for one multiplexed viewer…
MAX_TEXT_BACKLOG_BYTES = 256 * 1024  # …and their size (events may be 64 KiB each)
CLOSE_TIMEOUT_S = 2.0
_ENDED = (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR)


async def close_viewer(ws: web.WebSocketResponse, code: int, reason: str) -> None:
    """Close with a code and reason; a client that never reads cannot hold us."""
    try:
        async with asyncio.timeout(CLOSE_TIMEOUT_S):
            await ws.close(code=code, message=reason.encode())
    except (TimeoutError, ConnectionError):
        pass
    finally:
        transport = ws.get_extra_info("transport")  # gone once closed
        if transport is not None and not transport.is_closing():
            transport.abort()


async def client_messages(
    state: GatewayState, ws: web.WebSocketResponse
) -> Any:  # AsyncIterator[WSMessage], Any keeps aiohttp's generic types out
    """Data messages from the client; pings answered and everything rate-limited."""
    limiter = protocol.RateLimiter(state.config.server.max_messages_per_second)
    while True:
        message = await ws.receive()
        if message.type in _ENDED:
            return
        if not limiter.allow(time.monotonic()):
            state.refuse_quietly("message_rate")
            await close_viewer(ws, CLOSE_POLICY, "message rate limit")
            return
        if _message_size(message) > MAX_VIEWER_MESSAGE:
            state.refuse_quietly("message_size")
            await close_viewer(ws, CLOSE_TOO_BIG, "message too big")
            return
        if message.type is WSMsgType.PING:
            await ws.pong(message.data)
        elif message.type is not WSMsgType.PONG:
            yield message


def _message_size(message: Any) -> int:
    """A text or binary message's size in bytes, as sent."""
    data = message.data
    if isinstance(data, str):
        return len(data.encode(errors="replace"))
    return len(data) if isinstance(data, bytes | bytearray) else 0


async def _answer_pings(state: GatewayState, ws: web.WebSocketResponse) -> None:
    """A single-camera viewer's side of the socket: text ``ping`` → ``pong``."""
    async for message in client_messages(state, ws):
        if message.type is WSMsgType.TEXT and message.data == "ping":
            await ws.send_str("pong")


def _log_disconnected(
    camera_id: str, peer: str, delivered: int, skipped: int, **fields: Any
) -> None:
    log.info(
        "viewer disconnected",
        camera_id=camera_id,
        peer=peer,
        delivered=delivered,
        skipped=skipped,
        **fields,
    )


async def _run_until_closed(
    sender: Callable[[], Coroutine[Any, Any, None]],
    receiver: Callable[[], Coroutine[Any, Any, None]],
) -> None:
    send_task = asyncio.create_task(sender())
    try:
        await receiver()
    finally:
        send_task.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError):
            await send_task


def single_message(frame: HubFrame) -> bytes:
    """The ``/ws/{id}`` WebSocket message of a frame, built once per frame."""
    message = frame.message
    if message is None:
        header = protocol.websocket_binary_header(len(frame.payload))
        message = frame.message = b"".join((header, frame.payload))
    return message


def _idle_writer(
    ws: web.WebSocketResponse, request: web.BaseRequest, message_of: Callable[[_Item], bytes]
) -> Callable[[_Item], bool]:
    """Write an item's message to an idle viewer's socket at once: one write of a
    message shared by all viewers, no task switch. A socket with anything unsent,
    or paused, or closing, is left to the sender task (which waits for the socket
    to drain, so a slow viewer skips as before); the message is then not built."""
    transport, connection = request.transport, request.protocol

    def send_now(item: _Item) -> bool:
        if (
            transport is None
            or ws.closed
            or transport.is_closing()
            or connection.writing_paused
            or transport.get_write_buffer_size()
        ):
            return False
        try:
            transport.write(message_of(item))
        except (RuntimeError, OSError):  # closed under us: the sender task notices
            return False
        return True  # counted by the hub, once for all viewers it reached at once

    return send_now


def direct_sender(ws: web.WebSocketResponse, request: web.BaseRequest) -> SendNow:
    """A frame written from ``Hub.publish`` itself to an idle viewer."""
    return _idle_writer(ws, request, single_message)


async def run_single(
    state: GatewayState,
    ws: web.WebSocketResponse,
    camera_id: str,
    peer: str,
    request: web.BaseRequest | None = None,
) -> None:
    """``/ws/{id}``: one JPEG per binary message; text ``ping`` → ``pong``."""
    send_now = direct_sender(ws, request) if request is not None else None
    mailbox = state.watch(camera_id, send_now=send_now)
    log.info(
        "viewer connected", camera_id=camera_id, peer=peer, viewers=state.hub.viewers(camera_id)
    )

    async def send_frames() -> None:
        while True:
            frame = await mailbox.get()
            await ws.send_bytes(frame.payload)
            state.hub.record_sent(frame, time.time_ns())

    try:
        await _run_until_closed(send_frames, lambda: _answer_pings(state, ws))
    finally:
        state.unwatch(mailbox)
        _log_disconnected(camera_id, peer, mailbox.delivered, mailbox.skipped)


def single_unit_message(unit: HubUnit) -> bytes:
    """The ``/ws/{id}?format=…`` WebSocket message of a unit: the bare Annex-B
    access unit, framed once for all viewers."""
    message = unit.messages.get("single")
    if message is None:
        header = protocol.websocket_binary_header(len(unit.data))
        message = unit.messages["single"] = b"".join((header, unit.data))
    return message


def direct_unit_sender(ws: web.WebSocketResponse, request: web.BaseRequest) -> SendUnitNow:
    """An access unit written from ``UnitHub.ingest`` itself to an idle viewer."""
    return _idle_writer(ws, request, single_unit_message)


async def run_single_units(
    state: GatewayState,
    ws: web.WebSocketResponse,
    camera_id: str,
    peer: str,
    fmt: Format,
    request: web.BaseRequest | None = None,
) -> None:
    """``/ws/{id}?format=h264|h265``: one access unit per binary message, the
    cached GOP first; closed with ``CLOSE_CODEC_MISMATCH`` when the camera sends
    the other codec."""
    codec = fmt.codec
    assert codec is not None  # JPEG viewers go to run_single
    send_now = direct_unit_sender(ws, request) if request is not None else None
    viewer = state.watch_units(camera_id, codec, send_now=send_now)
    log.info(
        "viewer connected",
        camera_id=camera_id,
        peer=peer,
        format=fmt.value,
        viewers=state.units.viewers(camera_id),
    )

    async def send_units() -> None:
        while True:
            if viewer.mismatch is not None:
                sends = Format.of(viewer.mismatch).value
                state.refuse_quietly("codec_mismatch", camera_id=camera_id)
                await close_viewer(
                    ws, CLOSE_CODEC_MISMATCH, f"camera sends {sends}; ask format={sends} or jpeg"
                )
                return
            unit = viewer.take()
            if unit is None:
                viewer.ready.clear()
                await viewer.ready.wait()
                continue
            await ws.send_bytes(unit.data)
            state.units.record_sent(unit, time.time_ns())

    try:
        await _run_until_closed(send_units, lambda: _answer_pings(state, ws))
    finally:
        state.unwatch_units(viewer)
        _log_disconnected(camera_id, peer, viewer.delivered, viewer.queue.skipped, format=fmt.value)


class MultiplexedViewer:
    """One ``/ws`` connection: a ``MultiplexSession`` plus its mailboxes and sender;
    a ``state.Listener`` of events and camera states while it runs."""

    def __init__(
        self, state: GatewayState, ws: web.WebSocketResponse, token: str | None, peer: str
    ):
        self.state = state
        self.ws = ws
        self.token = token
        self.peer = peer
        self.session = MultiplexSession(
            can_view=lambda camera_id: state.can_view(token, peer, camera_id),
            state_of=state.camera_state,
            last_event_of=state.last_event,
        )
        self.mailboxes: dict[str, Mailbox] = {}
        self.unit_viewers: dict[str, UnitViewer] = {}  # cameras watched as passthrough
        self._texts: deque[str] = deque()
        self._text_bytes = 0
        self._wake = asyncio.Event()
        self._replay_task: asyncio.Task[None] | None = None

    @property
    def cameras(self) -> Collection[str]:
        return self.session.cameras

    def on_event(self, camera_id: str, event: dict[str, Any]) -> None:
        self.carry_out(self.session.on_event(camera_id, event))

    def on_state(self, camera_id: str, state: CameraState) -> None:
        self.carry_out(self.session.on_state(camera_id, state))

    def carry_out(self, actions: list[Any]) -> None:
        for action in actions:
            if isinstance(action, Reply):
                self._queue_text(action.text)
            elif isinstance(action, Watch):
                camera_id, codec = action.camera_id, action.format.codec
                if codec is None:
                    self.mailboxes[camera_id] = self.state.watch(camera_id, self._wake)
                else:
                    self.unit_viewers[camera_id] = self.state.watch_units(
                        camera_id, codec, self._wake
                    )
            elif isinstance(action, Unwatch):
                mailbox = self.mailboxes.pop(action.camera_id, None)
                if mailbox is not None:
                    self.state.unwatch(mailbox)
                unit_viewer = self.unit_viewers.pop(action.camera_id, None)
                if unit_viewer is not None:
                    self.state.unwatch_units(unit_viewer)
            elif isinstance(action, Refused):
                self.state.refuse_quietly(action.reason)
            elif isinstance(action, Replay):
                self._replay_task = asyncio.create_task(self._replay(action))
        self._wake.set()  # cached frames of new subscriptions go out at once

    async def _replay(self, action: Replay) -> None:
        """Fetch kept events for a ``Replay``; the session sends them before live ones."""
        store = self.state.events
        query = EventQuery(
            cameras=frozenset(action.cameras), after=action.after, limit=action.limit
        )
        try:
            if store is None:
                raise LookupError("events are not kept here")
            page = await store.query(query, lambda _camera: True)  # cameras already granted
        except (RedisError, OSError, LookupError) as exc:
            self.state.refuse_quietly("events_unavailable", error=str(exc))
            self.carry_out(self.session.on_replay_failed())
            return
        events = [record.to_json() for record in page.events]
        self.carry_out(self.session.on_replay(events, more=page.cursor is not None))

    async def run(self) -> None:
        state = self.state
        state.listeners.add(self)
        self.carry_out(self.session.hello(state.visible_cameras(self.token)))
        try:
            await _run_until_closed(self._send_loop, self._receive)
        finally:
            if self._replay_task is not None:
                self._replay_task.cancel()
            self.carry_out(self.session.close())
            state.listeners.discard(self)

    async def _receive(self) -> None:
        async for message in client_messages(self.state, self.ws):
            if message.type is WSMsgType.TEXT:
                self.carry_out(self.session.on_text(message.data))
            else:
                self.carry_out(self.session.on_binary())

    def _queue_text(self, text: str) -> None:
        """Bounded by count and bytes: a viewer that does not read loses the
        oldest messages (counted), never makes the daemon hold more."""
        self._texts.append(text)
        self._text_bytes += len(text)
        while len(self._texts) > MAX_TEXT_BACKLOG or (
            self._text_bytes > MAX_TEXT_BACKLOG_BYTES and len(self._texts) > 1
        ):
            self._text_bytes -= len(self._texts.popleft())
            self.state.refuse_quietly("text_backlog")
        self._wake.set()

    async def _send_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._texts:
                text = self._texts.popleft()
                self._text_bytes -= len(text)
                await self.ws.send_str(text)
            for mailbox in list(self.mailboxes.values()):
                frame = mailbox.take()
                if frame is not None:
                    await self.ws.send_bytes(protocol.encode_frame(frame))
                    self.state.hub.record_sent(frame, time.time_ns())
            await self._send_units()

    async def _send_units(self) -> None:
        """Every pending unit, one per camera in turn (a camera's GOP does not
        hold back another's); a camera that sends the other codec falls back to JPEG."""
        for camera_id, viewer in list(self.unit_viewers.items()):
            if viewer.mismatch is not None:
                self.carry_out(self.session.on_codec_mismatch(camera_id, viewer.mismatch))
        sent = True
        while sent and not self._texts:  # JSON (events, states) is not held back
            sent = False
            for viewer in list(self.unit_viewers.values()):
                unit = viewer.take()
                if unit is not None:
                    await self.ws.send_bytes(protocol.encode_unit(unit))
                    self.state.units.record_sent(unit, time.time_ns())
                    sent = True
