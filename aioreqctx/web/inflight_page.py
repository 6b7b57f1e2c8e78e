"""The in-flight registry as an HTML page: what runs now, where it waits, what failed lately.

Rendered on the server from the registry's JSON data, so it needs no front-end build and
loads nothing (no script, font or stylesheet from elsewhere). Every value, paths and request
IDs included, comes from clients or code and goes through ``html.escape``.
"""

from __future__ import annotations

from collections.abc import Mapping
from html import escape
from typing import Any

_STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; width: 100%; margin-bottom: 2em; }
th, td { border-bottom: 1px solid #ddd; padding: .3em .5em; text-align: left;
         vertical-align: top; }
th { background: #f4f4f4; }
code, pre { font: 12px/1.3 ui-monospace, monospace; }
pre { margin: 0; white-space: pre-wrap; }
.failed { color: #a00; }
"""


def _text(value: Any) -> str:
    return "-" if value is None else escape(str(value))


def _chain(entry: Mapping[str, Any]) -> str:
    chain = entry.get("await_chain")
    if not isinstance(chain, Mapping):
        return "-"
    lines = [f"task {chain.get('task')}", *map(str, chain.get("frames") or ())]
    awaited_by = chain.get("awaited_by") or ()
    if awaited_by:
        lines.append(f"awaited by: {', '.join(map(str, awaited_by))}")
    return _pre(lines)


def _pre(lines: Any) -> str:
    return "<pre>" + escape("\n".join(map(str, lines))) + "</pre>"


def _row(cells: list[str], css: str = "") -> str:
    cls = f' class="{css}"' if css else ""
    return f"<tr{cls}>" + "".join(f"<td>{cell}</td>" for cell in cells) + "</tr>"


def _table(headings: tuple[str, ...], rows: list[str], empty: str) -> str:
    if not rows:
        return f"<p>{escape(empty)}</p>"
    head = "".join(f"<th>{escape(heading)}</th>" for heading in headings)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _identity(entry: Any) -> list[str]:
    """The cells both tables start with: the request ID, the method and the path."""
    return [
        f"<code>{_text(entry.get('request_id'))}</code>",
        _text(entry.get("method")),
        _text(entry.get("path")),
    ]


def render_page(data: Any) -> str:
    """The page for ``InFlightRegistry.to_dict(chains=True)``'s data (made JSON-safe)."""
    running = [
        _row(
            [
                *_identity(entry),
                _text(entry.get("route")),
                _text(entry.get("age_seconds")),
                _text(entry.get("current_operation")),
                _chain(entry),
            ]
        )
        for entry in data.get("requests", ())
    ]
    recent = [
        _row(
            [
                *_identity(entry),
                _text(entry.get("status")),
                _text(entry.get("error")),
                _text(entry.get("duration_ms")),
                "<br>".join(
                    f"{escape(str(name))}={escape(str(value))}"
                    for name, value in (entry.get("usage") or {}).items()
                )
                or "-",
                _pre(entry.get("lines") or ()),
            ],
            "failed" if entry.get("error") or (entry.get("status") or 0) >= 500 else "",
        )
        for entry in data.get("recent", ())
    ]
    count = data.get("count", 0)
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>In flight: {_text(count)}</title><style>{_STYLE}</style></head><body>"
        f"<h1>In flight: {_text(count)}</h1>"
        + _table(
            ("request ID", "method", "path", "route", "age (s)", "operation", "await chain"),
            running,
            "No request or job is running.",
        )
        + f"<h2>Recent failed or slow (at least {_text(data.get('slow_ms'))} ms)</h2>"
        + _table(
            ("request ID", "method", "path", "status", "error", "ms", "used", "kept lines"),
            recent,
            "None yet.",
        )
        + "</body></html>"
    )
