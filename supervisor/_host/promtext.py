"""Prometheus' text exposition format, as far as counter deltas and autoscaling need it: each sample's metric
name and value (labels are read past, not kept: a delta, or a queue depth, sums every series of a name)."""

from __future__ import annotations

import math
import re

__all__ = ["sample_sums"]

#: ``name{labels} value [timestamp]``; a label value may hold ``}`` or spaces inside its quotes
_SAMPLE = re.compile(r'^([A-Za-z_:][A-Za-z0-9_:]*)(\{(?:[^"}]|"(?:[^"\\]|\\.)*")*\})?\s+(\S+)')


def sample_sums(text: str) -> dict[str, float]:
    """Per metric name, the sum of its samples' values over every label set; comments, malformed lines and
    values that are not finite numbers are skipped."""
    sums: dict[str, float] = {}
    for line in text.splitlines():
        match = _SAMPLE.match(line.strip())
        if match is None:
            continue
        try:
            value = float(match.group(3))
        except ValueError:
            continue
        if math.isfinite(value):
            sums[match.group(1)] = sums.get(match.group(1), 0.0) + value
    return sums
