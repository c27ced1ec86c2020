"""The documentation's generated reference pages (scripts/docs_reference.py) say what the code
says: every suite key with its default, every command and option, every hook, every built-in
component and its params. A test here fails when the code and the pages could drift apart."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def docs():
    spec = importlib.util.spec_from_file_location("docs_reference", ROOT / "scripts" / "docs_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _fields(model, prefix=""):
    """(dotted key, FieldInfo) of every field of ``model`` and of the models it holds."""
    from mimbench.schema import ComponentSpec
    from pydantic import BaseModel
    import typing

    def models(annotation):
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            return [annotation]
        return [m for arg in typing.get_args(annotation) for m in models(arg)]

    for name, field in model.model_fields.items():
        yield f"{prefix}{name}", field
        for sub in dict.fromkeys(models(field.annotation)):
            if sub is not ComponentSpec:
                yield from _fields(sub, f"{prefix}{name}.")


def test_every_suite_key_has_a_description():
    from mimbench.schema import ComponentSpec, Suite

    fields = list(_fields(Suite)) + list(_fields(ComponentSpec, "component."))
    assert len(fields) > 40
    missing = [key for key, field in fields if not (field.description or "").strip()]
    assert not missing, f"suite keys without a description in mimbench/schema/: {missing}"


def test_suite_page_names_every_key_with_its_default(docs):
    from mimbench.schema import Suite

    page = docs.suite_keys_markdown()
    for key, field in _fields(Suite):
        assert f"### {key} {{#{key}}}" in page or f"## {key} {{#{key}}}" in page, key
        if field.is_required():
            expected = "**Default:** required"
        else:
            expected = f"**Default:** `{docs.yaml_value(field.get_default(call_default_factory=True))}`"
            if key in ("train", "eval", "data", "execution", "report"):
                expected = "**Default:** `{}`"
        entry = page.split(f"{{#{key}}}", 1)[1].split("\n#", 1)[0]
        assert expected in entry, (key, expected, entry[:300])
        assert docs._one_paragraph(field.description)[:60] in entry, key
    for key, default in [("train.checkpoint_every", "`10min`"), ("train.budget_flops", "`null`"),
                         ("eval.reference_masker", "`null`"), ("execution.threads_per_run", "`auto`"),
                         ("eval.probes", "`[linear, knn]`"), ("seeds", "`[0]`"), ("grid.encoder", "required")]:
        entry = page.split(f"{{#{key}}}", 1)[1].split("\n#", 1)[0]
        assert f"**Default:** {default}" in entry, key
    assert "execution.&lt;param>" in page and "checked against its signature" in page
    assert "**Allowed:** 1 to 2147483647" in page.split("{#train.epochs}", 1)[1].split("\n#", 1)[0]


def test_cli_page_names_every_command_and_option(docs):
    import click

    from mimbench.cli import cli

    page = docs.cli_markdown()
    ctx = click.Context(cli, info_name="mimbench")
    names = sorted(name for name, command in cli.commands.items() if command.callback.__module__ == "mimbench.cli")
    assert {"run", "report", "plugins", "suites", "export"} <= set(names)
    for name in names:
        command = cli.commands[name]
        sub = click.Context(command, info_name=name, parent=ctx)
        assert f"## mimbench {name} {{#mimbench-{name}}}" in page
        assert command.get_usage(sub) in page
        for param in command.get_params(sub):
            for opt in param.opts if param.param_type_name == "option" else [param.make_metavar(sub)]:
                assert f"`{opt}" in page, (name, opt)
    for option in ("--rerun-changed", "--dry-run", "--version", "--reference", "--params"):
        assert f"`{option}" in page
    assert "Exit codes: 0 all runs finished (done, or diverged" in page


def test_hooks_page_names_every_hookspec(docs):
    import inspect

    import mimbench.hookspecs

    page = docs.hooks_markdown()
    names = [spec.__name__ for spec in docs.hookspecs()]
    assert set(names) == {name for name, value in vars(mimbench.hookspecs).items()
                          if name.startswith("mimbench_") and inspect.isfunction(value)}
    assert {"mimbench_register_targets", "mimbench_register_maskers", "mimbench_register_commands",
            "mimbench_run_finished", "mimbench_step_logged"} <= set(names)
    for spec in docs.hookspecs():
        assert f"## {spec.__name__} {{#{spec.__name__}}}" in page
        assert docs.signature_text(spec) in page
    assert "mimbench_register_maskers(register: Register) -> None" in page
    assert "```python\nregister(name: str, factory: Callable" in page  # the module docstring's "::" block
    assert "Optional:\n\n- ``predicts_image" in page  # a list after a line gets its blank line


def test_components_page_names_every_builtin_component_and_default(docs):
    page = docs.components_markdown()
    components = docs.builtin_components()
    assert {"seg_linear", "ema_teacher", "patch", "vit", "hog", "local", "tensorboard"} <= {c.name for c in components}
    for component in components:
        entry = page.split(f"{{#{component.kind}-{component.name}}}", 1)[1].split("\n### ", 1)[0]
        for name, param in component.params_summary().items():
            default = f"`{docs.yaml_value(param['default'])}`" if "default" in param else "required"
            declared = f"`{param['range']}`" if "range" in param else ""
            assert f"| `{name}` | `{param['type']}` | {declared} | {default} |" in entry, (component.kind, component.name, name)


def test_rest_to_markdown(docs):
    text = docs.rest_to_markdown("""Title.

    Call it so::

        f(x)

    Options:
    - ``a``: one
      continued
    - b, see :func:`mimbench.api.run` and <name>
    """)
    assert "Call it so:\n\n```python\nf(x)\n```" in text
    assert "Options:\n\n- ``a``: one\n  continued\n- b" in text
    assert "``mimbench.api.run``" in text and "&lt;name>" in text


def test_published_links_point_into_the_site(docs, tmp_path):
    suite = tmp_path / "toy"
    (suite / "figures").mkdir(parents=True)
    (suite / "figures" / "a.png").write_bytes(b"png")
    (suite / "report.md").write_text("# toy\n\n![A](figures/a.png) [csv](summary.csv) [b](figures/b.png)\n")
    (tmp_path / "README.md").write_text("[report](toy/report.md), [html](toy/report.html), "
                                        "[`script.sh`](../benchmarks/script.sh), [fig](toy/figures/a.png), "
                                        "[web](https://example.org)\n")
    assert docs.published_suites(tmp_path) == ["toy"]
    assert docs.published_figures("toy", tmp_path) == ["figures/a.png"]
    assert docs.published_report_markdown("toy", tmp_path) == "# toy\n\n![A](figures/a.png) `csv` `b`\n"
    assert docs.published_markdown(tmp_path) == ("[report](toy/report.md), `html`, `script.sh`, "
                                                 "[fig](toy/figures/a.png), [web](https://example.org)\n")


def test_mkdocs_build_strict(tmp_path):
    if importlib.util.find_spec("mkdocs") is None or importlib.util.find_spec("material") is None:
        pytest.skip("mkdocs and mkdocs-material are not installed (pip install -e '.[docs]')")
    site = tmp_path / "site"
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(site)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    suite = (site / "reference" / "suite" / "index.html").read_text()
    for key in ("train.checkpoint_every", "train.budget_flops", "eval.reference_masker", "execution.threads_per_run"):
        assert f'id="{key}"' in suite, key
    cli = (site / "reference" / "cli" / "index.html").read_text()
    assert 'id="mimbench-run"' in cli and "--rerun-changed" in cli
    hooks = (site / "reference" / "hooks" / "index.html").read_text()
    assert 'id="mimbench_register_targets"' in hooks and 'id="mimbench_register_maskers"' in hooks
    components = (site / "reference" / "components" / "index.html").read_text()
    assert 'id="probe-seg_linear"' in components and 'id="target-ema_teacher"' in components
    assert (site / "reference" / "api" / "index.html").read_text().count('id="mimbench.api.run"') == 1
    published = (site / "published" / "index.html").read_text()
    for report in (ROOT / "results").glob("*/report.md"):
        assert (site / "published" / report.parent.name / "report" / "index.html").is_file()
        assert f'href="{report.parent.name}/report/"' in published
