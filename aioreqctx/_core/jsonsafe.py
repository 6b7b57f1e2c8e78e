"""Turn whatever code put into a request's context into something ``json.dumps`` accepts.

Metadata and counters are added by application code, so they can hold anything: bytes, sets,
objects whose ``repr`` raises, structures that contain themselves. A diagnostic (a log line, the
in-flight registry's page) must never fail because of one odd value, so every value gets a
JSON form or, failing that, a short text that says what it was.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

MAX_DEPTH = 32
MAX_TEXT = 1000

JsonValue = None | bool | int | float | str | list["JsonValue"] | dict[str, "JsonValue"]


def json_safe(value: Any) -> JsonValue:
    """``value`` as plain JSON data; never raises, whatever ``value`` is."""
    return _convert(value, set(), 0)


def safe_text(value: Any, limit: int = MAX_TEXT) -> str:
    """``str(value)`` (``repr`` if that fails), at most ``limit`` characters; never raises."""
    for render in (str, repr):
        try:
            text = render(value)
        except Exception:  # noqa: BLE001 - a broken __str__/__repr__ is the case handled here
            continue
        if isinstance(text, str):
            text = str.__str__(text)
            return text if len(text) <= limit else f"{text[:limit]}...(+{len(text) - limit} chars)"
    return f"<unprintable {type(value).__qualname__}>"


def _convert(value: Any, ancestors: set[int], depth: int) -> JsonValue:
    # Exact types first: subclasses may override the methods this relies on.
    kind = type(value)
    if value is None or kind is bool or kind is str or kind is int:
        return value  # type: ignore[no-any-return]
    if kind is float:
        return value if math.isfinite(value) else str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", "backslashreplace")
    if isinstance(value, Mapping | list | tuple | set | frozenset):
        return _convert_container(value, ancestors, depth)
    return safe_text(value)


def _convert_container(value: Any, ancestors: set[int], depth: int) -> JsonValue:
    if id(value) in ancestors:
        return f"<cycle: {type(value).__qualname__}>"
    if depth >= MAX_DEPTH:
        return f"<nested deeper than {MAX_DEPTH}: {type(value).__qualname__}>"
    ancestors.add(id(value))
    try:
        if isinstance(value, Mapping):
            return {safe_text(k): _convert(v, ancestors, depth + 1) for k, v in value.items()}
        items = [_convert(item, ancestors, depth + 1) for item in value]
        if isinstance(value, set | frozenset):  # no order of its own: sort for stable output
            items.sort(key=repr)
        return items
    except Exception:  # noqa: BLE001 - a container that fails to iterate is shown as text
        return safe_text(value)
    finally:
        ancestors.discard(id(value))
