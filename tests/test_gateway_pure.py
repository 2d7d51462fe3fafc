"""The gateway's pure parts: routing, request guards, admission, the
multiplexed session, and the untrusted-input parsers under hypothesis."""

from __future__ import annotations

import contextlib
import json

from hypothesis import given
from hypothesis import strategies as st
from multidict import CIMultiDict

from streamd.gateway import protocol
from streamd.gateway.admission import ConnectionGate, Refusal
from streamd.gateway.auth import ALLOW, Decision, Need, authorize, is_loopback
from streamd.gateway.guards import (
    FORWARDING_HEADERS,
    SiteVerdict,
    cross_site,
    duplicated,
    host_allowed,
    host_name,
    peer_of,
)
from streamd.gateway.routes import Route, RouteKind, route
from streamd.gateway.session import MultiplexSession, Refused, Reply, Unwatch, Watch
from streamd.transport.frame import FrameError, FrameMeta, pack_frame, parse_frame


def test_route_table() -> None:
    assert route("/") == Route(RouteKind.WALL)
    assert route("/ws") == Route(RouteKind.MULTIPLEX)
    assert route("/ws/door") == Route(RouteKind.STREAM, "door")
    assert route("/api/v1/video-stream/ws/door") == Route(RouteKind.STREAM, "door")
    assert route("/snapshot/door.jpg") == Route(RouteKind.SNAPSHOT, "door")
    assert route("/api/v1/cameras/door/stop") == Route(RouteKind.CAMERA_CONTROL, "door", "stop")
    assert route("/api/v1/cameras/door/explode").kind is RouteKind.NOT_FOUND
    assert route("/api/v1/reload").kind.changes_state
    assert route("/healthz").kind.methods == {"GET", "HEAD"}
    assert route("/api/v1/reload").kind.methods == {"POST"}


@given(st.text(max_size=200))
def test_route_never_raises_and_stream_ids_come_from_the_path(path: str) -> None:
    target = route(path)
    assert isinstance(target.kind, RouteKind)
    if target.kind is RouteKind.STREAM:
        assert path.endswith(target.camera_id)


def test_host_allowlist() -> None:
    names = ("cams.example.com", "*.wall.example")
    for host in ("127.0.0.1:8765", "localhost", "LOCALHOST.:80", "[::1]:8765", "10.1.2.3"):
        assert host_allowed(host, "127.0.0.1", names), host
    for host in ("cams.example.com", "x.wall.example", "a.b.wall.example"):
        assert host_allowed(host, "127.0.0.1", names), host
    for host in ("evil.example", "wall.example", "xwall.example", "[::1", "a:b:c", ""):
        assert not host_allowed(host, "127.0.0.1", names), host
    assert host_allowed("box.lan:8765", "box.lan", ())  # the configured listen host
    assert host_allowed(None, "127.0.0.1", ())  # no Host: not a browser


@given(st.text(max_size=100))
def test_host_parsing_never_raises(header: str) -> None:
    name = host_name(header)
    assert name is None or ":" not in name or name.count(":") > 1  # v6 keeps its colons
    host_allowed(header, "127.0.0.1", ("*.example.com",))


def test_cross_site_rules() -> None:
    def check(has_body: bool = True, **overrides: str | None) -> SiteVerdict:
        fields: dict[str, str | None] = {
            "origin": None,
            "sec_fetch_site": None,
            "content_type": "application/json",
            "host_header": "127.0.0.1:8765",
        }
        fields.update(overrides)
        return cross_site(
            origin=fields["origin"],
            sec_fetch_site=fields["sec_fetch_site"],
            content_type=fields["content_type"],
            has_body=has_body,
            host_header=fields["host_header"],
            allowed_origins=("https://ui.example", "*"),
        ).verdict

    allow, forbidden, media = SiteVerdict.ALLOW, SiteVerdict.FORBIDDEN, SiteVerdict.MEDIA_TYPE
    assert check() is allow  # the CLI
    assert check(origin="http://127.0.0.1:8765", sec_fetch_site="same-origin") is allow
    assert check(origin="https://ui.example", sec_fetch_site="cross-site") is allow  # listed
    assert check(origin="http://evil.example") is forbidden  # "*" never opens control
    assert check(origin="null") is forbidden
    assert check(sec_fetch_site="cross-site") is forbidden
    assert check(sec_fetch_site="same-site") is forbidden
    assert check(content_type="text/plain") is media
    assert check(content_type="application/json; charset=utf-8") is allow
    # The old frontend's bodiless POST: no Content-Type, the browser vouches for it.
    same = {"origin": "http://127.0.0.1:8765", "sec_fetch_site": "same-origin"}
    assert check(False, content_type=None, **same) is allow
    assert check(False, content_type=None, sec_fetch_site="same-origin") is allow  # no Origin
    assert check(False, content_type=None, origin="http://127.0.0.1:8765") is allow
    listed = {"origin": "https://ui.example", "sec_fetch_site": "cross-site"}
    assert check(False, content_type=None, **listed) is allow
    # Nobody vouches (a browser too old to say, or a tool): 415 as before.
    assert check(False, content_type=None) is media
    # Bodiless but from another site, or with a body a form could send: refused.
    assert check(False, content_type=None, origin="http://evil.example") is forbidden
    assert check(False, content_type=None, origin="null") is forbidden
    assert check(False, content_type=None, sec_fetch_site="cross-site") is forbidden
    assert check(True, content_type=None, **same) is media
    assert check(True, content_type="text/plain", **same) is media
    assert check(False, content_type="text/plain", **same) is media
    assert check(True, content_type="application/x-www-form-urlencoded", **same) is media
    assert SiteVerdict.FORBIDDEN.status == 403 and SiteVerdict.MEDIA_TYPE.status == 415


