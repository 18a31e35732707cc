"""``examples/ab_compare.py`` runs for real on the stand-ins: A B B A trials on fresh launches, each window
marked and snapshotted, the comparison printed, and nothing of any run left afterwards."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from supervisor._host.proctable import marked_processes

from ..cli.test_cli import ROOT
from ..helpers import PYTHON


def test_ab_example_compares_both_arms_in_both_orders(runs_dir: Path) -> None:
    command = [PYTHON, str(ROOT / "examples" / "ab_compare.py"), "--runs-dir", str(runs_dir), "--json"]
    command += ["--requests", "8", "--concurrency", "4", "--max-tokens", "8", "--warmup", "1"]
    command += ["--baseline-tps", "100", "--treatment-tps", "1000"]  # 80 ms against 8 ms per request
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=ROOT, env=env, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "A: 100 tokens/s per worker, B: 1000; order ABBA"
    assert lines[1].split() == ["trial", "arm", "ok", "failed", "median", "tok/s", "tokens", "server"]
    assert [line.split()[:4] for line in lines[2:6]] == [
        ["1", "A", "8", "0"],
        ["2", "B", "8", "0"],
        ["3", "B", "8", "0"],
        ["4", "A", "8", "0"],
    ]
    assert lines[6].startswith("A: median latency ") and lines[7].startswith("B: median latency ")
    assert lines[8].startswith("B/A: latency ")
    result = json.loads(lines[9])
    trials = result["trials"]
    assert [t["arm"] for t in trials] == list("ABBA") and result["order"] == "ABBA"
    run_dirs = [Path(t["run_dir"]) for t in trials]
    assert len(set(run_dirs)) == 4 and all(d.parent == runs_dir for d in run_dirs)  # a fresh launch each
    for number, (trial, run_dir) in enumerate(zip(trials, run_dirs, strict=True), start=1):
        assert trial["client_tokens"] == trial["server_tokens"] == 8 * 8, trial  # the servers' own counters agree
        for label in ("before", "after"):
            index = json.loads((run_dir / "metrics" / label / "index.json").read_text())
            assert len(index["endpoints"]) == 6 and all(e["status"] == 200 for e in index["endpoints"])
        marks = [
            json.loads(line)["label"]
            for line in (run_dir / "events.jsonl").read_text().splitlines()
            if json.loads(line)["event"] == "mark"
        ]
        assert marks == [f"window {number} ({trial['arm']}) start", f"window {number} ({trial['arm']}) end"]
        assert not marked_processes(run_dir.name), run_dir  # nothing of the trial is left
    assert result["arms"]["A"]["trials"] == result["arms"]["B"]["trials"] == 2
    assert 0 < result["ratio"]["median_latency"] < 1 < result["ratio"]["throughput"]
