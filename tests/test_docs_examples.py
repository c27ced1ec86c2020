"""The code in README.md and the docs works as written: every python, yaml and toml block says how
it is tested (``tests/docs_examples.py``), and is: plugin files pass the conformance checks and
run in a suite, suites and suite fragments pass a dry run, API examples run on a finished suite,
the packaging example installs. README.md is a front page that agrees with the docs."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from click.testing import CliRunner

from docs_examples import KINDS, PAGES, README, ROOT, Example, examples, merged, of_kind, plugin_file
from mimbench import testing
from mimbench.cli import cli
from mimbench.registry import HOOKS

MIMBENCH = str(Path(sys.executable).parent / "mimbench")
#: A suite small enough for a test: quick's axes on 64 generated images of 16 px, a tiny CNN, 1 epoch.
TINY = ["--set", "seeds=[0]", "--set", "train.epochs=1", "--set", "train.warmup_epochs=0.2",
        "--set", "dataset={name: shapes, params: {num_images: 64}}", "--set", "image_size=16",
        "--set", "grid.encoder=[{name: cnn, params: {hidden_dim: 8}}]", "--set", "train.batch_size=32"]


def invoke(*args: str):
    result = CliRunner().invoke(cli, list(args))
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def load_module(path: Path):
    spec = importlib.util.spec_from_file_location(f"docs_example_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def registered(module) -> list[tuple[str, str, object]]:
    """(kind, name, factory) of everything the plugin module registers, through its own hooks."""
    found = []
    for kind, hook in HOOKS.items():
        if hasattr(module, hook):
            getattr(module, hook)(lambda name, factory, *_, kind=kind: found.append((kind, name, factory)))
    return found


def test_every_code_block_says_how_it_is_tested():
    unmarked = [e.where for e in examples() if e.kind is None]
    assert not unmarked, f"blocks without a '<!-- test: ... -->' line above them: {unmarked}"
    for example in examples():
        assert example.kind in KINDS, f"{example.where}: unknown marker {example.kind!r}"
        assert (example.argument is not None) == (KINDS[example.kind] is not None), example.where
        if example.kind in ("plugin", "uses", "pyproject"):
            assert example.argument in {e.argument for e in of_kind("plugin")}, example.where
    assert {e.argument for e in of_kind("plugin")} >= {"my_masks.py", "my_targets.py", "my_probes.py"}


def test_every_code_fence_of_a_page_is_closed():
    for page in PAGES:
        fences = [line for line in page.read_text().splitlines() if line.lstrip().startswith("```")]
        assert len(fences) % 2 == 0, f"{page.relative_to(ROOT)}: a ``` fence is not closed"


def test_a_plugin_file_reads_the_same_wherever_it_is_shown():
    for name in {e.argument for e in of_kind("plugin")}:
        plugin_file(name)  # one text for each file name, in the README and in every page


@pytest.mark.parametrize("name", sorted({e.argument for e in of_kind("plugin")}))
def test_a_plugin_example_conforms_and_runs_in_a_suite(tmp_path, name):
    path = tmp_path / name
    path.write_text(plugin_file(name))
    assert len(path.read_text().strip().splitlines()) <= 30, "a plugin example is one small file"
    components = registered(load_module(path))
    assert components, f"{name} registers nothing"
    listed = json.loads(invoke("plugins", "--plugin", str(path), "--json").output)["components"]
    mine = {(c["kind"], c["name"]) for c in listed if c["provider"] == str(path.resolve())}
    assert mine == {(kind, n) for kind, n, _ in components}
    args = []
    for kind, component, factory in components:
        if kind == "masker":
            testing.check_masker(factory, {}, tolerance=0.1)
            args += ["--set", f"grid.masker=[{component}]"]
        elif kind == "target":
            testing.check_target(factory, {})
            args += ["--set", "grid.masker=[patch]", "--set", f"grid.target=[{component}]"]
        elif kind == "probe":  # mimbench.testing has no probe check: the suite below is its test
            args += ["--set", f"eval.probes=[linear, {component}]"]
    out = tmp_path / "results"
    result = invoke("run", "--plugin", str(path), "--out", str(out), "--set", "name=example", *TINY, *args)
    assert result.exit_code == 0, result.output
    summary = pd.read_csv(out / "example" / "summary.csv")
    assert (summary.status == "done").all() and len(summary) >= 3
    for kind, component, factory in components:
        if kind == "probe":
            declared = json.loads((out / "example" / "columns.json").read_text())["columns"]
            keys = [c["key"] for c in declared if c["key"].startswith(component)]
            assert keys, f"{component} declares no column"
            for key in keys:
                assert summary[key].between(0, 1).all(), key  # the run and both baselines


def test_the_bands_masker_hides_whole_rows_and_its_params_are_checked(tmp_path):
    path = tmp_path / "my_masks.py"
    path.write_text(plugin_file("my_masks.py"))
    masker = load_module(path).BandMasker(ratio=0.5, band=4)
    mask = masker(__import__("torch").zeros(2, 1, 16, 16))
    assert (mask == mask[:, :, :1]).all(), "whole rows are hidden"
    listed = json.loads(invoke("plugins", "--plugin", str(path), "--kind", "masker", "--json").output)
    bands = {r["name"]: r for r in listed["components"]}["bands"]
    assert bands["description"].startswith("Hide random horizontal bands")
    bad = invoke("run", "--plugin", str(path), "--dry-run", "--set", "grid.masker=[{name: bands, params: {band: wide}}]")
    assert bad.exit_code == 2 and "param 'band' must be int" in bad.output


@pytest.mark.parametrize("example", of_kind("pyproject"), ids=lambda e: e.where)
def test_the_packaging_example_installs_a_plugin_that_is_found_with_no_flag(tmp_path, example: Example):
    package = tmp_path / "package"
    package.mkdir()
    (package / example.argument).write_text(plugin_file(example.argument))
    (package / "pyproject.toml").write_text(example.code)
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--target", str(site), str(package)], check=True, capture_output=True)
    env = {**os.environ, "PYTHONPATH": str(site)}
    env.pop("MIMBENCH_PLUGINS", None)
    listed = subprocess.run([MIMBENCH, "plugins", "--json"], env=env, capture_output=True, text=True, check=True)
    rows = {(r["kind"], r["name"]): r for r in json.loads(listed.stdout)["components"]}
    project = __import__("tomllib" if sys.version_info >= (3, 11) else "tomli").loads(example.code)["project"]
    mine = [r for r in rows.values() if r["provider"] == project["name"]]
    assert mine and all(r["version"] == project["version"] for r in mine)
    assert rows[("masker", "patch")]["provider"] == "mimbench"


@pytest.mark.parametrize("example", of_kind("uses"), ids=lambda e: e.where)
def test_code_that_uses_a_plugin_file_runs(tmp_path, monkeypatch, example: Example):
    (tmp_path / example.argument).write_text(plugin_file(example.argument))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(example.code, example.where, "exec"), namespace)
    for name, function in namespace.items():
        if name.startswith("test_") and callable(function):
            function()


def dry_run(tmp_path: Path, suite: dict):
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(suite, sort_keys=False))
    result = invoke("run", str(path), "--dry-run", "--out", str(tmp_path / "results"))
    if result.exit_code == 2 and "pip install" in result.output:
        pytest.skip(result.output.strip())  # an optional extra this environment does not have
    assert result.exit_code == 0, result.output
    return result


@pytest.mark.parametrize("example", of_kind("suite"), ids=lambda e: e.where)
def test_a_suite_example_passes_a_dry_run(tmp_path, example: Example):
    suite = yaml.safe_load(example.code)
    assert {"name", "dataset", "grid"} <= set(suite), f"{example.where}: not a whole suite"
    dry_run(tmp_path, suite)


@pytest.mark.parametrize("example", of_kind("suite-fragment"), ids=lambda e: e.where)
def test_a_suite_fragment_over_quick_passes_a_dry_run(tmp_path, example: Example):
    quick = yaml.safe_load((ROOT / "mimbench" / "suites" / "quick.yaml").read_text())
    dry_run(tmp_path, merged(quick, yaml.safe_load(example.code)))


@pytest.fixture(scope="module")
def finished_quick(tmp_path_factory) -> Path:
    """A folder holding ``results/quick``: the quick suite's axes, made tiny, run to the end."""
    folder = tmp_path_factory.mktemp("api")
    result = invoke("run", "--out", str(folder / "results"), *TINY)
    assert result.exit_code == 0, result.output
    return folder


