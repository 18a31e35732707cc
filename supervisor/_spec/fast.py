"""A well-formed topology built over ``_spec.fields``' hooks without cattrs (which costs ~15 ms of a
~100 ms ``supervisor run`` to import and generate); anything else is left to the converter."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import attrs

from .fields import (
    _CHOICES,
    _SERVICE_HOOKS,
    _duration,
    _ints,
    _optional_int,
    _optional_str,
    _size,
    _strict_bool,
    _strict_float,
    _strict_int,
    _strict_str,
    _structured,
    _yaml_name,
)
from .model import Backoff, LogPolicy, RestartPolicy, Service, StopPolicy, Topology

__all__ = ["_Unusual", "_structure_fast"]

_T = TypeVar("_T")


class _Unusual(Exception):
    """Something ``_structure_fast`` leaves to the cattrs converter."""


def _structure_fast(data: Mapping[str, Any]) -> Topology:
    """``Topology`` from a well-formed mapping, as the cattrs converter builds it (same hooks, same
    checks); raises (``_Unusual`` or the hook's error) at anything else, for the converter to redo."""
    return _fast(Topology, data)


def _fast(cls: type[_T], value: object) -> _T:
    value = _structured(value)  # a whole block as one ``${var}``
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


def _fast_restart(value: object) -> RestartPolicy:
    value = _structured(value)
    return _fast(RestartPolicy, {"policy": value} if isinstance(value, str) else value)


#: field types (as annotated in ``_spec.model``) -> how the converter structures them
_FAST_TYPES: dict[str, Callable[[object], object]] = {
    "int": _strict_int,
    "float": _strict_float,
    "bool": _strict_bool,
    "str": _strict_str,
    "int | None": _optional_int,
    "str | None": _optional_str,
    "tuple[int, ...]": _ints,
    "Backoff": lambda value: _fast(Backoff, value),
    "StopPolicy": lambda value: _fast(StopPolicy, value),
    "LogPolicy": lambda value: _fast(LogPolicy, value),
    "tuple[Service, ...]": _fast_list(Service),
}


def _fast_field(cls: type, field: attrs.Attribute[Any]) -> Callable[[object], object] | None:
    """The converter's override for ``field`` (see ``_make_converter``), else its type's hook; None for
    what only the converter handles (an omitted field, a type not listed, a hook that calls cattrs)."""
    if field.name.endswith("_seconds"):
        return _duration
    if field.name == "max_bytes":
        return _size
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
