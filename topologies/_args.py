"""Extra engine arguments, given as a dict or a list, turned into the flags the engine's users would type."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Literal

__all__ = ["Args", "ListStyle", "engine_flags"]

Args = Mapping[str, object] | Sequence[str] | None
#: how a list value becomes flags: ``repeat`` = ``--x a --x b``, ``spread`` = ``--x a b`` (argparse
#: ``nargs='+'``, as vLLM and SGLang take lists), ``comma`` = ``--x a,b``
ListStyle = Literal["repeat", "spread", "comma"]


def engine_flags(args: Args, *, lists: ListStyle = "spread") -> list[str]:
    """``{"max_model_len": 4096, "enforce_eager": True, "x": None}`` -> ``["--max-model-len", "4096",
    "--enforce-eager"]``.

    ``True`` is a bare flag, ``False``, ``None`` and an empty list leave the flag out, dicts become JSON (vLLM's
    ``--kv-transfer-config``, ``--speculative-config``; their braces are doubled, since commands are
    templates where ``{{`` is a literal brace), ``snake_case`` keys become ``--kebab-case`` (a key
    that already starts with ``-`` is used as written). A list of strings is passed through unchanged.
    """
    if args is None:
        return []
    if isinstance(args, str):
        raise TypeError(f"args: expected a dict of flags or a list of arguments, got the string {args!r}")
    if not isinstance(args, Mapping):
        return [_text(item, "args") for item in args]
    flags: list[str] = []
    for key, value in args.items():
        if not isinstance(key, str) or not key.strip("-") or key != key.strip() or " " in key:
            raise TypeError(f"args: {key!r} is not a flag name (write max_model_len or --max-model-len)")
        flag = key if key.startswith("-") else "--" + key.replace("_", "-")
        if value is None or value is False or (isinstance(value, (list, tuple)) and not value):
            continue
        if value is True:
            flags.append(flag)
        elif isinstance(value, Mapping):
            flags += [flag, _json(value)]
        elif isinstance(value, (list, tuple)):
            items = [_text(item, key) for item in value]
            if lists == "repeat":
                for item in items:
                    flags += [flag, item]
            elif lists == "comma":
                flags += [flag, ",".join(items)]
            else:
                flags += [flag, *items]
        else:
            flags += [flag, _text(value, key)]
    return flags


def _text(value: object, key: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int, float)):
        return str(value)
    if isinstance(value, Mapping):
        return _json(value)
    raise TypeError(f"args: {key}: cannot pass {value!r} as a command-line argument")


def _json(value: Mapping[str, object]) -> str:
    return json.dumps(value, separators=(",", ":")).replace("{", "{{").replace("}", "}}")
