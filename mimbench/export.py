"""``mimbench export``: a run's pre-trained encoder as a plain backbone of another library.

An encoder that can be exported has a ``backbone()`` method (see ``mimbench_register_encoders``)
returning a :class:`Backbone`: the state_dict of a model that timm, torchvision or torch builds,
without what only masked pre-training needs (the mask token; the decoder is never in
``encoder.pt``), and the Python that builds that model. :func:`export_run` rebuilds the run's
encoder from its ``config.json``, loads ``encoder.pt`` and writes two files:

- ``FILE`` (default ``RUN_DIR/backbone.pt``): the backbone's state_dict (``torch.save``);
- ``FILE`` with ``.json``: how to use it, with ``python``: code that builds the model and loads
  the file with ``strict=True``, ``output``: what the model returns in mimbench's terms, and
  ``normalization``: the per-channel mean and std the images must be normalised with.
"""

from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Union

import torch

from mimbench.errors import ConfigError, cut, first_line
from mimbench.folder import CONFIG_FILE, ENCODER_FILE, DamagedFile, RunFolder, write_atomic
from mimbench.protocols import capability
from mimbench.registry import Registry
from mimbench.specs import Status

FORMAT = "mimbench-backbone/1"


@dataclass(frozen=True)
class Backbone:
    """A pre-trained encoder as another library's model.

    ``state_dict`` loads with ``strict=True`` into the model that ``build`` makes (Python,
    imports included, binding ``model``); ``library`` names what builds it (``timm``,
    ``torchvision``, ``torch``); ``output`` says what the model returns, in terms of mimbench's
    feature grid [B, out_dim, S / stride, S / stride]."""

    state_dict: dict[str, torch.Tensor]
    library: str
    build: str
    output: str


Replacement = Union[str, Callable[["re.Match[str]"], str], None]


def renamed(state: dict[str, torch.Tensor], rules: list[tuple[str, Replacement]]) -> dict[str, torch.Tensor]:
    """``state`` with its keys rewritten by the first matching ``(regex, replacement)`` rule
    (``re.sub``'s replacement: a string or a function of the match; None drops the key). A key no rule matches is a ValueError: nothing is
    dropped by accident."""
    out = {}
    for key, value in state.items():
        for pattern, replacement in rules:
            if re.fullmatch(pattern, key):
                if replacement is not None:
                    out[re.sub(pattern, replacement, key)] = value.detach().clone()
                break
        else:
            raise ValueError(f"no export rule for the encoder's {key!r}")
    return out


def export_run(run_dir: Path, registry: Registry, out: Path | None = None) -> tuple[Path, Path]:
    """Write ``run_dir``'s encoder as a backbone (``out``, default ``run_dir/backbone.pt``) and
    its description (the same path with ``.json``); returns both paths. Bad input (not a run
    folder, no ``encoder.pt``, an encoder without ``backbone()``) is a ConfigError."""
    run_dir = Path(run_dir)
    encoder, config = build_run_encoder(run_dir, registry)
    check_trained(RunFolder(run_dir), encoder)
    name = config["encoder"]["name"]
    if capability("encoder", encoder, "backbone") is None:
        raise ConfigError(f"encoder {name!r} cannot be exported as a backbone (it has no backbone() "
                          f"method); its state_dict is {RunFolder(run_dir).encoder_path}")
    try:
        backbone = encoder.backbone()
    except (RuntimeError, ValueError) as exc:
        raise ConfigError(f"encoder {name!r} of {run_dir}: {first_line(exc)}") from None
    out = Path(out) if out is not None else run_dir / "backbone.pt"
    description = out.with_suffix(".json")
    buffer = io.BytesIO()
    torch.save({key: value.detach().cpu().contiguous() for key, value in backbone.state_dict.items()}, buffer)
    write_atomic(out, buffer.getvalue())
    write_atomic(description, json.dumps(describe(config, backbone, out.name), indent=2) + "\n")
    return out, description


