"""The ``mimbench`` command line.

Exit codes: 0 all runs finished (done, or diverged: a non-finite loss is a result, not a crash);
1 some runs failed (the others still finished), or the machine refused (no space left, no
permission: one line on stderr); 2 bad usage, suite, parameter, ``--plugin`` or damaged input file
(one line on stderr, no traceback); 130 Ctrl-C, 143 SIGTERM, 129 SIGHUP (``mimbench run`` handles
both as Ctrl-C). The details are in the documentation's command-line reference.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import sys
import threading
from pathlib import Path

import click
import yaml

from mimbench.version import __version__
from mimbench.errors import ConfigError, Terminated, cut, one_line, os_error_line
from mimbench.plugins import env_problem, load_plugins
from mimbench.registry import KINDS, Registry
from mimbench.specs import Status
from mimbench.suite import packaged_suites

PLUGIN_OPTION_HELP = ("Plugin .py file or module to load (repeatable; one that fails to load is an error); "
                      "also read from $MIMBENCH_PLUGINS (where a failure is a warning).")


def _fail(message: str, code: int = 2) -> None:
    click.echo(f"error: {cut(message)}", err=True)
    sys.exit(code)


def _registry(plugin_specs: tuple[str, ...]) -> Registry:
    registry = Registry(load_plugins(plugin_specs))
    _check_plugin_failures(registry, plugin_specs)
    return registry


def _check_plugin_failures(registry: Registry, plugin_specs: tuple[str, ...]) -> None:
    """A plugin the user named with ``--plugin`` that failed to load is bad input (ConfigError);
    one found through an entry point or ``$MIMBENCH_PLUGINS`` is left out with a warning."""
    from mimbench.jobs import PluginSources

    named = set(plugin_specs) | set(PluginSources.from_cli(plugin_specs, env="").specs)
    for failure in registry.plugins.failures:
        if failure.name in named:
            raise ConfigError(f"--plugin {failure.name}: failed to load: {failure.error}")
    for failure in registry.plugins.failures:
        click.echo(f"warning: {cut(f'plugin {failure.name!r} failed to load: {failure.error}')}", err=True)
    problem = env_problem()
    if problem:
        click.echo(f"warning: {cut(problem)}", err=True)


#: SIGTERMs received by the command running now (Ray turns the Terminated it raises into a plain KeyboardInterrupt).
_TERMINATED: list[int] = []


def _interrupted(exc: KeyboardInterrupt, what: str) -> None:
    """One line for Ctrl-C (exit 130), SIGTERM (exit 143) or SIGHUP (exit 129), saying what was stopped."""
    hangup = getattr(signal, "SIGHUP", None)
    if _TERMINATED and _TERMINATED[0] == hangup:
        signal_name, code = "SIGHUP", 129
    elif isinstance(exc, Terminated) or _TERMINATED:
        signal_name, code = "SIGTERM", 143
    else:
        signal_name, code = "Ctrl-C", 130
    click.echo(f"interrupted ({signal_name}): {what}", err=True)
    sys.exit(code)


def _terminate_once(signum, frame) -> None:
    """Raise :class:`Terminated` (a KeyboardInterrupt) for the first SIGTERM or SIGHUP; ignore more."""
    if not _TERMINATED:
        _TERMINATED.append(signum)
        raise Terminated()


def _exit_now(signum, frame) -> None:
    name = "SIGHUP" if signum == getattr(signal, "SIGHUP", None) else "SIGTERM"
    click.echo(f"interrupted ({name}) while exiting: the command had finished", err=True)
    os._exit(128 + signum)


def _sigterm_as_interrupt(command):
    """Run ``command`` with SIGTERM and SIGHUP (a closed terminal, an ended SSH session) raising
    :class:`Terminated` (a KeyboardInterrupt) in the main thread, so that they are handled as
    Ctrl-C: the summary rewritten, the lock released; a second signal while the first is handled
    is ignored. The previous handlers are restored after."""
    @functools.wraps(command)
    def wrapped(*args, **kwargs):
        if threading.current_thread() is not threading.main_thread():
            return command(*args, **kwargs)
        _TERMINATED.clear()
        handled = [s for s in (signal.SIGTERM, getattr(signal, "SIGHUP", None)) if s is not None]
        previous = {s: signal.signal(s, _terminate_once) for s in handled}
        try:
            return command(*args, **kwargs)
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler if handler is not None else signal.SIG_DFL)
    return wrapped


class MimbenchGroup(click.Group):
    """Adds the commands plugins contribute, and turns ConfigError into exit code 2."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        self._add_plugin_commands()
        return super().list_commands(ctx)

    def get_command(self, ctx: click.Context, name: str):
        # Built-in commands first: `mimbench report` need not import every plugin (and torch).
        command = super().get_command(ctx, name)
        if command is None:
            self._add_plugin_commands()
            command = super().get_command(ctx, name)
        return command

    def _add_plugin_commands(self) -> None:
        if getattr(self, "_plugin_commands_added", False):
            return
        self._plugin_commands_added = True
        # Commands come from third-party plugins only (the built-ins add none: tests/test_rough_edges.py
        # checks it), so help and an unknown command's error do not import the built-ins, and torch.
        plugins = load_plugins(builtins=False)
        plugins.hook.mimbench_register_commands(cli=self)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except ConfigError as exc:
            _fail(str(exc))
        except OSError as exc:  # the machine refused: no space left, no permission
            _fail(os_error_line(exc), code=1)
        except EOFError as exc:  # click would print only "Aborted!", taking it for Ctrl-D
            _fail(f"a file ended before it should ({exc or 'EOFError'}): a damaged or truncated input file")
        except KeyboardInterrupt as exc:  # click would print only "Aborted!" and exit 1
            _interrupted(exc, "stopped before it finished; what was finished is kept: run the same command again")


