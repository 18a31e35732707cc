"""YAML or a plain dict -> ``Topology``, via cattrs, with errors naming the file, service and field.

A topology that is well-formed is built by ``_structure_fast`` (``_spec.fast``), a few lines over the
same field hooks (``_spec.fields``), so that ``supervisor run`` need not import cattrs and generate its
converter (~15 ms of a ~100 ms start). Anything it does not take as it is (an error, an unknown field, a
field type it leaves alone) goes to the cattrs converter, built on first use, which gives the result or
words every problem with its path. ``${VAR}`` and ``--set`` are applied before (``_spec.vars``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from .._errors import ConfigError, suggest
from .fast import _structure_fast
from .fields import (
    _CONVERTER,
    _FIELDS_OF,
    _cluster,
    _fold_subfield,
    _format_exception,
    _locate,
    _structured,
    _unknown_message,
)
from .model import Cluster, Topology
from .vars import Variables, apply_structural, describe
from .yamlfile import parse_yaml, read_text

__all__ = ["load", "topology_from_dict", "topology_from_text"]


def topology_from_dict(
    data: object,
    *,
    source: str | None = None,
    overrides: Mapping[str, object] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Topology:
    """Build a ``Topology`` from parsed YAML. ``overrides``: ``a.b=v`` paths set fields, plain names set vars."""
    if not isinstance(data, Mapping):
        raise ConfigError("a topology file must be a mapping with name: and services:", source=source)
    data = dict[str, Any](data)
    environ = os.environ if environ is None else environ
    if "preset" in data:
        from .presets import topology_from_preset

        given = dict(overrides or {})
        cluster_sets = {k: str(v) for k, v in given.items() if k == "cluster" or k.startswith("cluster.")}
        mentioned = {k for k in given if k not in cluster_sets and _mentions(data, k)}  # --set N fills ${N}
        expander = Variables({k: str(given[k]) for k in mentioned}, environ, {})
        preset = topology_from_preset(
            data, source=source, overrides={k: v for k, v in given.items() if k not in cluster_sets},
            expand=expander.expand, file_vars=mentioned,
        )  # fmt: skip
        cluster = _preset_cluster(data.get("cluster"), cluster_sets, expander.expand, source)
        if expander.problems:
            raise ConfigError([_describe_problem(p) for p in expander.problems], source=source)
        preset = attrs.evolve(preset, overrides=_override_texts(overrides))
        return preset if cluster is None else attrs.evolve(preset, cluster=cluster)
    defaults = data.pop("vars", None) or {}
    if not isinstance(defaults, Mapping):
        raise ConfigError("field 'vars': expected a mapping NAME: default", source=source)
    variables: dict[str, str] = {}
    try:
        for key, raw in (overrides or {}).items():
            if key == "vars":
                raise ConfigError("--set vars: set each var on its own: --set NAME=VALUE")
            if "." in key or (key in _FIELDS_OF[Topology] and not _mentions(data, key)):
                apply_structural(data, key, str(raw))
            else:
                variables[key] = str(raw)
    except ConfigError as exc:
        raise ConfigError(exc.problems, source=source) from None
    expander = Variables(variables, environ, {str(k): v for k, v in defaults.items()})
    expanded = expander.expand(data, "")
    assert isinstance(expanded, dict)
    data = expanded
    problems = list(dict.fromkeys(expander.problems))  # a default used twice says its problem once
    for name in variables:
        if name not in expander.used:
            known = sorted(expander.used | {str(k) for k in defaults})
            declared = " (it is in vars: but nothing uses it)" if name in known else suggest(name, known, 0.6)
            problems.append(f"--set {name}: the file uses no ${{{name}}}" + declared)
    if problems:
        raise ConfigError([_describe_problem(p) for p in problems], source=source)

    known = [name for name in _FIELDS_OF[Topology] if name not in ("source", "overrides")]
    unknown = [f"top level: {_unknown_message(str(key), known)}" for key in data if key not in known]
    data = {key: value for key, value in data.items() if key in known}  # reported, and the rest checked
    has_services = "services" in data
    services = data["services"] = _structured(data.get("services"))
    names: list[str] = []
    if isinstance(services, Mapping):
        listed = []
        for name, body in services.items():
            names.append(str(name))
            body = _structured(body)  # a whole service as one ${var}
            if body is None:
                body = {}
            listed.append({"name": str(name), **body} if isinstance(body, Mapping) else body)
        data["services"] = listed
    elif not has_services and unknown:  # one of them is services: misspelt, most likely
        raise ConfigError(unknown, source=source, waiting=1)
    elif not has_services:
        raise ConfigError("field 'services': required (a mapping of service name to its settings)", source=source)
    elif not isinstance(services, list):
        problem = "field 'services': expected a mapping of service name to its settings"
        raise ConfigError([*unknown, problem], source=source)
    else:  # the list form: each service names itself
        for index, body in enumerate(services):
            named = isinstance(body, Mapping) and isinstance(body.get("name"), str) and body["name"]
            names.append(str(body["name"]) if named else f"#{index}")
    try:
        if unknown:
            raise ValueError(unknown[0])
        topology = _structure_fast(data)
    except Exception:  # unusual, or wrong: the converter builds it, or says what is wrong where
        topology = _structure(data, names, source, unknown)
    return attrs.evolve(topology, source=source, overrides=_override_texts(overrides))


def _mentions(value: object, name: str) -> bool:
    """Whether the file uses ``${name}``: then ``--set name=x`` sets that var, not the top-level field
    ``name:`` (which may well be ``name: ${name}``)."""
    if isinstance(value, str):
        return re.search(r"(?<!\$)\$\{" + re.escape(name) + r"(?=[}:-])", value) is not None
    if isinstance(value, Mapping):
        return any(_mentions(key, name) or _mentions(item, name) for key, item in value.items())
    return isinstance(value, list) and any(_mentions(item, name) for item in value)


def _structure(data: Mapping[str, Any], names: list[str], source: str | None, unknown: list[str]) -> Topology:
    """The converter's ``Topology``; else one ``ConfigError`` with the top level's ``unknown`` fields, each
    field it could not read, and what the checks find in the rest (``_spec.salvage``)."""
    import cattrs

    from .salvage import Salvage

    lines = list(unknown)
    paths: list[str] = []
    try:
        topology = _CONVERTER.structure(data, Topology)
    except Exception as exc:  # cattrs raises exception groups carrying each field's path
        messages = cattrs.transform_error(exc, path="$", format_exception=_format_exception)
        for message in messages:
            text, _, path = message.rpartition(" @ ")
            shown, text = _fold_subfield(path, text)
            lines.append(f"{_locate(shown, names)}: {text}")
            paths.append(path)
    else:
        if not lines:
            return topology
    found, waiting = Salvage(data, paths, names, top_unknown=bool(unknown)).check()
    raise ConfigError(list(dict.fromkeys(lines + found)), source=source, waiting=waiting) from None


def _override_texts(overrides: Mapping[str, object] | None) -> dict[str, str]:
    return {str(key): str(value) for key, value in (overrides or {}).items()}


def _preset_cluster(
    value: object, sets: Mapping[str, str], expand: Callable[[object, str], object], source: str | None
) -> Cluster | None:
    """A preset file's ``cluster:`` and ``--set cluster.*``: the same block and messages as in any file."""
    holder: dict[str, Any] = {} if value is None else {"cluster": value}
    try:
        for key, raw in sets.items():
            apply_structural(holder, key, raw)
    except ConfigError as exc:
        raise ConfigError(exc.problems, source=source) from None
    if "cluster" not in holder:
        return None
    try:
        return _cluster(expand(holder["cluster"], "cluster"))
    except Exception as exc:
        import cattrs

        messages = cattrs.transform_error(exc, path="$.cluster", format_exception=_format_exception)
        lines = [f"{_locate(path, [])}: {text}" for text, _, path in (m.rpartition(" @ ") for m in messages)]
        raise ConfigError(lines, source=source) from None