def test_forwarded_requests_are_never_loopback() -> None:
    for name in FORWARDING_HEADERS:
        for value in ("127.0.0.1", "", "for=127.0.0.1", "203.0.113.9"):
            peer = peer_of("127.0.0.1", CIMultiDict({name: value}))
            assert not is_loopback(peer), (name, value)
            admin = authorize(Need.ADMIN, tokens=(), presented=None, peer=peer)
            assert admin.status == 403
            for need in (Need.VIEW, Need.LIST):
                assert not authorize(need, tokens=(), presented=None, peer=peer).allowed
                assert authorize(
                    need, tokens=(), presented=None, peer=peer, allow_anonymous=True
                ).allowed
            anonymous = authorize(
                Need.ADMIN, tokens=(), presented=None, peer=peer, allow_anonymous=True
            )
            assert not anonymous.allowed  # never control
    plain = peer_of("127.0.0.1", CIMultiDict({"X-Forwarded-Host": "a"}))
    assert is_loopback(plain)
    assert authorize(Need.ADMIN, tokens=(), presented=None, peer=plain).allowed
    assert authorize(Need.VIEW, tokens=(), presented=None, peer="::1").allowed


def test_duplicated_headers() -> None:
    assert duplicated(["Host", "Accept", "Accept"]) is None
    assert duplicated(["Host", "Origin", "host"]) == "host"


def test_connection_gate_counts_and_releases() -> None:
    gate = ConnectionGate(max_total=3, max_per_address=2)
    assert gate.admit("a") is None and gate.admit("a") is None
    assert gate.admit("a") is Refusal.PER_ADDRESS
    assert gate.admit("b") is None
    assert gate.admit("c") is Refusal.TOTAL
    assert gate.refused_open == 2 and gate.admitted == 3
    gate.release("a", None)
    gate.release("a", Refusal.PER_ADDRESS)
    assert gate.admit("c") is None and gate.refused_open == 1
    assert not gate.flooded()


def session(allowed: set[str]) -> MultiplexSession:
    def can_view(camera_id: str) -> Decision:
        return ALLOW if camera_id in allowed else Decision(False, 403, "no")

    return MultiplexSession(can_view, state_of=lambda c: "live", last_event_of=lambda c: None)


def test_session_subscribe_unsubscribe_and_states() -> None:
    s = session({"a", "b"})
    actions = s.on_text(json.dumps({"op": "subscribe", "cameras": ["a", "x"]}))
    assert Watch("a") in actions and Refused("forbidden") in actions
    replies = [json.loads(a.text) for a in actions if isinstance(a, Reply)]
    assert replies[0] == {
        "type": "subscribed",
        "cameras": ["a"],
        "denied": [{"camera": "x", "reason": "no"}],
    }
    assert replies[1] == {"type": "state", "camera": "a", "state": "live"}
    assert s.on_state("a", "live") == []  # unchanged: nothing to say
    assert len(s.on_state("a", "stalled")) == 1
    assert s.on_text('{"op":"unsubscribe","cameras":["a"]}')[0] == Unwatch("a")
    assert s.close() == []


@given(st.text(max_size=300))
def test_client_message_parser_only_raises_its_own_error(text: str) -> None:
    try:
        command = protocol.parse_client_message(text)
    except protocol.ClientMessageError:
        return
    assert command.op in ("ping", "subscribe", "unsubscribe")


@given(
    st.recursive(
        st.none() | st.integers() | st.text(),
        lambda c: st.lists(c) | st.dictionaries(st.text(), c),
        max_leaves=50,
    )
)
def test_session_answers_any_json(value: object) -> None:
    actions = session({"a"}).on_text(json.dumps(value))
    assert actions and all(isinstance(a, Reply | Refused | Watch) for a in actions)


def test_nesting_depth_bound() -> None:
    assert protocol.nesting_depth('{"a": [1, "[[[["]}') == 2
    assert protocol.loads_bounded("[[1]]") == [[1]]
    for deep in ("[" * 17 + "]" * 17, '{"a":' * 1000):
        try:
            protocol.loads_bounded(deep)
        except ValueError:
            continue
        raise AssertionError("accepted " + deep[:20])


@given(st.binary(max_size=2000))
def test_frame_parser_only_raises_frame_errors(payload: bytes) -> None:
    with contextlib.suppress(FrameError):
        parse_frame(payload, 1000)


@given(st.binary(min_size=0, max_size=300), st.integers(0, 2**64 - 1))
def test_frame_parser_survives_corrupted_metadata(tail: bytes, seq: int) -> None:
    packed = pack_frame(FrameMeta("cam", seq, 1, 2, 3, 4), b"\xff\xd8" + tail + b"\xff\xd9")
    for cut in (len(packed) // 2, len(packed) - 1):
        mangled = packed[:cut] + bytes(len(packed) - cut)
        with contextlib.suppress(FrameError):
            parse_frame(mangled, 10_000)
