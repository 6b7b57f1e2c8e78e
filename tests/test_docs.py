"""Docs are code: Sybil runs every python block of the README and docs/ as printed.

The blocks themselves are collected from README.md and docs/ (``pytest README.md docs``, part
of a plain ``pytest`` run); these tests check that they are, and the parser's own rules.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from .docs_blocks import DOC_FILES, DOCS, ROOT


def test_pytest_collects_the_readme_and_the_docs(pytestconfig: pytest.Config) -> None:
    """Without these in testpaths, a plain ``pytest`` would silently run no docs block."""
    assert {"README.md", "docs"} <= set(pytestconfig.getini("testpaths"))
    assert {path.relative_to(ROOT) for path in DOC_FILES if DOCS.should_parse(path)} == {
        path.relative_to(ROOT) for path in DOC_FILES
    }


def test_the_readme_and_every_guide_have_examples() -> None:
    pages = {Path(example.path).name for path in DOC_FILES for example in DOCS.parse(path)}
    assert pages >= {"README.md", "factories.md", "middleware.md", "logging.md", "testing.md"}


@pytest.mark.parametrize(
    "stray", ['```text title="Output"\nhi\n```', '```console title="Try it"\n```']
)
def test_an_output_or_try_it_block_without_a_program_is_refused(tmp_path: Path, stray: str) -> None:
    page = tmp_path / "page.md"
    page.write_text(f"# A page\n\n```sh\nmake\n```\n\n{stray}\n")
    with pytest.raises(ValueError, match=r"page\.md:7: no python block before it"):
        DOCS.parse(page)
