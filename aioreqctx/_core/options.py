"""One check per option, shared by ``setup()`` and every public constructor that takes it.

A wrong option is refused where it is given, by its name and with what it accepts, never
later as an ``AttributeError`` from deep inside (or a malformed response on every request).
``OptionError`` is both a ``TypeError`` and a ``ValueError``: a wrong kind and a wrong value
are one mistake to the caller.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

Rule = tuple[Callable[[Any], bool], str]

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
"""RFC 9110 section 5.6.2: the characters a header name (a token) may have."""

HEADER_NAME_CHARACTERS = "letters, digits and !#$%&'*+-.^_`|~"


class OptionError(TypeError, ValueError):
    """An option of the wrong kind or with a value it does not accept."""


def is_header_name(value: object) -> bool:
    """Whether ``value`` is a valid HTTP header name (an RFC 9110 token)."""
    return isinstance(value, str) and _TOKEN.fullmatch(value) is not None


def _sequence_of(accepts: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda value: isinstance(value, tuple | list) and all(map(accepts, value))


def _optional(accepts: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda value: value is None or accepts(value)


def exactly(kind: type) -> Callable[[Any], bool]:
    """Accepts values of ``kind`` itself (``exactly(int)`` refuses ``True``)."""
    return lambda value: type(value) is kind


def _context_keys(value: Any) -> bool:
    return value is None or isinstance(value, Mapping)


HEADER_NAME: Rule = (is_header_name, f"a header name ({HEADER_NAME_CHARACTERS})")
OPTIONAL_HEADER_NAME: Rule = (_optional(is_header_name), f"{HEADER_NAME[1]} or None")

RULES: dict[str, Rule] = {
    "header_names": (
        lambda value: bool(value) and _sequence_of(is_header_name)(value),
        f"a non-empty tuple of header names ({HEADER_NAME_CHARACTERS})",
    ),
    "response_header": HEADER_NAME,
    "validator": (callable, "a function taking an ID and returning a bool"),
    "generator": (callable, "a function returning a new ID"),
    "on_invalid": (lambda value: value in ("regenerate", "reject"), "'regenerate' or 'reject'"),
    "trusted_networks": (
        _sequence_of(lambda item: isinstance(item, str)),
        "a tuple of CIDR strings",
    ),
    "server_timing": (exactly(bool), "True or False"),
    "observers": (_sequence_of(lambda item: True), "a tuple of request observers"),
    "outside_request": (lambda value: value in ("skip", "generate"), "'skip' or 'generate'"),
    "context_keys": (
        _context_keys,
        "a mapping of context key to log field name, such as {'user.id': 'user_id'}, or None",
    ),
}
"""Options several entry points share: what each accepts, and how the error describes it."""


def check(owner: str, name: str, value: Any, rule: Rule | None = None) -> None:
    """Refuse ``value`` for option ``name`` of ``owner`` unless its rule (by default the shared
    one of that name) accepts it."""
    accepts, expected = RULES[name] if rule is None else rule
    if not accepts(value):
        raise OptionError(f"{owner}: {name} must be {expected}, not {value!r}")


def check_all(owner: str, options: Mapping[str, Any], rules: Mapping[str, Rule]) -> None:
    """``check`` each of ``options`` against ``rules``; an option ``rules`` lacks is refused."""
    for name, value in options.items():
        rule = rules.get(name)
        if rule is None:
            raise OptionError(
                f"{owner} got an unexpected option {name!r}; the options are: {', '.join(rules)}"
            )
        check(owner, name, value, rule)
