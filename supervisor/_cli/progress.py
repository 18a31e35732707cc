"""How far a loading replica is, read from what its log prints: ``45%``, ``3/8 shards``, tqdm bars.

Engines print their loading progress in a few shapes: vLLM's ``Loading safetensors checkpoint shards:
38% Completed | 3/8 [...]``, tqdm's ``Capturing CUDA graph shapes:  45%|████▌  | 30/67 [00:05<00:06]``
(redrawn with ``\\r``, which the log pump turns into lines of their own), and plain ``loaded 3/8 shards``.
A percentage wins over a counter on the same line; a line with neither says nothing. The console calls
this only for replicas that are still loading, and only the last line of a block that says something
counts, so a chatty service costs one cheap test per block once it is ready.
"""

from __future__ import annotations

import re

__all__ = ["find_progress", "parse_progress"]

_PERCENT = re.compile(r"(?<![\w.])(\d{1,3}(?:\.\d+)?)\s?%")
# N/M with nothing path-, date-, time- or URL-like around it (``/v1/models``, ``2026/11/28``, ``:8000/1``)
_COUNT = re.compile(r"(?<![\w/.:-])(\d{1,9})\s?/\s?(\d{1,9})(?![\w/.:-])")


def _line_progress(line: str) -> float | None:
    if "%" in line:
        for match in _PERCENT.finditer(line):
            value = float(match.group(1))
            if value <= 100.0:
                return value / 100.0
    if "/" in line:
        for match in _COUNT.finditer(line):
            done, total = int(match.group(1)), int(match.group(2))
            if total > 0 and done <= total:
                return done / total
    return None


def find_progress(text: str) -> tuple[float, int] | None:
    """The fraction done (0..1) that the last progress line of ``text`` reports, and where that line
    starts in ``text``; None when no line reports any."""
    if "%" not in text and "/" not in text:
        return None
    end = len(text)
    while end > 0:
        start = text.rfind("\n", 0, end - 1) + 1 if text.endswith("\n", 0, end) else text.rfind("\n", 0, end) + 1
        progress = _line_progress(text[start:end])
        if progress is not None:
            return progress, start
        end = start
    return None


def parse_progress(text: str) -> float | None:
    """The fraction done (0..1) that the last progress line of ``text`` reports, or None when none does."""
    found = find_progress(text)
    return None if found is None else found[0]
