"""``supervisor report SWEEP --plot FILE``: the report's charts written as a valid PNG or SVG (text kept as
text, so the SVG's words can be read back), and every wrong use an exit 2 that says what to do."""

from __future__ import annotations

import subprocess
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest

from supervisor._experiment.results import SweepDir

from ..helpers import PYTHON, ROOT, supervisor_cli

SVG = "{http://www.w3.org/2000/svg}svg"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _recorded_sweep(runs_dir: Path, arms: dict[str, dict[str, str]], varied: list[str]) -> Path:
    """A sweep's folder as a finished sweep leaves it: two trials per arm, ABBA, throughput and latency."""
    folder = SweepDir(runs_dir / "sweeps" / "20261207-120000-sweep-abcdef")
    labels = list(arms)
    sequence = [0, 1, 1, 0]
    folder.write_spec(
        {
            "sweep_id": folder.sweep_id, "varied": varied, "sequence": sequence, "trials": 2, "order": "ABBA",
            "arms": [{"label": label, "file": "t.yaml", "values": values} for label, values in arms.items()],
        }
    )  # fmt: skip
    for trial, index in enumerate(sequence, start=1):
        speed = 100.0 * (index + 1) + trial  # the second arm about twice the first
        folder.add_row(
            {"arm": labels[index], "trial": trial, "status": "ok", "run_id": f"run-{trial}",
             "tokens_per_second": speed, "latency_seconds": 10.0 / speed, **arms[labels[index]]}
        )  # fmt: skip
    return folder.path


@pytest.fixture
def numeric(runs_dir: Path) -> Path:
    return _recorded_sweep(runs_dir, {"tps=200": {"tps": "200"}, "tps=400": {"tps": "400"}}, ["tps"])


def _svg_text(path: Path) -> str:
    root = ElementTree.parse(path).getroot()
    assert root.tag == SVG
    return " ".join(text for element in root.iter() for text in [element.text] if text)


def test_an_svg_has_a_chart_per_figure_with_ratios_and_the_throughput_latency_scatter(
    numeric: Path, tmp_path: Path
) -> None:
    out = tmp_path / "report.svg"
    done = supervisor_cli("report", str(numeric), "--plot", str(out))
    assert done.returncode == 0, done.stderr
    assert "tokens_per_second:" in done.stdout  # the report is printed as without --plot
    assert f"wrote {out}: 3 charts (tokens_per_second, latency_seconds, tokens_per_second against latency_seconds)" in (
        done.stderr
    )
    text = _svg_text(out)
    for words in ("sweep 20261207-120000-sweep-abcdef", "tokens_per_second", "latency_seconds", "1.000x", "tps"):
        assert words in text, words
    assert "1.976x" in text  # tokens_per_second: median 202.5 (trials 2, 3) over 102.5 (trials 1, 4)
    assert "tokens_per_second against latency_seconds" in text and "tps=400" in text  # the scatter's legend


def test_a_png_of_chosen_figures_and_bars_for_arms_that_are_files(runs_dir: Path, tmp_path: Path) -> None:
    files = _recorded_sweep(runs_dir, {"base": {"file": "base.yaml"}, "fast": {"file": "fast.yaml"}}, ["file"])
    out = tmp_path / "chosen.png"
    done = supervisor_cli("report", str(files), "--plot", str(out), "--figure", "tokens_per_second")
    assert done.returncode == 0, done.stderr
    assert f"wrote {out}: 1 charts (tokens_per_second)" in done.stderr
    assert out.read_bytes().startswith(PNG_MAGIC) and len(out.read_bytes()) > 1000
    bars = tmp_path / "bars.svg"
    assert supervisor_cli("report", str(files), "--plot", str(bars)).returncode == 0
    assert {"base", "fast"} <= set(_svg_text(bars).split())  # the arms are the bars' labels


def test_wrong_uses_of_plot_exit_2_saying_what_to_do(numeric: Path, tmp_path: Path) -> None:
    cases = {
        ("--plot", str(tmp_path / "r.pdf")): "the file's suffix says the format: .png or .svg",
        ("--plot", str(tmp_path / "r.png"), "--figure", "nope"): "--figure nope: the sweep has no such figure (",
        ("--figure", "tokens_per_second"): "--figure chooses what --plot FILE draws: give --plot too",
    }
    for flags, message in cases.items():
        done = supervisor_cli("report", str(numeric), *flags)
        assert done.returncode == 2 and message in done.stderr, (flags, done.stderr)
    assert not list(tmp_path.glob("r.*"))
    without = subprocess.run(
        [PYTHON, "-c", "import sys; sys.modules['matplotlib'] = None; from supervisor._cli.main import main; "
         f"sys.exit(main(['report', {str(numeric)!r}, '--plot', {str(tmp_path / 'r.png')!r}]))"],
        capture_output=True, text=True, cwd=ROOT, timeout=60,
    )  # fmt: skip
    assert without.returncode == 2
    assert "--plot needs matplotlib, an optional extra: pip install 'topovisor[plot]'" in without.stderr
