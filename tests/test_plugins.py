"""Plugin discovery, tested for real: an installed distribution (a dist-info folder on
sys.path), local plugin files and modules, $MIMBENCH_PLUGINS, broken and misspelled
plugins, duplicate names, and the registry's parameter validation."""

from __future__ import annotations

import json
import os
import pickle
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import mimbench
from mimbench.cli import cli
from mimbench.contract import check_mask
from mimbench.errors import ConfigError
from mimbench.plugins import ENV_VAR, load_plugins
from mimbench.registry import Registry

CONSOLE_SCRIPT = Path(sys.executable).parent / "mimbench"
BUILTIN_MASKERS = {"pixel", "patch", "region"}

# A real third-party masker: hides every other band of `band` rows.
STRIPES_PLUGIN = '''
"""acme's mask strategies."""

import torch

from mimbench.plugin import hookimpl


class StripesMasker:
    """Hide every other band of `band` rows (rows band..2*band-1, 3*band..4*band-1, ...).

    Deterministic: the generator is accepted and ignored.
    """

    def __init__(self, band: int = 2):
        if band < 1:
            raise ValueError(f"band must be >= 1, got {band}")
        self.band = band

    def __call__(self, images, generator=None):
        b, _, h, w = images.shape
        rows = torch.arange(h, device=images.device)
        hidden = (rows // self.band) % 2 == 1
        return hidden.view(1, h, 1).expand(b, h, w).clone()


@hookimpl
def mimbench_register_maskers(register):
    register("stripes", StripesMasker)
'''


def _runner() -> CliRunner:
    try:  # click < 8.2 mixes stderr into the output unless told not to
        return CliRunner(mix_stderr=False)
    except TypeError:  # click >= 8.2: stderr is always separate
        return CliRunner()


def _write_plugin(folder: Path, module: str, body: str) -> Path:
    path = folder / f"{module}.py"
    path.write_text(textwrap.dedent(body))
    return path


def _subprocess_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in (ENV_VAR, "PYTHONPATH")}
    env.update(extra)
    return env


def _one_line_error(result) -> str:
    assert result.exit_code == 2, (result.exit_code, result.output)
    assert isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: ")
    return lines[0]


@pytest.fixture(autouse=True)
def isolated_plugins(monkeypatch):
    """No $MIMBENCH_PLUGINS from outside; modules imported by a test are forgotten after it."""
    monkeypatch.delenv(ENV_VAR, raising=False)
    before = set(sys.modules)
    yield
    for name in set(sys.modules) - before:
        if name.startswith(("acme_", "mbt_")):
            del sys.modules[name]