@click.group(cls=MimbenchGroup)
@click.version_option(__version__, prog_name="mimbench")
def cli() -> None:
    """Benchmark masked image modeling: pre-train SimMIM-style configurations and compare them."""


@cli.command()
@click.argument("suite", required=False)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("results"), show_default=True,
              help="Results folder; the suite's results go to OUT/<suite name>/.")
@click.option("--device", default="auto", show_default=True, help="auto (CUDA when present), cpu, cuda or cuda:N.")
@click.option("--executor", "executor_name", metavar="NAME",
              help="Where the runs execute: local (default), ray, submitit, or a plugin's; exactly "
                   "--set execution.executor=NAME (the suite's other execution settings are kept). Tune it "
                   "with --set execution.<param>=VALUE.")
@click.option("--tracker", "tracker_names", multiple=True, metavar="NAME",
              help="Send every run to this experiment tracker too: tensorboard, mlflow, or a plugin's "
                   "(repeatable; added to the suite's trackers).")
@click.option("--plugin", "plugin_specs", multiple=True, metavar="PATH_OR_MODULE", help=PLUGIN_OPTION_HELP)
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a suite field, e.g. --set train.epochs=1 (value parsed as YAML; repeatable).")
@click.option("--fresh", is_flag=True, help="Delete OUT/<suite name>/ (every run in it) and start over; only a folder "
                   "that mimbench marked as this suite's (exit 2 otherwise, deleting nothing).")
@click.option("--rerun-changed", is_flag=True,
              help="Run again the finished runs whose components' code changed since they ran (an edited "
                   "--plugin file, another version of a plugin); without it they are kept with a note.")
@click.option("--rerun", "rerun", multiple=True, metavar="KEY=VALUE[,KEY=VALUE]",
              help="Run again the finished runs that match, e.g. --rerun masker=diagonal or "
                   "--rerun masker.ratio=0.6,seed=1 (repeatable); their earlier folders go to superseded/.")
