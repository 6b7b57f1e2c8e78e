"""Docs are code: pytest hands README.md and docs/*.md to Sybil (tests/docs_blocks.py).

The Redis fixtures are a plugin here, not in tests/conftest.py, so that docs blocks get them too.
"""

from tests.docs_blocks import DOCS

pytest_plugins = ["tests.redis_fixtures"]
pytest_collect_file = DOCS.pytest()
