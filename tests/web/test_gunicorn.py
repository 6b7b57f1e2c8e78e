"""gunicorn with aiohttp's worker and two processes: IDs in every worker, and a clean stop."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

from aiohttp import ClientSession, TCPConnector

EXAMPLES = Path(__file__).parents[2] / "examples"
LISTENING = re.compile(r"Listening at: http://127\.0\.0\.1:(\d+)")
BOOTED = re.compile(r"Booting worker with pid: (\d+)")


def wait_for_workers(stderr: IO[str], deadline: float) -> tuple[int, set[int]]:
    """The port gunicorn bound and the two workers' pids, read from its log."""
    port, pids = None, set()
    while time.monotonic() < deadline and (port is None or len(pids) < 2):
        line = stderr.readline()
        if not line:
            break
        if match := LISTENING.search(line):
            port = int(match.group(1))
        if match := BOOTED.search(line):
            pids.add(int(match.group(1)))
    assert port is not None, "gunicorn did not report its port"
    assert len(pids) == 2, f"gunicorn booted workers {pids}"
    return port, pids


async def ask_until_both_workers_answer(port: int, deadline: float) -> list[dict[str, Any]]:
    """Batches of concurrent requests on fresh connections, until both workers answered.

    A worker is announced before its application is loaded; on a busy machine the first one
    takes every connection until the second is ready, hence a deadline rather than a count.
    """
    answers: list[dict[str, Any]] = []
    connector = TCPConnector(force_close=True)
    async with ClientSession(connector=connector) as session:

        async def ask(number: int) -> None:
            request_id = f"gunicorn-{number}"
            url = f"http://127.0.0.1:{port}/whoami"
            async with session.get(url, headers={"X-Request-ID": request_id}) as response:
                body = await response.json()
                answers.append(
                    {"sent": request_id, "echoed": response.headers["X-Request-ID"], **body}
                )

        batch = 0
        while len({answer["pid"] for answer in answers}) < 2 and time.monotonic() < deadline:
            await asyncio.gather(*(ask(batch * 10 + n) for n in range(10)))
            batch += 1
            await asyncio.sleep(0.05)
    return answers


async def flood_one_worker(port: int, requests: int) -> dict[str, Any]:
    """``requests`` unanswered paths on one keep-alive connection (so one worker), then
    ``/whoami`` on it: what that worker kept of its lifecycle events."""
    async with ClientSession(connector=TCPConnector(limit=1)) as session:
        for number in range(requests):
            async with session.get(f"http://127.0.0.1:{port}/missing/{number}") as response:
                assert response.status == 404
        async with session.get(f"http://127.0.0.1:{port}/whoami") as response:
            answer: dict[str, Any] = await response.json()
            return answer


def is_gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except FileNotFoundError:
        return True
    return state == "Z"


def test_two_gunicorn_workers_serve_ids_and_stop_cleanly() -> None:
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "-c",
            str(EXAMPLES / "gunicorn.conf.py"),
            "--chdir",
            str(EXAMPLES),
            "gunicorn_app:create_app",
        ],
        env={**os.environ, "GUNICORN_BIND": "127.0.0.1:0"},
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert server.stderr is not None
        port, workers = wait_for_workers(server.stderr, time.monotonic() + 60)
        answers = asyncio.run(ask_until_both_workers_answer(port, time.monotonic() + 60))
        for answer in answers:
            assert answer["sent"] == answer["echoed"] == answer["request_id"]
            # Lifecycle events (at least this request's RequestStarted) name their worker.
            assert answer["lifecycle_worker_ids"] == [answer["pid"]]
        assert {answer["pid"] for answer in answers} == workers
        # Two events per request, a bounded buffer: the worker keeps 256 and counts the rest.
        flooded = asyncio.run(flood_one_worker(port, 300))
        assert flooded["lifecycle_events"] == 256
        assert flooded["lifecycle_events_dropped"] > 300
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=30) == 0
        assert all(is_gone(pid) for pid in workers)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
        if server.stderr is not None:
            server.stderr.close()
