"""What a ``ControlRequest`` event keeps of a request's fields: all of them, less their secrets.

A request is recorded as it arrives, before the run knows what its ``overrides`` feed: ``--set hf=...``
may fill ``HF_TOKEN: ${hf}``, a ``--hf-token ${hf}`` flag or a URL's password, and that value is no secret
of the run yet (the event log's redactor learns it only once the new spec runs). So the topology's file is
loaded again with the overrides, as the rollout will do, and each part of the new spec that the records
hide (a secret-named env value, a secret flag's value, a URL password) is hidden in the override values
too: whole when the value lies inside such a part, only that part when the value holds it
(``args="--tp 2 --api-key X"`` keeps ``--tp 2``). When the file cannot be loaded (a topology built in
code, a bad override) nothing can be told apart, and every override value is hidden.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import attrs

from .._redact import REDACTED, hide_flag_values, is_secret_name, secret_parts

__all__ = ["recorded_args"]


def recorded_args(args: Mapping[str, Any], plan: Any) -> dict[str, Any]:
    """``args`` for the record: secret-looking names and flag values hidden everywhere, and each override
    cleared of the secrets it feeds in the topology re-loaded with it (``plan``: the run's ``Plan``)."""
    recorded: dict[str, Any] = _redacted(dict(args))
    overrides = args.get("overrides")
    if isinstance(overrides, dict) and overrides:
        parts = _secret_parts_with(overrides, plan)
        recorded["overrides"] = {k: _without(v, overrides[k], parts) for k, v in recorded["overrides"].items()}
    return recorded


def _without(recorded: Any, given: Any, parts: Sequence[str] | None) -> Any:
    """An override's recorded value less the secret ``parts`` (None: all unknown, hide it whole)."""
    if parts is None:
        return REDACTED
    text = str(given)
    if text and any(text in part for part in parts):
        return REDACTED
    if not isinstance(recorded, str):
        return REDACTED if any(part in text for part in parts) else recorded
    for part in parts:  # longest first: a part holding another goes whole
        recorded = recorded.replace(part, REDACTED)
    return recorded


def _redacted(value: Any) -> Any:
    """The value under a secret-looking name is hidden (``HF_TOKEN=...``), and so is a secret flag's value
    in a string (``args="--api-key X"``); the run's known secret values go later, in the event log."""
    if isinstance(value, str):
        return hide_flag_values(value)
    if isinstance(value, dict):
        return {k: REDACTED if isinstance(k, str) and is_secret_name(k) else _redacted(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_redacted(v) for v in value]
    return value


def _secret_parts_with(overrides: Mapping[str, Any], plan: Any) -> list[str] | None:
    """The secret parts of the topology re-loaded with ``overrides``, longest first; None when it does not
    load."""
    topology = getattr(plan, "topology", None)
    source = getattr(topology, "source", None) or getattr(plan, "source", None)
    if topology is None or source is None:
        return None
    from .._spec.load import load

    try:
        reloaded = load(source, overrides={**topology.overrides, **overrides})
    except Exception:  # any failure to load: the rollout refuses too, and nothing is known of the values
        return None
    return sorted({p for p in _secret_parts(reloaded.services) if p}, key=lambda p: (-len(p), p))


def _secret_parts(value: Any) -> Iterator[str]:
    """Each part of ``value`` (specs walked through their fields, mappings and lists) the records hide:
    a secret-named entry's value, a secret flag's value (in a command line or a string), a URL password."""
    if isinstance(value, str):
        yield from secret_parts(value)
    elif isinstance(value, Mapping):
        for name, item in value.items():
            if isinstance(name, str) and is_secret_name(name) and isinstance(item, str):
                yield item
            else:
                yield from _secret_parts(item)
    elif isinstance(value, (list, tuple)):
        for flag, arg in itertools.pairwise(value):  # ``--hf-token X`` as two words
            if isinstance(flag, str) and isinstance(arg, str) and _takes_secret(flag) and not arg.startswith("--"):
                yield arg
        for item in value:
            yield from _secret_parts(item)
    elif attrs.has(type(value)):
        yield from _secret_parts(attrs.asdict(value, recurse=False))


def _takes_secret(word: str) -> bool:
    return word.startswith("-") and len(word) > 1 and "=" not in word and is_secret_name(word)
