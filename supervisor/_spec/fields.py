"""How each field of a topology is structured: the hooks (strict scalars, probes, ports, GPUs, placement,
cluster...), the cattrs converter generated from them on first use, and its errors worded for humans.
``_spec.fast`` builds a well-formed topology over the same hooks without cattrs; ``_spec.load`` loads."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

import attrs

from .._errors import suggest
from .._units import parse_duration, parse_size, slurm_time
from .model import (
    AllOf,
    AnyOf,
    Autoscale,
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
    ResourceLimits,
    RestartPolicy,
    Service,
    SlurmCluster,
    StopPolicy,
    TcpCheck,
    Topology,
)
from .vars import Substituted

if TYPE_CHECKING:
    import cattrs

__all__: list[str] = []  # the hooks are for the _config modules only

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
    "http": ("status", "body", "json", "headers"),
    "tcp": (),
    "log": (),
    "exec": (),
    "all": (),
    "any": (),
}


class _UnknownField(ValueError):
    def __init__(self, field: str, known: list[str]) -> None:
        super().__init__(_unknown_message(field, known))


def _refuse_unknown(value: Mapping[Any, object], known: list[str]) -> None:
    """The first key of ``value`` that is not one of ``known``, as an unknown field (with a suggestion)."""
    for key in value:
        if key not in known:
            raise _UnknownField(str(key), known)


def _unknown_message(field: str, known: list[str]) -> str:
    hint = suggest(field, known, 0.6) or f" (known: {', '.join(sorted(known))})"
    return f"unknown field '{field}'" + hint


def _yaml_name(field: attrs.Attribute[Any]) -> str:
    return field.name.removesuffix("_seconds")


def _yaml_names(cls: type) -> list[str]:
    return [_yaml_name(field) for field in attrs.fields(cls)]


def _typed(value: object) -> tuple[object, str]:
    """A substituted value read as YAML, and where it came from (for messages)."""
    if isinstance(value, Substituted):
        return value.typed(), value.origin()
    return value, ""


def _structured(value: object, *, mapping: bool = True) -> object:
    """For a field that is never a string (a mapping or a list): a substituted value read as YAML, so
    ``env: ${extra}`` takes ``--set extra='{A: "1"}'`` as it takes a mapping default from ``vars:``.
    ``mapping=False`` for a field that takes a list or one string (``fatal: ${pattern}``), where a text
    that merely reads as a mapping (``error: x``) is the string."""
    if isinstance(value, Substituted):
        typed = value.typed()
        if typed is None or isinstance(typed, list) or (isinstance(typed, Mapping) and mapping):
            return typed  # None: ``--set x=null`` unsets an optional block, as ``vars: {x: null}`` does
    return value


def _duration(value: object, _: object = None) -> float:
    """``parse_duration``, saying which ``${var}`` a bad value came from."""
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise ValueError(f"{exc}{_typed(value)[1]}") from None


def _size(value: object, _: object = None) -> int:
    try:
        return parse_size(value)
    except ValueError as exc:
        raise ValueError(f"{exc}{_typed(value)[1]}") from None


def _ints(value: object, _: object = None) -> tuple[int, ...]:
    """``success_codes: [0, 3]``, or a ``${var}`` that reads as such a list."""
    value = _structured(value)
    if not isinstance(value, list):
        raise ValueError(f"expected a list of whole numbers, got {value!r}{_typed(value)[1]}")
    return tuple(_strict_int(item) for item in value)


def _optional_int(value: object, _: object = None) -> int | None:
    return None if _typed(value)[0] is None else _strict_int(value)


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
    if isinstance(value, Substituted):
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
    if isinstance(value, Substituted):
        typed = value.typed()
        if isinstance(typed, Mapping) and value.lstrip().startswith("{"):  # not a command such as 'echo a: b'
            raise ValueError(f"expected a list of arguments, got {typed!r}{value.origin()}")
        if isinstance(typed, list):
            value = typed
    if isinstance(value, str):
        return Service(name="_", command=value).command
    if not isinstance(value, list):
        raise ValueError(f"expected a list of arguments, got {value!r}")
    return tuple(_strict_str(item) for item in value)


def _check(value: object, *, with_settings: bool) -> tuple[Check, dict[str, Any]]:
    value = _structured(value)
    if not isinstance(value, Mapping):
        raise ValueError(f"expected a probe such as {{http: URL}} or {{log: REGEX}}, got {value!r}")
    kinds = [key for key in value if key in _CHECK_OPTIONS]
    if not kinds:
        raise ValueError(f"a probe needs one of {', '.join(_CHECK_OPTIONS)}; got {sorted(value)}")
    if len(kinds) > 1:
        raise ValueError(f"one check per probe, got {kinds}: combine checks with all: or any:")
    kind = kinds[0]
    _refuse_unknown(value, [kind, *_CHECK_OPTIONS[kind], *(_PROBE_SETTINGS if with_settings else ())])
    target = _structured(value[kind]) if kind in ("all", "any") else value[kind]
    check: Check
    if kind == "http":
        status = value.get("status")
        json_subset = _structured(value.get("json"))
        if json_subset is not None and not isinstance(json_subset, Mapping):
            raise ValueError(f"json: expected a mapping of expected keys and values, got {json_subset!r}")
        body = value.get("body")
        headers = _structured(value.get("headers"))
        if headers is not None and not (
            isinstance(headers, Mapping) and all(isinstance(k, str) and isinstance(v, str) for k, v in headers.items())
        ):
            # the values are not shown: one may be a key
            raise ValueError(f"headers: expected a mapping of header names to strings, got a {type(headers).__name__}")
        check = HttpCheck(
            _strict_str(target),
            status=None if status is None else _strict_int(status),
            body=None if body is None else _strict_str(body),
            json=json_subset,
            headers=headers,
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
            settings[_PROBE_SETTINGS[key]] = _duration(value[key])
    return check, settings


def _probe(value: object, _: object = None) -> Probe | None:
    value = _structured(value)
    if value is None:
        return None
    check, settings = _check(value, with_settings=True)
    return Probe(check, **settings)


def _dependencies(value: object, _: object = None) -> tuple[Dependency, ...]:
    value = _structured(value)
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
    return PortSpec(name, _typed(number)[0])  # type: ignore[arg-type]  # numbers: checked by plan


def _restart(value: object, _: object = None) -> RestartPolicy:
    value = _structured(value)
    if isinstance(value, str):  # restart: on-failure
        value = {"policy": value}
    return _CONVERTER.structure(value, RestartPolicy)


def _patterns(value: object, _: object = None) -> tuple[str, ...]:
    value = _structured(value, mapping=False)
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


def _routes(value: object, _: object = None) -> dict[str, str]:
    """``api: {models: /v1/models}``; whether each is a path is checked by validation, for code and YAML alike."""
    value = _structured(value)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ValueError(f"expected a mapping NAME: path (models: /v1/models), got {value!r}")
    return {str(key): _strict_str(item) for key, item in value.items()}


def _subfield(name: str, convert: Callable[[Any], _T], value: object) -> _T:
    """``convert(value)`` for the field ``name`` of a block read by hand: its error names the field
    (``count: expected a whole number``), which the loader turns into ``field 'gpus.count'``."""
    try:
        return convert(value)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{name}: {exc}") from None


def _gpus(value: object, _: object = None) -> GpuRequest | None:
    value = _structured(value)
    if value is None:
        return None
    if isinstance(value, Mapping):
        _refuse_unknown(value, _FIELDS_OF[GpuRequest])
        ids = _structured(value.get("ids"))
        if ids is not None and not isinstance(ids, list):
            raise ValueError(f"ids: expected a list of GPU indices, got {ids!r}")
        count = value.get("count")
        memory = value.get("min_free_memory")
        vendor = value.get("vendor")
        return GpuRequest(
            count=len(ids) if count is None and ids is not None else _subfield("count", _strict_int, count or 0),
            ids=None if ids is None else _subfield("ids", lambda items: tuple(_strict_int(i) for i in items), ids),
            contiguous=_subfield("contiguous", _strict_bool, value.get("contiguous", False)),
            min_free_memory_bytes=None if memory is None else _subfield("min_free_memory", _size, memory),
            vendor=None if vendor is None else _subfield("vendor", _strict_str, vendor),
        )
    return GpuRequest(count=_strict_int(value))


def _phases(value: object, _: object = None) -> tuple[Phase, ...]:
    value = _structured(value)
    if not isinstance(value, Mapping):
        raise ValueError(f"expected a mapping of phase name to the regex that starts it, got {value!r}")
    return tuple(Phase(_strict_str(name), _strict_str(pattern)) for name, pattern in value.items())


def _profile(value: object, _: object = None) -> Profile | None:
    """``profile: py-spy`` or ``profile: {tool: nsys, args: [...], grace: 2m}``; the tool is checked by plan."""
    value = _structured(value)
    if value is None:
        return None
    if isinstance(value, str):
        return Profile(value)
    if not isinstance(value, Mapping):
        raise ValueError(
            f"expected a profiler name or {{tool: nsys | py-spy | rocprof | torch, args: [...]}}, got {value!r}"
        )
    _refuse_unknown(value, _FIELDS_OF[Profile])
    if "tool" not in value:
        raise ValueError("tool: missing (nsys, py-spy, rocprof or torch)")
    grace = value.get("grace")
    return Profile(
        _subfield("tool", _strict_str, value["tool"]),
        args=_subfield("args", _strings, value.get("args") or []),
        grace_seconds=None if grace is None else _subfield("grace", _duration, grace),
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
        import shlex

        return tuple(shlex.split(value))
    if not isinstance(value, list):
        raise ValueError(f"expected a list of salloc arguments, got {value!r}")
    return tuple(_strict_str(item) for item in value)


def _resources(value: object, _: object = None) -> ResourceLimits | None:
    """``resources: {memory_max: 64GB, cpu_max: 4, pids_max: 4096}``; each is checked by validation."""
    value = _structured(value)
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ValueError(f"expected {{memory_max: 64GB, cpu_max: 4, pids_max: 4096}}, got {value!r}")
    _refuse_unknown(value, _FIELDS_OF[ResourceLimits])
    memory, cpu, pids = value.get("memory_max"), value.get("cpu_max"), value.get("pids_max")
    if cpu is not None:
        cpu, origin = _typed(cpu)
        if isinstance(cpu, bool) or not isinstance(cpu, (int, float)):
            raise ValueError(f"cpu_max: expected a number of cores such as 4 or 2.5, got {cpu!r}{origin}")
    return ResourceLimits(
        memory_max_bytes=None if memory is None else _subfield("memory_max", _size, memory),
        cpu_max=None if cpu is None else float(cpu),
        pids_max=None if pids is None else _subfield("pids_max", _strict_int, pids),
    )


def _on_change(value: object, _: object = None) -> OnChange:
    """``on_change: restart``, ``none`` or ``{signal: SIGHUP}``; the action is checked by plan."""
    value = _structured(value)
    if value is None or isinstance(value, str):
        return OnChange(action=value or "none")
    if isinstance(value, Mapping) and list(value) == ["signal"]:
        return OnChange(action="signal", signal=_strict_str(value["signal"]))
    raise ValueError(f"expected restart, none or {{signal: SIGHUP}}, got {value!r}")


def _autoscale(value: object, _: object = None) -> Autoscale | None:
    """``autoscale: {min: 1, max: 8, metric: NAME, target: 4, up_after: 30s, down_after: 5m, cooldown: 60s}``;
    the bounds and the metric are checked by validation."""
    value = _structured(value)
    if value is None or isinstance(value, Autoscale):
        return value
    if not isinstance(value, Mapping):
        raise ValueError(f"expected {{min: 1, max: 8, metric: NAME, target: 4, up_after: 30s, ...}}, got {value!r}")
    _refuse_unknown(value, _FIELDS_OF[Autoscale])
    kwargs: dict[str, Any] = {}
    for key, item in value.items():
        field = str(key)
        if field in ("min", "max"):
            kwargs[field] = _subfield(field, _strict_int, item)
        elif field == "metric":
            kwargs[field] = _subfield(field, _strict_str, item)
        elif field == "target":
            kwargs[field] = _subfield(field, _strict_float, item)
        else:
            kwargs[f"{field}_seconds"] = _subfield(field, _duration, item)
    return Autoscale(**kwargs)


#: one-of-a-set fields are plain strings here: plan checks the value, as for topologies built in code
_CHOICES = {(RestartPolicy, "policy"), (Service, "strategy"), (Topology, "strategy"), (Topology, "containment")}
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
    "api": _routes,
    "resources": _resources,
    "autoscale": _autoscale,
}


def _make_converter() -> cattrs.Converter:
    import cattrs
    from cattrs.gen import make_dict_structure_fn, override

    converter = cattrs.Converter(forbid_extra_keys=True)
    converter.register_structure_hook(int, _strict_int)
    converter.register_structure_hook_func(lambda cls: cls == int | None, _optional_int)
    converter.register_structure_hook(bool, _strict_bool)
    converter.register_structure_hook(str, _strict_str)
    converter.register_structure_hook(float, _strict_float)
    choices, hooks = _CHOICES, _SERVICE_HOOKS
    cluster_hooks: dict[tuple[type, str], Callable[[object, object], object]] = {
        (Topology, "cluster"): _cluster,
        (Cluster, "slurm"): _slurm,
        (SlurmCluster, "time"): lambda v, _: None if v is None else slurm_time(_typed(v)[0]),
        (SlurmCluster, "extra"): _salloc_args,
        (RestartPolicy, "success_codes"): _ints,
    }
    for cls in (Backoff, RestartPolicy, StopPolicy, LogPolicy, Service, Topology, Placement, Cluster, SlurmCluster):
        overrides = {}
        for field in attrs.fields(cls):
            if field.name.endswith("_seconds"):
                overrides[field.name] = override(rename=_yaml_name(field), struct_hook=_duration)
            elif field.name == "max_bytes":
                overrides[field.name] = override(struct_hook=_size)
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
        converter.register_structure_hook(cls, _whole_var(structure))
    return converter


def _whole_var(structure: Callable[[Any, Any], _T]) -> Callable[[Any, Any], _T]:
    """A nested block given as one ``${var}`` (``stop: ${stop}``, ``--set stop='{grace: 2s}'``) is read as YAML."""
    return lambda value, cls: structure(_structured(value), cls)


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
_FIELDS_OF[GpuRequest] = ["count", "ids", "contiguous", "min_free_memory", "vendor"]
_FIELDS_OF[Profile] = ["tool", "args", "grace"]
_FIELDS_OF[ResourceLimits] = ["memory_max", "cpu_max", "pids_max"]
_FIELDS_OF[Autoscale] = ["min", "max", "metric", "target", "up_after", "down_after", "cooldown", "period"]


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


#: a service's blocks read by hand (not by the converter): their errors start with the field's name
_HAND_READ_BLOCKS: dict[str, type] = {
    "gpus": GpuRequest,
    "profile": Profile,
    "resources": ResourceLimits,
    "autoscale": Autoscale,
}


def _fold_subfield(path: str, text: str) -> tuple[str, str]:
    """``$.services[0].gpus`` + ``count: expected ...`` -> ``$.services[0].gpus.count`` + ``expected ...``:
    a hand-read block's error names its field as the converter's paths do (``log.max_bytes``)."""
    block = path.rpartition(".")[2]
    field, sep, rest = text.partition(": ")
    cls = _HAND_READ_BLOCKS.get(block)
    if sep and cls is not None and re.fullmatch(r"\$\.services\[\d+\]\.\w+", path) and field in _FIELDS_OF[cls]:
        return f"{path}.{field}", rest
    return path, text


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
