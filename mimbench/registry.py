"""Components by kind and name, collected from the plugins' register hooks.

Also the one place where a suite's ``params`` are checked against a factory's
annotated signature, so that every mistake is reported the same way. A param's declared range is
``annotated-types`` metadata on its annotation (``Annotated[int, Interval(ge=2, le=360)]``; ``Ge``,
``Gt``, ``Le``, ``Lt`` alike), also inside a list or an optional type (``list[Annotated[int, ...]]``,
``Annotated[int, ...] | None``): a value outside it is refused before anything is built.
"""

from __future__ import annotations

import difflib
import functools
import gzip
import inspect
import math
import types
import typing
import zlib
from dataclasses import dataclass
from typing import Annotated, Any, Callable, Literal, Union

import annotated_types

from mimbench.errors import ConfigError, cut, first_line, one_line, shown
from mimbench.plugins import PluginSet, Provider
from mimbench.protocols import CONTRACTS, malformed, missing

#: What a damaged compressed or truncated file raises when read (``gzip``, ``zlib``, ``pickle``).
DAMAGED_FILE_ERRORS = (EOFError, zlib.error, gzip.BadGzipFile)

#: Parameters the core supplies to each kind of factory; a suite cannot set them.
CONTEXT_PARAMS: dict[str, tuple[str, ...]] = {
    "masker": (),
    "encoder": ("in_channels", "image_size"),
    "decoder": ("in_dim", "stride", "out_channels", "image_size"),
    "loss": (),
    "target": ("in_channels", "image_size", "encoder"),
    "dataset": ("split", "image_size"),
    "probe": (),
    "executor": ("suite_dir", "threads_per_run"),
    "tracker": ("suite_dir",),
}
KINDS = tuple(CONTEXT_PARAMS)
#: The register hook of each kind.
HOOKS = {kind: f"mimbench_register_{kind}s" for kind in KINDS} | {"loss": "mimbench_register_losses"}


@dataclass(frozen=True)
class Registration:
    """One registered factory."""

    kind: str
    name: str
    factory: Callable[..., Any]
    description: str
    provider: Provider
    plugin: str  # the plugin's name in the plugin manager

    def signature(self) -> inspect.Signature:
        return self._signature

    @functools.cached_property
    def _signature(self) -> inspect.Signature:
        return inspect.signature(self.factory)

    @functools.cached_property
    def hints(self) -> dict[str, Any]:
        """The factory's parameter annotations, resolved (once: a large sweep checks thousands of params)."""
        return _type_hints(self.factory)

    def user_params(self) -> dict[str, inspect.Parameter]:
        """The parameters a suite may set (everything but the context ones)."""
        return {
            name: p
            for name, p in self.signature().parameters.items()
            if name not in CONTEXT_PARAMS[self.kind] and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        }

    def params_summary(self) -> dict[str, dict[str, Any]]:
        """Each settable param: its type (as written in the signature) and default, if any."""
        hints = self.hints
        summary = {}
        for name, p in self.user_params().items():
            annotation = hints.get(name, Any)
            entry: dict[str, Any] = {"type": _type_name(annotation)}
            declared = range_text(annotation)
            if declared:
                entry["range"] = declared
            if p.default is not inspect.Parameter.empty:  # a grid's default (a tuple) shown as the YAML list it is
                entry["default"] = list(p.default) if isinstance(p.default, tuple) else p.default
            summary[name] = entry
        return summary

    def defaults(self) -> dict[str, Any]:
        return {n: p.default for n, p in self.user_params().items() if p.default is not inspect.Parameter.empty}


