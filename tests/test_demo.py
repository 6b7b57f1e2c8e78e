"""The README's first command: three services, one ID per scenario in every service's lines."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

DEMO = Path(__file__).parent.parent / "examples" / "demo.py"
SERVICES = DEMO.with_name("services.py")
SCENARIOS = ("no ID sent", "valid ID", "invalid ID", "handler fails", "streaming", "fan-out")


@pytest.mark.parametrize(
    ("factory", "loop"),
    [
        ("copying_task_factory", "asyncio"),
        ("task_factory", "asyncio"),
        ("chainmap_task_factory", "asyncio"),
        ("copying_task_factory", "uvloop"),
    ],
)
@pytest.mark.usefixtures("redis_installed")  # the demo starts its own for the job scenario
def test_demo_ties_both_services_lines_to_each_request_id(factory: str, loop: str) -> None:
    result = subprocess.run(
        [sys.executable, str(DEMO), "--factory", factory, "--loop", loop],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    sections = re.split(r"^== ", result.stdout, flags=re.MULTILINE)[1:]
    by_scenario = {section.split(":")[0]: section for section in sections}
    for name in (*SCENARIOS, "client hangs up"):
        lines = by_scenario[name].splitlines()[1:]
        services = {line.split()[0] for line in lines if line.startswith("  ")}
        assert {"gateway", "backend"} <= services, name
    assert "demo-valid-7f3a" in by_scenario["valid ID"].splitlines()[0]
    assert "bad id" not in by_scenario["invalid ID"].splitlines()[0]
    assert "client_disconnected" in by_scenario["client hangs up"]
    assert f"executor thread  [{loop}_" in by_scenario["fan-out"]  # the loop's default pool
    job_lines = by_scenario["job"].splitlines()[1:]
    worker_events = [line.split()[2] for line in job_lines if line.startswith("  worker ")]
    assert worker_events == ["job_started", "receipt", "job_finished"]
    assert "one ID tied the services' lines together in every scenario" in result.stdout


def free_port_pair() -> int:
    """A port P with P + 1 free too: ``make serve`` puts the backend next to the gateway."""
    for _ in range(50):
        with socket.socket() as first, socket.socket() as second:
            first.bind(("127.0.0.1", 0))
            port: int = first.getsockname()[1]
            try:
                second.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
            return port
    raise AssertionError("no two neighbouring free ports on 127.0.0.1")


def test_make_serve_names_each_service_on_its_lines() -> None:
    port = free_port_pair()
    server = subprocess.Popen(
        [sys.executable, str(SERVICES), "serve", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        listening = [json.loads(server.stdout.readline()) for _ in range(2)]
        assert [(e["service"], e["port"]) for e in listening] == [
            ("backend", port + 1),
            ("gateway", port),
        ]
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/hello/ana", headers={"X-Request-ID": "serve-1"}
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            assert response.status == 200
        time.sleep(0.3)  # the access lines are written after the answer
        server.send_signal(signal.SIGINT)
        stdout, stderr = server.communicate(timeout=30)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    lines = [json.loads(line) for line in stdout.splitlines()]
    services = {line["service"] for line in lines}
    assert services == {"gateway", "backend"}, stderr
    of_request = {
        (line["service"], line["event"]) for line in lines if line.get("request_id") == "serve-1"
    }
    assert {
        ("gateway", "access"),
        ("backend", "access"),
        ("backend", "item looked up"),
    } <= of_request