@click.option("--dry-run", is_flag=True, help="Validate everything and list the runs without training.")
@_sigterm_as_interrupt
def run(suite: str | None, out: Path, device: str, executor_name: str | None, tracker_names: tuple[str, ...],
        plugin_specs: tuple[str, ...], overrides: tuple[str, ...], fresh: bool, rerun_changed: bool,
        rerun: tuple[str, ...], dry_run: bool) -> None:
    """Run SUITE (a YAML file or a packaged suite name; default: quick).

    Finished runs are skipped and failed ones retried, so running the same
    command again completes an interrupted suite; a run killed mid-way
    continues from its last checkpoint (train.checkpoint_every). Ctrl-C stops
    the runs in flight and exits 130; nothing finished is lost.
    """
    from mimbench import api
    from mimbench.jobs import PluginSources
    from mimbench.reuse import parse_selectors
    from mimbench.runtime import registry_for

    selectors = parse_selectors(rerun)  # a malformed --rerun fails before anything loads
    _check_plugin_failures(registry_for(PluginSources.from_cli(plugin_specs)), plugin_specs)  # before the suite is read
    prepared = api.prepare(suite, out, device=device, executor=executor_name, trackers=tracker_names,
                           plugins=plugin_specs, overrides=overrides)
    spec = prepared.plan.suite
    for warning in prepared.warnings:  # before anything trains, and in the dry run too
        click.echo(f"warning: {cut(warning)}", err=True)
    from mimbench.dryrun import dry_run_lines, reuse_lines, suite_header

    if dry_run:
        from mimbench.folder import SuiteFolder
        from mimbench.reuse import check_selectors

        check_selectors(selectors, prepared.plan.jobs)  # api.execute checks them for a real run

        SuiteFolder(prepared.suite_dir).check_ownership(prepared.plan.identity(), fresh)
        reuse = [] if fresh else reuse_lines(prepared, selectors, rerun_changed)
        click.echo("\n".join(dry_run_lines(prepared, out / spec.name) + reuse))
        return
    try:  # the header is the first line, once the folder is ours, on a terminal or in a log
        table = api.execute(prepared, fresh=fresh, rerun_changed=rerun_changed, rerun=rerun,
                            header=suite_header(prepared, out / spec.name))
    except KeyboardInterrupt as exc:
        _interrupted(exc, f"the runs in flight were stopped; finished runs are kept in {out / spec.name}. "
                          f"Run the same command again to complete the suite.")
    from mimbench.driver import PROBES_NOT_ADDED

    counts = table.status.value_counts().to_dict()
    not_added = table.attrs.get(PROBES_NOT_ADDED, [])
    click.echo(f"{len(table)} run{'s' if len(table) != 1 else ''}: " + ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
               + (f" ({len(not_added)} without the probes that could not be added)" if not_added else "")
               + f"; summary: {out / spec.name / 'summary.csv'}")
    _report_after_run(out / spec.name)
    if counts.get(Status.FAILED.value, 0) or counts.get(Status.PENDING.value, 0) or not_added:
        sys.exit(1)


@cli.command()
@click.option("--kind", type=click.Choice(KINDS), help="Only this kind of component.")
@click.option("--json", "as_json", is_flag=True,
              help='Print JSON instead of a table: {"components": [...], "failed_plugins": [...]}.')
@click.option("--params", "show_params", is_flag=True, help="Also list each component's params with types, declared ranges and defaults.")
@click.option("--plugin", "plugin_specs", multiple=True, metavar="PATH_OR_MODULE", help=PLUGIN_OPTION_HELP)
def plugins(kind: str | None, as_json: bool, show_params: bool, plugin_specs: tuple[str, ...]) -> None:
    """List every component: kind, name, provider, version, description (and params)."""
    registry = _registry(plugin_specs)
    rows = [
        {"kind": c.kind, "name": c.name, "provider": c.provider.name, "version": c.provider.version,
         "description": c.description, "params": c.params_summary()}
        for c in registry.all() if kind is None or c.kind == kind
    ]
    if as_json:
        failures = [{"plugin": f.name, "error": f.error} for f in registry.plugins.failures]
        click.echo(json.dumps({"components": rows, "failed_plugins": failures}, indent=2))
        return
    headers = ["kind", "name", "provider", "version", "description"]
    widths = {h: max([len(h)] + [len(str(r[h])) for r in rows]) for h in headers[:-1]}
    click.echo("  ".join(h.upper().ljust(widths.get(h, 0)) for h in headers).rstrip())
    for row in rows:
        click.echo("  ".join(str(row[h]).ljust(widths.get(h, 0)) for h in headers).rstrip())
        if show_params and row["params"]:
            params = ", ".join(f"{name}: {p['type']}" + (f" ({p['range']})" if "range" in p else "")
                               + (f" = {p['default']!r}" if "default" in p else " (required)")
                               for name, p in row["params"].items())
            click.echo(f"{'':{widths['kind']}}  params: {params}")


@cli.command()
@click.option("--show", "show", metavar="NAME",
              help="Print packaged suite NAME's YAML as shipped, to start your own from: "
                   "mimbench suites --show quick > mine.yaml")
