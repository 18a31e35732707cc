"""One validator: the same mistake made in YAML or in Python code gets the same check and the same words."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import supervisor as sv
from supervisor._plan.plan import fill_command

PY = sys.executable


def svc(name: str, **kwargs: object) -> sv.Service:
    kwargs.setdefault("command", [PY, "-c", "pass"])
    return sv.Service(name=name, **kwargs)  # type: ignore[arg-type]


def yaml_problems(tmp_path: Path, services: str, top: str = "") -> list[str]:
    path = tmp_path / "t.yaml"
    path.write_text(f"name: t\n{top}services:\n{services}")
    with pytest.raises(sv.ConfigError) as info:
        sv.make_plan(sv.load(path), runs_dir=tmp_path / "runs")
    assert info.value.source == str(path)
    return info.value.problems


def code_problems(tmp_path: Path, *services: sv.Service, **topology: object) -> list[str]:
    with pytest.raises(sv.ConfigError) as info:
        sv.make_plan(sv.Topology(name="t", services=list(services), **topology), runs_dir=tmp_path / "runs")  # type: ignore[arg-type]
    return info.value.problems


PY_YAML = f"'{PY}'"

SAME_MISTAKES = [
    (
        "condition",
        f"  a: {{command: [{PY_YAML}], depends_on: {{b: readyy}}}}\n  b: {{command: [{PY_YAML}]}}\n",
        [svc("a", depends_on=[sv.Dependency("b", "readyy")]), svc("b")],  # type: ignore[arg-type]
    ),
    ("port-range", f"  a: {{command: [{PY_YAML}], ports: {{port: 70000}}}}\n", [svc("a", ports=[sv.PortSpec("port", 70000)])]),
    ("port-zero", f"  a: {{command: [{PY_YAML}], ports: {{port: 0}}}}\n", [svc("a", ports=[sv.PortSpec("port", 0)])]),
    ("restart-policy", f"  a: {{command: [{PY_YAML}], restart: sometimes}}\n", [svc("a", restart=sv.RestartPolicy(policy="sometimes"))]),  # type: ignore[arg-type]
    ("strategy", f"  a: {{command: [{PY_YAML}], strategy: one_for_some}}\n", [svc("a", strategy="one_for_some")]),
    (
        "alive-template",
        f"  a: {{command: [{PY_YAML}], ports: [port], alive: {{http: 'http://127.0.0.1:{{prot}}/'}}}}\n",
        [svc("a", ports=["port"], alive=sv.HttpCheck("http://127.0.0.1:{prot}/"))],
    ),
    (
        "backoff",
        f"  a: {{command: [{PY_YAML}], restart: {{policy: always, backoff: {{factor: -3, jitter: 7}}}}}}\n",
        [svc("a", restart=sv.RestartPolicy(policy="always", backoff=sv.Backoff(factor=-3, jitter=7)))],
    ),
    ("nan-timeout", f"  a: {{command: [{PY_YAML}], ready: {{log: x, timeout: .nan}}}}\n", [svc("a", ready=sv.Probe(sv.LogCheck("x"), timeout_seconds=float("nan")))]),
    ("inf-grace", f"  a: {{command: [{PY_YAML}], stop: {{grace: .inf}}}}\n", [svc("a", stop=sv.StopPolicy(grace_seconds=float("inf")))]),
    ("replicas", f"  a: {{command: [{PY_YAML}], replicas: 100000}}\n", [svc("a", replicas=100000)]),
    ("env-name", f"  a: {{command: [{PY_YAML}], env: {{'A=B': x}}}}\n", [svc("a", env={"A=B": "x"})]),
    ("env-nul", f"  a: {{command: [{PY_YAML}], env: {{A: \"x\\0y\"}}}}\n", [svc("a", env={"A": "x\0y"})]),
    ("arg-nul", f"  a: {{command: [{PY_YAML}, \"x\\0y\"]}}\n", [svc("a", command=[PY, "x\0y"])]),
    ("tcp", f"  a: {{command: [{PY_YAML}], ready: {{tcp: 'host:notaport'}}}}\n", [svc("a", ready=sv.TcpCheck("host:notaport"))]),
    ("http", f"  a: {{command: [{PY_YAML}], ready: {{http: 'not a url'}}}}\n", [svc("a", ready=sv.HttpCheck("not a url"))]),
    ("exec", f"  a: {{command: [{PY_YAML}], ready: {{exec: [no-such-prog-xyz]}}}}\n", [svc("a", ready=sv.ExecCheck(["no-such-prog-xyz"]))]),
    (
        "completed-server",
        f"  a: {{command: [{PY_YAML}], depends_on: {{b: completed}}}}\n  b: {{command: [{PY_YAML}], ports: [port]}}\n",
        [svc("a", depends_on=[sv.Dependency("b", "completed")]), svc("b", ports=["port"])],
    ),
    ("min-ready", f"  a: {{command: [{PY_YAML}], replicas: 2, min_ready: 3}}\n", [svc("a", replicas=2, min_ready=3)]),
]  # fmt: skip


@pytest.mark.parametrize(
    ("yaml_services", "services"), [m[1:] for m in SAME_MISTAKES], ids=[m[0] for m in SAME_MISTAKES]
)
def test_yaml_and_code_get_the_same_problems(tmp_path: Path, yaml_services: str, services: list[sv.Service]) -> None:
    from_yaml = yaml_problems(tmp_path, yaml_services)
    from_code = code_problems(tmp_path, *services)
    assert from_yaml == from_code
    assert all(p.startswith("service '") for p in from_code), from_code


def test_field_names_in_the_problems(tmp_path: Path) -> None:
    assert code_problems(tmp_path, svc("a", depends_on=[sv.Dependency("b", "readyy")]), svc("b")) == [  # type: ignore[arg-type]
        "service 'a', field 'depends_on': b: condition must be one of started, ready, completed, got 'readyy'"
    ]
    (alive,) = code_problems(tmp_path, svc("a", ports=["port"], alive=sv.HttpCheck("http://h:{prot}/")))
    assert alive.startswith("service 'a', field 'alive.http': unknown template {prot}"), alive
    (port,) = code_problems(tmp_path, svc("a", ports=[sv.PortSpec("port", 70000)]))
    assert "field 'ports'" in port and "65535" in port


def test_a_set_of_an_unused_var_never_suggests_itself(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text(f"name: t\nvars: {{engine: vllm}}\nservices:\n  a: {{command: [{PY_YAML}]}}\n")
    with pytest.raises(sv.ConfigError) as info:
        sv.load(path, overrides={"engine": "x"})
    (problem,) = info.value.problems
    assert "did you mean 'engine'" not in problem and "--set engine: the file uses no ${engine}" in problem
    path.write_text(f"name: t\nservices:\n  a: {{command: [{PY_YAML}]}}\n")
    with pytest.raises(sv.ConfigError, match=r"the file uses no \$\{engine\}$"):
        sv.load(path, overrides={"engine": "x"})


def test_config_error_is_a_value_error() -> None:
    assert issubclass(sv.ConfigError, ValueError)
    with pytest.raises(ValueError, match="bad"):
        raise sv.ConfigError("bad")


def test_command_templates_fill_ours_and_keep_other_braces(tmp_path: Path) -> None:
    plan = sv.make_plan(sv.Topology(name="t", services=[svc("front", ports=["port"])]), runs_dir=tmp_path)
    url = plan.service("front").replicas[0].url
    argv = [PY, "-c", "p = 1; print(f'{p}')", "{front.url}", "{print $1}", '{"a": 1}', "{run_dir}", "{{x}}"]
    assert fill_command(argv, plan) == [
        PY,
        "-c",
        "p = 1; print(f'{p}')",
        url,
        "{print $1}",
        '{"a": 1}',
        str(plan.run_dir),
        "{{x}}",
    ]
    with pytest.raises(sv.ConfigError, match=r"unknown template \{front.urll\} \(did you mean 'front.url'\?\)"):
        fill_command([PY, "{front.urll}"], plan)
    with pytest.raises(sv.ConfigError, match="executable 'no-such-prog-xyz' not found on PATH"):
        fill_command(["no-such-prog-xyz", "{front.url}"], plan)


HEADER_CASES = [
    ('{Authorization: "Bearer k\\r\\nX: y"}', "the value of 'Authorization' must be one line of text"),
    ("{'Bad Name': v}", "'Bad Name' is not a header name"),
    ("{Host: other}", "'Host' is set by the probe itself"),
]


@pytest.mark.parametrize(("headers", "problem"), HEADER_CASES, ids=["newline", "name", "own"])
def test_probe_headers_are_checked_at_load_without_quoting_values(tmp_path: Path, headers: str, problem: str) -> None:
    """A header that h11 would refuse at every attempt is a load-time problem; the value (a key) is not shown."""
    services = (
        f"  a:\n    command: [{PY_YAML}, -c, pass]\n    ready: {{http: 'http://{{host}}:1/x', headers: {headers}}}\n"
    )
    found = "\n".join(yaml_problems(tmp_path, services))
    assert problem in found, found
    assert "Bearer k" not in found


def test_probe_headers_must_be_a_mapping_of_strings(tmp_path: Path) -> None:
    services = f"  a:\n    command: [{PY_YAML}, -c, pass]\n    ready: {{http: 'http://{{host}}:1/x', headers: 'Bearer sekrit'}}\n"
    path = tmp_path / "t.yaml"
    path.write_text(f"name: t\nservices:\n{services}")
    with pytest.raises(sv.ConfigError, match="headers: expected a mapping of header names to strings") as info:
        sv.load(path)
    assert "sekrit" not in str(info.value)


def test_probe_header_values_take_templates(tmp_path: Path) -> None:
    services = f"  a:\n    command: [{PY_YAML}, -c, pass]\n    ports: [port]\n    ready: {{http: 'http://{{host}}:{{port}}/x', headers: {{X-Port: '{{port}}'}}}}\n"
    path = tmp_path / "t.yaml"
    path.write_text(f"name: t\nservices:\n{services}")
    plan = sv.make_plan(sv.load(path), runs_dir=tmp_path / "runs")
    replica = plan.services[0].replicas[0]
    assert replica.ready is not None and isinstance(replica.ready.check, sv.HttpCheck)
    assert replica.ready.check.headers == {"X-Port": str(replica.ports["port"])}
