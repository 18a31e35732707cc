"""Bounded YAML: the one place a topology's text becomes Python data.

YAML 1.2 booleans only (``yes``/``no``/``on``/``off`` stay strings), whole numbers in decimal digits only
(``0x10``, ``0o10``, ``10_000``, ``1:30`` stay strings, ``010`` is ten), no duplicate keys, a size limit on
the file and on the document once its aliases are expanded (a 1 KB alias bomb expands to billions of
values), and every failure a ``ConfigError`` with the line and column.
"""

from __future__ import annotations

import functools
import re
from typing import Any

from .._errors import ConfigError

__all__ = ["MAX_FILE_BYTES", "MAX_NODES", "parse_yaml", "read_text", "read_value"]

MAX_FILE_BYTES = 4 * 1024 * 1024  #: a topology is a few KB; a bigger file is a mistake (or an attack)
MAX_NODES = 100_000  #: values in the document once aliases are expanded (a 1 KB alias bomb has billions)


@functools.cache
def _loader() -> type[Any]:
    """The bounded loader, built on first use: PyYAML (its import and its regexes, about a tenth of
    ``supervisor run``'s start) loads only when a text is parsed, not for a file read from the cache."""
    import yaml

    # the parser's patterns are compiled with it (a file read from the cache needs neither): a whole
    # number, as YAML 1.2 reads one in decimal (no ``0x``, ``0o``, ``_`` or ``:`` forms of YAML 1.1)
    whole_number = re.compile(r"^[-+]?[0-9]+$")
    # PyYAML's YAML 1.1 float, less its ``_`` digit separators and base-60 (``1:30.5``) forms
    yaml_float = re.compile(
        r"^(?:[-+]?[0-9]+\.[0-9]*(?:[eE][-+][0-9]+)?|\.[0-9]+(?:[eE][-+][0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
    )

    class _Loader(yaml.SafeLoader):
        """YAML 1.2 booleans: only true/false. ``yes``, ``no``, ``on``, ``off`` stay strings (``[echo, yes]``).

        Bounded: duplicate keys are an error, and a document whose aliases expand past ``MAX_NODES`` values
        is refused before it is built (the expansion happens later, in ``${VAR}`` substitution and cattrs).
        """

        def compose_document(self) -> yaml.Node | None:
            node: yaml.Node | None = super().compose_document()
            if node is not None:
                _count_nodes(node)
            return node

        def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
            """Decimal digits only (YAML 1.1 reads ``0x10`` as 16, ``010`` as 8 and ``1:30`` as 90)."""
            text = str(self.construct_scalar(node))
            if not whole_number.fullmatch(text):
                raise yaml.constructor.ConstructorError(
                    None, None, f"expected a whole number in decimal digits, got {text!r}", node.start_mark
                )
            return int(text)

        def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
            seen: set[object] = set()
            for key_node, _ in node.value:
                if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                    key = self.construct_object(key_node, deep=deep)
                    if isinstance(key, (str, int, float, bool)) and key in seen:
                        raise yaml.constructor.ConstructorError(
                            None, None, f"duplicate key {key!r}", key_node.start_mark
                        )
                    seen.add(key)
            return super().construct_mapping(node, deep=deep)

    def _count_nodes(root: yaml.Node) -> None:
        """Size of the document with every alias expanded, counted once per distinct node (linear time)."""
        sizes: dict[int, int] = {}
        active: set[int] = set()

        def size(node: yaml.Node) -> int:
            key = id(node)
            if key in sizes:
                return sizes[key]
            if key in active:
                raise yaml.composer.ComposerError(None, None, "an alias refers to itself", node.start_mark)
            active.add(key)
            total = 1
            if isinstance(node, yaml.SequenceNode):
                children = list(node.value)
            elif isinstance(node, yaml.MappingNode):
                children = [item for pair in node.value for item in pair]
            else:
                children = []
            for child in children:
                total += size(child)
                if total > MAX_NODES:
                    raise yaml.composer.ComposerError(
                        None, None, f"the document expands to more than {MAX_NODES} values (too many aliases?)",
                        node.start_mark,
                    )  # fmt: skip
            active.discard(key)
            sizes[key] = total
            return total

        size(root)

    replaced = {"tag:yaml.org,2002:bool", "tag:yaml.org,2002:int", "tag:yaml.org,2002:float"}
    _Loader.yaml_implicit_resolvers = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag not in replaced]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }
    _Loader.add_implicit_resolver(
        "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
    )
    _Loader.add_implicit_resolver("tag:yaml.org,2002:int", whole_number, list("-+0123456789"))
    _Loader.add_implicit_resolver("tag:yaml.org,2002:float", yaml_float, list("-+0123456789."))
    _Loader.add_constructor("tag:yaml.org,2002:int", _Loader.construct_yaml_int)

    return _Loader


def read_text(file: str) -> str:
    """The file as UTF-8 text, refusing anything over ``MAX_FILE_BYTES``."""
    try:
        with open(file, "rb") as stream:
            raw = stream.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read the topology file: {exc.strerror}", source=file) from None
    if len(raw) > MAX_FILE_BYTES:
        raise ConfigError(f"the file is larger than {MAX_FILE_BYTES // 1024 // 1024} MiB", source=file)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"not UTF-8 text (byte {exc.start}): {exc.reason}", source=file) from None


def parse_yaml(text: str, source: str) -> object:
    """Python data from YAML text; ``source`` labels the errors."""
    if "\0" in text:
        raise ConfigError("the file contains a NUL byte", source=source)
    import yaml

    try:
        return yaml.load(text, Loader=_loader())
    except RecursionError:
        raise ConfigError("invalid YAML: nested too deeply", source=source) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{where}invalid YAML: {problem}{_var_hint(text, mark)}", source=source) from None


def _var_hint(text: str, mark: object) -> str:
    """An unquoted ``${name}`` inside ``{...}`` or ``[...]`` is a YAML error (its ``{`` opens a mapping)."""
    line = getattr(mark, "line", None)
    lines = text.splitlines()
    if line is None or line >= len(lines) or not re.search(r"[\[{,:]\s*\$\{", lines[line]):
        return ""
    return " (quote a var written inside {...} or [...], or with ': ' in it: '${name}'; it is still typed once filled)"


_PLAIN_INT = re.compile(r"-?(?:0|[1-9][0-9]*)")
_PLAIN_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
_BOOLS = {"true": True, "True": True, "TRUE": True, "false": False, "False": False, "FALSE": False}
_NULLS = frozenset({"null", "Null", "NULL"})


def read_value(text: str) -> object:
    """A value given as text (``--set``, a substituted ``${var}``) read as YAML: ``2`` is a number,
    ``{a: 1}`` a mapping; the text itself when it is empty or not YAML. A whole number, true/false or a
    plain word is read here as the parser would read it, without loading the parser (``--set decode=2``,
    ``${MODEL}``: most values are these)."""
    if _PLAIN_INT.fullmatch(text):
        return int(text)
    if text in _BOOLS:
        return _BOOLS[text]
    if _PLAIN_WORD.fullmatch(text) and text not in _NULLS:
        return text
    try:
        return parse_yaml(text, "--set") if text.strip() else text
    except ConfigError:
        return text