class Registry:
    """``kind -> name -> Registration`` for every plugin in a ``PluginSet``."""

    def __init__(self, plugins: PluginSet):
        self.plugins = plugins
        self._components: dict[str, dict[str, Registration]] = {kind: {} for kind in KINDS}
        for kind in KINDS:
            self._collect(kind)

    def _collect(self, kind: str) -> None:
        # Each plugin's hook is called on its own (through pluggy) so that every component knows its provider.
        for plugin_name, caller in self.plugins.each(HOOKS[kind]):  # in registration order: built-ins first
            provider = self.plugins.providers[plugin_name]

            def register(name: str, factory: Callable[..., Any], description: str | None = None,
                         _plugin=plugin_name, _provider=provider) -> None:
                self._add(Registration(kind, name, factory, description or _first_doc_line(factory), _provider, _plugin))

            try:
                caller(register=register)
            except ConfigError:
                raise
            except Exception as exc:
                raise ConfigError(f"plugin {plugin_name!r} failed in {HOOKS[kind]}: {one_line(exc)}") from exc

    def _add(self, component: Registration) -> None:
        existing = self._components[component.kind].get(component.name)
        if existing is not None:
            raise ConfigError(
                f"{component.kind} {component.name!r} is registered twice: by {_describe(existing)} "
                f"and by {_describe(component)}"
            )
        if not callable(component.factory):
            raise ConfigError(f"{component.kind} {component.name!r} from {_describe(component)}: factory is not callable")
        self._components[component.kind][component.name] = component

    def names(self, kind: str) -> list[str]:
        return sorted(self._components[kind])

    def all(self) -> list[Registration]:
        return [c for kind in KINDS for _, c in sorted(self._components[kind].items())]

    def get(self, kind: str, name: str) -> Registration:
        try:
            return self._components[kind][name]
        except KeyError:
            pass
        known = self.names(kind)
        close = difflib.get_close_matches(str(name)[:100], known, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        failed = "".join(f" (plugin {f.name!r} failed to load: {cut(f.error, 120)})" for f in self.plugins.failures)
        loaded = ", ".join(sorted({p.name for p in self.plugins.providers.values()}))
        missing = "" if close or failed else (f"; a plugin's component needs the plugin installed or --plugin FILE "
                                              f"(plugins loaded: {cut(loaded, 160) or 'none'})")
        raise ConfigError(f"unknown {kind} {shown(name)}{hint} (known: {', '.join(known) or 'none'}){failed}{missing}")

    def resolve_params(self, kind: str, name: str, params: dict[str, Any]) -> dict[str, Any]:
        """Check ``params`` against the factory's signature; return them with defaults filled in."""
        component = self.get(kind, name)
        allowed = component.user_params()
        where = f"{kind} {name!r}"
        for key, value in params.items():
            if key not in allowed:
                close = difflib.get_close_matches(str(key)[:100], list(allowed), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                if key in CONTEXT_PARAMS[kind]:
                    hint = "; it is set by mimbench, not by the suite"
                raise ConfigError(f"{where}: unknown param {shown(key)}{hint} (allowed: {', '.join(allowed) or 'none'})")
        hints = component.hints
        resolved = {}
        for key, parameter in allowed.items():
            if key in params:
                value = params[key]
                annotation = hints.get(key, Any)
                if not _conforms(value, annotation):
                    raise ConfigError(f"{where}: param {key!r} must be {_type_name(annotation)}, "
                                      f"got {type(value).__name__} {shown(value)}")
                if isinstance(value, float) and not math.isfinite(value):
                    raise ConfigError(f"{where}: param {key!r} must be a finite number, got {value}")
                outside = _out_of_range(value, annotation)
                if outside:
                    raise ConfigError(f"{where}: param {key!r} {outside} (the range its plugin declares)")
                resolved[key] = float(value) if annotation is float and isinstance(value, int) else value
            elif parameter.default is inspect.Parameter.empty:
                raise ConfigError(f"{where}: missing required param {key!r} (allowed: {', '.join(allowed)})")
            else:  # as JSON holds it: a grid's default (a tuple) is the list a suite would write
                default = parameter.default
                resolved[key] = list(default) if isinstance(default, tuple) else default
        return resolved

    def build(self, kind: str, name: str, params: dict[str, Any], **context: Any) -> Any:
        """Validate ``params`` and call the factory; a ValueError from it becomes a ConfigError."""
        return self.construct(kind, name, self.resolve_params(kind, name, params), **context)

    def construct(self, kind: str, name: str, resolved: dict[str, Any], **context: Any) -> Any:
        """Call the factory with ``resolved`` params (checked and filled in before, by
        :meth:`resolve_params`: not checked again) and the ``context`` params it declares; a
        ValueError from it becomes a ConfigError, and so does a component that lacks what its
        kind's contract requires (:mod:`mimbench.protocols`)."""
        component = self.get(kind, name)
        accepted = component.signature().parameters
        context = {k: v for k, v in context.items() if k in accepted}
        try:
            built = component.factory(**context, **resolved)
        except (ValueError, TypeError, FileNotFoundError, OverflowError, RuntimeError) as exc:
            # RuntimeError, OverflowError: torch refusing a size built from a param (10**25 images)
            raise ConfigError(f"{kind} {name!r}: {cut(first_line(exc), 240)}") from exc
        except DAMAGED_FILE_ERRORS as exc:  # raised by a file reader that does not name the file
            raise ConfigError(f"{kind} {name!r}: a file it reads is damaged ({type(exc).__name__}: "
                              f"{cut(first_line(exc), 160)}); replace it with a good copy") from exc
        lacks = missing(kind, built)
        if lacks:
            raise ConfigError(f"{kind} {name!r} from {_describe(component)}: its factory returned a "
                              f"{type(built).__name__} without {', '.join(lacks)} (the {kind} contract: "
                              f"mimbench.plugin.{CONTRACTS[kind].__name__})")
        wrong = malformed(kind, built)
        if wrong:
            raise ConfigError(f"{kind} {name!r} from {_describe(component)}: {'; '.join(wrong)} (the {kind} "
                              f"contract: mimbench.plugin.{CONTRACTS[kind].__name__})")
        return built


def _describe(component: Registration) -> str:
    version = f" {component.provider.version}" if component.provider.version else ""
    return f"{component.provider.name}{version} (plugin {component.plugin})"


def _first_doc_line(factory: Callable[..., Any]) -> str:
    # The factory's own docstring: inspect.getdoc would fall back to a base class's (nn.Module's).
    doc = inspect.cleandoc(getattr(factory, "__doc__", None) or "")
    return doc.splitlines()[0] if doc else ""


def _type_hints(factory: Callable[..., Any]) -> dict[str, Any]:
    target = factory.__init__ if inspect.isclass(factory) else factory
    try:
        return typing.get_type_hints(target, include_extras=True)
    except Exception:  # unresolvable annotations: accept any value rather than guess
        return {}


def _conforms(value: Any, annotation: Any) -> bool:
    """Whether a YAML value fits a parameter annotation (the subset suites use)."""
    if annotation is Any or annotation is inspect.Parameter.empty:
        return True
    if typing.get_origin(annotation) is Annotated:
        return _conforms(value, annotation.__origin__)
    if annotation is None or annotation is type(None):
        return value is None
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (Union, types.UnionType):
        return any(_conforms(value, a) for a in args)
    if origin is Literal:
        return value in args
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if origin in (list, tuple, typing.Sequence) or annotation in (list, tuple):
        if not isinstance(value, (list, tuple)):
            return False
        item = args[0] if args and (origin is not tuple or len(args) == 2 and args[1] is Ellipsis) else Any
        if origin is tuple and args and args[-1] is not Ellipsis:
            return len(value) == len(args) and all(_conforms(v, a) for v, a in zip(value, args))
        return all(_conforms(v, item) for v in value)
    if origin is dict or annotation is dict:
        return isinstance(value, dict)
    if isinstance(annotation, type):
        return isinstance(value, annotation)
    return True


def _bounds(annotation: Any) -> list[Any]:
    """The ``annotated_types`` bounds (Ge, Gt, Le, Lt) an ``Annotated`` type declares, Intervals unpacked."""
    bounds = []
    for meta in getattr(annotation, "__metadata__", ()):
        parts = list(meta) if isinstance(meta, annotated_types.GroupedMetadata) else [meta]
        bounds += [m for m in parts if isinstance(m, (annotated_types.Ge, annotated_types.Gt,
                                                       annotated_types.Le, annotated_types.Lt))]
    return bounds


_BOUND_TEXT = {annotated_types.Ge: (">=", "ge"), annotated_types.Gt: (">", "gt"),
               annotated_types.Le: ("<=", "le"), annotated_types.Lt: ("<", "lt")}


def _bound_text(bound: Any) -> str:
    symbol, field = _BOUND_TEXT[type(bound)]
    return f"{symbol} {getattr(bound, field)}"


def range_text(annotation: Any) -> str:
    """The declared range of a param, as the docs and ``mimbench plugins --params`` show it
    (``>= 2, <= 360``; ``each >= 1, <= 64`` for a list's items); empty where none is declared."""
    if typing.get_origin(annotation) is Annotated:
        return ", ".join(_bound_text(b) for b in _bounds(annotation))
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (Union, types.UnionType):
        return "; ".join(t for t in (range_text(a) for a in args) if t)
    if origin in (list, tuple, typing.Sequence) and args:
        inner = range_text(args[0])
        return f"each {inner}" if inner else ""
    return ""


def _out_of_range(value: Any, annotation: Any) -> str | None:
    """Why ``value`` (which conforms to ``annotation``) is outside the range declared on it, or None."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Annotated:
        below = [b for b in _bounds(annotation) if not _within(value, b)]
        if below:
            return f"must be {range_text(annotation)}, got {shown(value)}"
        return _out_of_range(value, annotation.__origin__)
    if origin in (Union, types.UnionType):
        arm = next((a for a in args if _conforms(value, a)), None)
        return None if arm is None else _out_of_range(value, arm)
    if origin in (list, tuple, typing.Sequence) and args and isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            outside = _out_of_range(item, args[0] if len(args) == 1 or args[1] is Ellipsis else args[index])
            if outside:
                return f"item {index} {outside}"
    return None


def _within(value: Any, bound: Any) -> bool:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return True  # a bound on a number says nothing about another type (a Union's other arm)
    if isinstance(bound, annotated_types.Ge):
        return value >= bound.ge
    if isinstance(bound, annotated_types.Gt):
        return value > bound.gt
    if isinstance(bound, annotated_types.Le):
        return value <= bound.le
    return value < bound.lt


def _type_name(annotation: Any) -> str:
    if typing.get_origin(annotation) is Annotated:
        return _type_name(annotation.__origin__)
    if annotation is type(None):
        return "None"
    if isinstance(annotation, type):
        return annotation.__name__
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in args)
    if origin in (list, tuple, dict) and args:
        return f"{origin.__name__}[{', '.join('...' if a is Ellipsis else _type_name(a) for a in args)}]"
    return str(annotation).replace("typing.", "")
