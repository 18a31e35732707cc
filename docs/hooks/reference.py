"""The site's reference pages, generated from the code at build time (a MkDocs hook; nothing is committed).

- ``reference/topology.md``: every field of a topology file, with its YAML name, type, default and one line.
  Names come from the loader's own tables (``supervisor._spec.fields``: the ``_seconds`` renaming, the probe
  settings and check kinds, the GPU and profile keys), types and defaults from the attrs classes of
  ``supervisor._spec.model``, the one line from each field's ``#:`` comment (else its class's docstring).
  A field without a line, or of a type this file cannot word, fails the build instead of drifting.
- ``reference/cli.md``: each command's ``--help``, from the parser the CLI itself builds.
- ``reference/python.md``: every name of ``supervisor.__all__``: signature and docstring.

``tests/docs/test_reference.py`` checks that every key the loader accepts is on the topology page.
"""

from __future__ import annotations

import argparse
import collections.abc
import inspect
import os
import re
import sys
import types
import typing
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # mkdocs imports this file by path; the library is the checkout beside it
    sys.path.insert(0, str(ROOT))

from supervisor._spec import fields as _fields  # noqa: E402
from supervisor._spec import model as _model  # noqa: E402


# ----- MkDocs -------------------------------------------------------------------------------------------
def on_files(files: Any, config: Any) -> Any:
    """Adds the generated pages to the site (kept in memory: nothing under docs/ is written)."""
    import importlib

    file_class: Any = importlib.import_module("mkdocs.structure.files").File  # mkdocs is only in the docs extra
    pages: dict[str, Callable[[], str]] = {
        "reference/topology.md": topology_reference,
        "reference/cli.md": cli_reference,
        "reference/python.md": python_reference,
    }
    for path, render in pages.items():
        files.append(file_class.generated(config, path, content=render()))
    return files


# ----- the topology fields ------------------------------------------------------------------------------
class Row(typing.NamedTuple):
    path: str
    type: str
    default: str
    line: str


#: the YAML shape of a field whose loader hook takes more than its attrs type says
_SHAPES: dict[tuple[type, str], str] = {
    (_model.Topology, "services"): "mapping NAME: service",
    (_model.Topology, "cluster"): "`slurm`, or a mapping",
    (_model.Service, "command"): "list of strings, or one string split as a shell would",
    (_model.Service, "ports"): "list of names, or mapping NAME: number \\| null \\| {below: N}",
    (_model.Service, "depends_on"): "list of names, or mapping NAME: condition",
    (_model.Service, "ready"): "probe",
    (_model.Service, "alive"): "probe",
    (_model.Service, "env"): "mapping NAME: string",
    (_model.Service, "restart"): "`no` \\| `on-failure` \\| `always`, or a mapping",
    (_model.Service, "fatal"): "regex, or list of regexes",
    (_model.Service, "gpus"): "integer, or a mapping",
    (_model.Service, "phases"): "mapping NAME: regex, in order",
    (_model.Service, "profile"): "`nsys` \\| `py-spy` \\| `torch`, or a mapping",
    (_model.Service, "placement"): "`local`, or a mapping",
    (_model.Service, "on_change"): "`none` \\| `restart` \\| {signal: NAME}",
    (_model.Service, "metrics"): "URL template",
    (_model.Service, "api"): "mapping NAME: path",
    (_model.SlurmCluster, "time"): "duration (`2h`) or Slurm time (`2:00:00`)",
    (_model.SlurmCluster, "extra"): "list of strings, or one string split as a shell would",
    (_model.GpuRequest, "ids"): "list of integers",
    (_model.Profile, "args"): "list of strings, or one string split as a shell would",
    (_model.OnChange, "signal"): "signal name",
    (_model.StopPolicy, "signal"): "signal name (`SIGTERM`, `TERM`, 15)",
}
#: a field that is written some other way in YAML (the key of its mapping, a shorthand), not as a key
_NOT_KEYS = {(_model.OnChange, "action"), (_model.PortSpec, "name")}