@pytest.fixture
def acme_dist(tmp_path, monkeypatch):
    """acme-masks 1.2.3, 'installed': a module plus its dist-info folder, on sys.path."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "acme_masks.py").write_text(STRIPES_PLUGIN)
    info = site / "acme_masks-1.2.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-masks\nVersion: 1.2.3\n")
    (info / "entry_points.txt").write_text("[mimbench]\nacme = acme_masks\n")
    monkeypatch.syspath_prepend(str(site))
    return site


# ------------------------------------------------------------------------------------------
# An installed distribution
# ------------------------------------------------------------------------------------------


def test_entry_point_plugin_is_discovered_with_its_distribution(acme_dist):
    plugins = load_plugins(use_env=False)
    assert plugins.failures == []
    registry = Registry(plugins)

    stripes = registry.get("masker", "stripes")
    assert (stripes.provider.name, stripes.provider.version) == ("acme-masks", "1.2.3")
    assert stripes.description == "Hide every other band of `band` rows (rows band..2*band-1, 3*band..4*band-1, ...)."
    assert stripes.plugin == "acme-masks:acme"
    assert plugins.providers["acme-masks:acme"].name == "acme-masks"

    # The built-ins are still there, provided by mimbench itself.
    assert BUILTIN_MASKERS <= set(registry.names("masker"))
    for name in BUILTIN_MASKERS:
        provider = registry.get("masker", name).provider
        assert (provider.name, provider.version) == ("mimbench", mimbench.__version__)
    # Built-ins are registered first.
    assert list(plugins.providers)[-1] == "acme-masks:acme"

    # The masker works: bands of 2 rows alternate visible / hidden.
    masker = registry.build("masker", "stripes", {"band": 2})
    images = torch.zeros(3, 1, 8, 6)
    mask = check_mask(masker(images), images)
    expected_rows = torch.tensor([False, False, True, True, False, False, True, True])
    assert torch.equal(mask, expected_rows.view(1, 8, 1).expand(3, 8, 6))
    assert mask.float().mean().item() == 0.5


def test_entry_point_plugin_through_the_cli(acme_dist):
    if not CONSOLE_SCRIPT.exists():
        pytest.skip(f"no console script at {CONSOLE_SCRIPT}")
    proc = subprocess.run(
        [str(CONSOLE_SCRIPT), "plugins", "--json", "--kind", "masker"],
        capture_output=True, text=True, timeout=120, env=_subprocess_env(PYTHONPATH=str(acme_dist)),
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["failed_plugins"] == []
    rows = {row["name"]: row for row in data["components"]}
    assert rows["stripes"] == {
        "kind": "masker", "name": "stripes", "provider": "acme-masks", "version": "1.2.3",
        "description": "Hide every other band of `band` rows (rows band..2*band-1, 3*band..4*band-1, ...).",
        "params": {"band": {"type": "int", "default": 2}},
    }
    assert {rows[n]["provider"] for n in BUILTIN_MASKERS} == {"mimbench"}
    assert {row["kind"] for row in data["components"]} == {"masker"}


# ------------------------------------------------------------------------------------------
# Local plugin files and modules
# ------------------------------------------------------------------------------------------


def test_plugin_file_by_path(tmp_path):
    path = _write_plugin(tmp_path, "mbt_stripes_file", STRIPES_PLUGIN)
    plugins = load_plugins([str(path)], use_env=False)
    assert plugins.failures == []
    registry = Registry(plugins)
    stripes = registry.get("masker", "stripes")
    assert stripes.provider.name == str(path.resolve())
    assert stripes.provider.version == ""
    assert stripes.plugin == str(path)
    # Classes from a plugin file stay picklable (spawned workers, torch.save).
    masker = registry.build("masker", "stripes", {"band": 3})
    clone = pickle.loads(pickle.dumps(masker))
    assert type(clone) is type(masker) and clone.band == 3


def test_plugin_file_by_relative_path_has_resolved_provider(tmp_path, monkeypatch):
    _write_plugin(tmp_path, "mbt_stripes_rel", STRIPES_PLUGIN)
    monkeypatch.chdir(tmp_path)
    registry = Registry(load_plugins(["mbt_stripes_rel.py"], use_env=False))
    assert registry.get("masker", "stripes").provider.name == str((tmp_path / "mbt_stripes_rel.py").resolve())


def test_plugin_by_dotted_module_name(tmp_path, monkeypatch):
    package = tmp_path / "mbt_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "masks.py").write_text(STRIPES_PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    plugins = load_plugins(["mbt_pkg.masks"], use_env=False)
    assert plugins.failures == []
    registry = Registry(plugins)
    stripes = registry.get("masker", "stripes")
    # Not from any distribution: the module name is the provider.
    assert (stripes.provider.name, stripes.provider.version) == ("mbt_pkg.masks", "")
    assert stripes.factory.__module__ == "mbt_pkg.masks"


def test_plugins_from_the_environment_variable(tmp_path, monkeypatch):
    first = _write_plugin(tmp_path, "mbt_env_one", STRIPES_PLUGIN)
    second = _write_plugin(tmp_path, "mbt_env_two", '''
        from mimbench.plugin import hookimpl

        def half_l1(pred, target, mask):
            """Half the mean absolute error over all pixels."""
            return (pred - target).abs().mean() / 2

        def make_half_l1():
            """A deliberately halved L1 loss."""
            return half_l1

        @hookimpl
        def mimbench_register_losses(register):
            register("half-l1", make_half_l1)
    ''')
    monkeypatch.setenv(ENV_VAR, f"{first}{os.pathsep}{os.pathsep}{second}")  # empty entries are skipped
    plugins = load_plugins()
    assert plugins.failures == []
    registry = Registry(plugins)
    assert registry.get("masker", "stripes").provider.name == str(first.resolve())
    half = registry.get("loss", "half-l1")
    assert half.provider.name == str(second.resolve())
    assert half.description == "A deliberately halved L1 loss."
    loss = registry.build("loss", "half-l1", {})
    assert loss(torch.ones(1, 1, 2, 2), torch.zeros(1, 1, 2, 2), None).item() == 0.5

    # use_env=False ignores the variable.
    assert "stripes" not in Registry(load_plugins(use_env=False)).names("masker")


# ------------------------------------------------------------------------------------------
# Broken, misspelled and duplicate plugins
# ------------------------------------------------------------------------------------------

BROKEN_IMPORT = '''
import mbt_no_such_dependency
'''
BROKEN_SYNTAX = '''
from mimbench.plugin import hookimpl

def mimbench_register_maskers(register)
    pass
'''


@pytest.mark.parametrize(
    ("body", "error_start"),
    [(BROKEN_IMPORT, "ModuleNotFoundError: No module named 'mbt_no_such_dependency'"),
     (BROKEN_SYNTAX, "SyntaxError: ")],
    ids=["import-error", "syntax-error"],
)
def test_broken_plugin_is_reported_and_the_rest_works(tmp_path, body, error_start):
    path = _write_plugin(tmp_path, "mbt_broken", body)
    plugins = load_plugins([str(path)], use_env=False)
    assert len(plugins.failures) == 1
    failure = plugins.failures[0]
    assert failure.name == str(path)
    assert failure.error.startswith(error_start)
    assert "\n" not in failure.error
    assert str(path) not in plugins.providers
    assert "mbt_broken" not in sys.modules  # a half-imported module is not left behind

    registry = Registry(plugins)
    assert BUILTIN_MASKERS <= set(registry.names("masker"))
    # Asking for a component that the broken plugin would have provided points at the failure.
    with pytest.raises(ConfigError, match="failed to load") as info:
        registry.get("masker", "stripes")
    assert str(path) in str(info.value)


def test_broken_plugin_does_not_stop_the_cli(tmp_path):
    """A plugin found (here through $MIMBENCH_PLUGINS) that fails is a warning; one named with
    --plugin is bad input (tests/test_hardening.py)."""
    path = _write_plugin(tmp_path, "mbt_broken_cli", BROKEN_IMPORT)
    result = _runner().invoke(cli, ["plugins"], env={ENV_VAR: str(path)})
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert warnings == [
        f"warning: plugin {str(path)!r} failed to load: "
        "ModuleNotFoundError: No module named 'mbt_no_such_dependency'"
    ]
    rows = [line.split()[:3] for line in result.stdout.splitlines()[1:]]
    assert ["masker", "patch", "mimbench"] in rows
    assert ["encoder", "cnn", "mimbench"] in rows


def test_missing_plugin_file_is_a_failure_not_a_crash(tmp_path):
    missing = str(tmp_path / "mbt_nowhere.py")
    plugins = load_plugins([missing], use_env=False)
    assert [(f.name, f.error) for f in plugins.failures] == [
        (missing, f"FileNotFoundError: no such plugin file: {missing}")
    ]


def test_misspelled_hook_is_left_out_with_a_suggestion(tmp_path):
    misspelled = _write_plugin(tmp_path, "mbt_typo", '''
        from mimbench.plugin import hookimpl

        class Everything:
            """Hide everything."""
            def __call__(self, images, generator=None):
                return images.new_ones(images.shape[0], *images.shape[2:], dtype=bool)

        @hookimpl
        def mimbench_register_masker(register):
            register("everything", Everything)
    ''')
    good = _write_plugin(tmp_path, "mbt_after_typo", STRIPES_PLUGIN)
    plugins = load_plugins([str(misspelled), str(good)], use_env=False)
    assert [f.name for f in plugins.failures] == [str(misspelled)]
    error = plugins.failures[0].error
    assert "unknown hook 'mimbench_register_masker'" in error
    assert "did you mean 'mimbench_register_maskers'" in error
    assert str(misspelled) not in plugins.providers
    assert str(misspelled) not in [name for name, _ in plugins.manager.list_name_plugin()]

    # The plugin after it still loads, and nothing of the misspelled one is registered.
    registry = Registry(plugins)
    assert "stripes" in registry.names("masker")
    assert "everything" not in registry.names("masker")


DUPLICATE_PATCH = '''
from mimbench.plugin import hookimpl

class MyPatch:
    """Another masker called patch."""
    def __call__(self, images, generator=None):
        return images.new_zeros(images.shape[0], *images.shape[2:], dtype=bool)

@hookimpl
def mimbench_register_maskers(register):
    register("patch", MyPatch)
'''


def test_duplicate_name_names_both_providers(tmp_path):
    path = _write_plugin(tmp_path, "mbt_dup", DUPLICATE_PATCH)
    plugins = load_plugins([str(path)], use_env=False)
    assert plugins.failures == []
    with pytest.raises(ConfigError) as info:
        Registry(plugins)
    message = str(info.value)
    assert "'patch' is registered twice" in message
    assert f"mimbench {mimbench.__version__}" in message
    assert str(path.resolve()) in message
    assert message.index("mimbench") < message.index(str(path.resolve()))  # the first one first
    assert "\n" not in message


def test_duplicate_name_through_the_cli(tmp_path, monkeypatch):
    _write_plugin(tmp_path, "mbt_dup_cli", DUPLICATE_PATCH)
    monkeypatch.chdir(tmp_path)
    result = _runner().invoke(cli, ["plugins", "--plugin", "mbt_dup_cli.py"])
    line = _one_line_error(result)
    assert "masker 'patch' is registered twice" in line
    assert "mimbench" in line and str((tmp_path / "mbt_dup_cli.py").resolve()) in line
    assert result.stdout == ""


# ------------------------------------------------------------------------------------------
# register(): descriptions
# ------------------------------------------------------------------------------------------

DESCRIPTIONS_PLUGIN = '''
import torch
from torch import nn

from mimbench.plugin import hookimpl


def documented():
    """
    First line, after a blank one.

    More text that is not part of the description.
    """
    return lambda pred, target, mask: (pred - target).abs().mean()


def undocumented():
    return lambda pred, target, mask: (pred - target).abs().mean()


class Documented:
    """A class docstring."""

    def __call__(self, images, generator=None):
        return images.new_zeros(images.shape[0], *images.shape[2:], dtype=torch.bool)


class Undocumented:
    def __call__(self, images, generator=None):
        return images.new_zeros(images.shape[0], *images.shape[2:], dtype=torch.bool)


class BareEncoder(nn.Module):
    def __init__(self, in_channels: int, image_size: int):
        super().__init__()
        self.out_dim, self.stride = in_channels, 1

    def forward(self, images, mask=None):
        return images


@hookimpl
def mimbench_register_losses(register):
    register("doc-default", documented)
    register("doc-none", undocumented)
    register("doc-explicit", documented, description="Explicit words win.")
    register("doc-explicit-none", documented, description=None)


@hookimpl
def mimbench_register_maskers(register):
    register("doc-class", Documented)
    register("doc-class-none", Undocumented)


@hookimpl
def mimbench_register_encoders(register):
    register("doc-module-none", BareEncoder)
'''


@pytest.fixture
def descriptions_registry(tmp_path):
    path = _write_plugin(tmp_path, "mbt_descriptions", DESCRIPTIONS_PLUGIN)
    plugins = load_plugins([str(path)], use_env=False)
    assert plugins.failures == []
    return Registry(plugins)


def test_description_defaults_to_the_first_docstring_line(descriptions_registry):
    describe = lambda kind, name: descriptions_registry.get(kind, name).description  # noqa: E731
    assert describe("loss", "doc-default") == "First line, after a blank one."
    assert describe("loss", "doc-explicit-none") == "First line, after a blank one."
    assert describe("loss", "doc-none") == ""
    assert describe("loss", "doc-explicit") == "Explicit words win."
    assert describe("masker", "doc-class") == "A class docstring."
    assert describe("masker", "doc-class-none") == ""


def test_undocumented_module_has_no_inherited_description(descriptions_registry):
    assert descriptions_registry.get("encoder", "doc-module-none").description == ""


# ------------------------------------------------------------------------------------------
# Registry.resolve_params / build / get
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def builtins() -> Registry:
    return Registry(load_plugins(use_env=False))


REQUIRED_PLUGIN = '''
from mimbench.plugin import hookimpl

class Ruler:
    """Hide the first `rows` rows."""

    def __init__(self, rows: int, strict: bool = False, scale: float = 1.0, label: str | None = None):
        self.rows = rows

    def __call__(self, images, generator=None):
        b, _, h, w = images.shape
        mask = images.new_zeros(b, h, w, dtype=bool)
        mask[:, : self.rows] = True
        return mask

@hookimpl
def mimbench_register_maskers(register):
    register("ruler", Ruler)
'''


def test_unknown_param_names_component_key_allowed_and_suggestion(builtins):
    with pytest.raises(ConfigError) as info:
        builtins.resolve_params("masker", "patch", {"ratoi": 0.5})
    assert str(info.value) == (
        "masker 'patch': unknown param 'ratoi'; did you mean 'ratio'? (allowed: ratio, mask_patch_size)"
    )


def test_unknown_param_without_close_match(builtins):
    with pytest.raises(ConfigError) as info:
        builtins.resolve_params("masker", "pixel", {"colour": "red"})
    assert str(info.value) == "masker 'pixel': unknown param 'colour' (allowed: ratio)"


def test_missing_required_param(tmp_path):
    path = _write_plugin(tmp_path, "mbt_required", REQUIRED_PLUGIN)
    registry = Registry(load_plugins([str(path)], use_env=False))
    with pytest.raises(ConfigError) as info:
        registry.resolve_params("masker", "ruler", {"strict": True})
    message = str(info.value)
    assert message.startswith("masker 'ruler': missing required param 'rows'")
    assert "allowed: rows, strict, scale, label" in message
    # Given, it resolves, with the defaults filled in (an Optional param accepts None and str).
    assert registry.resolve_params("masker", "ruler", {"rows": 3}) == {
        "rows": 3, "strict": False, "scale": 1.0, "label": None}
    assert registry.resolve_params("masker", "ruler", {"rows": 3, "label": "x"})["label"] == "x"
    with pytest.raises(ConfigError, match="param 'label' must be"):
        registry.resolve_params("masker", "ruler", {"rows": 3, "label": 5})


@pytest.mark.parametrize(
    ("name", "params", "expected"),
    [
        ("patch", {"ratio": "0.5"}, "masker 'patch': param 'ratio' must be float, got str '0.5'"),
        ("patch", {"ratio": None}, "masker 'patch': param 'ratio' must be float, got NoneType None"),
        ("patch", {"ratio": True}, "masker 'patch': param 'ratio' must be float, got bool True"),
        ("patch", {"mask_patch_size": 4.0}, "masker 'patch': param 'mask_patch_size' must be int, got float 4.0"),
        ("patch", {"mask_patch_size": True}, "masker 'patch': param 'mask_patch_size' must be int, got bool True"),
        ("patch", {"mask_patch_size": [4]}, "masker 'patch': param 'mask_patch_size' must be int, got list [4]"),
    ],
    ids=["str-for-float", "none-for-float", "bool-for-float", "float-for-int", "bool-for-int", "list-for-int"],
)
def test_wrong_types_are_rejected(builtins, name, params, expected):
    with pytest.raises(ConfigError) as info:
        builtins.resolve_params("masker", name, params)
    assert str(info.value) == expected


def test_int_for_float_is_accepted_as_float(builtins):
    resolved = builtins.resolve_params("masker", "pixel", {"ratio": 1})
    assert resolved == {"ratio": 1.0} and type(resolved["ratio"]) is float
    resolved = builtins.resolve_params("masker", "region", {"min_area": 0, "max_rounds": 16})
    assert type(resolved["min_area"]) is float and type(resolved["max_rounds"]) is int


def test_defaults_are_filled_in(builtins):
    assert builtins.resolve_params("masker", "region", {}) == {
        "ratio": 0.6, "min_area": 0.02, "aspect": 0.3, "max_rounds": 256}
    assert builtins.resolve_params("masker", "patch", {"ratio": 0.75}) == {"ratio": 0.75, "mask_patch_size": 4}
    assert builtins.resolve_params("loss", "l1", {}) == {"masked_only": True, "norm_pix": False, "norm_pix_patch_size": 4}
    assert builtins.resolve_params("encoder", "cnn", {}) == {"hidden_dim": 64}


@pytest.mark.parametrize(
    ("kind", "name", "key"),
    [("encoder", "cnn", "in_channels"), ("encoder", "cnn", "image_size"),
     ("dataset", "shapes", "split"), ("dataset", "shapes", "image_size")],
)
def test_context_params_cannot_be_set(builtins, kind, name, key):
    with pytest.raises(ConfigError) as info:
        builtins.resolve_params(kind, name, {key: 3})
    message = str(info.value)
    assert message.startswith(f"{kind} {name!r}: unknown param {key!r}; it is set by mimbench, not by the suite")
    assert key not in message.split("allowed:")[1]


def test_build_turns_a_constructor_value_error_into_one_config_error(builtins):
    with pytest.raises(ConfigError) as info:
        builtins.build("masker", "patch", {"ratio": 1.5})
    assert str(info.value) == "masker 'patch': ratio must be in (0, 1), got 1.5"
    assert isinstance(info.value.__cause__, ValueError)


def test_build_passes_only_the_context_a_factory_accepts(builtins):
    encoder = builtins.build("encoder", "cnn", {"hidden_dim": 8}, in_channels=3, image_size=16, unused=1)
    assert (encoder.out_dim, encoder.stride) == (8, 4)
    assert encoder(torch.zeros(2, 3, 16, 16)).shape == (2, 8, 4, 4)
    masker = builtins.build("masker", "patch", {"ratio": 0.5, "mask_patch_size": 4}, image_size=16)
    mask = masker(torch.zeros(2, 1, 16, 16), torch.Generator().manual_seed(0))
    assert mask.float().mean(dim=(1, 2)).tolist() == [0.5, 0.5]  # ceil(16 * 0.5) = 8 of 16 cells


def test_get_unknown_name_suggests_and_lists(builtins):
    with pytest.raises(ConfigError) as info:
        builtins.get("masker", "pach")
    message = str(info.value)
    # Other built-in maskers may be added later: the known list is checked by inclusion.
    assert message.startswith("unknown masker 'pach'; did you mean 'patch'? (known: ")
    known = message.split("(known: ")[1].rstrip(")").split(", ")
    assert BUILTIN_MASKERS <= set(known) and known == sorted(known)
    with pytest.raises(ConfigError) as info:
        builtins.get("loss", "zzz")
    assert "did you mean" not in str(info.value)
    assert "l1" in str(info.value) and "mse" in str(info.value)


# ------------------------------------------------------------------------------------------
# mimbench_register_commands
# ------------------------------------------------------------------------------------------

COMMAND_PLUGIN = '''
import click

from mimbench.plugin import hookimpl


@click.command()
@click.option("--name", default="world")
def hello(name):
    """Say hello (from a plugin)."""
    click.echo(f"hello {name} from a plugin")


@hookimpl
def mimbench_register_commands(cli):
    cli.add_command(hello)
'''


def test_plugin_adds_a_cli_command(tmp_path):
    if not CONSOLE_SCRIPT.exists():
        pytest.skip(f"no console script at {CONSOLE_SCRIPT}")
    path = _write_plugin(tmp_path, "mbt_hello", COMMAND_PLUGIN)
    env = _subprocess_env(**{ENV_VAR: str(path)})
    proc = subprocess.run([str(CONSOLE_SCRIPT), "hello", "--name", "acme"],
                          capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "hello acme from a plugin\n"


# ------------------------------------------------------------------------------------------
# Module names of plugin files
# ------------------------------------------------------------------------------------------

NAMED_PLUGIN = '''
from mimbench.plugin import hookimpl

class {cls}:
    """{cls}."""
    def __call__(self, images, generator=None):
        return images.new_zeros(images.shape[0], *images.shape[2:], dtype=bool)

@hookimpl
def mimbench_register_maskers(register):
    register("{name}", {cls})
'''


def test_two_plugin_files_with_the_same_name_both_stay_picklable(tmp_path):
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    first = tmp_path / "one" / "mbt_masks.py"
    second = tmp_path / "two" / "mbt_masks.py"
    first.write_text(NAMED_PLUGIN.format(cls="First", name="first"))
    second.write_text(NAMED_PLUGIN.format(cls="Second", name="second"))
    plugins = load_plugins([str(first), str(second)], use_env=False)
    assert plugins.failures == []
    registry = Registry(plugins)
    for name in ("first", "second"):
        masker = registry.build("masker", name, {})
        assert type(pickle.loads(pickle.dumps(masker))) is type(masker)


def test_plugin_file_does_not_shadow_an_imported_module(tmp_path, monkeypatch):
    import colorsys

    monkeypatch.setitem(sys.modules, "colorsys", colorsys)  # restored after the test, whatever happens
    path = tmp_path / "colorsys.py"
    path.write_text(NAMED_PLUGIN.format(cls="Colour", name="colour"))
    plugins = load_plugins([str(path)], use_env=False)
    assert "colour" in Registry(plugins).names("masker")
    assert sys.modules["colorsys"] is colorsys


NO_STRIDE = '''
import torch
from torch import nn
from mimbench.plugin import hookimpl


class Flat(nn.Module):
    """An encoder that forgot its stride."""
    def __init__(self, in_channels, image_size):
        super().__init__()
        self.out_dim = 4
        self.conv = nn.Conv2d(in_channels, 4, 1)

    def forward(self, images, mask=None):
        return self.conv(images)


@hookimpl
def mimbench_register_encoders(register):
    register("flat", Flat)
'''


def test_a_component_lacking_what_its_kind_requires_is_refused_when_built(tmp_path):
    """The contract classes are exported, and checked once, when the dry run builds the component."""
    from click.testing import CliRunner

    from mimbench.cli import cli
    from mimbench.plugin import Dataset, Decoder, Encoder, Executor, Loss, Masker, Probe, Target, Tracker
    from mimbench.protocols import missing

    assert Masker.deterministic is False and Target.predicts_image is False and Probe.needs_masks is False
    assert {c.__name__ for c in (Dataset, Decoder, Encoder, Executor, Loss, Masker, Probe, Target, Tracker)} == {
        "Dataset", "Decoder", "Encoder", "Executor", "Loss", "Masker", "Probe", "Target", "Tracker"}
    assert missing("masker", object()) == ["__call__"] and missing("loss", lambda p, t, m: p) == []
    plugin = tmp_path / "flat.py"
    plugin.write_text(NO_STRIDE)
    result = CliRunner().invoke(cli, ["run", "--dry-run", "--plugin", str(plugin), "--set", "grid.encoder=[flat]"])
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert lines[0].startswith("error: encoder 'flat' from "), lines[0]
    assert "returned a Flat without stride (the encoder contract: mimbench.plugin.Encoder)" in lines[0], lines[0]


FLAGGED = '''
from mimbench.plugin import hookimpl


class Flagged:
    channels, stride, predicts_image = 1, 1, "yes"

    def __call__(self, images):
        return images


@hookimpl
def mimbench_register_targets(register):
    register("flagged", lambda in_channels, image_size: Flagged())
'''


def test_a_capability_of_the_wrong_kind_is_refused_when_built_and_an_absent_one_has_the_contract_default(tmp_path):
    from click.testing import CliRunner

    from mimbench.cli import cli
    from mimbench.protocols import OPTIONAL, capability, malformed

    class Odd:
        channels, stride, predicts_image, to_image = 3, 1, "yes", 4

    assert malformed("target", Odd()) == ["predicts_image must be True or False, got 'yes'",
                                          "to_image must be a method (or absent), got int"]
    assert capability("target", object(), "predicts_image") is False and OPTIONAL["probe"]["layer"] is None
    with pytest.raises(KeyError, match="declares no optional 'colour'"):
        capability("target", Odd(), "colour")
    plugin = tmp_path / "flagged.py"
    plugin.write_text(FLAGGED)
    result = CliRunner().invoke(cli, ["run", "--dry-run", "--plugin", str(plugin), "--set", "grid.target=[flagged]"])
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert lines[0].startswith("error: target 'flagged' from ") and "predicts_image must be True or False, got " \
        "'yes' (the target contract: mimbench.plugin.Target)" in lines[0], lines[0]


def test_a_probe_output_is_checked_against_the_columns_it_declared():
    from mimbench.columns import MetricColumn
    from mimbench.contract import check_probe_output
    from mimbench.errors import ContractError

    declared = [MetricColumn("toy_acc", "toy", kind="accuracy"), MetricColumn("toy_steps", "steps", kind="count")]
    assert check_probe_output({"toy_acc": 0.5, "toy_steps": 10, "extra": 3.2}, declared) == {
        "toy_acc": 0.5, "toy_steps": 10, "extra": 3.2}
    assert check_probe_output({"toy_acc": float("nan")}, declared)  # nothing to score; a declared column left out
    for bad, says in [({"toy_acc": 87.0}, "declared an accuracy: a fraction in [0, 1]"),
                      ({"toy_steps": 2.5}, "declared a count: a whole number"),
                      ({"toy_acc": "high"}, "expected str keys and numbers"),
                      ([0.5], "expected a dict of column -> number")]:
        with pytest.raises(ContractError, match=re.escape(says)):
            check_probe_output(bad, declared, "probe 'toy'")
