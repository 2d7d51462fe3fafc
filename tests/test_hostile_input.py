"""Pure decisions against a hostile Redis publisher and non-ASCII digits (issue 19,
part 5): strict JSON, ASCII-only digits, the live event viewers get, plausible
live ids, what a reload applies of [server], which sockets lose access, and the
wall's CSP. The end-to-end attacks are in tests/test_hostile_publisher.py."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest

from streamd.config import ServerConfig, TokenConfig
from streamd.config.server import reload_server
from streamd.eventlog.records import QueryError, decode_entry, parse_query, parse_stream_id
from streamd.gateway import protocol
from streamd.gateway.auth import Decision, Need
from streamd.gateway.live_events import BadEventError, plausible_live_id, viewer_event
from streamd.gateway.responses import json_response, wall_policy
from streamd.gateway.revoke import CLOSE_FORBIDDEN, CLOSE_UNAUTHORIZED, ViewerAccess, lost_access
from streamd.gateway.seed_shapes import default_interval
from streamd.reload import reload_summary
from streamd.systemd import watchdog_interval
from streamd.untrusted import ascii_decimal, ascii_int, dumps, is_ascii_digits, loads

NOW_MS = 1_795_939_864_476


# --- digits -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text", ["²", "\u0663", "\u0661-\u0660", "1²", "+1", " 1", "1_0", "", "-1", "\uff11"]
)
def test_only_ascii_digits_are_digits(text: str) -> None:
    assert not is_ascii_digits(text)
    assert ascii_int(text) is None


def test_ascii_int_bounds() -> None:
    assert ascii_int("42") == 42
    assert ascii_int("0", 1) is None
    assert ascii_int("501", 1, 500) is None
    assert ascii_int("1" * 20) is None  # more than 19 digits
    assert ascii_decimal("1732860000.5") == 1732860000.5
    assert ascii_decimal("\u0661\u0667\u0663٢") is None and ascii_decimal("nan") is None
    assert is_ascii_digits(b"12") and not is_ascii_digits("²".encode())


@pytest.mark.parametrize("ident", ["\u0661-\u0660", "1-\u0660", "\u0663\u0663-0", "1²-0"])
def test_stream_ids_are_ascii(ident: str) -> None:
    assert parse_stream_id(ident) is None  # \d matched these, int() read them (or raised)
    assert parse_stream_id("1-0") == (1, 0)


@pytest.mark.parametrize("value", ["²", "\u0663", "1²", "\u0661\u0660"])
def test_events_limit_with_non_ascii_digits_is_a_query_error(value: str) -> None:
    with pytest.raises(
        QueryError, match="limit"
    ):  # "²": ValueError (500); Arabic-Indic 3: taken as 3
        parse_query([("limit", value)])


@pytest.mark.parametrize("name", ["since", "until"])
@pytest.mark.parametrize("value", ["\u0661\u0667\u0663\u0662", "nan", "1_000", " 5"])
def test_times_with_non_ascii_digits_are_query_errors(name: str, value: str) -> None:
    with pytest.raises(QueryError, match=name):
        parse_query([(name, value)])


def test_environment_digits_are_ascii() -> None:
    assert default_interval({"VIDEO_STREAM_INTERVAL": "²"}) == 1  # int("²") raised
    assert default_interval({"VIDEO_STREAM_INTERVAL": "\u0663"}) == 1
    assert default_interval({"VIDEO_STREAM_INTERVAL": "3"}) == 3
    assert watchdog_interval({"WATCHDOG_USEC": "²"}, 1) is None


# --- JSON -------------------------------------------------------------------------------------
@pytest.mark.parametrize("text", ['{"t":NaN}', '{"t":Infinity}', '{"t":-Infinity}', '{"t":1e999}'])
def test_non_finite_numbers_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        loads(text)
    with pytest.raises(ValueError):
        protocol.loads_bounded(text)


def test_answers_are_always_valid_json() -> None:
    body = json_response(200, {"x": math.nan, "y": [math.inf], "z": 1.5}).body
    assert isinstance(body, bytes)
    strict = json.loads(body, parse_constant=lambda name: pytest.fail(name))
    assert strict == {"x": None, "y": [None], "z": 1.5}
    assert "NaN" not in protocol.text("event", event={"time": math.nan})
    assert dumps({"a": 1}, compact=True) == '{"a":1}'


def test_kept_entry_with_nan_is_junk() -> None:
    fields = {b"camera": b"door", b"time": b"1", b"event": b'{"camera_id":"door","time":NaN}'}
    assert decode_entry(b"1-0", fields) is None
    assert decode_entry(b"1-0", {**fields, b"time": "\u0663".encode()}) is None


# --- live events ------------------------------------------------------------------------------
def event(**fields: object) -> dict[str, object]:
    return {"camera_id": "door", "type": "detection", "time": 1.5, **fields}


def test_a_publishers_snapshot_url_never_reaches_viewers() -> None:
    ident = f"{NOW_MS}-0"
    checked = viewer_event("door", event(id=ident, snapshot="http://attacker/steal"), NOW_MS)
    assert checked.event["snapshot"] == f"/api/events/{ident}/snapshot.jpg"
    without = viewer_event("door", event(id=ident, snapshot=None), NOW_MS)
    assert without.event["snapshot"] is None
    unkept = viewer_event("door", event(snapshot="http://attacker/steal"), NOW_MS)
    assert "snapshot" not in unkept.event and "id" not in unkept.event


def test_viewers_get_checked_fields_only() -> None:
    raw = event(
        extra="<script>",
        labels=["person", 3, "x" * 65],
        detections=[
            {"label": "person", "score": 0.9, "box": [1, 2, 3, 4], "href": "x"},
            {"label": "car", "score": "high", "box": [1, 2, 3, 4]},
            {"label": "dog", "score": 0.5, "box": [1, 2, 3]},
        ],
    )
    seen = viewer_event("door", raw, NOW_MS).event
    assert seen == {
        "type": "detection",
        "camera_id": "door",
        "time": 1.5,
        "appeared": [],
        "left": [],
        "labels": ["person"],
        "detections": [{"label": "person", "score": 0.9, "box": [1, 2, 3, 4]}],
    }


@pytest.mark.parametrize(
    "raw",
    [
        event(camera_id="yard"),
        event(time="1"),
        event(time=math.nan),
        event(time=True),
        {"camera_id": "door", "type": "detection"},
        event(type="<b>"),
        event(id="nope"),
        event(id="\u0661-\u0660"),
        ["not", "an", "object"],
    ],
)
def test_bad_events_are_refused(raw: object) -> None:
    with pytest.raises(BadEventError):
        viewer_event("door", raw, NOW_MS)


def test_implausible_live_ids_are_ignored() -> None:
    assert plausible_live_id((NOW_MS, 0), NOW_MS)
    assert plausible_live_id((NOW_MS + 30_000, 0), NOW_MS)  # clock skew
    assert not plausible_live_id((9_999_999_999_999_999_999, 0), NOW_MS)
    assert not plausible_live_id((NOW_MS + 120_000, 0), NOW_MS)
    assert not plausible_live_id((1, 0), NOW_MS)
    checked = viewer_event("door", event(id="9999999999999999999-0", snapshot="x"), NOW_MS)
    assert checked.id_ignored
    assert "id" not in checked.event and "snapshot" not in checked.event


# --- reload -----------------------------------------------------------------------------------
A = TokenConfig(name="a", sha256="a" * 64)
B = TokenConfig(name="b", sha256="b" * 64, cameras=("door",))


def test_reload_applies_access_settings_and_reports_what_waits() -> None:
    old = ServerConfig(tokens=(A, B))
    new = replace(old, tokens=(A,), port=9999, allowed_origins=("https://x.example",))
    result = reload_server(old, new)
    assert result.server.tokens == (A,)
    assert result.server.allowed_origins == ("https://x.example",)
    assert result.server.port == old.port  # the socket stays as started
    assert result.applied == ("server.tokens", "server.allowed_origins")
    assert result.pending == ("server.listen",)
    assert reload_server(old, old).applied == () == reload_server(old, old).pending


def test_reload_never_opens_a_public_listener() -> None:
    old = ServerConfig(host="0.0.0.0", tokens=(A,))
    new = replace(old, host="127.0.0.1", tokens=())  # valid for its own loopback listen
    result = reload_server(old, new)
    assert result.server.tokens == (A,)  # still listening on 0.0.0.0: tokens kept
    assert result.pending == ("server.listen", "server.tokens")


def test_reload_summary_says_what_was_not_applied() -> None:
    text = reload_summary(["c"], [], [], ["server.tokens"], ["server.listen", "redis"])
    assert text == (
        "added 1, removed 0, changed 0; applied: server.tokens; "
        "NOT applied until restart: server.listen, redis"
    )


def deny(status: int) -> Decision:
    return Decision(False, status, "no")


def test_sockets_that_lost_access_are_closed_with_a_code() -> None:
    multi = ViewerAccess("t", "127.0.0.1", None, "127.0.0.1", None)
    single = replace(multi, camera_id="door")

    def allow(_need: Need, _camera: str | None) -> Decision:
        return Decision(True)

    assert lost_access(multi, ["door"], allow, True) is None
    revoked = lost_access(multi, ["door"], lambda _n, _c: deny(401), True)
    assert revoked is not None and revoked.code == CLOSE_UNAUTHORIZED
    narrowed = lost_access(
        multi, ["door", "yard"], lambda n, c: deny(403) if c == "yard" else Decision(True), True
    )
    assert narrowed is not None and narrowed.code == CLOSE_FORBIDDEN and "yard" in narrowed.reason
    single_revoked = lost_access(single, [], lambda n, c: deny(403), True)
    assert single_revoked is not None and single_revoked.code == CLOSE_FORBIDDEN
    origin = lost_access(multi, [], allow, False)
    assert origin is not None and origin.code == CLOSE_FORBIDDEN


# --- the wall's CSP ---------------------------------------------------------------------------
def test_wall_policy_allows_its_own_origin_only() -> None:
    policy = wall_policy("127.0.0.1:8765")
    assert policy == (
        "frame-ancestors 'none'; connect-src 'self' ws://127.0.0.1:8765 wss://127.0.0.1:8765"
    )
    assert wall_policy("evil; script-src *") == "frame-ancestors 'none'; connect-src 'self'"
    assert wall_policy(None).endswith("connect-src 'self'")
