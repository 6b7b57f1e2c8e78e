"""The layering rules: which part of aioreqctx may import which, checked twice.

In a fresh interpreter (what a worker or a plain asyncio program really loads) and in the source
(every import statement, including lazy and ``TYPE_CHECKING`` ones).
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "aioreqctx"

# A module's layer, from its dotted name under aioreqctx.
LAYERS = {
    "_core": "core",
    "keys": "keys",
    "log": "log",
    "events": "events",
    "_collectors": "events",
    "propagation": "propagation",
    "web": "web",
    "integrations": "integrations",
    "testing": "testing",
}

# layer -> the layers it must never import
NEVER = {
    "core": {"log", "events", "propagation", "web", "integrations", "testing"},
    "log": {"web"},
    "events": {"web"},
    "propagation": {"web"},
    "web": {"propagation", "integrations", "testing"},
}


def modules_of(part: str) -> list[str]:
    """Every module of a folder (or the single module) ``part`` of the package."""
    folder = PACKAGE / part
    if not folder.is_dir():
        return [f"aioreqctx.{part}"]
    return [
        f"aioreqctx.{part}" + ("" if path.stem == "__init__" else f".{path.stem}")
        for path in sorted(folder.glob("*.py"))
    ]


def loaded_by(*modules: str) -> set[str]:
    """The modules a fresh interpreter holds after importing ``modules``."""
    script = (
        f"import json, sys\nimport {', '.join(modules)}\nprint(json.dumps(sorted(sys.modules)))"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    return set(json.loads(result.stdout))


def under(loaded: set[str], *prefixes: str) -> list[str]:
    return sorted(
        name for name in loaded if any(name == p or name.startswith(p + ".") for p in prefixes)
    )


def test_the_core_and_the_package_face_load_no_aiohttp_structlog_or_upper_layer() -> None:
    loaded = loaded_by("aioreqctx", *modules_of("_core"))
    assert under(loaded, "aiohttp", "structlog", "multidict", "yarl") == []
    upper = [f"aioreqctx.{part}" for part, layer in LAYERS.items() if layer in NEVER["core"]]
    assert under(loaded, *upper) == []


@pytest.mark.parametrize("part", ["log", "events", "propagation"])
def test_log_events_and_propagation_never_load_the_server(part: str) -> None:
    loaded = loaded_by(*modules_of(part))
    assert under(loaded, "aiohttp.web", "aioreqctx.web") == []
    if part != "propagation":  # the client side needs aiohttp itself
        assert under(loaded, "aiohttp") == []


def test_the_logging_face_loads_structlog_only_for_its_structlog_modules() -> None:
    names = [m for m in modules_of("log") if not m.endswith((".processors", ".structlog_buffer"))]
    assert under(loaded_by(*names), "structlog") == []


def test_the_server_side_never_loads_propagation_integrations_or_testing() -> None:
    loaded = loaded_by(*modules_of("web"))
    assert "aiohttp.web" in loaded
    assert (
        under(loaded, "aioreqctx.propagation", "aioreqctx.integrations", "aioreqctx.testing") == []
    )


@pytest.mark.parametrize("module", ["aioreqctx.propagation.jobs", "aioreqctx.integrations.celery"])
def test_a_job_worker_loads_no_aiohttp(module: str) -> None:
    loaded = loaded_by(module)
    assert under(loaded, "aiohttp", "aioreqctx.web") == []


def layer_of(module: str) -> str | None:
    parts = module.split(".")
    return LAYERS.get(parts[1]) if len(parts) > 1 else None


def imports_in(path: Path, module: str) -> set[str]:
    """Every module an import statement of ``path`` names (absolute, dotted)."""
    is_package = path.stem == "__init__"
    package = module.split(".") if is_package else module.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            target = ".".join([*base, *([node.module] if node.module else [])])
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)  # a submodule
    return found


def all_modules() -> list[tuple[str, Path]]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        found.append((".".join(parts[:-1] if parts[-1] == "__init__" else parts), path))
    return found


def test_no_import_statement_breaks_a_rule() -> None:
    broken = []
    for module, path in all_modules():
        layer = layer_of(module)
        for target in imports_in(path, module):
            if layer == "keys" and target.split(".")[0] != "__future__":
                broken.append(f"{module} imports {target}")
            if layer == "core" and target.split(".")[0] in {"aiohttp", "structlog"}:
                broken.append(f"{module} imports {target}")
            if target.startswith("aioreqctx.") and layer_of(target) in NEVER.get(layer or "", ()):
                broken.append(f"{module} imports {target}")
    assert broken == []


def test_the_rules_see_every_module() -> None:
    unplaced = [m for m, _ in all_modules() if m.count(".") and layer_of(m) is None]
    assert unplaced == ["aioreqctx.compat", "aioreqctx.pytest_plugin"]
