"""The core imports no integration; an integration whose library is missing names its extra."""

from __future__ import annotations

import subprocess
import sys

import pytest

# Each integration module and a library it needs (blocked in the subprocess).
INTEGRATIONS = {
    "otel": "opentelemetry",
    "prometheus": "prometheus_client",
    "arq": "arq",
    "taskiq": "taskiq",
    "sentry": "sentry_sdk",
}


def run_python(script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )


def test_importing_the_core_imports_no_integration_and_no_queue_library() -> None:
    result = run_python(
        "import sys, aioreqctx, aioreqctx.propagation.jobs\n"
        "loaded = [name for name in sys.modules if name.startswith('aioreqctx.integrations')\n"
        "          or name.split('.')[0] in {'arq', 'taskiq', 'celery', 'sentry_sdk',\n"
        "                                    'opentelemetry', 'prometheus_client', 'redis'}]\n"
        "print(loaded)\n"
    )
    assert result.stdout.strip() == "[]", result.stderr


@pytest.mark.parametrize(("extra", "library"), sorted(INTEGRATIONS.items()))
def test_a_missing_library_raises_import_error_naming_the_extra(extra: str, library: str) -> None:
    result = run_python(
        f"import sys; sys.modules[{library!r}] = None\n"
        "try:\n"
        f"    import aioreqctx.integrations.{extra}\n"
        "except ImportError as error:\n"
        "    print(error)\n"
    )
    assert result.stdout.strip() == (
        f"aioreqctx.integrations.{extra} needs a library that is not installed: "
        f"pip install 'aioreqctx[{extra}]'"
    ), result.stderr
