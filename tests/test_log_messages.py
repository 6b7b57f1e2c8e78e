"""aioreqctx's own log lines: the logger's name already says where a line comes from."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "aioreqctx"
LOG_METHODS = {"debug", "info", "warning", "error", "exception", "critical", "log"}


def logged_messages(path: Path) -> list[tuple[int, str]]:
    """Every string literal a ``<something>.<log method>(...)`` call in ``path`` starts with."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in LOG_METHODS
        ):
            continue
        for argument in node.args[:2]:
            if isinstance(argument, ast.Constant) and isinstance(argument.value, str):
                found.append((node.lineno, argument.value))
            elif isinstance(argument, ast.JoinedStr) and argument.values:
                first = argument.values[0]
                if isinstance(first, ast.Constant) and isinstance(first.value, str):
                    found.append((node.lineno, first.value))
    return found


@pytest.mark.parametrize(
    "path",
    [pytest.param(path, id=path.name) for path in sorted(PACKAGE.rglob("*.py"))],
)
def test_no_message_repeats_the_logger_name(path: Path) -> None:
    """``%(name)s: %(message)s`` must not print ``aioreqctx: aioreqctx: invalid ...``."""
    doubled = [(line, text) for line, text in logged_messages(path) if text.startswith("aioreqctx")]
    assert doubled == []
