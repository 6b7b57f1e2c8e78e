"""Docs are code: pytest hands README.md and docs/*.md to Sybil (tests/support/docs_blocks.py).

The Redis and PostgreSQL fixtures are plugins here, not in tests/conftest.py, so that docs blocks
get them too.
"""

from tests.support.docs_blocks import DOCS

pytest_plugins = ["tests.support.redis_fixtures", "tests.support.postgres_server"]
pytest_collect_file = DOCS.pytest()
