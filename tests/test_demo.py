"""The README's first command: the demo serves real requests on 127.0.0.1 and exits 0."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

DEMO = Path(__file__).parent.parent / "examples" / "demo.py"


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
@pytest.mark.parametrize(
    "factory", ["task_factory", "copying_task_factory", "chainmap_task_factory"]
)
def test_demo_shows_each_request_id_in_every_task_and_thread(factory: str, loop: str) -> None:
    result = subprocess.run(
        [sys.executable, str(DEMO), "--factory", factory, "--loop", loop],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    for given in ("demo-given-1", "demo-given-2", "demo-given-3"):
        lines = [
            line
            for line in result.stdout.splitlines()
            if line.startswith(given + " ") and " | " in line
        ]
        thread_lines = [line for line in lines if "executor thread" in line]
        assert thread_lines
        assert all(line.split("|")[1].strip() != "MainThread" for line in thread_lines)
        assert any("background task" in line for line in lines)
    generated = set(re.findall(r"^([0-9a-f-]{36}) +\| ", result.stdout, re.MULTILINE))
    assert len(generated) == 3
    assert "every request's lines carried its own ID" in result.stdout
