"""The client's figures of a trial: every JSON file under the trial's folder that one of the known tools
wrote (found by its content, since ``vllm bench serve`` and guidellm name theirs as the user asks), read
into the shared columns, and then the keys of ``result.json``.

The trial's ``run`` link and its ``metrics`` snapshots are not the client's and are not looked into. Where
a tool wrote several files (a concurrency sweep of its own), the first by path is read and ``client_file``
names it."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Collection, Iterator
from pathlib import Path
from typing import Any

from .formats import aiperf, guidellm, result_json, vllm_bench

__all__ = ["MAX_RESULT_BYTES", "client_figures"]

MAX_RESULT_BYTES = 64 * 1024 * 1024  #: a larger JSON file is no tool's summary: not read
_NOT_THE_CLIENTS = {"run", "metrics"}  #: the trial's own entries beside what the client wrote

#: (name of the format, whether a loaded JSON value is one, its figures), tried in this order
_FORMATS: tuple[tuple[str, Callable[[object], bool], Callable[[Any], dict[str, float]]], ...] = (
    ("aiperf", aiperf.is_aiperf, aiperf.figures),
    ("vllm-bench", vllm_bench.is_vllm_bench, vllm_bench.figures),
    ("guidellm", guidellm.is_guidellm, guidellm.figures),
)


def client_figures(trial_dir: Path, reserved: Collection[str]) -> dict[str, Any]:
    """Columns for the trial's row: ``client_format`` and ``client_file`` with the figures of the first
    tool's file found, then ``result.json``'s keys (which win: it is what the user chose to write)."""
    found: dict[str, Any] = {}
    for path in sorted(_json_files(trial_dir)):
        data = _load(path)
        for name, matches, read in _FORMATS:
            if data is not None and matches(data):
                found = {"client_format": name, "client_file": str(path.relative_to(trial_dir)), **read(data)}
                break
        if found:
            break
    return {**found, **result_json.figures(trial_dir, reserved)}


def _json_files(trial_dir: Path) -> Iterator[Path]:
    for top, folders, files in os.walk(trial_dir):  # never follows a link: the run's folder stays out
        if Path(top) == trial_dir:
            folders[:] = [f for f in folders if f not in _NOT_THE_CLIENTS]
        for name in files:
            if name.endswith(".json") and not (Path(top) == trial_dir and name == result_json.FILE_NAME):
                yield Path(top) / name


def _load(path: Path) -> object:
    """The file's JSON value; ``vllm bench serve --append-result`` writes one object a line: the last."""
    try:
        if path.stat().st_size > MAX_RESULT_BYTES:
            return None
        text = path.read_text(errors="replace")
    except OSError:
        return None
    try:
        return json.loads(text)
    except ValueError:
        lines = [line for line in text.splitlines() if line.strip()]
        try:
            return json.loads(lines[-1]) if len(lines) > 1 else None
        except ValueError:
            return None
