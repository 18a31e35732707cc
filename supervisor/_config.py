"""YAML or a plain dict -> ``Topology``, via cattrs, with errors naming the file, service and field.

A topology that is well-formed is built by ``_structure_fast``, a few lines over the same field hooks, so
that ``supervisor run`` need not import cattrs and generate its converter (~15 ms of a ~100 ms start).
Anything it does not take as it is (an error, an unknown field, a field type it leaves alone) goes to the
cattrs converter, built on first use, which gives the result or words every problem with its path.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

import attrs

from ._errors import ConfigError
from ._spec import (
    AllOf,
    AnyOf,
    Backoff,
    Check,
    Cluster,
    Dependency,
    ExecCheck,
    GpuRequest,
    HttpCheck,
    LogCheck,
    LogPolicy,
    OnChange,
    Phase,
    Placement,
    PortSpec,
    Probe,
    Profile,
    RestartPolicy,
    Service,
    SlurmCluster,
    StopPolicy,
    TcpCheck,
    Topology,
)
from ._units import parse_duration, parse_size, slurm_time
from ._validate import suggest
from ._yaml import parse_yaml, read_text, read_value

if TYPE_CHECKING:
    import cattrs

__all__ = ["load", "topology_from_dict", "topology_from_text"]

_VARIABLE = re.compile(r"\$(\$)?\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?-)([^}]*))?\}")
_PROBE_SETTINGS = {
    "period": "period_seconds",
    "timeout": "timeout_seconds",
    "attempt_timeout": "attempt_timeout_seconds",
    "initial_delay": "initial_delay_seconds",
    "progress_timeout": "progress_timeout_seconds",
    "failures": "failures",
    "progress": "progress",
}
_CHECK_OPTIONS: dict[str, tuple[str, ...]] = {
    "http": ("status", "body", "json"),
    "tcp": (),
    "log": (),
    "exec": (),
    "all": (),
    "any": (),
}


class _UnknownField(ValueError):
    def __init__(self, field: str, known: list[str]) -> None:
        super().__init__(_unknown_message(field, known))


def _unknown_message(field: str, known: list[str]) -> str:
    hint = suggest(field, known, 0.6) or f" (known: {', '.join(sorted(known))})"
    return f"unknown field '{field}'" + hint


def _yaml_name(field: attrs.Attribute[Any]) -> str:
    return field.name.removesuffix("_seconds")


def _yaml_names(cls: type) -> list[str]:
    return [_yaml_name(field) for field in attrs.fields(cls)]


class _Substituted(str):
    """The text a whole-value ``${name}`` became: a string where the field wants one, else read as YAML.

    So ``replicas: ${decode}`` with ``--set decode=2`` is the number 2, while ``model: ${model}`` with
    ``--set model=007`` stays the text ``007``. Only substituted values are read this way: a quoted
    ``replicas: "2"`` in the file is still an error.
    """

    variable: str

    def __new__(cls, text: str, variable: str) -> _Substituted:
        made = super().__new__(cls, text)
        made.variable = variable
        return made

    def typed(self) -> object:
        return read_value(str(self))

    def origin(self) -> str:
        return f" (from ${{{self.variable}}})"


def _typed(value: object) -> tuple[object, str]:
    """A substituted value read as YAML, and where it came from (for messages)."""
    if isinstance(value, _Substituted):
        return value.typed(), value.origin()
    return value, ""


def _structured(value: object) -> object:
    """For a field that is never a string (a mapping or a list): a substituted value read as YAML, so
    ``env: ${extra}`` takes ``--set extra='{A: "1"}'`` as it takes a mapping default from ``vars:``."""
    if isinstance(value, _Substituted):
        typed = value.typed()
        if isinstance(typed, (Mapping, list)):
            return typed
    return value


def _strict_int(value: object, _: object = None) -> int:
    value, origin = _typed(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"expected a whole number, got {value!r}{origin}")
    return value


def _strict_bool(value: object, _: object = None) -> bool:
    value, origin = _typed(value)
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {value!r}{origin}")
    return value


def _strict_float(value: object, _: object = None) -> float:
    value, origin = _typed(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"expected a number, got {value!r}{origin}")
    return value  # as written, like a number given in code (3, not 3.0, in messages)


def _strict_str(value: object, _: object = None) -> str:
    if isinstance(value, _Substituted):
        return str(value)
    if isinstance(value, bool):  # only true/false are booleans (see _yaml); as an argument they are text
        return "true" if value else "false"
    if not isinstance(value, (str, int, float)):
        raise ValueError(f"expected a string, got {value!r}")
    return str(value)


def _optional_str(value: object, _: object = None) -> str | None:
    return None if value is None else _strict_str(value)


def _strings(value: object, _: object = None) -> tuple[str, ...]:
    """A list of arguments, or one string split as a shell would. A whole ``${var}`` that reads as a list
    (``--set cmd='[a, b]'``) is that list, unsplit; one that reads as a mapping is an error."""
    if isinstance(value, _Substituted):
        typed = value.typed()
        if isinstance(typed, Mapping):
            raise ValueError(f"expected a list of arguments, got {typed!r}{value.origin()}")
        if isinstance(typed, list):
            value = typed
    if isinstance(value, str):
        return Service(name="_", command=value).command
    if not isinstance(value, list):
        raise ValueError(f"expected a list of arguments, got {value!r}")
    return tuple(_strict_str(item) for item in value)


def _check(value: object, *, with_settings: bool) -> tuple[Check, dict[str, Any]]:
    if not isinstance(value, Mapping):
        raise ValueError(f"expected a probe such as {{http: URL}} or {{log: REGEX}}, got {value!r}")
    kinds = [key for key in value if key in _CHECK_OPTIONS]
    if not kinds:
        raise ValueError(f"a probe needs one of {', '.join(_CHECK_OPTIONS)}; got {sorted(value)}")
    if len(kinds) > 1:
        raise ValueError(f"one check per probe, got {kinds}: combine checks with all: or any:")
    kind = kinds[0]
    allowed = [kind, *_CHECK_OPTIONS[kind], *(_PROBE_SETTINGS if with_settings else ())]
    for key in value:
        if key not in allowed:
            raise _UnknownField(str(key), allowed)
    target = value[kind]
    check: Check
    if kind == "http":
        status = value.get("status")
        json_subset = value.get("json")
        if json_subset is not None and not isinstance(json_subset, Mapping):
            raise ValueError(f"json: expected a mapping of expected keys and values, got {json_subset!r}")
        body = value.get("body")
        check = HttpCheck(
            _strict_str(target),
            status=None if status is None else _strict_int(status),
            body=None if body is None else _strict_str(body),
            json=json_subset,
        )
    elif kind == "tcp":
        check = TcpCheck(_strict_str(target))
    elif kind == "log":
        check = LogCheck(_strict_str(target))
    elif kind == "exec":
        check = ExecCheck(_strings(target))
    else:
        if not isinstance(target, list) or not target:
            raise ValueError(f"{kind}: expected a non-empty list of checks, got {target!r}")
        inner = tuple(_check(item, with_settings=False)[0] for item in target)
        check = AllOf(inner) if kind == "all" else AnyOf(inner)
    settings: dict[str, Any] = {}
    for key in value:
        if key == "failures":
            settings["failures"] = _strict_int(value[key])
        elif key == "progress":
            settings["progress"] = _strict_str(value[key])
        elif key in _PROBE_SETTINGS:
            settings[_PROBE_SETTINGS[key]] = parse_duration(value[key])
    return check, settings


def _probe(value: object, _: object = None) -> Probe | None:
    value = _structured(value)
    if value is None:
        return None
    check, settings = _check(value, with_settings=True)
    return Probe(check, **settings)


def _dependencies(value: object, _: object = None) -> tuple[Dependency, ...]:
    if isinstance(value, str):
        value = [value]
    if isinstance(value, list):
        return tuple(Dependency(_strict_str(name)) for name in value)
    if not isinstance(value, Mapping):
        raise ValueError(f"expected a list of services or a mapping service: condition, got {value!r}")
    deps = []
    for name, condition in value.items():
        if isinstance(condition, Mapping):  # compose style: {kv: {condition: ready}}
            extra = [key for key in condition if key != "condition"]
            if extra:
                raise _UnknownField(str(extra[0]), ["condition"])
            condition = condition.get("condition", "ready")
        deps.append(Dependency(_strict_str(name), condition))  # the condition is checked by plan
    return tuple(deps)


def _ports(value: object, _: object = None) -> tuple[PortSpec, ...]:
    value = _structured(value)
    items: list[tuple[object, object]] = []
    if isinstance(value, Mapping):
        items = list(value.items())
    elif isinstance(value, list):
        for item in value:
            if isinstance(item, Mapping):
                items.extend(item.items())
            else:
                items.append((item, None))
    else:
        raise ValueError(f"expected a list of port names or a mapping name: number, got {value!r}")
    return tuple(_port(_strict_str(name), number) for name, number in items)


def _port(name: str, number: object) -> PortSpec:
    """``port: 8000`` fixed, ``port: null`` free, ``port: {below: 32768}`` free below a limit."""
    if isinstance(number, Mapping):
        for key in number:
            if key != "below":
                raise _UnknownField(f"{name}.{key}", [f"{name}.below"])
        if "below" not in number:
            raise ValueError(f"port '{name}': expected a number, null, or {{below: N}}")
        return PortSpec(name, below=_strict_int(number["below"]))
    return PortSpec(name, _typed(number)[0])  # type: ignore[arg-type]  # numbers: checked by plan  # type: ignore[arg-type]  # numbers: checked by plan


def _restart(value: object, _: object = None) -> RestartPolicy:
    if isinstance(value, str):  # restart: on-failure
        value = {"policy": value}
    return _CONVERTER.structure(value, RestartPolicy)


def _patterns(value: object, _: object = None) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        raise ValueError(f"expected a list of regexes, got {value!r}")
    return tuple(_strict_str(item) for item in value)


def _env(value: object, _: object = None) -> dict[str, str]:
    value = _structured(value)
    if not isinstance(value, Mapping):
        raise ValueError(f"expected a mapping NAME: value, got {value!r}")
    return {str(key): "" if item is None else _strict_str(item) for key, item in value.items()}


def _gpus(value: object, _: object = None) -> GpuRequest | None:
    value = _structured(value)
    if value is None:
        return None
    if isinstance(value, Mapping):
        allowed = _FIELDS_OF[GpuRequest]
        for key in value:
            if key not in allowed:
                raise _UnknownField(str(key), allowed)
        ids = value.get("ids")
        if ids is not None and not isinstance(ids, list):
            raise ValueError(f"ids: expected a list of GPU indices, got {ids!r}")
        count = value.get("count")
        memory = value.get("min_free_memory")
        return GpuRequest(
            count=len(ids) if count is None and ids is not None else _strict_int(count or 0),
            ids=None if ids is None else tuple(_strict_int(item) for item in ids),
            contiguous=_strict_bool(value.get("contiguous", False)),
            min_free_memory_bytes=None if memory is None else parse_size(memory),
        )
    return GpuRequest(count=_strict_int(value))


def _phases(value: object, _: object = None) -> tuple[Phase, ...]:
    value = _structured(value)
    if not isinstance(value, Mapping):
        raise ValueError(f"expected a mapping of phase name to the regex that starts it, got {value!r}")
    return tuple(Phase(_strict_str(name), _strict_str(pattern)) for name, pattern in value.items())


def _profile(value: object, _: object = None) -> Profile | None:
    """``profile: py-spy`` or ``profile: {tool: nsys, args: [...], grace: 2m}``; the tool is checked by plan."""
    if value is None:
        return None
    if isinstance(value, str):
        return Profile(value)
    if not isinstance(value, Mapping):
        raise ValueError(f"expected a profiler name or {{tool: nsys | py-spy | torch, args: [...]}}, got {value!r}")
    allowed = _FIELDS_OF[Profile]
    for key in value:
        if key not in allowed:
            raise _UnknownField(str(key), allowed)
    if "tool" not in value:
        raise ValueError("tool: missing (nsys, py-spy or torch)")
    grace = value.get("grace")
    return Profile(
        _strict_str(value["tool"]),
        args=_strings(value.get("args") or []),
        grace_seconds=None if grace is None else parse_duration(grace),
    )


def _placement(value: object, _: object = None) -> Placement | None:
    """``placement: local``, ``{node: i}``, ``{nodes: n}`` or both (each replica on nodes i..i+n-1)."""
    value = _structured(value)
    if value is None:
        return None
    if isinstance(value, str) and value.strip() == "local":
        return Placement(local=True)
    if not isinstance(value, Mapping):
        raise ValueError(f"expected local, {{node: i}} or {{nodes: n}}, got {value!r}")
    return _CONVERTER.structure(value, Placement)


def _cluster(value: object, _: object = None) -> Cluster | None:
    """``cluster: {slurm: {...}}``; ``cluster: slurm`` and ``slurm:`` with nothing after it take the defaults."""
    value = _structured(value)
    if value is None:
        return None
    if isinstance(value, str) and value.strip() == "slurm":
        return Cluster(slurm=SlurmCluster())
    if not isinstance(value, Mapping):
        raise ValueError(f"expected {{slurm: {{nodes: N, partition: P, time: 2h, ...}}}}, got {value!r}")
    return _CONVERTER.structure(value, Cluster)


def _slurm(value: object, _: object = None) -> SlurmCluster:
    value = _structured(value)
    if value is None:
        return SlurmCluster()
    if not isinstance(value, Mapping):
        raise ValueError(f"expected {{nodes: N, partition: P, time: 2h, ...}}, got {value!r}")
    return _CONVERTER.structure(value, SlurmCluster)


def _salloc_args(value: object, _: object = None) -> tuple[str, ...]:
    """``extra: [--gres=gpu:8, --exclusive]`` or one string split as a shell would."""
    value = _structured(value)
    if isinstance(value, str):
        return tuple(shlex.split(value))
    if not isinstance(value, list):
        raise ValueError(f"expected a list of salloc arguments, got {value!r}")
    return tuple(_strict_str(item) for item in value)


def _on_change(value: object, _: object = None) -> OnChange:
    """``on_change: restart``, ``none`` or ``{signal: SIGHUP}``; the action is checked by plan."""
    value = _structured(value)
    if value is None or isinstance(value, str):
        return OnChange(action=value or "none")
    if isinstance(value, Mapping) and list(value) == ["signal"]:
        return OnChange(action="signal", signal=_strict_str(value["signal"]))
    raise ValueError(f"expected restart, none or {{signal: SIGHUP}}, got {value!r}")


#: one-of-a-set fields are plain strings here: plan checks the value, as for topologies built in code
_CHOICES = {(RestartPolicy, "policy"), (Service, "strategy"), (Topology, "strategy")}
_SERVICE_HOOKS: dict[str, Callable[[object, object], object]] = {
    "command": _strings,
    "ready": _probe,
    "depends_on": _dependencies,
    "ports": _ports,
    "env": _env,
    "alive": _probe,
    "restart": _restart,
    "fatal": _patterns,
    "gpus": _gpus,
    "phases": _phases,
    "profile": _profile,
    "metrics": _optional_str,
    "placement": _placement,
    "on_change": _on_change,
}


def _make_converter() -> cattrs.Converter:
    import cattrs
    from cattrs.gen import make_dict_structure_fn, override

    converter = cattrs.Converter(forbid_extra_keys=True)
    converter.register_structure_hook(int, _strict_int)
    converter.register_structure_hook(bool, _strict_bool)
    converter.register_structure_hook(str, _strict_str)
    converter.register_structure_hook(float, _strict_float)
    choices, hooks = _CHOICES, _SERVICE_HOOKS
    cluster_hooks: dict[tuple[type, str], Callable[[object, object], object]] = {
        (Topology, "cluster"): _cluster,
        (Cluster, "slurm"): _slurm,
        (SlurmCluster, "time"): lambda v, _: None if v is None else slurm_time(_typed(v)[0]),
        (SlurmCluster, "extra"): _salloc_args,
    }
    for cls in (Backoff, RestartPolicy, StopPolicy, LogPolicy, Service, Topology, Placement, Cluster, SlurmCluster):
        overrides = {}
        for field in attrs.fields(cls):
            if field.name.endswith("_seconds"):
                overrides[field.name] = override(rename=_yaml_name(field), struct_hook=lambda v, _: parse_duration(v))
            elif field.name == "max_bytes":
                overrides[field.name] = override(struct_hook=lambda v, _: parse_size(v))
            elif cls is Service and field.name in hooks:
                overrides[field.name] = override(struct_hook=hooks[field.name])
            elif (cls, field.name) in cluster_hooks:
                overrides[field.name] = override(struct_hook=cluster_hooks[cls, field.name])
            elif cls is Topology and field.name in ("source", "overrides"):
                overrides[field.name] = override(omit=True)
            elif (cls, field.name) in choices:
                overrides[field.name] = override(struct_hook=_optional_str)
        structure = make_dict_structure_fn(
            cls,
            converter,
            _cattrs_forbid_extra_keys=True,
            **overrides,  # type: ignore[arg-type]
        )
        converter.register_structure_hook(cls, structure)
    return converter


class _LazyConverter:
    """The cattrs converter, generated on first use: a well-formed topology never needs it."""

    def __init__(self) -> None:
        self._converter: cattrs.Converter | None = None

    def structure(self, value: object, cls: type[_T]) -> _T:
        if self._converter is None:
            self._converter = _make_converter()
        return self._converter.structure(value, cls)


_T = TypeVar("_T")
_CONVERTER = _LazyConverter()
_FIELDS_OF: dict[type, list[str]] = {
    cls: _yaml_names(cls)
    for cls in (Backoff, RestartPolicy, StopPolicy, LogPolicy, Service, Topology, Placement, Cluster, SlurmCluster)
}
_FIELDS_OF[Topology] = [*_FIELDS_OF[Topology], "vars"]
_FIELDS_OF[GpuRequest] = ["count", "ids", "contiguous", "min_free_memory"]
_FIELDS_OF[Profile] = ["tool", "args", "grace"]


# ----- the fast path: a well-formed topology, without cattrs ----------------------------------------------
class _Unusual(Exception):
    """Something ``_structure_fast`` leaves to the cattrs converter."""


def _structure_fast(data: Mapping[str, Any]) -> Topology:
    """``Topology`` from a well-formed mapping, as the cattrs converter builds it (same hooks, same
    checks); raises (``_Unusual`` or the hook's error) at anything else, for the converter to redo."""
    return _fast(Topology, data)


def _fast(cls: type[_T], value: object) -> _T:
    if not isinstance(value, Mapping):
        raise _Unusual(cls)
    fields = _FAST_FIELDS[cls]
    kwargs: dict[str, object] = {}
    for key, item in value.items():
        name, structure = fields.get(key, (None, None))
        if name is None or structure is None:  # unknown, omitted, or of a type left to cattrs
            raise _Unusual(cls, key)
        kwargs[name] = structure(item)
    return cls(**kwargs)  # a missing required field: TypeError, worded by the converter


def _fast_list(cls: type[_T]) -> Callable[[object], tuple[_T, ...]]:
    def structure(value: object) -> tuple[_T, ...]:
        if not isinstance(value, list):
            raise _Unusual(cls)
        return tuple(_fast(cls, item) for item in value)

    return structure


def _fast_ints(value: object) -> tuple[int, ...]:
    if not isinstance(value, list):
        raise _Unusual(int)
    return tuple(_strict_int(item) for item in value)


def _fast_optional(structure: Callable[[object], object]) -> Callable[[object], object]:
    return lambda value: None if value is None else structure(value)


def _fast_restart(value: object) -> RestartPolicy:
    return _fast(RestartPolicy, {"policy": value} if isinstance(value, str) else value)


#: field types (as annotated in ``_spec``) -> how the converter structures them
_FAST_TYPES: dict[str, Callable[[object], object]] = {
    "int": _strict_int,
    "float": _strict_float,
    "bool": _strict_bool,
    "str": _strict_str,
    "int | None": _fast_optional(_strict_int),
    "str | None": _optional_str,
    "tuple[int, ...]": _fast_ints,
    "Backoff": lambda value: _fast(Backoff, value),
    "StopPolicy": lambda value: _fast(StopPolicy, value),
    "LogPolicy": lambda value: _fast(LogPolicy, value),
    "tuple[Service, ...]": _fast_list(Service),
}


def _fast_field(cls: type, field: attrs.Attribute[Any]) -> Callable[[object], object] | None:
    """The converter's override for ``field`` (see ``_make_converter``), else its type's hook; None for
    what only the converter handles (an omitted field, a type not listed, a hook that calls cattrs)."""
    if field.name.endswith("_seconds"):
        return parse_duration
    if field.name == "max_bytes":
        return parse_size
    if cls is Service and field.name == "restart":
        return _fast_restart
    if cls is Service and field.name in _SERVICE_HOOKS:
        hook = _SERVICE_HOOKS[field.name]
        return lambda value: hook(value, None)
    if cls is Topology and field.name == "source":
        return None
    if (cls, field.name) in _CHOICES:
        return _optional_str
    return _FAST_TYPES.get(field.type) if isinstance(field.type, str) else None


_FAST_FIELDS: dict[type, dict[str, tuple[str, Callable[[object], object] | None]]] = {
    cls: {_yaml_name(field): (field.name, _fast_field(cls, field)) for field in attrs.fields(cls)}
    for cls in (Backoff, RestartPolicy, StopPolicy, LogPolicy, Service, Topology)
}


# ----- the converter's errors, worded ------------------------------------------------------------------------
def _format_exception(exc: BaseException, type_: type | None) -> str:
    import cattrs

    if isinstance(exc, cattrs.ForbiddenExtraKeysError):
        known = _FIELDS_OF.get(exc.cl, [])
        return "; ".join(_unknown_message(field, known) for field in sorted(map(str, exc.extra_fields)))
    if isinstance(exc, KeyError):
        return "required field missing"
    if isinstance(exc, (ValueError, TypeError)):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def _locate(path: str, names: list[str]) -> str:
    """``$.services[2].ready.timeout`` -> ``service 'decode', field 'ready.timeout'``."""
    path = re.sub(r"_seconds\b", "", path)
    match = re.match(r"^\$\.services\[(\d+)\]\.?(.*)$", path)
    if match:
        index = int(match.group(1))
        service = names[index] if index < len(names) else f"#{index}"
        field = match.group(2)
        return f"service '{service}'" + (f", field '{field}'" if field else "")
    field = path.removeprefix("$").lstrip(".")
    return f"field '{field}'" if field else "top level"


class _Variables:
    """``${VAR}`` / ``${VAR:-default}`` from overrides, then the environment, then the file's ``vars:``."""

    def __init__(self, overrides: Mapping[str, str], environ: Mapping[str, str], defaults: Mapping[str, object]):
        self.overrides, self.environ, self.defaults = overrides, environ, defaults
        self.used: set[str] = set()
        self.problems: list[str] = []

    def expand(self, value: object, where: str) -> object:
        if isinstance(value, str):
            whole = _VARIABLE.fullmatch(value)
            if whole and not whole.group(1):
                return self._whole(whole, where)
            return _VARIABLE.sub(lambda match: self._replace(match, where), value)
        if isinstance(value, list):
            return [self.expand(item, where) for item in value]
        if isinstance(value, Mapping):
            return {key: self.expand(item, _join(where, key)) for key, item in value.items()}
        return value

    def _whole(self, match: re.Match[str], where: str) -> object:
        """A field that is one ``${name}``: a typed default (a number, a list, a mapping) stays typed."""
        name, operator = match.group(2), match.group(3)
        if name not in self.overrides and name not in self.environ and name in self.defaults:
            default = self.defaults[name]
            if not isinstance(default, str) and (default is not None or operator is None):
                self.used.add(name)
                return default
        return _Substituted(self._replace(match, where), name)

    def _replace(self, match: re.Match[str], where: str) -> str:
        escaped, name, operator, default = match.groups()
        if escaped:
            return match.group(0)[1:]
        self.used.add(name)
        for source in (self.overrides, self.environ, self.defaults):
            if name in source and (_text_of(source[name]) != "" or operator != ":-"):
                return _text_of(source[name])
        if operator is not None:
            return default
        self.problems.append(f"{where}: ${{{name}}} is not set (export it, pass --set {name}=..., or add vars:)")
        return ""


def _text_of(value: object) -> str:
    """A var's value inside a longer string: YAML's spelling for booleans and nothing, else ``str``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def _join(where: str, key: object) -> str:
    return f"{where}.{key}" if where else str(key)


def _describe(where: str) -> str:
    parts = where.split(".", 2)
    if parts[0] == "services" and len(parts) > 1:
        return f"service '{parts[1]}'" + (f", field '{parts[2]}'" if len(parts) > 2 else "")
    return f"field '{where}'"


def _apply_structural(data: dict[str, Any], key: str, raw: str) -> None:
    try:
        value = parse_yaml(raw, "") if raw != "" else ""
    except ConfigError as exc:
        raise ConfigError(f"--set {key}: {exc}") from None
    node: Any = data
    parts = key.split(".")
    for depth, part in enumerate(parts[:-1]):
        if parts[0] == "cluster" and depth < 2 and isinstance(node, dict):
            _open_cluster(node, part)
        if not isinstance(node, dict) or part not in node:
            known = list(node) if isinstance(node, dict) else []
            raise ConfigError(f"--set {key}: no '{'.'.join(parts[: depth + 1])}'" + _suggest(part, known))
        node = node[part]
    if not isinstance(node, dict):
        raise ConfigError(f"--set {key}: '{'.'.join(parts[:-1])}' is not a mapping")
    node[parts[-1]] = value


def _open_cluster(node: dict[str, Any], part: str) -> None:
    """``--set cluster.slurm.nodes=8`` works on a file without ``cluster:`` (or with ``cluster: slurm``):
    the blocks on the way are made, so a run goes to Slurm by override alone."""
    if node.get(part) is None:
        node[part] = {}
    elif part == "cluster" and node[part] == "slurm":
        node[part] = {"slurm": {}}


def _suggest(word: str, known: list[str]) -> str:
    return suggest(word, [str(k) for k in known], 0.6)


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
        from ._presets import topology_from_preset

        expander = _Variables({}, environ, {})
        given = dict(overrides or {})
        cluster_sets = {k: str(v) for k, v in given.items() if k == "cluster" or k.startswith("cluster.")}
        preset = topology_from_preset(
            data, source=source, overrides={k: v for k, v in given.items() if k not in cluster_sets},
            expand=expander.expand,
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
            if "." in key or key in _FIELDS_OF[Topology]:
                _apply_structural(data, key, str(raw))
            else:
                variables[key] = str(raw)
    except ConfigError as exc:
        raise ConfigError(exc.problems, source=source) from None
    expander = _Variables(variables, environ, {str(k): v for k, v in defaults.items()})
    expanded = expander.expand(data, "")
    assert isinstance(expanded, dict)
    data = expanded
    problems = list(expander.problems)
    for name in variables:
        if name not in expander.used:
            known = sorted(expander.used | {str(k) for k in defaults})
            declared = " (it is in vars: but nothing uses it)" if name in known else suggest(name, known, 0.6)
            problems.append(f"--set {name}: the file uses no ${{{name}}}" + declared)
    if problems:
        raise ConfigError([_describe_problem(p) for p in problems], source=source)

    known = [name for name in _FIELDS_OF[Topology] if name not in ("source", "overrides")]
    unknown = [_unknown_message(str(key), known) for key in data if key not in known]
    if unknown:
        raise ConfigError([f"top level: {message}" for message in unknown], source=source)
    services = data.get("services")
    names: list[str] = []
    if isinstance(services, Mapping):
        listed = []
        for name, body in services.items():
            names.append(str(name))
            if body is None:
                body = {}
            listed.append({"name": str(name), **body} if isinstance(body, Mapping) else body)
        data["services"] = listed
    elif "services" not in data:
        raise ConfigError("field 'services': required (a mapping of service name to its settings)", source=source)
    elif not isinstance(services, list):
        raise ConfigError("field 'services': expected a mapping of service name to its settings", source=source)
    else:  # the list form: each service names itself
        for index, body in enumerate(services):
            named = isinstance(body, Mapping) and isinstance(body.get("name"), str) and body["name"]
            names.append(str(body["name"]) if named else f"#{index}")
    try:
        topology = _structure_fast(data)
    except Exception:  # unusual, or wrong: the converter builds it, or says what is wrong where
        topology = _structure(data, names, source)
    return attrs.evolve(topology, source=source, overrides=_override_texts(overrides))


def _structure(data: Mapping[str, Any], names: list[str], source: str | None) -> Topology:
    import cattrs

    try:
        return _CONVERTER.structure(data, Topology)
    except Exception as exc:  # cattrs raises exception groups carrying each field's path
        messages = cattrs.transform_error(exc, path="$", format_exception=_format_exception)
        lines = []
        for message in messages:
            text, _, path = message.rpartition(" @ ")
            lines.append(f"{_locate(path, names)}: {text}")
        raise ConfigError(lines, source=source) from None


def _override_texts(overrides: Mapping[str, object] | None) -> dict[str, str]:
    return {str(key): str(value) for key, value in (overrides or {}).items()}


def _preset_cluster(
    value: object, sets: Mapping[str, str], expand: Callable[[object, str], object], source: str | None
) -> Cluster | None:
    """A preset file's ``cluster:`` and ``--set cluster.*``: the same block and messages as in any file."""
    holder: dict[str, Any] = {} if value is None else {"cluster": value}
    try:
        for key, raw in sets.items():
            _apply_structural(holder, key, raw)
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
        return f"{_describe(where)}: {rest}"
    return problem


def load(path: str | os.PathLike[str], overrides: Mapping[str, object] | None = None) -> Topology:
    """Read a topology YAML file. Relative ``run_dir`` and ``cwd`` stay relative to the caller's cwd.

    A bare preset name (``dynamo``, ``vllm.yaml``) that is no file here means the bundled preset file, so
    ``supervisor run vllm --set model=...`` works wherever the package is installed.
    """
    file = _bundled_preset(str(path))
    return topology_from_dict(parse_yaml(read_text(file), file), source=file, overrides=overrides)


def _bundled_preset(file: str) -> str:
    if os.path.exists(file) or not re.fullmatch(r"[a-z0-9_]+(\.yaml)?", file):
        return file
    spec = importlib.util.find_spec("topologies")  # finds the package without importing it
    for folder in (spec.submodule_search_locations or []) if spec else []:
        candidate = os.path.join(folder, file.removesuffix(".yaml") + ".yaml")
        if os.path.isfile(candidate):
            return candidate
    return file


def topology_from_text(
    text: str, *, source: str | None = None, overrides: Mapping[str, object] | None = None
) -> Topology:
    """Parse YAML text (bounded: size of the expanded document, no duplicate keys) into a ``Topology``."""
    return topology_from_dict(parse_yaml(text, source or "<text>"), source=source, overrides=overrides)
