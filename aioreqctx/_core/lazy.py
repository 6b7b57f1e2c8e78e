"""Names a package face imports on first use (PEP 562), so that ``import aioreqctx`` in a job
worker or a plain asyncio program does not load the aiohttp server, structlog or the logging
integration it never touches. The faces import the same names under ``TYPE_CHECKING`` for
mypy and IDEs.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping


def lazy_names(
    face: str, origins: Mapping[str, tuple[str, ...]]
) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for the module named ``face``: each name in
    ``origins[module]`` comes from that module (relative, as in ``face``'s own imports; a name
    equal to the module's last part is the module itself), imported when the name is first
    read and kept as a plain attribute from then on."""
    module_of = {name: module for module, names in origins.items() for name in names}
    anchor = sys.modules[face].__package__

    def get_attribute(name: str) -> object:
        origin = module_of.get(name)
        if origin is None:
            raise AttributeError(f"module {face!r} has no attribute {name!r}")
        module = importlib.import_module(origin, anchor)
        value = module if origin.rpartition(".")[2] == name else getattr(module, name)
        setattr(sys.modules[face], name, value)
        return value

    def list_names() -> list[str]:
        return sorted({*vars(sys.modules[face]), *module_of})

    return get_attribute, list_names
