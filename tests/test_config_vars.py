"""``${name}`` in any field, typed after substitution; GPU requests and startup phases from YAML."""

from __future__ import annotations

from pathlib import Path

import pytest

import supervisor as sv
from supervisor._config import topology_from_text

TYPED = """
name: typed
vars: {decode: 2, grace: 3s, tp: 1, model: m, spread: false}
services:
  decode:
    command: [sleep, "${model}"]
    replicas: ${decode}
    gpus: ${tp}
    stop: {grace: "${grace}"}
    ports: {api: "${port:-8123}"}
    builtin_fatal: ${spread}
    min_ready: ${min_ready:-1}
"""


def test_whole_field_vars_are_typed_after_substitution() -> None:
    """Numbers, booleans and durations from --set (text) land typed; a text field keeps the exact text."""
    topology = topology_from_text(TYPED, overrides={"decode": "3", "model": "007", "grace": "250ms", "tp": 2})
    (service,) = topology.services
    assert service.replicas == 3
    assert service.gpus == sv.GpuRequest(count=2)
    assert service.stop.grace_seconds == 0.25
    assert service.ports[0].number == 8123
    assert service.builtin_fatal is False
    assert service.min_ready == 1
    assert service.command == ("sleep", "007")  # not the number 7


def test_typed_defaults_stay_typed() -> None:
    (service,) = topology_from_text(TYPED).services
    assert (service.replicas, service.gpus, service.stop.grace_seconds) == (2, sv.GpuRequest(count=1), 3.0)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"decode": "abc"}, "service 'decode', field 'replicas': expected a whole number, got 'abc' (from ${decode})"),
        ({"decode": "2.5"}, "field 'replicas': expected a whole number, got 2.5 (from ${decode})"),
        ({"tp": "true"}, "field 'gpus': expected a whole number, got True (from ${tp})"),
        ({"spread": "yes"}, "field 'builtin_fatal': expected true or false, got 'yes' (from ${spread})"),
        ({"grace": "soon"}, "field 'stop.grace': expected a duration"),
    ],
)
def test_wrong_type_after_substitution_names_field_and_var(overrides: dict[str, str], expected: str) -> None:
    with pytest.raises(sv.ConfigError) as caught:
        topology_from_text(TYPED, source="t.yaml", overrides=overrides)
    assert expected in str(caught.value)
    assert "t.yaml" in str(caught.value)


def test_a_quoted_number_written_in_the_file_is_still_an_error() -> None:
    with pytest.raises(sv.ConfigError, match="expected a whole number, got '2'"):
        topology_from_text('name: q\nservices:\n  a: {command: [sleep, "1"], replicas: "2"}\n')


@pytest.mark.parametrize("name", ["decode", "decod", "Decode", "model", "grace", "unused", "d", "tp_size"])
def test_unused_set_suggestion_is_never_the_same_name(name: str) -> None:
    text = TYPED.replace("vars: {", "vars: {unused: 1, ")
    with pytest.raises(sv.ConfigError) as caught:
        topology_from_text(text.replace("${" + name + "}", "x"), overrides={name: "1"})
    message = str(caught.value)
    assert f"--set {name}:" in message
    assert f"did you mean '{name}'" not in message


def test_gpus_and_phases_from_yaml() -> None:
    text = """
name: g
services:
  a:
    command: [sleep, "1"]
    gpus: {count: 2, contiguous: true, min_free_memory: 10GB}
    phases: {weights: "Loading weights", graphs: "Capturing CUDA graph"}
  b: {command: [sleep, "1"], gpus: {ids: [3, 1]}}
"""
    a, b = topology_from_text(text).services
    assert a.gpus == sv.GpuRequest(count=2, contiguous=True, min_free_memory_bytes=10_000_000_000)
    assert [(p.name, p.pattern) for p in a.phases] == [
        ("weights", "Loading weights"),
        ("graphs", "Capturing CUDA graph"),
    ]
    assert b.gpus is not None and b.gpus.ids == (3, 1) and b.gpus.per_replica == 2


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("gpus: {cont: 2}", "service 'a', field 'gpus': unknown field 'cont' (did you mean 'count'?)"),
        ("gpus: {count: x}", "field 'gpus': expected a whole number, got 'x'"),
        ("phases: [a, b]", "field 'phases': expected a mapping of phase name"),
        ("phases: {load: '(unclosed'}", "field 'phases.load': bad regex"),
    ],
)
def test_bad_gpus_and_phases(tmp_path: Path, body: str, expected: str) -> None:
    path = tmp_path / "t.yaml"
    path.write_text(f'name: g\nservices:\n  a:\n    command: [sleep, "1"]\n    {body}\n')
    with pytest.raises(sv.ConfigError) as caught:
        sv.make_plan(sv.load(path), runs_dir=tmp_path / "runs", check_executables=False)
    assert expected in str(caught.value)


