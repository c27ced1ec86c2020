"""Plugin discovery: built-ins, installed distributions, local files and modules.

Order: the built-ins (mimbench's own entry points), other installed distributions
in entry-point group ``mimbench``, then each ``--plugin PATH_OR_MODULE`` and each
entry of ``$MIMBENCH_PLUGINS`` (os.pathsep-separated). A plugin that fails to
import (an exception, ``sys.exit`` or a ``KeyboardInterrupt`` raised by its code at import),
or that implements a misspelled hook, is recorded in ``PluginSet.failures`` and left out;
everything else still works. A Ctrl-C pressed while plugins load still stops mimbench.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib
import importlib.metadata
import importlib.util
import os
import signal
import sys
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import pluggy

from mimbench import hookspecs
from mimbench.errors import Terminated, one_line, shown

ENTRY_POINT_GROUP = "mimbench"
ENV_VAR = "MIMBENCH_PLUGINS"


@dataclass(frozen=True)
class Provider:
    """Where a plugin came from: a distribution, a file or a module."""

    name: str  # distribution name, file path or module name
    version: str  # "" when unknown


@dataclass(frozen=True)
class PluginFailure:
    """A plugin that could not be loaded, and why (one line)."""

    name: str
    error: str


@dataclass
class PluginSet:
    """A plugin manager plus what each plugin is and where it came from."""

    manager: pluggy.PluginManager
    providers: dict[str, Provider] = field(default_factory=dict)  # plugin name -> provider
    failures: list[PluginFailure] = field(default_factory=list)

    @property
    def hook(self) -> pluggy.HookRelay:
        return self.manager.hook

    def each(self, hook_name: str) -> list[tuple[str, pluggy.HookCaller]]:
        """Each plugin implementing ``hook_name`` (in registration order: built-ins first), with a caller of that hook
        that reaches this plugin alone: a hook called through pluggy, plugin by plugin, so that
        each call's result and failure belong to one plugin."""
        callers = []
        plugins = self.manager.get_plugins()
        for impl in getattr(self.manager.hook, hook_name).get_hookimpls():
            others = [p for p in plugins if p is not impl.plugin]
            callers.append((impl.plugin_name, self.manager.subset_hook_caller(hook_name, remove_plugins=others)))
        return callers


def load_plugins(extra: tuple[str, ...] | list[str] = (), use_env: bool = True, builtins: bool = True) -> PluginSet:
    """Discover and register every plugin; see the module docstring for the order. ``builtins=False``
    leaves out mimbench's own (they import torch): what the command line's plugin commands need."""
    manager = pluggy.PluginManager("mimbench")
    manager.add_hookspecs(hookspecs)
    plugins = PluginSet(manager)

    entry_points = sorted(
        importlib.metadata.entry_points(group=ENTRY_POINT_GROUP),
        key=lambda ep: (_dist_name(ep) != "mimbench", _dist_name(ep), ep.name),
    )
    seen = set()
    for ep in entry_points:
        plugin_name = f"{_dist_name(ep)}:{ep.name}"
        if plugin_name in seen or not builtins and _dist_name(ep) == "mimbench":  # seen: visible twice on sys.path
            continue
        seen.add(plugin_name)
        provider = Provider(_dist_name(ep), ep.dist.version if ep.dist else "")
        _register(plugins, plugin_name, provider, ep.load)

    specs = list(extra)
    if use_env and os.environ.get(ENV_VAR):
        specs += [s for s in os.environ[ENV_VAR].split(os.pathsep) if s.strip()]
    for spec in dict.fromkeys(specs):  # the same plugin named twice is loaded once
        _register(plugins, spec, _local_provider(spec), lambda spec=spec: import_plugin(spec))
    return plugins


def env_problem(value: str | None = None) -> str | None:
    """Why ``$MIMBENCH_PLUGINS`` (``value``; read from the environment when None) is ignored: set
    but naming no plugin (only separators or blanks, e.g. ``:::``); None when it is fine or unset."""
    value = os.environ.get(ENV_VAR, "") if value is None else value
    if not value or any(entry.strip() for entry in value.split(os.pathsep)):
        return None
    return (f"${ENV_VAR} is {shown(value)}, which names no plugin (expected .py files or module names "
            f"separated by {os.pathsep!r}); it is ignored")


