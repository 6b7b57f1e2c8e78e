"""The README's first command: three services, one ID per scenario in every service's lines."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

DEMO = Path(__file__).parent.parent / "examples" / "demo.py"
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
    job_lines = by_scenario["job"].splitlines()[1:]  # make pytest installs redis-server
    worker_events = [line.split()[2] for line in job_lines if line.startswith("  worker ")]
    assert worker_events == ["job_started", "receipt", "job_finished"]
    assert "one ID tied the services' lines together in every scenario" in result.stdout
