"""The wall's events strip in headless Chromium: a camera with a moving object
gets a snapshot thumbnail; a click shows that event's snapshot large."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from .conftest import Daemon, RedisServer
from .test_wall import DevTools, browser  # noqa: F401 - the fixture

THUMBNAILS = """JSON.stringify(Object.fromEntries(Object.values(
  window.streamdWall ? streamdWall.tiles : {}).map(t => [t.id,
  [...t.el.querySelectorAll('.events img')].map(i => ({
     id: i.dataset.event, width: i.naturalWidth, height: i.naturalHeight }))])))"""


async def thumbnails(page: DevTools) -> dict[str, list[dict[str, Any]]]:
    result: dict[str, list[dict[str, Any]]] = json.loads(await page.evaluate(THUMBNAILS))
    return result


async def test_wall_shows_event_thumbnails_and_the_snapshot_on_click(
    browser: DevTools,  # noqa: F811
    redis_server: RedisServer,
    start_daemon: Callable[..., Daemon],
) -> None:
    daemon = start_daemon(
        redis_url=redis_server.url,
        cameras=[
            {
                "id": "moving",
                "source": "synthetic:?width=320&height=180",
                "fps": 10,
                "motion_warmup": 0.5,
            },
            {
                "id": "still",
                "source": "synthetic:?width=320&height=180&pattern=static",
                "fps": 10,
                "motion_warmup": 0.5,
            },
        ],
    )
    await browser.call("Page.enable")
    await browser.call("Page.navigate", url=f"http://{daemon.base}/")
    async with asyncio.timeout(20):
        while True:
            shown = await thumbnails(browser)
            if shown.get("moving") and shown["moving"][0]["width"] > 0:
                break
            await asyncio.sleep(0.2)
    thumb = shown["moving"][0]
    assert (thumb["width"], thumb["height"]) == (320, 180)  # the snapshot, decoded
    assert shown["still"] == []  # nothing moves there: no event, no thumbnail
    kept = json.loads(daemon.http("/api/events?camera=moving")[1])["events"]
    assert thumb["id"] in [e["id"] for e in kept]

    await browser.evaluate(
        f"document.querySelector('.events img[data-event=\"{thumb['id']}\"]').click()"
    )
    opened = json.loads(
        await browser.evaluate(
            """(async () => { const box = document.getElementById('snapshot');
                const img = box.querySelector('img'); await img.decode();
                return JSON.stringify({ open: box.classList.contains('open'),
                  event: box.dataset.event, width: img.naturalWidth,
                  shown: img.getBoundingClientRect().width }); })()"""
        )
    )
    assert opened == {**opened, "open": True, "event": thumb["id"], "width": 320}
    assert opened["shown"] > 64  # larger than the thumbnail
    await browser.evaluate("document.getElementById('snapshot').click()")
    assert (
        await browser.evaluate("document.getElementById('snapshot').classList.contains('open')")
        is False
    )