def import_plugin(spec: str) -> ModuleType:
    """Import a plugin given as a ``.py`` file path or a dotted module name.

    A file is imported under its stem as module name and kept in ``sys.modules``, so
    that classes defined in it stay picklable; if another module already has that
    name, a name made unique by a hash of the file's path is used instead.
    """
    path = Path(spec)
    if not (spec.endswith(".py") or path.exists()):
        return importlib.import_module(spec)
    if not path.is_file():
        raise FileNotFoundError(f"no such plugin file: {spec}")
    path = path.resolve()
    module_name = path.stem
    existing = sys.modules.get(module_name)
    if existing is not None:
        if getattr(existing, "__file__", None) and Path(existing.__file__).resolve() == path:
            return existing
        module_name = f"{path.stem}_{hashlib.sha256(str(path).encode()).hexdigest()[:8]}"
    module_spec = importlib.util.spec_from_file_location(module_name, path)
    if module_spec is None or module_spec.loader is None:
        raise ImportError(f"cannot import {spec} as a Python module")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[module_name] = module
    try:
        module_spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[module_name]
        raise
    return module


def _register(plugins: PluginSet, name: str, provider: Provider, load) -> None:
    try:
        with _user_interrupts() as interrupted:
            plugin = load()
        plugins.manager.register(plugin, name=name)
    except (Exception, SystemExit, KeyboardInterrupt) as exc:  # a broken plugin must not take the CLI down
        if isinstance(exc, Terminated) or isinstance(exc, KeyboardInterrupt) and interrupted:
            raise  # the user's Ctrl-C or SIGTERM, not the plugin's doing
        plugins.failures.append(PluginFailure(name, _load_error(exc)))
        return
    try:
        plugins.manager.check_pending()
    except pluggy.PluginValidationError:
        message = _unknown_hooks_message(plugins.manager, plugin)
        plugins.manager.unregister(name=name)
        plugins.failures.append(PluginFailure(name, message))
        return
    plugins.providers[name] = provider


@contextmanager
def _user_interrupts():
    """While a plugin loads, tell a Ctrl-C the user pressed from a ``KeyboardInterrupt`` the plugin's
    code raises: yields a list that SIGINT (then handled as before) appends to."""
    interrupted: list[int] = []
    previous = signal.getsignal(signal.SIGINT) if threading.current_thread() is threading.main_thread() else None
    if previous is None:  # not the main thread (no handler runs here), or a handler set outside Python
        yield interrupted
        return

    def note(signum, frame):
        interrupted.append(signum)
        if callable(previous):
            previous(signum, frame)
        elif previous != signal.SIG_IGN:
            raise KeyboardInterrupt

    signal.signal(signal.SIGINT, note)
    try:
        yield interrupted
    finally:
        signal.signal(signal.SIGINT, previous)


def _load_error(exc: BaseException) -> str:
    """One line for a plugin that failed to import; exiting or interrupting at import is a failure too."""
    if isinstance(exc, SystemExit):
        return f"it called sys.exit({shown(exc.code)}) at import"
    if isinstance(exc, KeyboardInterrupt):
        return "it raised KeyboardInterrupt at import"
    return one_line(exc)


def _unknown_hooks_message(manager: pluggy.PluginManager, plugin: object) -> str:
    known = [n for n in dir(hookspecs) if n.startswith("mimbench_")]
    problems = []
    for hook_name, caller in sorted(vars(manager.hook).items()):
        if not isinstance(caller, pluggy.HookCaller) or caller.spec is not None:
            continue
        if any(impl.plugin is plugin for impl in caller.get_hookimpls()):
            close = difflib.get_close_matches(hook_name, known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            problems.append(f"unknown hook {hook_name!r}{hint}")
    return "; ".join(problems) or "implements a hook that mimbench does not define"


def _local_provider(spec: str) -> Provider:
    if spec.endswith(".py") or Path(spec).exists():
        return Provider(str(Path(spec).resolve()), "")
    top = spec.split(".")[0]
    dists = importlib.metadata.packages_distributions().get(top, [])
    if dists:
        return Provider(dists[0], importlib.metadata.version(dists[0]))
    return Provider(spec, "")


def _dist_name(ep: importlib.metadata.EntryPoint) -> str:
    return ep.dist.name if ep.dist is not None else "?"