def _comments(cls: type) -> dict[str, str]:
    """Each field's ``#:`` comment in the class body: lines just above the field, or after it on its line."""
    found: dict[str, str] = {}
    above: list[str] = []
    for line in inspect.getsource(cls).splitlines():
        stripped = line.strip()
        if stripped.startswith("#:"):
            above.append(stripped[2:].strip())
            continue
        match = re.match(r"^    (\w+): ", line)
        if match:
            trailing = line.partition("  #: ")[2].strip()
            text = " ".join([*above, trailing]).strip()
            if text:
                found[match.group(1)] = text
        above = []
    return found


def _first_sentence(doc: str | None) -> str:
    text = " ".join((doc or "").split())
    return text.split(". ")[0].rstrip(".") + "." if text else ""


def _attrs_class(hint: object) -> type | None:
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    for option in options:
        if isinstance(option, type) and attrs.has(option):
            return option
    return None


def _one_line(cls: type, field: attrs.Attribute[Any], hint: object) -> str:
    line = _comments(cls).get(field.name)
    if line is None:
        nested = _attrs_class(hint)
        line = _first_sentence(nested.__doc__) if nested is not None else None
    if not line:
        raise LookupError(f"{cls.__name__}.{field.name} has no '#:' comment in supervisor/_spec/model.py")
    return _markdown(line)


def _type_text(cls: type, field: attrs.Attribute[Any], hint: object) -> str:
    shape = _SHAPES.get((cls, field.name))
    if shape is not None:
        return shape
    if field.name.endswith("_seconds"):
        return "duration"
    if field.name.endswith("_bytes") or field.name == "max_bytes":
        return "size"
    return _hint_text(hint, f"{cls.__name__}.{field.name}")


def _hint_text(hint: object, where: str) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Union or isinstance(hint, types.UnionType):
        kept = [arg for arg in args if arg is not type(None)]
        return " \\| ".join(_hint_text(arg, where) for arg in kept)
    if origin is typing.Literal:
        return " \\| ".join(f"`{arg}`" for arg in args)
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        return f"list of {_hint_text(args[0], where)}s"
    if isinstance(hint, type) and attrs.has(hint):
        return "mapping"
    if origin in (collections.abc.Mapping, dict) and len(args) == 2:
        return f"mapping of {_hint_text(args[0], where)} to {_hint_text(args[1], where)}"
    simple = {str: "string", int: "integer", bool: "boolean", float: "number"}
    if hint in simple:
        return simple[hint]
    raise TypeError(f"{where}: no YAML wording for the type {hint!r}: add it to docs/hooks/reference.py")


def _default_text(field: attrs.Attribute[Any]) -> str:
    default: Any = field.default
    if default is attrs.NOTHING:
        return "required"
    if isinstance(default, attrs.Factory):  # type: ignore[arg-type]  # attrs types Factory as a function
        made = default.factory()
        return "" if attrs.has(type(made)) else f"`{made!r}`"
    if default is None:
        return ""
    if isinstance(default, bool):
        return f"`{str(default).lower()}`"
    if field.name.endswith("_seconds"):
        return f"`{_duration(default)}`"
    if field.name == "max_bytes":
        return f"`{default // 1_000_000}MB`" if default % 1_000_000 == 0 else f"`{default}`"
    if isinstance(default, tuple):
        return f"`{list(default)}`"
    return f"`{default}`"


def _duration(seconds: float) -> str:
    if seconds and seconds < 1:
        return f"{seconds * 1000:g}ms"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:g}m"
    return f"{seconds:g}s"


def _markdown(text: str) -> str:
    """A docstring's RST literals as Markdown code, and ``<...>`` outside code kept as text, not HTML."""
    text = re.sub(r"``(.+?)``", r"`\1`", text)
    parts = text.split("`")
    for index in range(0, len(parts), 2):  # outside code spans only
        parts[index] = parts[index].replace("<", "&lt;").replace(">", "&gt;").replace("|", "\\|")
    return "`".join(parts).replace("`|`", "`\\|`")


def _attribute(cls: type, yaml: str) -> attrs.Attribute[Any]:
    """The attrs field behind a YAML key: the same name, or with the ``_seconds``/``_bytes`` it leaves out."""
    known: tuple[attrs.Attribute[Any], ...] = attrs.fields(cls)
    for field in known:
        if field.name in (yaml, f"{yaml}_seconds", f"{yaml}_bytes"):
            return field
    raise LookupError(f"{cls.__name__} has no field for the YAML key {yaml!r}")


