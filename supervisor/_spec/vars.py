"""``${VAR}`` in a topology's values and ``--set`` overrides: applied to the parsed mapping, before it is
structured into a ``Topology`` (``_spec.load``)."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

import attrs

from .._errors import ConfigError, suggest
from .yamlfile import parse_yaml, read_value

__all__ = ["Substituted", "Variables", "apply_structural", "describe"]

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_FORMS = "${name}, ${name:-default} or ${name-default}"


@attrs.frozen
class _Reference:
    """One ``${name}``, ``${name:-default}`` (default when unset or empty) or ``${name-default}`` (when unset)."""

    name: str
    operator: str | None
    default: str | None  #: as written; it may hold references of its own (``${a:-${b}}``)


class Substituted(str):
    """The text a field became once its ``${...}`` were filled: a string where the field wants one, else
    read as YAML.

    So ``replicas: ${decode}`` with ``--set decode=2`` is the number 2, as is ``replicas: "${n}0"`` with
    ``n=3`` 30, while ``model: ${model}`` with ``--set model=007`` stays the text ``007``. Only substituted
    values are read this way: a quoted ``replicas: "2"`` in the file is still an error.
    """

    variables: tuple[str, ...]

    def __new__(cls, text: str, *variables: str) -> Substituted:
        made = super().__new__(cls, text)
        made.variables = variables
        return made

    @property
    def variable(self) -> str:
        return self.variables[0]

    def typed(self) -> object:
        return read_value(str(self))

    def origin(self) -> str:
        return " (from " + ", ".join(f"${{{name}}}" for name in self.variables) + ")"


class Variables:
    """``${VAR}`` / ``${VAR:-default}`` from overrides, then the environment, then the file's ``vars:``.

    ``$${`` is a literal ``${``; any other ``${`` that is not a reference is an error (a silent typo such
    as ``${ model }`` would reach a command line as written). A var's value is never expanded again.
    """

    def __init__(self, overrides: Mapping[str, str], environ: Mapping[str, str], defaults: Mapping[str, object]):
        self.overrides, self.environ, self.defaults = overrides, environ, defaults
        self.used: set[str] = set()
        self.problems: list[str] = []
        self._filling: list[str] = []  #: the vars whose defaults are being filled, outermost first

    def expand(self, value: object, where: str) -> object:
        if isinstance(value, str):
            return self._string(value, where)
        if isinstance(value, list):
            return [self.expand(item, _item(where, index, item)) for index, item in enumerate(value)]
        if isinstance(value, Mapping):
            expanded: dict[object, object] = {}
            for key, item in value.items():
                name = key
                if isinstance(key, str):  # a key is text: a var there is read as text, never typed
                    filled = self._string(key, where)
                    name = str(filled) if isinstance(filled, str) else _text_of(filled)
                if name in expanded:
                    self.problems.append(f"{_join(where, key)}: the key '{name}' is there twice once vars are filled")
                expanded[name] = self.expand(item, _join(where, name))
            return expanded
        return value

    def _string(self, text: str, where: str) -> object:
        pieces = self._parse(text, where)
        if pieces is None:
            return text
        references = [piece for piece in pieces if isinstance(piece, _Reference)]
        if not references:
            return "".join(map(str, pieces))
        if len(pieces) == 1:
            return self._whole(references[0], where)
        joined = "".join(piece if isinstance(piece, str) else self._value(piece, where) for piece in pieces)
        return Substituted(joined, *dict.fromkeys(reference.name for reference in references))

    def _whole(self, reference: _Reference, where: str) -> object:
        """A field that is one ``${name}``: a typed default (a number, a list, a mapping) stays typed."""
        name = reference.name
        if name not in self.overrides and name not in self.environ and name in self.defaults:
            default = self.defaults[name]
            if not isinstance(default, str) and (default is not None or reference.operator is None):
                self.used.add(name)
                return self._default(name)
        return Substituted(self._value(reference, where), name)

    def _value(self, reference: _Reference, where: str) -> str:
        name, operator = reference.name, reference.operator
        self.used.add(name)
        for source in (self.overrides, self.environ, self.defaults):
            if name in source and (_text_of(source[name]) != "" or operator != ":-"):
                value = self._default(name) if source is self.defaults else source[name]
                return str(value) if isinstance(value, str) else _text_of(value)
        if reference.default is not None:
            default = self._string(reference.default, where)
            return str(default) if isinstance(default, str) else _text_of(default)
        self.problems.append(f"{where}: ${{{name}}} is not set (export it, pass --set {name}=..., or add vars:)")
        return ""

    def _default(self, name: str) -> object:
        """A ``vars:`` default, its own ``${...}`` filled (it is file text; values from --set and the
        environment are not); a var that refers to itself is an error."""
        if name in self._filling:
            cycle = " -> ".join(f"${{{n}}}" for n in [*self._filling[self._filling.index(name) :], name])
            self.problems.append(f"vars.{self._filling[0]}: the vars refer to each other in a loop: {cycle}")
            return ""
        self._filling.append(name)
        try:
            return self.expand(self.defaults[name], f"vars.{name}")
        finally:
            self._filling.pop()

    def _parse(self, text: str, where: str) -> list[str | _Reference] | None:
        """``text`` as literal pieces and references; None (with a problem noted) when a ``${`` is bad."""
        pieces: list[str | _Reference] = []
        literal: list[str] = []
        index = 0
        while (found := text.find("$", index)) >= 0:
            literal.append(text[index:found])
            if text.startswith("$${", found):
                literal.append("${")
                index = found + 3
                continue
            if not text.startswith("${", found):
                literal.append("$")
                index = found + 1
                continue
            reference, index = self._reference(text, found, where)
            if reference is None:
                return None
            pieces += ["".join(literal), reference]
            literal = []
        pieces.append("".join(literal) + text[index:])
        return [piece for piece in pieces if piece != ""]

    def _reference(self, text: str, start: int, where: str) -> tuple[_Reference | None, int]:
        name = _NAME.match(text, start + 2)
        at = name.end() if name else start + 2
        if name and text.startswith("}", at):
            return _Reference(name.group(), None, None), at + 1
        operator = next((op for op in (":-", "-") if text.startswith(op, at)), None)
        if name and operator:
            depth, cursor = 0, at + len(operator)
            while cursor < len(text):
                if text[cursor] == "{":
                    depth += 1
                elif text[cursor] == "}":
                    if depth == 0:
                        default = text[at + len(operator) : cursor]
                        return _Reference(name.group(), operator, default), cursor + 1
                    depth -= 1
                cursor += 1
            problem = f"'{text[start:]}' has no closing brace"
        elif name and at == len(text):
            problem = f"'{text[start:]}' has no closing brace"
        else:
            written = text[start : text.find("}", start) + 1 or None]
            problem = f"'{written}' is not a var reference"
            name = _NAME.search(written, 2)
        if name:  # the var is meant, even if misspelt: no second error for its --set
            self.used.add(name.group())
        self.problems.append(f"{where}: {problem}: write {_FORMS}, or $${{ for a literal ${{")
        return None, len(text)


def _item(where: str, index: int, item: object) -> str:
    """Where a list item is: a service in the list form by its name, any other item by its index."""
    if where == "services" and isinstance(item, Mapping) and isinstance(item.get("name"), str):
        return _join(where, item["name"])
    return f"{where}[{index}]"


def _text_of(value: object) -> str:
    """A var's value inside a longer string: YAML's spelling for booleans and nothing, JSON (which YAML
    reads back) for a list or a mapping, else ``str``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, Mapping)):
        return json.dumps(value, separators=(", ", ": "), default=str)
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
