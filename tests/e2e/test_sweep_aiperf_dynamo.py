"""A sweep with a benchmark client no one here wrote: aiperf (installed by .ci/install-engines) against the
Dynamo preset with mocker workers, one and two decode workers, each trial on a fresh topology; its own
figures and the servers' counters land in the rows. Skipped with the reason when an engine is missing,
failed under ``CI=true``."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from supervisor._host.proctable import marked_processes

from ..helpers import supervisor_cli

pytestmark = pytest.mark.engines

REQUESTS = 8


def test_an_aiperf_sweep_over_dynamo_decode_workers_parses_its_figures_and_the_servers_counters(
    dynamo_env: Path, mocker_model: Path, aiperf: str, runs_dir: Path
) -> None:
    done = supervisor_cli(
        "sweep", "dynamo", "--runs-dir", str(runs_dir), "--set", "engine=mocker", "--set", f"model={mocker_model}",
        "--set", "served_model_name=org/tiny", "--set", f"env_path={dynamo_env}", "--vary", "decode=1,2",
        "--", aiperf, "profile", "--model", "org/tiny", "--url", "{frontend.url}", "--endpoint-type", "chat",
        "--streaming", "--tokenizer", str(mocker_model), "--request-count", str(REQUESTS), "--concurrency", "2",
        "--prompt-input-tokens-mean", "16", "--prompt-output-tokens-mean", "8", "--ui-type", "none",
        "--no-gpu-telemetry", "--workers-max", "1", "--artifact-dir", "{trial_dir}/aiperf",
        timeout=400,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    folder = runs_dir / "sweeps" / done.stdout.splitlines()[0]
    rows = [json.loads(line) for line in (folder / "results.jsonl").read_text().splitlines()]
    assert [(r["arm"], r["status"], r["client_format"]) for r in rows] == [
        ("decode=1", "ok", "aiperf"),
        ("decode=2", "ok", "aiperf"),
    ]
    for row in rows:
        assert row["client_file"] == "aiperf/profile_export_aiperf.json"
        assert row["requests_completed"] == REQUESTS
        assert row["request_throughput"] > 0 and row["output_token_throughput"] > 0
        assert 0 < row["ttft_p50_ms"] <= row["ttft_p99_ms"] and row["request_latency_p90_ms"] > 0
        # the frontend counted what aiperf sent; the decode workers between them served every request
        assert row["server_requests"] == REQUESTS and row["server_decode_requests"] == REQUESTS
        assert row["server_generation_tokens"] > 0 and row["server_prompt_tokens"] > 0
        assert row["engine_version"] == "ai-dynamo==1.6.1" and row["gpu_model"] is None
        assert not marked_processes(row["run_id"])
    assert len(list((folder / "trials" / "002" / "metrics" / "after").glob("decode.*.prom"))) == 2
    with (folder / "results.csv").open() as table:
        assert [r["ttft_p50_ms"] != "" for r in csv.DictReader(table)] == [True, True]
    assert "ttft_p50_ms:" in done.stdout and "server_requests:" in done.stdout
