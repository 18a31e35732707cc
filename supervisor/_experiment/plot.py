"""``supervisor report SWEEP --plot FILE``: the report as charts a person would rather look at than read.
Per chosen figure one chart of the arms, the median with min-max whiskers and the ratio to the baseline
(a line over the values where the sweep varied one numeric key), and, where the figures hold a throughput
and a latency, a scatter of every trial of them (the pareto view). PNG or SVG, by the file's suffix.

matplotlib is an optional extra (``pip install 'topovisor[plot]'``): loaded here only, when asked for."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .._errors import ConfigError

__all__ = ["PLOT_EXTRA", "PLOT_SUFFIXES", "pareto_pair", "write_plot"]

PLOT_EXTRA = "pip install 'topovisor[plot]'"  #: what makes ``--plot`` work where matplotlib is missing
PLOT_SUFFIXES = (".png", ".svg")
_COLUMNS = 3  #: charts per row
_THROUGHPUT_HINTS = ("throughput", "per_second")
_LATENCY_HINTS = ("ttft", "latency", "itl")


def pareto_pair(figures: Sequence[str]) -> tuple[str, str] | None:
    """The first throughput-like and the first latency-like figure, when there are both."""
    throughput = next((f for f in figures if any(h in f for h in _THROUGHPUT_HINTS)), None)
    latency = next((f for f in figures if any(h in f for h in _LATENCY_HINTS)), None)
    return (throughput, latency) if throughput and latency else None


def write_plot(
    path: Path,
    report: Mapping[str, Any],
    rows: Sequence[Mapping[str, Any]],
    *,
    title: str,
    chosen: Sequence[str] = (),
    axis: tuple[str, list[float]] | None = None,
) -> list[str]:
    """Write the charts to ``path``; returns their titles. ``chosen``: the figures to draw (default
    all); ``axis``: the varied key and each arm's value, for a line over it. ``ConfigError`` for a
    suffix other than .png/.svg, an unknown figure, or no matplotlib."""
    suffix = path.suffix.lower()
    if suffix not in PLOT_SUFFIXES:
        raise ConfigError(f"--plot {path}: the file's suffix says the format: .png or .svg")
    figures: dict[str, list[dict[str, Any]]] = report["figures"]
    unknown = [name for name in chosen if name not in figures]
    if unknown:
        raise ConfigError([f"--figure {name}: the sweep has no such figure ({', '.join(figures)})" for name in unknown])
    names = list(chosen) or list(figures)
    if not names:
        raise ConfigError("--plot: no figure to draw (no trial succeeded)")
    try:
        import matplotlib
        from matplotlib.figure import Figure
    except ImportError:
        raise ConfigError(f"--plot needs matplotlib, an optional extra: {PLOT_EXTRA}") from None
    pair = pareto_pair(names)
    titles = [*names, *([f"{pair[0]} against {pair[1]}"] if pair else [])]
    columns = min(_COLUMNS, len(titles))
    lines = math.ceil(len(titles) / columns)
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "topovisor"}):  # text stays text
        figure = Figure(figsize=(4.5 * columns, 3.4 * lines), layout="constrained")
        figure.suptitle(title)
        charts = figure.subplots(lines, columns, squeeze=False).flatten()
        for chart, name in zip(charts, names, strict=False):
            _arms_chart(chart, name, figures[name], axis)
        if pair:
            _pareto_chart(charts[len(names)], pair, [a["arm"] for a in report["arms"]], rows)
        for chart in charts[len(titles) :]:
            chart.set_visible(False)
        figure.savefig(path, format=suffix[1:], metadata=_metadata(suffix))
    return titles


def _arms_chart(
    chart: Any, name: str, per_arm: Sequence[Mapping[str, Any]], axis: tuple[str, list[float]] | None
) -> None:
    drawn = [(i, a) for i, a in enumerate(per_arm) if a["median"] is not None]
    medians = [a["median"] for _, a in drawn]
    whiskers = [[a["median"] - a["min"] for _, a in drawn], [a["max"] - a["median"] for _, a in drawn]]
    chart.set_title(name, fontsize=10)
    if axis is not None:
        key, values = axis
        xs = [values[i] for i, _ in drawn]
        chart.errorbar(xs, medians, yerr=whiskers, marker="o", capsize=4)
        chart.set_xlabel(key)
        places = xs
    else:
        places = [float(i) for i, _ in drawn]
        chart.bar(places, medians, yerr=whiskers, capsize=4, color="tab:blue", alpha=0.75)
        chart.set_xticks(range(len(per_arm)), [a["arm"] for a in per_arm], rotation=20, fontsize=8)
    for x, (_, entry) in zip(places, drawn, strict=True):
        ratio = "" if entry["ratio"] is None else f"{entry['ratio']:.3f}x"
        chart.annotate(ratio + (" ~" if entry["overlaps"] else ""), (x, entry["median"]), fontsize=7,
                       textcoords="offset points", xytext=(0, 4), ha="center")  # fmt: skip
    chart.set_ylabel("median, min-max", fontsize=8)
    chart.margins(x=0.15)  # room for the ratios of the outer arms


def _pareto_chart(chart: Any, pair: tuple[str, str], arms: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> None:
    throughput, latency = pair
    for arm in arms:
        points = [
            (float(r[throughput]), float(r[latency]))
            for r in rows
            if r.get("arm") == arm
            and r.get("status") == "ok"
            and _number(r.get(throughput))
            and _number(r.get(latency))
        ]
        if points:
            chart.scatter([p[0] for p in points], [p[1] for p in points], label=arm)
    chart.set_title(f"{throughput} against {latency}", fontsize=10)
    chart.set_xlabel(throughput, fontsize=8)
    chart.set_ylabel(latency, fontsize=8)
    chart.legend(fontsize=7)


def _metadata(suffix: str) -> dict[str, Any]:
    """No creation date: the same sweep gives the same file."""
    return {"Date": None} if suffix == ".svg" else {"Software": "topovisor"}


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