def suites(show: str | None) -> None:
    """List the packaged suites (run one with `mimbench run NAME`)."""
    if show is not None:
        known = packaged_suites()
        if show not in known:
            raise ConfigError(f"suites --show {show!r}: not a packaged suite (packaged: {', '.join(sorted(known))})")
        click.echo(known[show].read_text(), nl=False)
        return
    known = sorted(packaged_suites().items())
    width = max((len(name) for name, _ in known), default=0)
    for name, path in known:
        raw = yaml.safe_load(path.read_text()) or {}
        click.echo(f"{name:<{width}}  {raw.get('description', '')}")


@cli.command()
@click.argument("results_dir", metavar="RESULTS_DIR", type=click.Path(path_type=Path))
@click.option("--reference", "reference_items", multiple=True, metavar="KEY=VALUE",
              help="Compare every configuration with the one that has this value, paired by seed, e.g. "
                   "--reference masker=patch or masker.ratio=0.6 (repeatable: all must match); replaces the "
                   "suite's report.reference.")
def report(results_dir: Path, reference_items: tuple[str, ...]) -> None:
    """Tables, figures and a report for a finished suite: RESULTS_DIR is its folder, OUT/<suite name>.

    Writes table.csv, table.md, table.tex, summary.parquet, comparisons.csv, figures/*.png and
    *.pdf, report.md and a self-contained report.html into RESULTS_DIR.
    """
    from mimbench.report import write_report
    from mimbench.report.reference_names import parse_reference

    written = write_report(results_dir, parse_reference(reference_items) if reference_items else None)
    for warning in written.warnings:
        click.echo(f"warning: {cut(warning)}", err=True)
    figures = sum(1 for name in written.files if name.startswith("figures/") and name.endswith(".png"))
    click.echo(f"report: {written.markdown} and {written.html} "
               f"(tables: table.csv, table.md, table.tex; {figures} figures in {results_dir / 'figures'})")


@cli.command()
@click.argument("run_dir", metavar="RUN_DIR", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
              help="Where to write the backbone's state_dict (default RUN_DIR/backbone.pt); its description "
                   "goes next to it, with .json.")
@click.option("--plugin", "plugin_specs", multiple=True, metavar="PATH_OR_MODULE", help=PLUGIN_OPTION_HELP)
def export(run_dir: Path, out: Path | None, plugin_specs: tuple[str, ...]) -> None:
    """Write a pre-trained run's encoder as a plain backbone: RUN_DIR is OUT/<suite>/runs/<run_id>.

    The state_dict (mask token dropped) loads with strict=True into the matching timm,
    torchvision or torch model; the .json next to it has the Python that builds and loads it,
    the image normalisation, and what the model's output is.
    """
    from mimbench.export import export_run

    if out is not None and out.suffix == ".json":
        raise ConfigError(f"--out {out}: the weights' file; its .json description is written next to it")
    if out is not None and out.parent != Path("") and not out.parent.is_dir():
        raise ConfigError(f"--out {out}: folder {out.parent} not found")
    try:
        weights, description = export_run(run_dir, _registry(plugin_specs), out)
    except OSError as exc:
        raise ConfigError(f"cannot write {exc.filename or out}: {exc.strerror}") from None
    code = json.loads(description.read_text())["python"]
    click.echo(f"backbone: {weights}\ndescription: {description}\nto load it (from {weights.parent}):")
    click.echo("\n".join(f"    {line}" for line in code.splitlines()))


def _report_after_run(suite_dir: Path) -> None:
    """Write the suite's report; a failure is a one-line warning and changes nothing else."""
    try:
        from mimbench.report import write_report

        written = write_report(suite_dir)
    except Exception as exc:  # the runs are safe on disk; `mimbench report` can be run again
        click.echo(f"warning: the report could not be written ({one_line(exc)}); "
                   f"the results are complete, retry with: mimbench report {suite_dir}", err=True)
        return
    for warning in written.warnings:
        click.echo(f"warning: {cut(warning)}", err=True)
    click.echo(f"report: {written.html} and {written.markdown.name}")


def main() -> None:
    """The console script. From its first line SIGTERM and SIGHUP stop a command as Ctrl-C does (one
    line, exit 143 or 129); once the command is over, one that comes while the process exits (Ray
    and torch shutting down) ends it at once with the signal's code: everything was already written."""
    handled = [s for s in (signal.SIGTERM, getattr(signal, "SIGHUP", None)) if s is not None]
    for s in handled:
        signal.signal(s, _terminate_once)
    try:
        cli()
    finally:
        for s in handled:
            signal.signal(s, _exit_now)
