"""The README's plugin example works as written: as a file, and as an installed package."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
from click.testing import CliRunner

from mimbench.cli import cli
from mimbench.testing import check_masker

README = Path(__file__).resolve().parents[1] / "README.md"
MIMBENCH = str(Path(sys.executable).parent / "mimbench")


def code_block(marker: str, language: str) -> str:
    """The first ```language block at or after ``marker`` (which may sit inside it)."""
    text = README.read_text()
    start = text.rfind("```", 0, text.index(marker))
    start = text.index(marker) if start == -1 or text[start:].startswith("```\n") else start
    match = re.compile(rf"```{language}\n(.*?)```", re.S).search(text, start)
    return match.group(1)


def example_plugin(folder: Path) -> Path:
    path = folder / "my_masks.py"
    path.write_text(code_block("<!-- example-plugin", "python"))
    return path


def test_example_plugin_is_short_and_conforms(tmp_path, monkeypatch):
    path = example_plugin(tmp_path)
    assert len(path.read_text().strip().splitlines()) <= 30
    monkeypatch.syspath_prepend(str(tmp_path))
    from my_masks import BandMasker

    check_masker(BandMasker, {"ratio": 0.5}, tolerance=0.1)
    mask = BandMasker(ratio=0.5, band=4)(__import__("torch").zeros(2, 1, 16, 16))
    assert (mask == mask[:, :, :1]).all(), "whole rows are hidden"


def test_example_plugin_runs_through_the_cli(tmp_path):
    path = example_plugin(tmp_path)
    listed = CliRunner().invoke(cli, ["plugins", "--plugin", str(path), "--kind", "masker", "--json"])
    rows = {r["name"]: r for r in json.loads(listed.output)["components"]}
    assert rows["bands"]["provider"] == str(path.resolve())
    assert rows["bands"]["description"].startswith("Hide random horizontal bands")
    out = tmp_path / "results"
    result = CliRunner().invoke(cli, [
        "run", "--plugin", str(path), "--out", str(out), "--set", "grid.masker=[bands, {name: bands, params: {band: 7}}]",
        "--set", "seeds=[0]", "--set", "train.epochs=1", "--set", "dataset={name: shapes, params: {num_images: 64}}",
        "--set", "image_size=16", "--set", "grid.encoder=[{name: cnn, params: {hidden_dim: 8}}]",
        "--set", "train.batch_size=32",
    ])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out / "quick" / "summary.csv")
    runs = table[table.pretrained]
    assert (table.status == "done").all() and list(runs["masker.band"]) == [4, 7]
    assert sorted(table[~table.pretrained].baseline) == ["pixels", "random-init"]
    bad = CliRunner().invoke(cli, ["run", "--plugin", str(path), "--dry-run", "--set",
                                   "grid.masker=[{name: bands, params: {band: wide}}]"])
    assert bad.exit_code == 2 and "param 'band' must be int" in bad.output


def test_example_plugin_as_an_installed_package(tmp_path):
    package = tmp_path / "my-masks"
    package.mkdir()
    example_plugin(package)
    (package / "pyproject.toml").write_text(code_block("# pyproject.toml, next to my_masks.py", "toml"))
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--target", str(site), str(package)], check=True, capture_output=True)
    env = {**os.environ, "PYTHONPATH": str(site)}
    env.pop("MIMBENCH_PLUGINS", None)
    listed = subprocess.run([MIMBENCH, "plugins", "--json", "--kind", "masker"], env=env,
                            capture_output=True, text=True, check=True)
    rows = {r["name"]: r for r in json.loads(listed.stdout)["components"]}
    assert (rows["bands"]["provider"], rows["bands"]["version"]) == ("my-masks", "0.1.0")
    assert rows["patch"]["provider"] == "mimbench"


def test_the_readme_test_command_is_what_ci_runs_with_every_extra():
    ci = (README.parent / ".ci" / "run").read_text()
    install = re.search(r"pip install -q -e '(\.\[[^\]]*\])'", ci).group(1)
    assert f"pip install -e '{install}' && .venv/bin/python -m pytest -q" in README.read_text()
    tomllib = __import__("pytest").importorskip("tomllib", reason="tomllib needs Python 3.11")
    extras = tomllib.loads((README.parent / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert set(install[2:-1].split(",")) == set(extras)
