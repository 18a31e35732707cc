"""The client's figures read from real result files of aiperf, guidellm and ``vllm bench serve`` (under
tests/fixtures/clients, where their README says how each was made), found by content in a trial's folder."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from supervisor._experiment.client_figures import client_figures
from supervisor._experiment.formats import FIGURES, aiperf, guidellm, vllm_bench
from supervisor._experiment.results import FIRST_COLUMNS

FIXTURES = Path(__file__).parents[1] / "fixtures" / "clients"
AIPERF = FIXTURES / "aiperf_0.13.0_profile_export_aiperf.json"
GUIDELLM = FIXTURES / "guidellm_0.8.1_report.json"
VLLM = FIXTURES / "vllm_bench_serve_save_result.json"


def _load(path: Path) -> dict[str, object]:
    data = json.loads(path.read_text())
    assert isinstance(data, dict)
    return data


def test_aiperf_figures_are_its_throughputs_and_percentiles_in_ms() -> None:
    data = _load(AIPERF)
    assert aiperf.is_aiperf(data) and not vllm_bench.is_vllm_bench(data) and not guidellm.is_guidellm(data)
    got = aiperf.figures(data)
    assert got["request_throughput"] == pytest.approx(22.282730543738424)
    assert got["output_token_throughput"] == pytest.approx(178.2618443499074)
    assert got["ttft_p50_ms"] == pytest.approx(63.267912499999994)
    assert got["itl_p99_ms"] == pytest.approx(6.122557042857143)
    assert got["request_latency_p90_ms"] == pytest.approx(89.250148)
    assert got["requests_completed"] == 8.0
    assert "requests_failed" not in got  # aiperf writes error_request_count only when a request failed
    assert set(got) <= set(FIGURES)


def test_guidellm_figures_take_the_successful_requests_and_latency_in_ms() -> None:
    data = _load(GUIDELLM)
    assert guidellm.is_guidellm(data) and not aiperf.is_aiperf(data) and not vllm_bench.is_vllm_bench(data)
    got = guidellm.figures(data)
    assert got["request_throughput"] == pytest.approx(11.196992995045278)
    assert got["output_token_throughput"] == pytest.approx(89.5759439603622)
    assert got["ttft_p50_ms"] == pytest.approx(24.72376823425293)
    assert got["itl_p90_ms"] == pytest.approx(6.3583510262625555)
    assert got["request_latency_p50_ms"] == pytest.approx(64.19086456298828)  # seconds in the report
    assert (got["requests_completed"], got["requests_failed"]) == (4.0, 0.0)
    assert set(got) <= set(FIGURES)


def test_vllm_bench_figures_fall_back_to_the_median_for_p50() -> None:
    data = _load(VLLM)
    assert vllm_bench.is_vllm_bench(data) and not aiperf.is_aiperf(data) and not guidellm.is_guidellm(data)
    got = vllm_bench.figures(data)
    assert got["request_throughput"] == pytest.approx(4.7289)
    assert got["output_token_throughput"] == pytest.approx(605.30)
    assert got["ttft_p50_ms"] == pytest.approx(180.2)  # median_ttft_ms: 50 was not among --metric-percentiles
    assert got["ttft_p99_ms"] == pytest.approx(512.7)
    assert got["request_latency_p90_ms"] == pytest.approx(3805.2)  # e2el
    assert (got["requests_completed"], got["requests_failed"]) == (198.0, 2.0)
    assert set(got) <= set(FIGURES)


@pytest.mark.parametrize(
    ("fixture", "where", "fmt"),
    [
        (AIPERF, "artifacts/profile_export_aiperf.json", "aiperf"),
        (GUIDELLM, "benchmarks.json", "guidellm"),
        (VLLM, "results/openai-chat-infqps-concurrency16-Qwen3-0.6B-20261207-163000.json", "vllm-bench"),
    ],
)
def test_a_tools_file_is_found_anywhere_in_the_trial_folder_by_its_content(
    tmp_path: Path, fixture: Path, where: str, fmt: str
) -> None:
    target = tmp_path / where
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(fixture, target)
    (tmp_path / "inputs.json").write_text('{"data": []}')  # aiperf's other files: not a result
    row = client_figures(tmp_path, FIRST_COLUMNS)
    assert row["client_format"] == fmt and row["client_file"] == where
    assert row["request_throughput"] > 0 and row["ttft_p50_ms"] > 0


def test_result_json_wins_and_never_overwrites_the_rows_own_columns(tmp_path: Path) -> None:
    (tmp_path / "artifacts").mkdir()
    shutil.copy(AIPERF, tmp_path / "artifacts" / "profile_export_aiperf.json")
    (tmp_path / "result.json").write_text(json.dumps({"request_throughput": 1.5, "status": "mine", "note": "x"}))
    row = client_figures(tmp_path, FIRST_COLUMNS)
    assert row["request_throughput"] == 1.5 and row["client_status"] == "mine" and row["note"] == "x"
    assert "status" not in row and row["client_format"] == "aiperf"


def test_the_runs_link_and_the_metrics_snapshots_are_not_read_as_the_clients(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.copy(AIPERF, elsewhere / "profile_export_aiperf.json")
    trial = tmp_path / "trial"
    (trial / "metrics").mkdir(parents=True)
    (trial / "run").symlink_to(elsewhere, target_is_directory=True)
    shutil.copy(VLLM, trial / "metrics" / "index.json")
    assert client_figures(trial, FIRST_COLUMNS) == {}
    (trial / "broken.json").write_text("{not json")
    (trial / "list.json").write_text("[1, 2]")
    assert client_figures(trial, FIRST_COLUMNS) == {}


def test_vllm_bench_appended_results_are_read_for_the_last_line(tmp_path: Path) -> None:
    first = _load(VLLM)
    second = {**first, "request_throughput": 9.5}
    (tmp_path / "appended.json").write_text(json.dumps(first) + "\n" + json.dumps(second))
    assert client_figures(tmp_path, FIRST_COLUMNS)["request_throughput"] == 9.5
