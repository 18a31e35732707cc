"""Topology files already read once, as JSON: ``supervisor run FILE`` again skips PyYAML.

Benchmark harnesses start the same file over and over; parsing it costs the YAML parser's import and
regexes (about a tenth of the way to the first child). An entry holds the file's text and the document
the bounded parser made of it, and is used only when the text is the same, character for character (no
hash is trusted). What is stored is the file as written, before any ``${VAR}`` is filled: a substituted
value (a token from the environment) never reaches the cache, and every check that follows parsing (the
fields, vars, executables, env, ports) runs as before. Documents that JSON cannot hold exactly (dates,
sets, non-text keys) are not stored. Entries live in ``$XDG_CACHE_HOME/topovisor/documents`` (default
``~/.cache``), private to the user; a broken or foreign entry is a miss, never an error.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import zlib
from pathlib import Path
from typing import Any

__all__ = ["MAX_CACHED_BYTES", "MAX_ENTRIES", "MISS", "cache_dir", "cached_document", "store_document"]

MAX_CACHED_BYTES = 256 * 1024  #: bigger texts are parsed every time (a topology is a few KB)
MAX_ENTRIES = 256  #: the oldest entries go once there are more
_FORMAT = 2  #: bumped when the parser's output for the same text changes
MISS = object()  #: what ``cached_document`` returns when it has nothing for the text


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "topovisor" / "documents"


def _entry(text: str) -> Path:
    return cache_dir() / f"{zlib.crc32(text.encode()):08x}-{len(text)}.json"


def cached_document(text: str) -> Any:
    """The document stored for exactly this text, or ``MISS``."""
    if len(text) > MAX_CACHED_BYTES:
        return MISS
    try:
        with open(_entry(text), encoding="utf-8") as file:
            entry = json.load(file)
    except (OSError, ValueError):
        return MISS
    if not isinstance(entry, dict) or entry.get("format") != _FORMAT or entry.get("text") != text:
        return MISS
    return entry.get("document")


def store_document(text: str, document: object) -> None:
    """Keep ``document`` (parsed from ``text``) for the next read of the same text; never raises."""
    if len(text) > MAX_CACHED_BYTES or not _json_exact(document):
        return
    path = _entry(text)
    with contextlib.suppress(OSError, ValueError):
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        temporary = path.with_name(f".{path.name}.{os.getpid()}")
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            json.dump({"format": _FORMAT, "text": text, "document": document}, file)
        os.replace(temporary, path)
        _prune(path.parent)


def _json_exact(value: object, depth: int = 0) -> bool:
    """JSON gives back exactly this: text keys only, no dates, sets or bytes, finite numbers."""
    if depth > 200:
        return False
    if value is None or isinstance(value, (str, bool, int)):
        return True
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list):
        return all(_json_exact(item, depth + 1) for item in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _json_exact(v, depth + 1) for k, v in value.items())
    return False


def _prune(folder: Path) -> None:
    entries = list(folder.glob("*.json"))
    if len(entries) <= MAX_ENTRIES:
        return
    entries.sort(key=lambda entry: entry.stat().st_mtime)
    for old in entries[: len(entries) - MAX_ENTRIES]:
        with contextlib.suppress(OSError):
            old.unlink()
