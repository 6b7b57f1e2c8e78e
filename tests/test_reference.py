"""The API reference (docs/reference.md) names every public name, and every helper a page cites."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
from types import ModuleType

import pytest

import aioreqctx
import aioreqctx.integrations

from .docs_blocks import DOC_FILES, ROOT

REFERENCE = ROOT / "docs" / "reference.md"
DIRECTIVE = re.compile(r"^::: (?P<name>\S+)$", re.MULTILINE)
CITED = re.compile(r"`(?P<name>aioreqctx(?:\.\w+)+)")


def documented() -> list[str]:
    """The object paths of the reference's mkdocstrings directives (``::: aioreqctx.get``)."""
    return DIRECTIVE.findall(REFERENCE.read_text())


def integration_modules() -> list[ModuleType]:
    return [
        importlib.import_module(f"aioreqctx.integrations.{info.name}")
        for info in pkgutil.iter_modules(aioreqctx.integrations.__path__)
    ]


def public_names_of(module: ModuleType) -> set[str]:
    """Its ``__all__``, or else the classes and functions it defines without a leading ``_``."""
    if hasattr(module, "__all__"):
        return set(module.__all__)
    return {
        name
        for name, value in vars(module).items()
        if not name.startswith("_")
        and (inspect.isclass(value) or inspect.isfunction(value))
        and value.__module__ == module.__name__
    }


def resolve(path: str) -> object | None:
    """The object at a dotted path (``aioreqctx.keys.METADATA``), or None if there is none."""
    parts = path.split(".")
    for split in range(len(parts), 0, -1):
        try:
            found: object = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        for attribute in parts[split:]:
            found = getattr(found, attribute, None)
        return found
    return None


def test_every_directive_names_a_real_object_once() -> None:
    names = documented()
    assert len(names) == len(set(names)), "a name is documented twice"
    assert [name for name in names if resolve(name) is None] == []


def test_every_name_of_the_package_is_in_the_reference() -> None:
    """Modules (``aioreqctx.keys``) are documented by their members."""
    names = [n for n in aioreqctx.__all__ if not isinstance(getattr(aioreqctx, n), ModuleType)]
    missing = {f"aioreqctx.{name}" for name in names} - set(documented())
    assert not missing, f"not in docs/reference.md: {sorted(missing)}"


@pytest.mark.parametrize("namespace", ["web", "log", "events", "propagation"])
def test_every_name_of_each_namespace_is_in_the_reference(namespace: str) -> None:
    """Under its namespace, or at the top level for the names that are there too."""
    module = importlib.import_module(f"aioreqctx.{namespace}")
    reference = set(documented())
    missing = {
        f"{module.__name__}.{name}"
        for name in module.__all__
        if {f"{module.__name__}.{name}", f"aioreqctx.{name}"}.isdisjoint(reference)
    }
    assert not missing, f"not in docs/reference.md: {sorted(missing)}"


@pytest.mark.parametrize("module", integration_modules(), ids=lambda module: module.__name__)
def test_every_public_name_of_each_integration_is_in_the_reference(module: ModuleType) -> None:
    assert public_names_of(module), "an integration without a public name"
    missing = {f"{module.__name__}.{name}" for name in public_names_of(module)} - set(documented())
    assert not missing, f"not in docs/reference.md: {sorted(missing)}"


def test_every_helper_the_pages_cite_is_in_the_reference() -> None:
    """``aioreqctx.log.format_exception`` in a guide must be findable in the reference
    (or its class, for a method); log field names and logger names resolve to nothing."""
    reference = set(documented())
    missing = set()
    for page in DOC_FILES:
        for path in CITED.findall(page.read_text()):
            found = resolve(path)
            if found is None or isinstance(found, ModuleType):
                continue
            prefixes = {".".join(path.split(".")[:end]) for end in range(2, path.count(".") + 2)}
            if not prefixes & reference:
                missing.add(f"{path} ({page.name})")
    assert not missing, f"not in docs/reference.md: {sorted(missing)}"
