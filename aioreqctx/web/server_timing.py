"""The W3C ``Server-Timing`` header: the request's total time and its timed operations.

``setup(app, server_timing=True)`` adds it to every response. The operations come from the
request's ``OperationTimings``; the header stays small whatever a request timed.
"""

from __future__ import annotations

import re

from multidict import istr

SERVER_TIMING = istr("Server-Timing")
SERVER_TIMING_ENTRIES = 16
"""Metrics in a ``Server-Timing`` header besides ``total``: the slowest names, the rest as one
``other`` entry. With names cut to ``SERVER_TIMING_NAME_LIMIT`` the header stays under 2 KB."""
SERVER_TIMING_NAME_LIMIT = 64
_NOT_TOKEN = re.compile(r"[^A-Za-z0-9!#$%&'*+\-.^_`|~]")


def server_timing_header(total_ms: float, operations: list[tuple[str, float]]) -> str:
    """A W3C ``Server-Timing`` value: ``total;dur=…`` then the operations, bounded in size.

    Repeats of a name are summed into one metric (names become tokens, cut to 64 characters);
    beyond ``SERVER_TIMING_ENTRIES`` names, the slowest are kept in order of first appearance
    and the rest summed into ``other``, whose ``desc`` says how many names it holds.
    """
    if not operations:  # what most requests time
        return f"total;dur={total_ms:.1f}"
    merged: dict[str, float] = {}
    for name, ms in operations:
        token = _NOT_TOKEN.sub("_", name[:SERVER_TIMING_NAME_LIMIT]) or "_"
        merged[token] = merged.get(token, 0.0) + ms
    parts = [f"total;dur={total_ms:.1f}"]
    if len(merged) > SERVER_TIMING_ENTRIES:
        keep = SERVER_TIMING_ENTRIES - 1
        slowest = set(sorted(merged, key=merged.__getitem__, reverse=True)[:keep])
        rest = [ms for token, ms in merged.items() if token not in slowest]
        parts += [f"{token};dur={ms:.1f}" for token, ms in merged.items() if token in slowest]
        parts.append(f'other;dur={sum(rest):.1f};desc="{len(rest)} more"')
    else:
        parts += [f"{token};dur={ms:.1f}" for token, ms in merged.items()]
    return ", ".join(parts)
