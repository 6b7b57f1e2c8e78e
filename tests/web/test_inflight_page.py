"""The in-flight page: the registry's requests (with their await chains) and its ring of recent
failed or slow requests, as HTML read by a real headless Chromium.

Chromium comes from Debian's ``chromium`` (``make chromium``, which ``make pytest`` runs);
without it the Chromium test skips saying so, except in CI, where it fails.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

import aioreqctx as context
from aioreqctx.log import LogBuffer

from ..support.http_helpers import serving

HOSTILE = "/<script>document.title='pwned'</script>"
HOSTILE_URL = "/%3Cscript%3Edocument.title='pwned'%3C/script%3E"
page_logger = logging.getLogger("tests.inflight_page")


class Stuck:
    """The handler task stuck in ``await asyncio.sleep``, once it is there."""

    def __init__(self) -> None:
        self.there = asyncio.Event()
        self.task: asyncio.Task[Any] | None = None


async def inner_wait(stuck: Stuck) -> None:
    stuck.task = asyncio.current_task()
    stuck.there.set()
    await asyncio.sleep(60)  # cancelled by the test


async def outer_wait(stuck: Stuck) -> None:
    await inner_wait(stuck)


@asynccontextmanager
async def app_with_registry(registry: context.InFlightRegistry, stuck: Stuck) -> AsyncIterator[int]:
    """``/fail`` logs a DEBUG line then raises, ``/ok`` answers, any other path waits in two
    nested calls until cancelled; the registry at ``/_inflight``."""

    async def fail(request: web.Request) -> web.Response:
        page_logger.debug("about to fail <b>bold</b>")
        raise RuntimeError("broken")

    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def slow(request: web.Request) -> web.Response:
        await outer_wait(stuck)
        return web.Response()

    app = web.Application()
    context.setup(app, registry=registry, log_buffer=LogBuffer())
    app.router.add_get("/_inflight", registry.handler)
    app.router.add_get("/fail", fail)
    app.router.add_get("/ok", ok)
    app.router.add_get("/{tail:.*}", slow)
    async with serving(app) as port:
        yield port


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        reason = "Debian's chromium is not installed (make chromium installs it)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return found


async def dump_dom(browser: str, url: str, profile: Path) -> str:
    process = await asyncio.create_subprocess_exec(
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        f"--user-data-dir={profile}",
        "--dump-dom",
        url,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    out, _ = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0
    return out.decode()


def test_chromium_shows_a_stuck_request_with_its_await_chain_and_escapes_a_hostile_path(
    tmp_path: Path,
) -> None:
    browser = chromium()
    logging.getLogger().setLevel(logging.INFO)  # the DEBUG line is kept, not written

    async def main() -> str:
        stuck = Stuck()
        async with (
            app_with_registry(context.InFlightRegistry(), stuck) as port,
            aiohttp.ClientSession() as session,
        ):
            base = f"http://127.0.0.1:{port}"
            async with session.get(f"{base}/fail") as response:
                assert response.status == 500
            waiting = asyncio.create_task(session.get(f"{base}{HOSTILE_URL}").__aenter__())
            await asyncio.wait_for(stuck.there.wait(), 10)
            try:
                return await dump_dom(browser, f"{base}/_inflight?format=html", tmp_path)
            finally:
                assert stuck.task is not None
                stuck.task.cancel()
                waiting.cancel()

    dom = asyncio.run(main())
    # the stuck request and the page's own; no script ran (nor would CSP let one)
    assert "<title>In flight: 2</title>" in dom
    assert "<script>" not in dom  # the path is text, not an element
    assert "&lt;script&gt;document.title='pwned'&lt;/script&gt;" in dom
    assert "in outer_wait" in dom
    assert "in inner_wait" in dom
    assert dom.index("in outer_wait") < dom.index("in inner_wait")
    # the failed request, with its kept DEBUG line (escaped) and status
    assert "/fail" in dom
    assert "RuntimeError" in dom
    assert "about to fail &lt;b&gt;bold&lt;/b&gt;" in dom


def test_the_ring_keeps_failed_and_slow_requests_newest_first_and_fine_ones_not() -> None:
    registry = context.InFlightRegistry(slow_ms=0.0, recent=2)
    quick = context.InFlightRegistry(slow_ms=10_000.0)

    async def main() -> tuple[dict[str, Any], dict[str, Any], str, str]:
        stuck = Stuck()
        async with (
            app_with_registry(registry, stuck) as port,
            app_with_registry(quick, stuck) as quick_port,
            aiohttp.ClientSession() as session,
        ):
            for path in ("/ok", "/fail", "/ok"):
                async with session.get(f"http://127.0.0.1:{port}{path}"):
                    pass
                async with session.get(f"http://127.0.0.1:{quick_port}{path}"):
                    pass
            url = f"http://127.0.0.1:{port}/_inflight"
            async with session.get(url) as response:  # first: the ring keeps what it serves
                assert response.content_type == "application/json"
                data = await response.json()
            async with session.get(url, headers={"Accept": "text/html,*/*"}) as response:
                assert response.headers["Content-Security-Policy"].startswith("default-src 'none'")
                page = await response.text()
            async with session.get(f"{url}?format=html", headers={"Accept": "*/*"}) as html:
                assert html.content_type == "text/html"
                page_too = await html.text()
            async with session.get(f"http://127.0.0.1:{quick_port}/_inflight") as response:
                return data, await response.json(), page, page_too

    data, quick_data, page, page_too = asyncio.run(main())
    assert [(r["path"], r["status"]) for r in data["recent"]] == [("/ok", 200), ("/fail", 500)]
    assert data["recent"][1]["error"] == "RuntimeError"
    assert data["recent"][1]["lines"] == ["DEBUG tests.inflight_page: about to fail <b>bold</b>"]
    assert [r["path"] for r in quick_data["recent"]] == ["/fail"]  # the fine ones were quick
    assert "<h1>In flight: 1</h1>" in page  # the page's own request
    assert "<h1>In flight: 1</h1>" in page_too


def test_the_page_is_behind_the_same_guard() -> None:
    registry = context.InFlightRegistry(allow=lambda request: False)

    async def main() -> int:
        async with (
            app_with_registry(registry, Stuck()) as port,
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{port}/_inflight?format=html") as response,
        ):
            return response.status

    assert asyncio.run(main()) == 403


@pytest.mark.parametrize(
    ("option", "value"), [("recent", -1), ("recent", 2.5), ("slow_ms", "slow"), ("slow_ms", -1)]
)
def test_bad_ring_options_are_refused_by_name(option: str, value: object) -> None:
    with pytest.raises(ValueError, match=option):
        context.InFlightRegistry(**{option: value})  # type: ignore[arg-type]