def _describe_problem(problem: str) -> str:
    where, sep, rest = problem.partition(": ")
    if sep and where and not where.startswith("--set"):
        return f"{describe(where)}: {rest}"
    return problem


def load(path: str | os.PathLike[str], overrides: Mapping[str, object] | None = None) -> Topology:
    """Read a topology YAML file. Relative ``run_dir`` and ``cwd`` stay relative to the caller's cwd.

    A bare preset name (``dynamo``, ``vllm.yaml``) that is no file here means the registered preset of that
    name (its YAML twin, or its builder's defaults when it ships none), so ``supervisor run vllm --set
    model=...`` works wherever the package that registers it is installed.
    """
    file = str(path)
    if not os.path.exists(file) and re.fullmatch(r"[a-z0-9_]+(\.yaml)?", file):
        from .presets import preset_file, registered_presets

        name = file.removesuffix(".yaml")
        twin = preset_file(name)
        if twin is not None:
            file = twin
        elif name in registered_presets():
            return topology_from_dict({"preset": name}, source=f"preset {name}", overrides=overrides)
    return topology_from_dict(_document(read_text(file), file), source=file, overrides=overrides)


def _document(text: str, file: str) -> object:
    """The file's document: from the cache when this very text was parsed before, else parsed (and kept)."""
    from .document_cache import MISS, cached_document, store_document

    document = cached_document(text)
    if document is MISS:
        document = parse_yaml(text, file)
        store_document(text, document)
    return document


def topology_from_text(
    text: str, *, source: str | None = None, overrides: Mapping[str, object] | None = None
) -> Topology:
    """Parse YAML text (bounded: size of the expanded document, no duplicate keys) into a ``Topology``."""
    return topology_from_dict(parse_yaml(text, source or "<text>"), source=source, overrides=overrides)
