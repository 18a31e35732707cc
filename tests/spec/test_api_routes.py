"""A service's API routes (``api``): the paths it declares on its URL, then the URLs its probes and
``metrics`` call, as each replica's plan holds them; a route that is no path is refused at load."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

import supervisor as sv


def plan_of(tmp_path: Path, service: str) -> sv.Plan:
    path = tmp_path / "api.yaml"
    path.write_text("name: api\nservices:\n  web:\n" + service)
    ports = itertools.count(20001)
    return sv.make_plan(
        sv.load(path),
        runs_dir=tmp_path / "runs",
        allocate_port=lambda: next(ports),
        reserve_port=lambda _: None,
        check_executables=False,
    )


def test_a_yaml_service_lists_its_declared_routes_then_its_probes_and_metrics(tmp_path: Path) -> None:
    """``api`` paths land on each replica's own URL in order; the readiness and liveness probes' URLs and
    ``metrics`` follow as ``ready``, ``alive`` and ``metrics``, unless a declared route already is that URL."""
    plan = plan_of(
        tmp_path,
        "    command: [server, '{port}']\n    ports: [port, admin]\n    replicas: 2\n"
        "    ready: {http: 'http://127.0.0.1:{port}/v1/models'}\n"
        "    alive: {http: 'http://127.0.0.1:{admin}/live'}\n"
        "    metrics: 'http://127.0.0.1:{admin}/metrics'\n"
        "    api: {models: /v1/models, chat_completions: /v1/chat/completions}\n",
    )
    first, second = plan.services[0].replicas
    assert dict(first.api) == {
        "models": "http://127.0.0.1:20001/v1/models",
        "chat_completions": "http://127.0.0.1:20001/v1/chat/completions",
        "alive": "http://127.0.0.1:20002/live",
        "metrics": "http://127.0.0.1:20002/metrics",
    }  # the readiness probe calls the declared models route: listed once, by its declared name
    assert second.api["models"] == "http://127.0.0.1:20003/v1/models"  # each replica its own


def test_without_api_a_service_lists_what_its_probes_and_metrics_call(tmp_path: Path) -> None:
    """Every HTTP check of a probe counts (``ready``, ``ready.1`` for a second one); log and TCP checks
    have no route."""
    plan = plan_of(
        tmp_path,
        "    command: [server]\n    ports: [port]\n"
        "    ready: {all: [{http: 'http://127.0.0.1:{port}/health'}, {log: up},"
        " {http: 'http://127.0.0.1:{port}/ready'}]}\n"
        "    metrics: 'http://127.0.0.1:{port}/metrics'\n",
    )
    assert dict(plan.services[0].replicas[0].api) == {
        "ready": "http://127.0.0.1:20001/health",
        "ready.1": "http://127.0.0.1:20001/ready",
        "metrics": "http://127.0.0.1:20001/metrics",
    }


@pytest.mark.parametrize(
    ("api", "message"),
    [
        ("{models: v1/models}", "service 'web', field 'api.models': expected a path starting with '/'"),
        ("{models: '/v1/my models'}", "service 'web', field 'api.models': expected a path starting with '/'"),
        ("{'two words': /health}", "service 'web', field 'api': route name 'two words' must be letters"),
        ("[/health]", "service 'web', field 'api': expected a mapping NAME: path"),
    ],
)
def test_a_route_that_is_no_path_is_refused_at_load_naming_it(tmp_path: Path, api: str, message: str) -> None:
    with pytest.raises(sv.ConfigError) as error:
        plan_of(tmp_path, f"    command: [server]\n    ports: [port]\n    api: {api}\n")
    assert message in str(error.value)


def test_routes_need_a_port_to_be_served_on(tmp_path: Path) -> None:
    with pytest.raises(sv.ConfigError, match="service 'web', field 'api': its paths are served on the service's port"):
        plan_of(tmp_path, "    command: [server]\n    api: {health: /health}\n")


def test_a_service_built_in_code_is_checked_the_same(tmp_path: Path) -> None:
    service = sv.Service(name="web", command=["server"], ports=["port"], api={"health": "health"})
    with pytest.raises(sv.ConfigError, match=r"field 'api\.health': expected a path starting with '/'"):
        sv.make_plan(sv.Topology(name="api", services=[service]), runs_dir=tmp_path, check_executables=False)
