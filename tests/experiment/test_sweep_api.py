"""``supervisor.sweep`` and ``supervisor.read_sweep`` in Python, on the test's event loop (asyncio, or trio
with TOPOVISOR_TEST_BACKEND=trio)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import supervisor

DEMO = Path(__file__).parents[2] / "examples" / "sweep_demo.yaml"
WRITE_RESULT = (
    "import json, os, sys; open(sys.argv[1] + '/result.json', 'w').write(json.dumps({'port': int(sys.argv[2])}))"
)

pytestmark = pytest.mark.anyio


async def test_a_sweep_over_replicas_from_python_returns_its_rows_and_report(runs_dir: Path) -> None:
    heard: list[str] = []
    result = await supervisor.sweep(
        DEMO, vary={"decode": [1, 2]}, order="ABAB", runs_dir=runs_dir, on_start=heard.append,
        command=[sys.executable, "-c", WRITE_RESULT, "{trial_dir}", "{frontend.port}"],
    )  # fmt: skip
    assert heard == [result.sweep_id] and result.path == runs_dir / "sweeps" / result.sweep_id
    assert [(r["arm"], r["decode"], r["status"]) for r in result.rows] == [
        ("decode=1", "1", "ok"),
        ("decode=2", "2", "ok"),
    ]
    assert all(isinstance(r["port"], int) for r in result.rows)
    assert result.arms == ["decode=1", "decode=2"] and result.planned == 2 and result.failed == []
    assert [entry["arm"] for entry in result.report["figures"]["ready_seconds"]] == ["decode=1", "decode=2"]
    again = supervisor.read_sweep(result.sweep_id, runs_dir)
    assert again.rows == result.rows and again.report_text() == result.report_text()
    with pytest.raises(supervisor.ConfigError, match="no sweep 'nope'"):
        supervisor.read_sweep("nope", runs_dir)
