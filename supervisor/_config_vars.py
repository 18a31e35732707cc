"""``${VAR}`` in a topology's values and ``--set`` overrides: applied to the parsed mapping, before it is
structured into a ``Topology`` (``_config``)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from ._errors import ConfigError
from ._validate import suggest
from ._yaml import parse_yaml, read_value

__all__ = ["Substituted", "Variables", "apply_structural", "describe"]

_VARIABLE = re.compile(r"\$(\$)?\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?-)([^}]*))?\}")


class Substituted(str):
    """The text a whole-value ``${name}`` became: a string where the field wants one, else read as YAML.

    So ``replicas: ${decode}`` with ``--set decode=2`` is the number 2, while ``model: ${model}`` with
    ``--set model=007`` stays the text ``007``. Only substituted values are read this way: a quoted
    ``replicas: "2"`` in the file is still an error.
    """

    variable: str

    def __new__(cls, text: str, variable: str) -> Substituted:
        made = super().__new__(cls, text)
        made.variable = variable
        return made

    def typed(self) -> object:
        return read_value(str(self))

    def origin(self) -> str:
        return f" (from ${{{self.variable}}})"


class Variables:
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
        return Substituted(self._replace(match, where), name)

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


def describe(where: str) -> str:
    parts = where.split(".", 2)
    if parts[0] == "services" and len(parts) > 1:
        return f"service '{parts[1]}'" + (f", field '{parts[2]}'" if len(parts) > 2 else "")
    return f"field '{where}'"


def apply_structural(data: dict[str, Any], key: str, raw: str) -> None:
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
