"""``preset: NAME`` files: a topology built by a typed Python builder from the file's ``vars:`` and ``--set``.

A preset YAML file is the builder's arguments with their defaults (``topologies/dynamo.yaml`` is
``preset: dynamo`` plus ``vars:``), so the YAML preset and ``topologies.dynamo(...)`` are one code path.
``preset:`` names a registered preset or ``package.module:function`` (a user's own builder). Each value is
checked against the builder's type hints, so ``--set decode=x`` is the same clear error as in any field.

Presets register through the ``topovisor.presets`` entry point group (``NAME = "package.module:builder"``):
the bundled ones (``topologies``) as any third-party package's, so the library never imports a preset
package by name, and ``supervisor run NAME`` finds a preset that another installed package ships.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import inspect
import os
import types
import typing
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, Literal, Union

import attrs

from .._errors import ConfigError, suggest
from .model import Topology
from .vars import Substituted
from .yamlfile import read_value

__all__ = ["PRESET_FIELDS", "PRESET_GROUP", "preset_file", "registered_presets", "topology_from_preset"]

#: the entry point group presets register in: ``[project.entry-points."topovisor.presets"]``
PRESET_GROUP = "topovisor.presets"

#: top-level fields a preset file may hold; ``name``, ``run_dir`` and ``strategy`` replace the builder's;
#: ``cluster`` is read by ``_spec.load`` (like ``--set cluster.*``), so the builders never see it
PRESET_FIELDS = ("preset", "vars", "name", "run_dir", "strategy", "cluster", "containment")


def topology_from_preset(
    data: Mapping[str, Any],
    *,
    source: str | None,
    overrides: Mapping[str, object],
    expand: Callable[[object, str], object],
    file_vars: Collection[str] = (),
) -> Topology:
    """Build the topology of a ``preset:`` file. ``expand`` fills ``${ENV}`` in the file's values;
    ``file_vars``: the ``--set`` names the file uses as ``${NAME}`` (``expand`` fills them), so one that
    is no parameter of the builder is not refused as one."""
    unknown = [str(key) for key in data if key not in PRESET_FIELDS]
    if unknown:
        raise ConfigError(
            [f"top level: '{key}' is not allowed beside preset:{suggest(key, PRESET_FIELDS, 0.6)}" for key in unknown]
            + [
                "(a preset file holds preset:, vars:, and optionally name:, run_dir:, strategy:, cluster:, "
                "containment:)"
            ],
            source=source,
        )
    name = data["preset"]
    if not isinstance(name, str) or not name:
        raise ConfigError(f"field 'preset': expected a preset name or module:function, got {name!r}", source=source)
    builder = _builder(name, source)
    label = name.rpartition(":")[2] or name
    parameters = _parameters(builder)
    defaults = data.get("vars") or {}
    if not isinstance(defaults, Mapping):
        raise ConfigError("field 'vars': expected a mapping NAME: value", source=source)
    problems: list[str] = []
    raw: dict[str, tuple[object, bool]] = {}  # name -> (value, given as text on the command line)
    for key, value in defaults.items():
        filled = expand(value, f"vars.{key}")  # ``replicas: ${N:-2}`` is read as --set N=2 would be
        raw[str(key)] = (filled, isinstance(filled, Substituted))
    for key, value in overrides.items():
        if key in file_vars and key not in parameters:
            continue
        if key not in _TOP_LEVEL or key in parameters:  # --set name=... renames the topology, as in any file
            raw[str(key)] = (value, isinstance(value, str))
    kwargs: dict[str, object] = {}
    for key, (value, as_text) in raw.items():
        if key not in parameters:
            where = "--set" if key in overrides else "field 'vars'"
            close = suggest(key, [p for p in parameters if p != key], 0.6) or f" (known: {', '.join(parameters)})"
            problems.append(f"{where}: preset '{label}' takes no var '{key}'{close}")
            continue
        try:
            hint = parameters[key][0]
            read = read_value(value) if isinstance(value, str) and as_text and not _text_only(hint) else value
            kwargs[key] = _coerce(read, hint)
        except (TypeError, ValueError) as exc:
            origin = value.origin() if isinstance(value, Substituted) else ""
            problems.append(f"preset '{label}', var '{key}': {exc}{origin}")
    missing = [p for p, (_, required) in parameters.items() if required and p not in kwargs]
    problems += [f"preset '{label}', var '{p}': required (pass --set {p}=... or add it to vars:)" for p in missing]
    if problems:
        raise ConfigError(problems, source=source)
    try:
        topology = builder(**kwargs)
    except ConfigError as exc:
        raise ConfigError(exc.problems, source=source) from None
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"preset '{label}': {exc}", source=source) from None
    if not isinstance(topology, Topology):
        raise ConfigError(f"preset '{label}': the builder returned {type(topology).__name__}, not a Topology")
    fields: dict[str, Any] = {}  # strategy: checked by plan, as for a topology built in code
    for key in _TOP_LEVEL:
        value = overrides[key] if key in overrides and key not in parameters else expand(data.get(key), key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            problems.append(f"field '{key}': expected a string, got {value!r}")
        fields[key] = str(value)
    if problems:
        raise ConfigError(problems, source=source)
    return attrs.evolve(topology, source=source, **fields)


_TOP_LEVEL = ("name", "run_dir", "strategy", "containment")


@functools.cache
def registered_presets() -> dict[str, str]:
    """Preset name -> ``module:function`` of its builder, from every installed distribution's
    ``topovisor.presets`` entry points. Two distributions that give one name different builders are an
    error that names both: which one runs must not depend on the order of ``sys.path``. Read once per
    process: loading a file, its YAML twin and the builder would each scan every installed distribution."""
    from importlib.metadata import entry_points

    found: dict[str, str] = {}
    for point in entry_points(group=PRESET_GROUP):
        known = found.setdefault(point.name, point.value)
        if known != point.value:
            raise ConfigError(
                f"preset '{point.name}' is registered twice ({PRESET_GROUP}): {known} and {point.value}; "
                "uninstall one of the packages that ship it"
            )
    return found


def preset_file(name: str) -> str | None:
    """The YAML twin of registered preset ``name`` (``NAME.yaml`` beside its builder's module: the
    builder's arguments with their defaults), or None when the preset ships none."""
    target = registered_presets().get(name)
    if target is None:
        return None
    module = target.partition(":")[0].strip()
    try:
        spec = importlib.util.find_spec(module)  # imports a parent package at most, never the module itself
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    folders = list(spec.submodule_search_locations or [])
    if not folders and spec.origin:
        folders = [os.path.dirname(spec.origin)]
    for folder in folders:
        candidate = os.path.join(folder, f"{name}.yaml")
        if os.path.isfile(candidate):
            return candidate
    return None


def _builder(name: str, source: str | None) -> Callable[..., object]:
    module_name, colon, function = name.partition(":")
    try:
        if not colon:
            presets = registered_presets()
            if name not in presets:
                known = sorted(presets)
                hint = suggest(name, known, 0.6) or (
                    f" (known: {', '.join(known)})" if known else f" (no package registers one in {PRESET_GROUP})"
                )
                raise ConfigError(f"field 'preset': no preset '{name}'{hint}", source=source)
            module_name, _, function = presets[name].partition(":")
        found = getattr(importlib.import_module(module_name.strip()), function.strip())
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"field 'preset': cannot load '{name}': {exc}", source=source) from None
    if not callable(found):
        raise ConfigError(f"field 'preset': '{name}' is not a function", source=source)
    return found  # type: ignore[no-any-return]


