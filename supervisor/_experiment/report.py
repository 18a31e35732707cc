"""The report of a sweep: per arm the median and min-max of each numeric figure over its trials that
succeeded, the ratio of its median to the first arm's, and whether its range overlaps the first arm's
(then the difference is within the trial-to-trial spread)."""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["Figure", "report_data", "report_text"]

#: columns that are not figures to compare, though numeric
_NOT_FIGURES = {"trial", "client_exit"}

Figure = dict[str, Any]  #: {arm, trials, median, min, max, ratio, overlaps}


def report_data(arms: Sequence[str], rows: Sequence[Mapping[str, Any]], varied: Sequence[str] = ()) -> dict[str, Any]:
    """``{"arms": [{arm, trials, ok}], "figures": {name: [Figure per arm]}}``, JSON-ready."""
    ok = [r for r in rows if r.get("status") == "ok"]
    skip = _NOT_FIGURES | set(varied)
    names = list(dict.fromkeys(k for r in ok for k, v in r.items() if k not in skip and _number(v)))
    figures: dict[str, list[Figure]] = {}
    for name in names:
        spans = [[float(r[name]) for r in ok if r["arm"] == arm and _number(r.get(name))] for arm in arms]
        base = spans[0]
        per_arm = []
        for arm, values in zip(arms, spans, strict=True):
            median = statistics.median(values) if values else None
            base_median = statistics.median(base) if base else None
            per_arm.append(
                {"arm": arm, "trials": len(values), "median": median,
                 "min": min(values, default=None), "max": max(values, default=None),
                 "ratio": median / base_median if median is not None and base_median else None,
                 "overlaps": values is not base and bool(values) and bool(base)
                 and min(values) <= max(base) and min(base) <= max(values)}
            )  # fmt: skip
        figures[name] = per_arm
    counts = [
        {"arm": arm, "trials": sum(r["arm"] == arm for r in rows), "ok": sum(r["arm"] == arm for r in ok)}
        for arm in arms
    ]
    return {"arms": counts, "figures": figures}


def report_text(sweep_id: str, data: Mapping[str, Any]) -> str:
    arms = data["arms"]
    total, ok = sum(a["trials"] for a in arms), sum(a["ok"] for a in arms)
    lines = [f"sweep {sweep_id}: {total} trials, {ok} ok; ratio: median over the first arm's ({arms[0]['arm']})"]
    width = max([len(a["arm"]) for a in arms] + [3])
    for name, per_arm in data["figures"].items():
        lines.append(f"{name}:")
        for entry in per_arm:
            if entry["median"] is None:
                lines.append(f"  {entry['arm']:<{width}}  -")
                continue
            spread = f"{_fmt(entry['min'])}-{_fmt(entry['max'])}"
            ratio = "-" if entry["ratio"] is None else f"{entry['ratio']:.3f}x"
            flag = "  ~ ranges overlap" if entry["overlaps"] else ""
            lines.append(
                f"  {entry['arm']:<{width}}  median {_fmt(entry['median']):>10}  min-max {spread:<21}"
                f"  {ratio:>8}  n={entry['trials']}{flag}"
            )
    return "\n".join(lines)


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _fmt(value: float) -> str:
    return f"{value:.4g}"
