"""The documentation's generated pages: MkDocs hooks that write them from the code itself.

A page asks for generated Markdown with a marker comment on a line of its own; the hook
``on_page_markdown`` replaces the marker with what the functions below return:

- ``<!-- mimbench:suite-keys -->``: every suite key (:func:`suite_keys_markdown`, from the pydantic
  models of ``mimbench/schema/``: defaults, types, constraints and the fields' descriptions);
- ``<!-- mimbench:cli -->``: every built-in command of ``mimbench`` (:func:`cli_markdown`, from
  the click objects of ``mimbench/cli.py``);
- ``<!-- mimbench:hooks -->``: every hook a plugin may implement (:func:`hooks_markdown`, from
  ``mimbench/hookspecs.py``);
- ``<!-- mimbench:components -->``: every built-in component (:func:`components_markdown`, from
  the registry of the built-in plugins);
- ``<!-- mimbench:published -->``: the repository's ``results/README.md`` (:func:`published_markdown`),
  whose suites' ``report.md`` and figures ``on_files`` adds to the site under ``published/``
  (and ``on_config`` to the nav, under the page that shows the README).

``on_files`` also leaves out of the site the files of docs/ that are only included in other pages
(``docs/cli-details.md``, through pymdownx.snippets), so that strict mode does not report them
as pages missing from the nav.

The functions return Markdown and need only mimbench (not mkdocs), so tests import this file by
its path and check the pages against the code.
"""

from __future__ import annotations

import inspect
import re
import sys
import types
import typing
from pathlib import Path
from typing import Any, Callable, Iterator

import yaml

#: The repository: the docs describe this checkout's code, so it comes first on the import path.
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

#: The published results: one folder per suite, described by its README.
RESULTS_DIR = ROOT / "results"
#: Where the published results go in the site.
PUBLISHED_DIR = "published"
#: Headings of the components page, per kind (``loss`` is not ``losss``).
PLURALS = {"loss": "losses"}
#: Pages of docs/ that are only included in others (pymdownx.snippets), not pages of their own.
SNIPPET_FILES = ("cli-details.md",)


# --- Markdown helpers -------------------------------------------------------------------------

_CODE_SPAN = re.compile(r"(`+)(.+?)\1", re.S)
_ROLE = re.compile(r":(?:func|meth|mod|class|attr|data|obj|exc):`~?([^`]+)`")


def _outside_code(text: str, change: Callable[[str], str]) -> str:
    """``text`` with ``change`` applied to what is not in a code span."""
    parts, last = [], 0
    for match in _CODE_SPAN.finditer(text):
        parts += [change(text[last:match.start()]), match.group(0)]
        last = match.end()
    return "".join(parts + [change(text[last:])])


def _escape_html(text: str) -> str:
    """Escape ``<`` where Markdown would take it for the start of an HTML tag (``<name>``)."""
    return _outside_code(text, lambda part: re.sub(r"<(?=[A-Za-z/!])", "&lt;", part))


def rest_to_markdown(doc: str) -> str:
    """A docstring written in this project's reST-ish style, as Markdown.

    ``double backticks`` are kept (Markdown shows them as code), roles such as
    ``:func:`name``` become code spans, a paragraph ending in ``::`` introduces a fenced code
    block (its indented lines), a ``- `` list gets the blank line Markdown needs before it, and
    a ``<`` that would start an HTML tag is escaped.
    """
    lines = inspect.cleandoc(doc).splitlines()
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.rstrip().endswith("::"):
            out.append(_escape_html(_ROLE.sub(r"``\1``", line.rstrip()[:-1])))
            i += 1
            block: list[str] = []
            while i < len(lines) and (not lines[i].strip() or lines[i].startswith(" ")):
                block.append(lines[i])
                i += 1
            while block and not block[-1].strip():
                block.pop()
            code = inspect.cleandoc("\n".join(block))
            out += ["", "```python", *code.splitlines(), "```", ""]
            continue
        if line.startswith("- ") and out and out[-1].strip() and not _in_list(out):
            out.append("")
        out.append(_escape_html(_ROLE.sub(r"``\1``", line)))
        i += 1
    return "\n".join(out).strip() + "\n"