def _rows_of(cls: type, prefix: str, keys: list[str] | None = None) -> Iterator[Row]:
    """Rows for the keys of one block (``keys``: the loader's list; default its list for ``cls``)."""
    hints = typing.get_type_hints(cls, vars(_model))
    names = keys if keys is not None else _fields._FIELDS_OF[cls]
    for yaml in names:
        if cls is _model.Topology and yaml in ("source", "overrides", "vars"):
            continue  # not YAML keys (``vars`` is the loader's own: see topology_reference)
        field = _attribute(cls, yaml)
        if (cls, field.name) in _NOT_KEYS:
            continue
        hint = hints[field.name]
        path = f"{prefix}{yaml}"
        yield Row(path, _type_text(cls, field, hint), _default_text(field), _one_line(cls, field, hint))
        yield from _nested(cls, field.name, hint, path + ".")


def _nested(cls: type, name: str, hint: object, prefix: str) -> Iterator[Row]:
    """The blocks inside a field: each written the way its loader hook reads it."""
    nested = _attrs_class(hint)
    if (cls, name) == (_model.Topology, "services"):
        yield from _rows_of(_model.Service, "services.NAME.")
    elif nested is _model.Probe:
        yield from _probe_rows(prefix)
    elif nested is _model.GpuRequest:
        yield from _rows_of(nested, prefix, _fields._FIELDS_OF[_model.GpuRequest])
    elif nested is _model.Profile:
        yield from _rows_of(nested, prefix, _fields._FIELDS_OF[_model.Profile])
    elif (cls, name) == (_model.Service, "ports"):
        yield from _port_rows(prefix)
    elif (cls, name) == (_model.Service, "depends_on"):
        yield from _dependency_rows(prefix)
    elif nested is _model.OnChange:
        yield from _rows_of(nested, prefix, ["signal"])
    elif nested is not None and nested in _fields._FIELDS_OF:
        yield from _rows_of(nested, prefix)
    elif (cls, name) == (_model.Service, "phases"):
        yield Row(prefix + "NAME", "regex", "", _markdown(_first_sentence(_model.Phase.__doc__)))


def _probe_rows(prefix: str) -> Iterator[Row]:
    checks: dict[str, type] = {
        "http": _model.HttpCheck,
        "tcp": _model.TcpCheck,
        "log": _model.LogCheck,
        "exec": _model.ExecCheck,
        "all": _model.AllOf,
        "any": _model.AnyOf,
    }
    kinds = {"http": "URL template", "tcp": "`host:port` or a port", "log": "regex"}
    kinds |= {"exec": "list of strings, or one string", "all": "list of checks", "any": "list of checks"}
    for kind, options in _fields._CHECK_OPTIONS.items():
        check = checks[kind]
        yield Row(prefix + kind, kinds[kind], "", _markdown(_first_sentence(check.__doc__)) + " One check per probe.")
        hints = typing.get_type_hints(check, vars(_model))
        for option in options:
            field = _attribute(check, option)
            kind_type = "mapping" if option == "json" else _type_text(check, field, hints[field.name])
            yield Row(
                f"{prefix}{option}", kind_type, "", f"With `{kind}`: " + _one_line(check, field, hints[field.name])
            )
    hints = typing.get_type_hints(_model.Probe, vars(_model))
    for yaml, name in _fields._PROBE_SETTINGS.items():
        field = _attribute(_model.Probe, name)
        hint = hints[field.name]
        row_type = _type_text(_model.Probe, field, hint)
        yield Row(prefix + yaml, row_type, _default_text(field), _one_line(_model.Probe, field, hint))


def _port_rows(prefix: str) -> Iterator[Row]:
    hints = typing.get_type_hints(_model.PortSpec, vars(_model))
    for name in ("number", "below"):
        field = _attribute(_model.PortSpec, name)
        path = prefix + ("NAME" if name == "number" else "NAME.below")
        row_type = "integer \\| null" if name == "number" else "integer"
        yield Row(path, row_type, "", _one_line(_model.PortSpec, field, hints[name]))


