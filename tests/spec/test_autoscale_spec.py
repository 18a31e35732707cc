"""``autoscale:`` in YAML and in code: durations in our units, unknown keys suggested, and every problem
named by file, service and field, the same from both."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import supervisor as sv

PY = sys.executable
METRICS = "metrics: 'http://127.0.0.1:{port}/metrics'"


def problems(tmp_path: Path, autoscale: str, extra: str = "") -> str:
    path = tmp_path / "t.yaml"
    path.write_text(
        f"name: t\nservices:\n  w:\n    command: [{PY}]\n    ports: [port]\n    {extra}\n    autoscale: {autoscale}\n"
    )
    with pytest.raises(sv.ConfigError) as caught:
        sv.make_plan(sv.load(path), runs_dir=tmp_path / "runs")
    assert caught.value.source == str(path)
    return str(caught.value)


def test_the_issue_example_loads_with_its_durations(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text(
        f"name: t\nservices:\n  w:\n    command: [{PY}]\n    ports: [port]\n    {METRICS}\n"
        "    autoscale: {min: 1, max: 8, metric: 'vllm:num_requests_waiting', target: 4, up_after: 30s,"
        " down_after: 5m, cooldown: 60s, period: 500ms}\n"
    )
    autoscale = sv.load(path).services[0].autoscale
    assert autoscale == sv.Autoscale(
        min=1, max=8, metric="vllm:num_requests_waiting", target=4, up_after_seconds=30, down_after_seconds=300,
        cooldown_seconds=60, period_seconds=0.5,
    )  # fmt: skip
    sv.make_plan(sv.load(path), runs_dir=tmp_path / "runs")  # valid


@pytest.mark.parametrize(
    ("autoscale", "extra", "expected"),
    [
        ("{min: 3, max: 2, metric: m, target: 1}", METRICS, "service 'w', field 'autoscale.max': 2 is below min (3)"),
        ("{max: 2, metric: m}", METRICS, "service 'w', field 'autoscale.target': missing"),
        ("{max: 2, metric: m, target: 0}", METRICS, "field 'autoscale.target': expected a number more than 0"),
        ("{max: 2, metric: m, target: 1}", "", "field 'autoscale.metric': the service has no metrics: endpoint"),
        ("{max: 2, metric: m, target: 1, up_after: soon}", METRICS, "field 'autoscale.up_after': expected a duration"),
        ("{max: 2, metrc: m, target: 1}", METRICS, "unknown field 'metrc' (did you mean 'metric'?)"),
        ("{max: 2, metric: m, target: 1, period: 0s}", METRICS, "field 'autoscale.period': must be more than 0"),
        ("{max: 2, metric: 'a + ', target: 1}", METRICS, "field 'autoscale.metric': expected a Prometheus metric name"),
        ("{max: 2, metric: 'a b', target: 1}", METRICS, "or names joined by +, got 'a b'"),
        ("{max: 1, metric: m, target: 1}", f"{METRICS}\n    min_ready: 2\n    replicas: 2",
         "field 'autoscale.max': 1 is below the service's min_ready (2)"),
    ],
)  # fmt: skip
def test_each_mistake_names_the_file_service_and_field(
    tmp_path: Path, autoscale: str, extra: str, expected: str
) -> None:
    text = problems(tmp_path, autoscale, extra)
    assert str(tmp_path / "t.yaml") in text and expected in text, text


def test_code_gets_the_same_checks_and_a_policy_excludes_a_metric(tmp_path: Path) -> None:
    def service(autoscale: sv.Autoscale) -> sv.Service:
        return sv.Service(name="w", command=[PY], autoscale=autoscale)

    def fails(autoscale: sv.Autoscale) -> str:
        with pytest.raises(sv.ConfigError) as caught:
            sv.make_plan(sv.Topology(name="t", services=[service(autoscale)]), runs_dir=tmp_path)
        return str(caught.value)

    assert "field 'autoscale.max': 0 is below min (1)" in fails(sv.Autoscale(max=0, policy=lambda m, n: 1))
    both = fails(sv.Autoscale(max=2, metric="m", target=1, policy=lambda m, n: 1))
    assert "field 'autoscale': give either a policy or metric: and target:, not both" in both
    sv.make_plan(
        sv.Topology(name="t", services=[service(sv.Autoscale(max=4, policy=lambda m, n: 1))]), runs_dir=tmp_path
    )