def _in_list(previous: list[str]) -> bool:
    """Whether the last lines (back to a blank one) are a list item and its continuation."""
    for line in reversed(previous):
        if not line.strip():
            return False
        if line.startswith("- "):
            return True
    return False


def _one_paragraph(text: str) -> str:
    """A description written over several lines, as one line (for a table cell or a short entry)."""
    return " ".join(text.split())


def _cell(text: str) -> str:
    """Text for a Markdown table cell: one line, with the pipes outside code spans escaped (a pipe
    in a code span does not end a cell)."""
    return _outside_code(_escape_html(_one_paragraph(text)), lambda part: part.replace("|", "\\|"))


def _code(text: str) -> str:
    """``text`` as an inline code span."""
    fence = "``" if "`" in text else "`"
    return f"{fence}{text}{fence}"


def yaml_value(value: Any) -> str:
    """A default as a suite's YAML would write it: ``null``, ``true``, ``[linear, knn]``, ``10min``."""
    text = yaml.safe_dump(_plain(value), default_flow_style=True, width=10_000, allow_unicode=True).strip()
    return text.removesuffix("...").strip()


def _plain(value: Any) -> Any:
    """``value`` with models, tuples and paths turned into what YAML writes."""
    from pydantic import BaseModel

    from mimbench.schema import ComponentSpec

    if isinstance(value, ComponentSpec):
        return value.name if not value.params else {"name": value.name, "params": _plain(value.params)}
    if isinstance(value, BaseModel):
        return _plain(value.model_dump())
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, Path):
        return str(value)
    return value


# --- Suite keys -------------------------------------------------------------------------------


class SuiteKey(typing.NamedTuple):
    """One key of a suite's YAML, with what the schema says of it."""

    path: str  # dotted: "train.checkpoint_every"
    default: str  # as YAML; "required"; or words (``default_is_yaml`` false)
    type: str  # as a suite writes it: "int | str | null"
    allowed: str  # the constraints: "1 to 2147483647"; "" when none
    description: str
    model: type | None = None  # the model of a key that holds more keys
    default_is_yaml: bool = True

    def default_markdown(self) -> str:
        """The default as Markdown: a YAML value as code, ``required`` and words as they are."""
        return _code(self.default) if self.default_is_yaml and self.default != "required" else self.default


def _models_in(annotation: Any) -> list[type]:
    """The pydantic models an annotation holds (``Grid | list[Grid]`` -> [Grid])."""
    from pydantic import BaseModel

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    found: list[type] = []
    for arg in typing.get_args(annotation):
        found += [m for m in _models_in(arg) if m not in found]
    return found