def check_trained(run: RunFolder, encoder: torch.nn.Module) -> None:
    """Raise a ConfigError unless ``encoder`` (``run``'s, loaded) is worth exporting: not from a run
    that diverged, and no NaN or infinite weight."""
    record = run.finished_record() or {}
    if record.get("status") == Status.DIVERGED.value:
        raise ConfigError(f"{run.path}: the run diverged (its loss became {record.get('diverged_loss', 'NaN')} after "
                          f"{record.get('epochs_completed', '?')} finished epochs), so its encoder is no trained "
                          f"backbone; nothing was written (export a run whose status is done)")
    state = encoder.state_dict()
    broken = [key for key, value in state.items() if value.is_floating_point() and not torch.isfinite(value).all()]
    if broken:
        raise ConfigError(f"{run.encoder_path}: {len(broken)} of {len(state)} tensors hold NaN or infinite values "
                          f"(e.g. {broken[0]!r}): no usable backbone; nothing was written")


def describe(config: dict[str, Any], backbone: Backbone, weights: str) -> dict[str, Any]:
    """The JSON written next to the weights: where they come from and how to use them."""
    load = f"model.load_state_dict(torch.load({weights!r}, map_location='cpu', weights_only=True), strict=True)"
    return {
        "format": FORMAT,
        "weights": weights,
        "library": backbone.library,
        "python": "\n".join(["import torch", backbone.build, load, "model.eval()"]),
        "output": backbone.output,
        "input": f"images [B, {len(config['normalization']['mean'])}, {config['image_size']}, "
                 f"{config['image_size']}] in [0, 1], then (x - mean) / std per channel",
        "normalization": config["normalization"],
        "image_size": config["image_size"],
        "in_channels": len(config["normalization"]["mean"]),
        "encoder": config["encoder"],
        "run_id": config.get("run_id"),
        "suite": config.get("suite"),
        "label": config.get("label"),
    }


def build_run_encoder(run_dir: Path, registry: Registry) -> tuple[torch.nn.Module, dict[str, Any]]:
    """A finished run's trained encoder, built from its ``config.json`` through ``registry`` with
    the weights of its ``encoder.pt`` (on the CPU, in training mode), and that config. Bad input
    (not a run folder, a baseline, no or a damaged ``encoder.pt``) is a ConfigError."""
    run = RunFolder(Path(run_dir))
    config = _read_config(run)
    if not run.has_encoder():
        raise ConfigError(f"no {ENCODER_FILE} in {run.path}: only pre-trained runs have one "
                          f"(baselines do not; a run still training, or that failed before training ended, has none)")
    spec = config["encoder"]
    params = dict(spec.get("params") or {})
    if "pretrained" in params:  # the weights come from encoder.pt: nothing to download
        params["pretrained"] = False
    channels = len(config["normalization"]["mean"])
    encoder = registry.build("encoder", spec["name"], params, in_channels=channels, image_size=config["image_size"])
    try:
        state = run.encoder_state()
    except Exception as exc:  # truncated or garbled: zip, pickle and EOF errors alike
        raise ConfigError(f"{run.encoder_path}: damaged, not a state_dict torch can load ({type(exc).__name__}: "
                          f"{cut(str(exc), 120)})") from None
    try:
        encoder.load_state_dict(state)
    except (RuntimeError, ValueError) as exc:
        raise ConfigError(f"encoder {spec['name']!r} of {run.path}: {first_line(exc)}") from None
    return encoder, config


def _read_config(run: RunFolder) -> dict[str, Any]:
    if not run.path.is_dir():
        raise ConfigError(f"run folder not found: {run.path}")
    try:
        config = run.read_config()
    except FileNotFoundError:
        raise ConfigError(f"no {CONFIG_FILE} in {run.path}: not a run folder (OUT/<suite>/runs/<run_id>)") from None
    except DamagedFile as exc:
        raise ConfigError(f"{run.path}: {exc}") from None
    if config.get("baseline") is not None or config.get("encoder") is None:
        raise ConfigError(f"{run.path} is a baseline: it has no pre-trained encoder to export")
    normalization, encoder = config.get("normalization"), config.get("encoder")
    if not isinstance(normalization, dict) or not isinstance(normalization.get("mean"), list) \
            or not isinstance(config.get("image_size"), int) or not isinstance(encoder, dict) \
            or not isinstance(encoder.get("name"), str) or not isinstance(encoder.get("params", {}), dict):
        raise ConfigError(f"{run.path / CONFIG_FILE}: not a mimbench run config (its normalization, image_size or "
                          f"encoder is missing or of the wrong type)")
    return config
