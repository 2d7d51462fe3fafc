"""Read streamd's kept detection events with a Redis consumer group, so this
program gets every event at least once, even across its own restarts.

    python examples/consume_events.py --redis redis://localhost:6379/0 \\
        --group alerts --consumer "$(hostname)"

Each event is printed as one JSON line, then acknowledged (``XACK``). On start
the consumer first re-reads its own pending entries (delivered before a crash,
never acknowledged), then waits for new ones (``XREADGROUP ... >``). Run several
consumers in one group to share the work; give each program its own group to
get every event in each. See docs/events.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
from typing import Any

import redis

STREAM = "streamd:events"


def ensure_group(client: redis.Redis, group: str, start: str) -> None:
    try:
        client.xgroup_create(STREAM, group, id=start, mkstream=True)
    except redis.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):  # the group exists: keep its position
            raise


def handle(entry_id: bytes, fields: dict[bytes, bytes]) -> None:
    """Your work goes here; this prints the event (malformed entries are reported)."""
    try:
        event: dict[str, Any] = json.loads(fields[b"event"])
    except (KeyError, ValueError):
        print(f"skipping malformed entry {entry_id.decode()}", file=sys.stderr)
        return
    line = {
        "id": entry_id.decode(),
        "camera": event.get("camera_id"),
        "labels": event.get("labels"),
        "time": event.get("time"),
        "snapshot": f"streamd:snapshot:{entry_id.decode()}"
        if fields.get(b"snapshot") == b"1"
        else None,
    }
    print(json.dumps(line), flush=True)


def consume(client: redis.Redis, group: str, consumer: str, block_ms: int) -> None:
    pending = True  # first our own unacknowledged entries ("0"), then new ones (">")
    while True:
        answer: Any = client.xreadgroup(  # RESP2: [[stream, [(id, fields), ...]]]
            group, consumer, {STREAM: "0" if pending else ">"}, count=100, block=block_ms
        )
        entries = answer[0][1] if answer else []
        if pending and not entries:
            pending = False
            continue
        for entry_id, fields in entries:
            handle(entry_id, fields)
            client.xack(STREAM, group, entry_id)  # after the work: at least once


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--redis", default="redis://localhost:6379/0")
    parser.add_argument("--group", default="streamd-example")
    parser.add_argument("--consumer", default="consumer-1")
    parser.add_argument(
        "--start", default="$", help="where a new group starts: $ (new events) or 0 (all kept)"
    )
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    client = redis.Redis.from_url(args.redis)
    ensure_group(client, args.group, args.start)
    with contextlib.suppress(KeyboardInterrupt):
        consume(client, args.group, args.consumer, block_ms=5000)
    return 0


if __name__ == "__main__":
    sys.exit(main())
