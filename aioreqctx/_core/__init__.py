"""The context engine: the standard library only, never aiohttp or structlog.

Private: import from ``aioreqctx``, never from here.
"""