def type_text(annotation: Any) -> str:
    """An annotation as a suite's YAML sees it: ``int | null``, ``list[component]``, ``[float, float]``."""
    from pydantic import BaseModel

    from mimbench.schema import ComponentSpec

    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is type(None) or annotation is None:
        return "null"
    if annotation is Any:
        return "any"
    if origin is typing.Annotated:
        return type_text(args[0])
    if origin is typing.Literal:
        return " | ".join(yaml_value(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_text(a) for a in args)
    if origin is list:
        return f"list[{type_text(args[0])}]"
    if origin is tuple:
        return "[" + ", ".join(type_text(a) for a in args) + "]"
    if origin is dict:
        return f"mapping[{type_text(args[0])}, {type_text(args[1])}]"
    if annotation is ComponentSpec:
        return "component"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "mapping"
    return getattr(annotation, "__name__", str(annotation))


def _constraint_text(metadata: list[Any], what: str = "") -> list[str]:
    """The Field constraints (ge, le, gt, lt, min_length, max_length, pattern) as words."""
    bounds = {name: getattr(m, name) for m in metadata for name in ("ge", "le", "gt", "lt")
              if getattr(m, name, None) is not None}
    words = []
    if "ge" in bounds and "le" in bounds:
        words.append(f"{bounds['ge']} to {bounds['le']}")
    else:
        words += [f"{sign} {bounds[name]}" for name, sign in (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<"))
                  if name in bounds and not (name in ("ge", "le") and "ge" in bounds and "le" in bounds)]
    for m in metadata:
        if getattr(m, "min_length", None) is not None:
            words.append(f"at least {m.min_length} {what or 'item'}{'' if m.min_length == 1 else 's'}")
        if getattr(m, "max_length", None) is not None:
            words.append(f"at most {m.max_length} {what or 'items'}")
        if getattr(m, "pattern", None) is not None:
            words.append(f"matching `{m.pattern}`")
    return words


def allowed_text(field: Any) -> str:
    """What a field allows beyond its type: its own constraints and those of its list's items."""
    annotation = field.annotation
    what = "characters" if annotation is str else ""
    words = _constraint_text(list(field.metadata), what)
    for arg in typing.get_args(annotation):  # list[Seed]: each item's own bounds
        if typing.get_origin(arg) is typing.Annotated:
            inner = [m for a in typing.get_args(arg)[1:] for m in getattr(a, "metadata", [a])]
            words += [f"each {w}" for w in _constraint_text(inner)]
    return ", ".join(words)


def _default_text(field: Any) -> str:
    """A field's default as YAML, ``required`` when it has none; ``{}`` for a mapping of defaults."""
    from pydantic import BaseModel

    from mimbench.schema import ComponentSpec

    if field.is_required():
        return "required"
    value = field.get_default(call_default_factory=True)
    if isinstance(value, BaseModel) and not isinstance(value, ComponentSpec):
        return "{}"
    return yaml_value(value)


#: Whose params the extra keys of a mapping are (``execution.<param>``: the executor's).
_EXTRA_KEYS_OWNER = {"execution": "executor"}


def suite_keys(model: type | None = None, prefix: str = "") -> list[SuiteKey]:
    """Every key of a suite (or of ``model``, under ``prefix``), in the schema's order, recursively:
    a key that holds a mapping of keys (``train``) is followed by its keys (``train.epochs``...).
    A model that allows keys of its own (``execution``) adds ``<prefix>.<param>``."""
    from mimbench.schema import ComponentSpec, Suite

    model = model or Suite
    keys = []
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        nested = [m for m in _models_in(field.annotation) if m is not ComponentSpec]
        keys.append(SuiteKey(path, _default_text(field), type_text(field.annotation), allowed_text(field),
                             field.description or "", nested[0] if nested else None))
        for sub in nested:
            keys += suite_keys(sub, f"{path}.")
    if model.model_config.get("extra") == "allow":
        paragraphs = inspect.cleandoc(model.__doc__ or "").split("\n\n")
        owner = _EXTRA_KEYS_OWNER.get(prefix.rstrip("."), prefix.rstrip("."))
        keys.append(SuiteKey(f"{prefix}<param>", f"the {owner}'s", "any", "",
                             paragraphs[-1] if len(paragraphs) > 1 else "", default_is_yaml=False))
    return keys


def _anchor(path: str) -> str:
    """The heading id of a key: the key itself (``train.checkpoint_every``), ``<param>`` as ``param``."""
    return path.replace("<", "").replace(">", "")


def _key_entry(key: SuiteKey, level: str) -> list[str]:
    """A key's heading and its entry: default, type, allowed values, then its meaning."""
    spec_link = " ([component spec](#component-spec))" if "component" in key.type else ""
    facts = [f"**Default:** {key.default_markdown()}", f"**Type:** {_code(key.type)}{spec_link}"]
    if key.allowed:
        facts.append(f"**Allowed:** {_escape_html(key.allowed)}")
    lines = [f"{level} {_escape_html(key.path)} {{#{_anchor(key.path)}}}", "", " · ".join(facts), ""]
    if key.description:
        lines += [_escape_html(_one_paragraph(key.description)), ""]
    elif key.model is not None and key.model.__doc__:  # a mapping the field itself does not describe
        lines += [rest_to_markdown(key.model.__doc__).split("\n\n")[0].strip(), ""]
    return lines


def suite_keys_markdown() -> str:
    """The suite reference: a table of every key with its default, then a section per mapping
    (top-level keys, ``train``, ``eval``...) with an entry per key under a heading of its own."""
    from mimbench.schema import ComponentSpec, Suite

    keys = suite_keys()
    lines = ["## Every key at a glance", "", "| key | default | type |", "|---|---|---|"]
    lines += [f"| [{_cell(k.path)}](#{_anchor(k.path)}) | {k.default_markdown()} | {_code(k.type)} |"
              for k in keys]
    lines += ["", "## Top-level keys {#top-level-keys}", "", rest_to_markdown(Suite.__doc__ or ""), ""]
    sections = [k for k in keys if "." not in k.path and k.model is not None]
    for key in keys:
        if "." not in key.path and key.model is None:
            lines += _key_entry(key, "###")
    for section in sections:
        lines += _key_entry(section, "##")
        for key in keys:
            if key.path.startswith(f"{section.path}."):
                lines += _key_entry(key, "###")
    lines += ["## Component specs {#component-spec}", "", rest_to_markdown(ComponentSpec.__doc__ or ""), "",
              "| key | default | type | meaning |", "|---|---|---|---|"]
    lines += [f"| {_code(k.path)} | {k.default_markdown()} | {_code(k.type)} "
              f"| {_cell(k.description)} |" for k in suite_keys(ComponentSpec)]
    return "\n".join(lines).rstrip() + "\n"


# --- Command line -----------------------------------------------------------------------------


def _builtin_commands() -> list[tuple[str, Any]]:
    """The built-in commands of ``mimbench``, by name (not those a plugin adds)."""
    from mimbench.cli import cli

    return [(name, cmd) for name, cmd in sorted(cli.commands.items())
            if getattr(cmd.callback, "__module__", "").startswith("mimbench.")]


def _param_default(param: Any, ctx: Any) -> str:
    """A click parameter's default, as the command line sees it."""
    if getattr(param, "is_flag", False) and not getattr(param, "secondary_opts", []):
        return "off"
    default = param.get_default(ctx, call=False)
    if default is None or type(default).__name__ == "Sentinel" or default == ():
        return "none"
    return _code(str(default))


def params_table(command: Any, ctx: Any) -> list[str]:
    """A command's arguments and options as a Markdown table: flags (with metavar), default, help."""
    lines = ["| argument or option | default | meaning |", "|---|---|---|"]
    for param in command.get_params(ctx):
        if param.param_type_name == "argument":
            name = param.make_metavar(ctx)
            default = "required" if param.required else "optional"
        else:
            flags = ", ".join(param.opts + param.secondary_opts)
            metavar = "" if getattr(param, "is_flag", False) else f" {param.make_metavar(ctx)}"
            name = f"{flags}{metavar}"
            default = _param_default(param, ctx)
            if getattr(param, "multiple", False):
                default += " (repeatable)"
        help_text = getattr(param, "help", None) or ""
        if param.param_type_name == "argument":
            help_text = help_text or "see the command's help above"
        lines.append(f"| {_code(name)} | {default} | {_cell(help_text)} |")
    return lines


def _click_help(text: str | None) -> str:
    """A command's help as ``--help`` shows it: up to click's ``\\f`` cut, without its ``\\b`` marks."""
    shown = (text or "").split("\f", 1)[0]
    return rest_to_markdown("\n".join(line for line in shown.splitlines() if line.strip() != "\b"))


def exit_codes_markdown() -> str:
    """The exit codes, as the ``mimbench.cli`` module docstring states them."""
    import mimbench.cli

    doc = inspect.cleandoc(mimbench.cli.__doc__ or "")
    paragraph = next((p for p in doc.split("\n\n") if p.startswith("Exit codes:")), "")
    return rest_to_markdown(paragraph) if paragraph else ""


def cli_markdown() -> str:
    """The command-line reference: the group's usage and options, the exit codes, then each
    built-in command (sorted): its usage line, its help text and a table of its parameters."""
    import click

    from mimbench.cli import cli

    ctx = click.Context(cli, info_name="mimbench")
    lines = ["## mimbench", "", "```text", cli.get_usage(ctx), "```", "",
             _click_help(cli.help), "", *params_table(cli, ctx), "",
             "Commands: " + ", ".join(f"[`{name}`](#mimbench-{name})" for name, _ in _builtin_commands()) + ".", ""]
    exit_codes = exit_codes_markdown()
    if exit_codes:
        lines += ["### Exit codes {#exit-codes}", "", exit_codes, ""]
    for name, command in _builtin_commands():
        sub = click.Context(command, info_name=name, parent=ctx)
        lines += [f"## mimbench {name} {{#mimbench-{name}}}", "", "```text", command.get_usage(sub), "```", "",
                  _click_help(command.help), "", *params_table(command, sub), ""]
    return "\n".join(lines).rstrip() + "\n"


# --- Hooks ------------------------------------------------------------------------------------


def hookspecs() -> list[Callable[..., Any]]:
    """The hook specifications of ``mimbench/hookspecs.py``, in the order they are written."""
    import mimbench.hookspecs as module

    specs = [value for name, value in vars(module).items()
             if name.startswith("mimbench_") and inspect.isfunction(value)
             and getattr(value, "mimbench_spec", None) is not None]
    return sorted(specs, key=lambda f: f.__code__.co_firstlineno)


def signature_text(function: Callable[..., Any]) -> str:
    """``name(param: annotation, ...) -> annotation`` with the annotations as written in the source."""
    signature = inspect.signature(function)

    def annotation(value: Any) -> str:
        return value if isinstance(value, str) else inspect.formatannotation(value)

    params = [f"{p.name}: {annotation(p.annotation)}" if p.annotation is not p.empty else p.name
              for p in signature.parameters.values()]
    returns = "" if signature.return_annotation is signature.empty else f" -> {annotation(signature.return_annotation)}"
    return f"{function.__name__}({', '.join(params)}){returns}"


def hooks_markdown() -> str:
    """The hook reference: the module docstring, then each hookspec's signature and docstring."""
    import mimbench.hookspecs as module

    from mimbench.protocols import CONTRACTS, REQUIRED
    from mimbench.registry import HOOKS

    kinds = {hook: kind for kind, hook in HOOKS.items()}
    lines = [rest_to_markdown(module.__doc__ or ""), ""]
    for spec in hookspecs():
        lines += [f"## {spec.__name__} {{#{spec.__name__}}}", "", "```python", signature_text(spec), "```", "",
                  rest_to_markdown(spec.__doc__ or ""), ""]
        kind = kinds.get(spec.__name__)
        if kind is not None:
            contract = CONTRACTS[kind]
            lines += [f"### The contract: `{contract.__name__}`", "",
                      f"Required: {', '.join(f'`{name}`' for name in REQUIRED[kind])}.", "",
                      rest_to_markdown(inspect.getdoc(contract) or ""), ""]
    return "\n".join(lines).rstrip() + "\n"


# --- Built-in components ----------------------------------------------------------------------


def builtin_components() -> list[Any]:
    """The components of mimbench's own plugins (provider ``mimbench``), by kind then name."""
    from mimbench.plugins import load_plugins
    from mimbench.registry import Registry

    registry = Registry(load_plugins((), use_env=False))
    return [c for c in registry.all() if c.provider.name == "mimbench"]


def components_markdown() -> str:
    """The component reference: a section per kind, a heading per component (``masker: patch``),
    its provider, its factory's docstring and a table of its params."""
    from mimbench.registry import HOOKS, KINDS

    components = builtin_components()
    lines = []
    for kind in KINDS:
        of_kind = [c for c in components if c.kind == kind]
        lines += [f"## {PLURALS.get(kind, kind + 's').capitalize()} {{#{kind}}}", "",
                  f"Registered with [`{HOOKS[kind]}`](hooks.md#{HOOKS[kind]}): "
                  + ", ".join(f"[`{c.name}`](#{kind}-{c.name})" for c in of_kind) + ".", ""]
        for component in of_kind:
            lines += _component_entry(component)
    return "\n".join(lines).rstrip() + "\n"


def _component_entry(component: Any) -> list[str]:
    """One component: heading, provider, docstring, params."""
    version = f" {component.provider.version}" if component.provider.version else ""
    lines = [f"### {component.kind}: {component.name} {{#{component.kind}-{component.name}}}", "",
             f"Provided by `{component.provider.name}{version}`.", "",
             rest_to_markdown(inspect.getdoc(component.factory) or component.description), ""]
    params = component.params_summary()
    if params:
        lines += ["| param | type | range | default |", "|---|---|---|---|"]
        lines += [f"| {_code(name)} | {_code(p['type'])} | {_code(p['range']) if 'range' in p else ''} "
                  f"| {_code(yaml_value(p['default'])) if 'default' in p else 'required'} |"
                  for name, p in params.items()]
    else:
        lines.append("No params.")
    return lines + [""]


# --- Published results ------------------------------------------------------------------------

_LINK = re.compile(r"(!?)\[([^\]]*)\]\(([^)\s]+)\)")


def published_suites(results_dir: Path = RESULTS_DIR) -> list[str]:
    """The suite folders of ``results/`` that have a ``report.md``, sorted."""
    if not results_dir.is_dir():
        return []
    return sorted(p.name for p in results_dir.iterdir() if (p / "report.md").is_file())


def rewrite_links(markdown: str, served: Callable[[str], bool]) -> str:
    """``markdown`` with each relative link the site cannot serve (``served(target)`` false) made a
    code span of its text (an image: of its target); absolute links and anchors are kept."""
    def replace(match: re.Match[str]) -> str:
        bang, text, target = match.groups()
        if re.match(r"[a-z][a-z0-9+.-]*:|#|/", target) or served(target.split("#")[0]):
            return match.group(0)
        shown = target if bang or not text.strip() else text
        return shown if shown.startswith("`") else f"`{shown}`"

    return _LINK.sub(replace, markdown)


def _report_serves(suite: str, results_dir: Path) -> Callable[[str], bool]:
    """What a published report may link to: its figures (PNG)."""
    return lambda target: target.startswith("figures/") and target.endswith(".png") \
        and (results_dir / suite / target).is_file()


def published_markdown(results_dir: Path = RESULTS_DIR) -> str:
    """``results/README.md`` with its links into ``results/`` made to work in the site: a suite's
    ``report.md`` and PNG figures are pages and images of the site; other files are code spans."""
    readme = results_dir / "README.md"
    if not readme.is_file():
        return "No published results in this checkout (`results/README.md` is missing).\n"
    suites = set(published_suites(results_dir))

    def served(target: str) -> bool:
        suite, _, rest = target.partition("/")
        return suite in suites and (rest == "report.md" or _report_serves(suite, results_dir)(rest))

    return rewrite_links(readme.read_text(encoding="utf-8"), served)


def published_report_markdown(suite: str, results_dir: Path = RESULTS_DIR) -> str:
    """A suite's ``report.md`` with its links to files the site does not serve as code spans."""
    text = (results_dir / suite / "report.md").read_text(encoding="utf-8")
    return rewrite_links(text, _report_serves(suite, results_dir))


def published_figures(suite: str, results_dir: Path = RESULTS_DIR) -> list[str]:
    """The PNG figures a suite's ``report.md`` or the README shows, as paths under the suite folder."""
    texts = [(results_dir / suite / "report.md").read_text(encoding="utf-8")]
    if (results_dir / "README.md").is_file():
        texts.append((results_dir / "README.md").read_text(encoding="utf-8").replace(f"{suite}/", ""))
    targets = {m.group(3) for text in texts for m in _LINK.finditer(text)}
    return sorted(t for t in targets if _report_serves(suite, results_dir)(t))


# --- MkDocs hooks -----------------------------------------------------------------------------

#: Marker -> the function that writes what replaces it.
MARKERS: dict[str, Callable[[], str]] = {
    "<!-- mimbench:suite-keys -->": suite_keys_markdown,
    "<!-- mimbench:cli -->": cli_markdown,
    "<!-- mimbench:hooks -->": hooks_markdown,
    "<!-- mimbench:components -->": components_markdown,
    "<!-- mimbench:published -->": published_markdown,
}


def replace_markers(markdown: str) -> str:
    """``markdown`` with each marker that stands on a line of its own replaced by its generated
    Markdown (a marker quoted in a sentence or a code span stays as it is)."""
    for marker, write in MARKERS.items():
        line = re.compile(rf"^[ \t]*{re.escape(marker)}[ \t]*$", re.M)
        if line.search(markdown):
            generated = write()
            markdown = line.sub(lambda _: generated, markdown)
    return markdown


def on_page_markdown(markdown: str, page: Any = None, config: Any = None, files: Any = None, **kwargs: Any) -> str:
    """MkDocs hook: replace the markers of a page with the generated Markdown."""
    return replace_markers(markdown)


def on_files(files: Any, config: Any, **kwargs: Any) -> Any:
    """MkDocs hook: add each published suite's report (``published/<suite>/report.md``) and its
    figures to the site, and leave out the files of docs/ that are only snippets of other pages."""
    from mkdocs.structure.files import File, InclusionLevel

    for name in SNIPPET_FILES:
        snippet = files.get_file_from_path(name)
        if snippet is not None:
            files.remove(snippet)
    for suite in published_suites():
        files.append(File.generated(config, f"{PUBLISHED_DIR}/{suite}/report.md",
                                    content=published_report_markdown(suite), inclusion=InclusionLevel.NOT_IN_NAV))
        for figure in published_figures(suite):
            files.append(File.generated(config, f"{PUBLISHED_DIR}/{suite}/{figure}",
                                        abs_src_path=str(RESULTS_DIR / suite / figure)))
    return files


def on_config(config: Any, **kwargs: Any) -> Any:
    """MkDocs hook: list each published report in the nav, after the page that names them all."""
    suites = published_suites()
    if suites and config.nav:
        config.nav = list(_with_published(config.nav, suites))
    return config


def _with_published(nav: list[Any], suites: list[str]) -> Iterator[Any]:
    """``nav`` with the entry ``{title: published/index.md}`` turned into a section that also holds
    each suite's report; a nav without that entry is returned as it is."""
    index = f"{PUBLISHED_DIR}/index.md"
    for item in nav:
        if isinstance(item, dict) and len(item) == 1 and list(item.values())[0] == index:
            title = list(item)[0]
            yield {title: [{"Overview": index}, *({s: f"{PUBLISHED_DIR}/{s}/report.md"} for s in suites)]}
        elif isinstance(item, dict) and len(item) == 1 and isinstance(list(item.values())[0], list):
            title, children = next(iter(item.items()))
            yield {title: list(_with_published(children, suites))}
        else:
            yield item
