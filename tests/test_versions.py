"""pyproject's ranges are bounded both ways, and docs/versions.md shows them as declared."""

from __future__ import annotations

from packaging.version import Version

from noxfile import RANGES, SUITES, TABLE, lower_bound, parse_table, table_rows


def test_every_runtime_requirement_has_a_lower_and_an_upper_bound() -> None:
    for requirement, extra in RANGES.values():
        operators = {clause.operator for clause in requirement.specifier}
        assert operators == {">=", "<"}, (extra or "dependencies", str(requirement))


def test_the_compat_run_tests_every_runtime_requirement() -> None:
    tested = {name for suite in SUITES.values() for name in suite.tested}
    assert tested == set(RANGES)


def test_the_docs_table_shows_each_range_as_declared_and_its_lower_bound_as_lowest() -> None:
    documented = parse_table(TABLE.read_text())
    assert [tuple(row[:3]) for row in documented.values()] == table_rows()
    for name, (requirement, _) in RANGES.items():
        assert Version(documented[name][3]) == lower_bound(requirement.specifier), name