def _dependency_rows(prefix: str) -> Iterator[Row]:
    hints = typing.get_type_hints(_model.Dependency, vars(_model))
    field = _attribute(_model.Dependency, "condition")
    line = _one_line(_model.Dependency, field, hints["condition"])
    yield Row(prefix + "NAME", _hint_text(hints["condition"], "condition"), "`ready`", line)
    yield Row(
        prefix + "NAME.condition", _hint_text(hints["condition"], "condition"), "`ready`", "The same, compose style."
    )


def topology_rows() -> list[Row]:
    rows = list(_rows_of(_model.Topology, ""))
    rows.insert(1, Row("vars", "mapping NAME: value", "", "Defaults of the `${NAME}` vars the file uses."))
    rows.insert(2, Row("preset", "string", "", "A registered preset (`vllm`) or `module:builder` that builds it."))
    return rows


def topology_reference() -> str:
    lines = [
        "# Topology fields",
        "",
        "Every key a topology file takes, generated from the loader and the model classes",
        "(`supervisor/_spec/fields.py`, `supervisor/_spec/model.py`) when the site is built. `NAME` stands for",
        "a name you choose (a service, a port, a phase). Durations: `250ms`, `10s`, `2m`, `1h` or seconds;",
        "sizes: `50MB`, `4MiB`, `512k`. An empty default means unset. Any value may be a `${var}`:",
        "see [YAML](../how-to/yaml.md).",
        "",
        "| field | type | default | |",
        "|---|---|---|---|",
    ]
    lines += [f"| `{row.path}` | {row.type} | {row.default} | {row.line} |" for row in topology_rows()]
    return "\n".join(lines) + "\n"


# ----- the CLI ------------------------------------------------------------------------------------------
def cli_reference() -> str:
    from supervisor._cli.table import build_parser

    columns = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "100"  # argparse wraps to the terminal; the page is the same on any machine
    try:
        parser = build_parser()
        lines = ["# CLI", "", "Each command's `--help`, from the parser `supervisor` builds.", ""]
        lines += ["```text", parser.format_help().rstrip(), "```", ""]
        subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        for name, sub in subparsers.choices.items():
            lines += [f"## {name}", "", "```text", sub.format_help().rstrip(), "```", ""]
    finally:
        if columns is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = columns
    return "\n".join(lines)


# ----- the Python API -----------------------------------------------------------------------------------
def _signature(name: str, obj: object) -> str:
    try:
        return f"{name}{inspect.signature(obj)}"  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return name


def _doc(obj: object) -> str:
    return _markdown_block(inspect.getdoc(obj) or "")


def _markdown_block(doc: str) -> str:
    """Docstring paragraphs as Markdown; indented lines (examples) as a code block."""
    out: list[str] = []
    for paragraph in re.split(r"\n\s*\n", doc):
        if paragraph.startswith("    ") or paragraph.startswith(">>>"):
            out.append("```text\n" + inspect.cleandoc(paragraph) + "\n```")
        else:
            out.append(_markdown(" ".join(paragraph.split())))
    return "\n\n".join(part for part in out if part)


def _members(cls: type) -> Iterator[tuple[str, object]]:
    for name, value in vars(cls).items():
        if name.startswith("_") or not (inspect.getdoc(value) or "").strip():
            continue
        if isinstance(value, (property, staticmethod, classmethod)) or inspect.isfunction(value):
            yield name, value


def python_reference() -> str:
    import supervisor

    lines = [
        "# Python API",
        "",
        "Every public name of `supervisor` (`supervisor.__all__`), with its signature and docstring.",
        "",
    ]
    for name in supervisor.__all__:
        obj = getattr(supervisor, name)
        lines += [f"## {name}", ""]
        if inspect.isclass(obj):
            lines += ["```python", "class " + _signature(name, obj), "```", "", _doc(obj), ""]
            for member, value in _members(obj):
                target: Callable[..., object] | object = value
                if isinstance(value, (staticmethod, classmethod)):
                    target = value.__func__
                shown = member if isinstance(value, property) else _signature(member, target)
                lines += [f"- `{shown}`: " + _markdown(" ".join((inspect.getdoc(value) or "").split())), ""]
        elif callable(obj):
            lines += ["```python", _signature(name, obj), "```", "", _doc(obj), ""]
        else:
            lines += [f"`{name} = {obj!r}`", ""]
    return "\n".join(lines)
