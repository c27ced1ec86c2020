"""The package users install: a wheel and an sdist built from the tree hold every module and data
file of ``mimbench/`` and ``mimbench_plugins/``, and the wheel, installed outside the checkout,
plans ``quick`` and lists its plugins. ``pip install -e`` reads the source tree and cannot show a
file the packaging leaves out; these tests build the real artefacts (offline: ``--no-isolation``
with the test extra's setuptools and build)."""

from __future__ import annotations

import email
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

import mimbench

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("mimbench", "mimbench_plugins")


def checkout_files(*paths: str) -> list[str]:
    """The files of the checkout under ``paths`` (all when none), relative to the root: what git
    tracks or would add (not what .gitignore leaves out), else every file but caches and builds."""
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", *paths], cwd=ROOT,
                            capture_output=True, text=True)
    if listed.returncode == 0 and listed.stdout.strip():
        return sorted(f for f in listed.stdout.splitlines() if (ROOT / f).is_file())
    skip = {"__pycache__", ".git", ".venv", "build", "dist", "site", "results"}
    return sorted(p.relative_to(ROOT).as_posix() for folder in (paths or (".",)) for p in (ROOT / folder).rglob("*")
                  if p.is_file() and not skip & set(p.relative_to(ROOT).parts) and ".egg-info" not in str(p))


def tree_files() -> list[str]:
    """Every file of the two packages in the checkout: ``mimbench/folder/run.py``..."""
    return checkout_files(*PACKAGES)


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """An sdist of a clean copy of the checkout (as CI's fresh clone has it: no earlier build/ or
    egg-info whose file lists setuptools would reuse) and the wheel built from that sdist, as pip
    builds one from an index; once for this module."""
    pytest.importorskip("build", reason="the test extra is not installed (pip install -e '.[test]')")
    source = tmp_path_factory.mktemp("checkout")
    for name in (f for f in checkout_files() if not f.startswith("results/")):  # the published results are not built
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, source / name)
    out = tmp_path_factory.mktemp("dist")
    result = subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(source)],
                            capture_output=True, text=True, cwd=out)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return out


def only(folder: Path, pattern: str) -> Path:
    (path,) = folder.glob(pattern)
    return path


def test_the_tree_has_the_files_the_checks_are_about():
    files = tree_files()
    assert "mimbench/folder/run.py" in files and "mimbench/suites/quick.yaml" in files
    assert "mimbench/py.typed" in files
    assert any(f.startswith("mimbench_plugins/data/fashion-mnist-mini/") and f.endswith(".gz") for f in files)


def test_the_wheel_holds_every_file_of_the_tree(built):
    names = set(zipfile.ZipFile(only(built, "*.whl")).namelist())
    missing = [f for f in tree_files() if f not in names]
    assert not missing, f"the wheel lacks {len(missing)} file(s) of the tree: {missing[:10]}"
    stray = [n for n in names if n.split("/")[0] not in (*PACKAGES, f"mimbench-{mimbench.__version__}.dist-info")]
    assert not stray, f"the wheel holds files outside the packages: {stray[:10]}"


def test_the_sdist_holds_every_file_of_the_tree_and_what_builds_and_tests_it(built):
    sdist = only(built, "*.tar.gz")
    prefix = f"mimbench-{mimbench.__version__}/"
    names = {n.removeprefix(prefix) for n in tarfile.open(sdist).getnames()}
    missing = [f for f in tree_files() if f not in names]
    assert not missing, f"the sdist lacks {len(missing)} file(s) of the tree: {missing[:10]}"
    for needed in ("pyproject.toml", "README.md", "LICENSE", "CHANGELOG.md", "tests/conftest.py",
                   "tests/helpers.py", "mkdocs.yml", "docs/index.md", "scripts/docs_reference.py"):
        assert needed in names, needed


def test_the_wheel_metadata_is_what_an_index_shows(built):
    with zipfile.ZipFile(only(built, "*.whl")) as wheel:
        info = f"mimbench-{mimbench.__version__}.dist-info"
        metadata = email.message_from_bytes(wheel.read(f"{info}/METADATA"))
        entry_points = wheel.read(f"{info}/entry_points.txt").decode()
        assert f"{info}/licenses/LICENSE" in wheel.namelist()
    assert metadata["Version"] == mimbench.__version__
    assert metadata["License-Expression"] == "MIT"
    assert metadata["Requires-Python"] == ">=3.10"
    classifiers = metadata.get_all("Classifier")
    assert "Intended Audience :: Science/Research" in classifiers and "Typing :: Typed" in classifiers
    assert "mimbench = mimbench.__main__:main" in entry_points
    for module in sorted((ROOT / "mimbench_plugins").glob("*.py")):
        text = module.read_text()
        if "@hookimpl" in text:  # every built-in plugin module is registered as a plugin
            assert f"mimbench_plugins.{module.stem}" in entry_points, module.name


def test_the_installed_wheel_works_outside_the_checkout(built, tmp_path):
    """The wheel alone, with this environment's dependencies: every module imports, ``quick`` is
    planned, the plugins are listed, and nothing is read from the checkout."""
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--target", str(site),
                    str(only(built, "*.whl"))], check=True, capture_output=True)
    env = {**os.environ, "PYTHONPATH": str(site)}
    env.pop("MIMBENCH_PLUGINS", None)
    work = tmp_path / "elsewhere"
    work.mkdir()

    def python(*args: str) -> str:
        result = subprocess.run([sys.executable, *args], cwd=work, env=env, capture_output=True, text=True)
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
        return result.stdout

    imported = python(str(ROOT / "scripts" / "import_every_module.py"))
    assert imported.splitlines()[0] == str(site / "mimbench" / "__init__.py")
    modules = [f for f in tree_files() if f.endswith(".py") and not f.endswith("__main__.py")]
    assert int(imported.splitlines()[1]) == len(modules)
    assert python("-m", "mimbench", "--version").strip() == f"mimbench, version {mimbench.__version__}"
    planned = python("-m", "mimbench", "run", "quick", "--dry-run", "--out", str(work / "results"))
    assert planned.startswith("suite quick: 6 runs and 4 baselines on fashion-mnist-mini"), planned[-2000:]
    listed = python("-m", "mimbench", "plugins")
    assert "fashion-mnist-mini" in listed and "seg_linear" in listed and "ema_teacher" in listed