@pytest.mark.parametrize("example", of_kind("api"), ids=lambda e: e.where)
def test_an_api_example_runs_on_a_finished_suite(finished_quick, monkeypatch, example: Example):
    monkeypatch.chdir(finished_quick)
    namespace: dict = {}
    exec(compile(example.code, example.where, "exec"), namespace)
    assert namespace, example.where


def test_the_readme_is_a_front_page_that_links_into_the_docs():
    text = README.read_text()
    assert len(text.splitlines()) <= 300
    links = re.findall(r"\]\((docs/[^)#]+)", text)
    assert links, "the README links into the docs"
    for link in links:
        assert (ROOT / link).is_file(), link
    assert of_kind("plugin") and any(e.page == README for e in of_kind("plugin")), "the README shows a masker plugin"


def test_the_readme_test_command_is_what_ci_runs_with_every_extra():
    ci = (ROOT / ".ci" / "run").read_text()
    install = re.search(r"pip install -q -e '(\.\[[^\]]*\])'", ci).group(1)
    assert f"pip install -e '{install}' && .venv/bin/python -m pytest -q" in README.read_text()
    assert "\n.venv/bin/python -m pytest -q\n" in ci
    tomllib = pytest.importorskip("tomllib", reason="tomllib needs Python 3.11")
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert set(install[2:-1].split(",")) == set(extras)


def test_the_first_command_of_the_readme_is_the_one_of_getting_started():
    commands = re.findall(r"```bash\n((?:#[^\n]*\n)*)(python3 -m venv[^\n]*)\n```", README.read_text())
    assert len(commands) == 2
    started = (ROOT / "docs" / "index.md").read_text() + (ROOT / "docs" / "getting-started.md").read_text()
    for _, command in commands:
        assert command in started, command