def _parameters(builder: Callable[..., object]) -> dict[str, tuple[object, bool]]:
    """Keyword parameter -> (its type hint, whether it is required); a parameter named like a top-level
    field (``cluster``) is set by that field, not by ``vars:``."""
    hints = typing.get_type_hints(builder)
    found: dict[str, tuple[object, bool]] = {}
    for parameter in inspect.signature(builder).parameters.values():
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        if parameter.name == "cluster":  # the file's own ``cluster:`` field (read by ``_spec.load``), not a var
            continue
        found[parameter.name] = (hints.get(parameter.name, object), parameter.default is parameter.empty)
    return found


def _text_only(hint: object) -> bool:
    """``str`` or ``str | None``: a ``--set`` value for it is taken as written (``007`` stays text)."""
    options = [o for o in typing.get_args(hint) if o is not type(None)] if _is_union(hint) else [hint]
    return options == [str]


def _is_union(hint: object) -> bool:
    return typing.get_origin(hint) in (Union, types.UnionType)


def _coerce(value: object, hint: object) -> object:
    """``value`` checked against ``hint``: int, float, bool, str, Literal, Optional, Mapping, Sequence."""
    if hint is object or hint is Any:
        return value
    origin = typing.get_origin(hint)
    arguments = typing.get_args(hint)
    if _is_union(hint):
        errors = []
        for option in arguments:
            if option is type(None):
                if value is None:
                    return None
                continue
            try:
                return _coerce(value, option)
            except (TypeError, ValueError) as exc:
                errors.append(str(exc))
        raise ValueError(" or ".join(dict.fromkeys(errors)) if errors else f"got {value!r}")
    if origin is Literal:
        if value not in arguments:
            raise ValueError(f"expected one of {', '.join(map(str, arguments))}, got {value!r}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ValueError(f"expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"expected a whole number, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"expected a number, got {value!r}")
        return value
    if hint is str:
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise ValueError(f"expected text, got {value!r}")
        return str(value)
    if origin in (Mapping, dict, typing.Mapping) or hint in (Mapping, dict):
        if not isinstance(value, Mapping):
            raise ValueError(f"expected a mapping, got {value!r}")
        item_hint = arguments[1] if len(arguments) == 2 else object
        return {str(key): _coerce(item, item_hint) for key, item in value.items()}
    if origin in (Sequence, list, tuple, typing.Sequence) or hint in (Sequence, list, tuple):
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise ValueError(f"expected a list, got {value!r}")
        item_hint = arguments[0] if len(arguments) == 1 else object
        return [_coerce(item, item_hint) for item in value]
    return value
