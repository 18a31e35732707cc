"""Smoke test of ``benchmarks/bench_engines.py``: one llama.cpp round of each mode (about 2 s), so that the
benchmark and its hand-rolled baseline keep working as the library changes. Needs llama-server."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from ..helpers import PYTHON

pytestmark = pytest.mark.engines

ROOT = Path(__file__).parents[2]


def test_bench_engines_prints_ratios_against_the_hand_rolled_baseline(llama_server: str, tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TOPOVISOR_LLAMA_SERVER": llama_server}
    done = subprocess.run(
        [PYTHON, str(ROOT / "benchmarks" / "bench_engines.py"), "--runs", "1", "--only", "llamacpp", "--json", str(out)],
        capture_output=True, text=True, env=env, timeout=100, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "pids started are gone" in done.stdout, done.stdout
    figures = json.loads(out.read_text())["llamacpp"]
    for figure in ("ready", "first_request", "teardown"):
        supervised, by_hand = figures["supervisor"][figure]["median_ms"], figures["handrolled"][figure]["median_ms"]
        assert supervised > 0 and by_hand > 0
        assert figures["ratio"][figure] == pytest.approx(supervised / by_hand)
