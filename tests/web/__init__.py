"""Tests of the aiohttp server side (``aioreqctx.web``)."""
