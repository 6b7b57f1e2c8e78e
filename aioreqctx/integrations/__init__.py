"""Optional integrations with third-party libraries, one module per library.

Each module imports the core and its own library; the core never imports them. Importing one
whose library is missing raises an ImportError that names the extra to install.
"""

from __future__ import annotations


def missing_extra(extra: str) -> ImportError:
    """The error for ``aioreqctx.integrations.<extra>`` when its library is not installed."""
    return ImportError(
        f"aioreqctx.integrations.{extra} needs a library that is not installed: "
        f"pip install 'aioreqctx[{extra}]'"
    )