def test_a_port_below_a_limit_from_yaml(tmp_path: Path) -> None:
    """Dynamo reads DYN_SYSTEM_PORT as an i16: ``{below: 32768}`` keeps a free port out of the ephemeral range."""
    text = "name: p\nservices:\n  a:\n    command: [sleep, '1']\n    replicas: 3\n    ports: {api: null, status: {below: 32768}}\n"
    (service,) = topology_from_text(text).services
    assert service.ports == (sv.PortSpec("api"), sv.PortSpec("status", below=32768))
    plan = sv.make_plan(topology_from_text(text), runs_dir=tmp_path, check_executables=False)
    statuses = [replica.ports["status"] for replica in plan.services[0].replicas]
    assert all(port < 32768 for port in statuses) and len(set(statuses)) == 3


@pytest.mark.parametrize(
    ("ports", "expected"),
    [
        ("{status: {under: 3}}", "unknown field 'status.under' (did you mean 'status.below'?)"),
        ("{status: {below: x}}", "expected a whole number, got 'x'"),
        ("{status: {below: 100}}", "port status: below: must be 2049 or more"),
        ("{status: {}}", "port 'status': expected a number, null, or {below: N}"),
    ],
)
def test_bad_port_limits(tmp_path: Path, ports: str, expected: str) -> None:
    text = f"name: p\nservices:\n  a:\n    command: [sleep, '1']\n    ports: {ports}\n"
    with pytest.raises(sv.ConfigError) as caught:
        sv.make_plan(topology_from_text(text), runs_dir=tmp_path, check_executables=False)
    assert expected in str(caught.value) and "service 'a', field 'ports'" in str(caught.value)


STRUCTURED = """
name: structured
vars: {extra: {A: "1"}, gpu: 1, probe: {tcp: "{port}"}, named: [api]}
services:
  s:
    command: [sleep, "1"]
    env: ${extra}
    gpus: ${gpu}
    ports: ${named}
    ready: ${probe}
"""


def test_a_mapping_or_list_from_set_is_typed_like_the_default() -> None:
    """Proves --set of a mapping or list for env, gpus, ports and ready is read as YAML, as the same value
    from vars: is (it was the text '{B: "2"}', then 'expected a mapping')."""
    sets = {"extra": '{B: "2"}', "gpu": "{count: 2, contiguous: true}", "named": "[api, admin]"}
    (service,) = topology_from_text(STRUCTURED, overrides={**sets, "probe": '{http: "http://x/{port}"}'}).services
    assert service.env == {"B": "2"}
    assert service.gpus == sv.GpuRequest(count=2, contiguous=True)
    assert [port.name for port in service.ports] == ["api", "admin"]
    assert service.ready == sv.Probe(sv.HttpCheck("http://x/{port}"))
    with pytest.raises(sv.ConfigError, match=r"field 'env': expected a mapping NAME: value, got 'x'"):
        topology_from_text(STRUCTURED, overrides={"extra": "x"})


def test_errors_in_the_list_form_name_the_service() -> None:
    """Proves a bad field of a service written as a list item is reported under its name (it was '#0')."""
    text = "name: t\nservices:\n  - name: web\n    command: [sleep, '1']\n    env: ${extra}\n  - {command: [x]}\n"
    with pytest.raises(sv.ConfigError) as caught:
        topology_from_text(text, overrides={"extra": "x"})
    assert "service 'web', field 'env'" in str(caught.value)


COMMAND_VAR = "name: c\nservices:\n  a: {command: '${cmd}'}\n"


def test_a_list_from_set_is_the_command_argv_unchanged() -> None:
    """Proves ``command: ${cmd}`` with ``--set cmd=[a, b]`` takes the list as argv (it was split like a command
    line: '[a,', 'b]'), a string from --set is still split as a command line, and a mapping is an error."""
    (service,) = topology_from_text(COMMAND_VAR, overrides={"cmd": "[python3, -c, 'print(1)']"}).services
    assert service.command == ("python3", "-c", "print(1)")
    (service,) = topology_from_text(COMMAND_VAR, overrides={"cmd": "python3 -c 'print(1)'"}).services
    assert service.command == ("python3", "-c", "print(1)")
    (service,) = topology_from_text(COMMAND_VAR, overrides={"cmd": "007"}).services
    assert service.command == ("007",)  # the text, not the number 7
    with pytest.raises(sv.ConfigError) as caught:
        topology_from_text(COMMAND_VAR, source="t.yaml", overrides={"cmd": "{a: 1}"})
    assert "service 'a', field 'command': expected a list of arguments" in str(caught.value)
    assert "(from ${cmd})" in str(caught.value)
