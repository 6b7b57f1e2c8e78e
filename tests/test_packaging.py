"""The distributions as PyPI would get them: built by ``python -m build``, checked by twine."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
import tarfile
import zipfile
from email.parser import HeaderParser
from pathlib import Path

import pytest

import aioreqctx

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(out), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return {"sdist": next(out.glob("*.tar.gz")), "wheel": next(out.glob("*.whl"))}


def test_twine_check_strict_passes(dist: dict[str, Path]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "twine", "check", "--strict", *map(str, dist.values())],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("PASSED") == 2


def test_both_files_carry_the_license(dist: dict[str, Path]) -> None:
    license_text = (ROOT / "LICENSE").read_text()
    assert license_text.startswith("MIT License")
    version = aioreqctx.__version__
    with tarfile.open(dist["sdist"]) as sdist:
        member = sdist.extractfile(f"aioreqctx-{version}/LICENSE")
        assert member is not None
        assert member.read().decode() == license_text
    with zipfile.ZipFile(dist["wheel"]) as wheel:
        licensed = wheel.read(f"aioreqctx-{version}.dist-info/licenses/LICENSE").decode()
        assert licensed == license_text


def test_metadata_has_version_urls_and_classifiers(dist: dict[str, Path]) -> None:
    version = aioreqctx.__version__
    with zipfile.ZipFile(dist["wheel"]) as wheel:
        raw = wheel.read(f"aioreqctx-{version}.dist-info/METADATA").decode()
    metadata = HeaderParser().parsestr(raw)
    assert metadata["Version"] == version
    assert metadata["License-Expression"] == "MIT"
    assert metadata.get_all("License-File") == ["LICENSE"]
    classifiers = metadata.get_all("Classifier", [])
    assert "Framework :: aiohttp" in classifiers
    for minor in (11, 12, 13, 14):
        assert f"Programming Language :: Python :: 3.{minor}" in classifiers
    urls = dict(line.split(", ", 1) for line in metadata.get_all("Project-URL", []))
    assert set(urls) == {"Homepage", "Documentation", "Source", "Issues"}
    assert all(url.startswith("https://") for url in urls.values())


def test_sdist_holds_the_package_and_no_tests(dist: dict[str, Path]) -> None:
    """Tests need a checkout (examples, bench, docs, Redis): the sdist leaves all of them out."""
    with tarfile.open(dist["sdist"]) as sdist:
        names = {name.split("/", 1)[1] for name in sdist.getnames() if "/" in name}
    top_level = {name.split("/")[0] for name in names}
    assert top_level == {
        "PKG-INFO", "LICENSE", "README.md", "pyproject.toml", "setup.cfg", "MANIFEST.in",
        "aioreqctx", "aioreqctx.egg-info",
    }  # fmt: skip
    package = {path.relative_to(ROOT).as_posix() for path in (ROOT / "aioreqctx").rglob("*.py")}
    assert package <= names
    assert "aioreqctx/py.typed" in names


def test_the_wheel_holds_every_module_of_every_layer(dist: dict[str, Path]) -> None:
    with zipfile.ZipFile(dist["wheel"]) as wheel:
        names = set(wheel.namelist())
    package = {path.relative_to(ROOT).as_posix() for path in (ROOT / "aioreqctx").rglob("*.py")}
    assert {"aioreqctx/_core/store.py", "aioreqctx/web/middleware.py"} <= package
    assert package <= names
    assert "aioreqctx/py.typed" in names


def test_version_is_the_installed_distributions() -> None:
    assert aioreqctx.__version__ == importlib.metadata.version("aioreqctx")
