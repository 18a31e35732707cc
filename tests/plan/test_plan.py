"""Validation before anything starts, start order, templates, ports and replica expansion."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import supervisor as sv

from ..helpers import plan_of, plan_problems

PY = sys.executable


def plan(*services: sv.Service, tmp_path: Path) -> sv.Plan:
    return plan_of(*services, runs_dir=tmp_path)


def problems(*services: sv.Service, tmp_path: Path) -> str:
    return plan_problems(*services, runs_dir=tmp_path)


def svc(name: str, **kwargs: object) -> sv.Service:
    kwargs.setdefault("command", [PY, "-c", "pass"])
    return sv.Service(name=name, **kwargs)  # type: ignore[arg-type]


def test_start_order_is_dependencies_first_then_file_order(tmp_path: Path) -> None:
    result = plan(
        svc("front", depends_on=["b", "a"]),
        svc("b", depends_on=["kv"]),
        svc("a"),
        svc("kv"),
        tmp_path=tmp_path,
    )
    assert [s.name for s in result.services] == ["a", "kv", "b", "front"]
    assert result.dependents("kv") == ["b"]


def test_cycle_is_named(tmp_path: Path) -> None:
    message = problems(
        svc("a", depends_on=["c"]), svc("b", depends_on=["a"]), svc("c", depends_on=["b"]), tmp_path=tmp_path
    )
    assert "dependency cycle: a -> c -> b -> a" in message


@pytest.mark.parametrize(
    ("services", "expected"),
    [
        ([svc("a", depends_on=["kvv"]), svc("kv")], "service 'a', field 'depends_on': unknown service 'kvv' (did you mean 'kv'?)"),
        ([svc("a", depends_on=["a"])], "cannot depend on itself"),
        ([svc("a", replicas=-1)], "service 'a', field 'replicas': must be 0 or more, got -1"),
        ([sv.Service(name="a")], "service 'a', field 'command': missing"),
        ([svc("a", command=["no-such-program-xyz"])], "executable 'no-such-program-xyz' not found on PATH"),
        ([svc("a", command=["./missing/run.sh"])], "./missing/run.sh does not exist"),
        ([svc("a", ports={"http": 8000}), svc("b", ports={"grpc": 8000})], "port 8000 is also a.http"),
        ([svc("a", ports={"http": 8000}, replicas=2)], "would be bound by all 2 replicas"),
        ([svc("a", ports=["http", "http"])], "port 'http' named twice"),
        ([svc("a", command=[PY, "{prot}"], ports=["port"])], "unknown template {prot} (did you mean 'port'?)"),
        ([svc("a", command=[PY, "{kv.ulr}"]), svc("kv", ports=["port"])], "unknown template {kv.ulr} (did you mean 'kv.url'?)"),
        ([svc("a", ready=sv.LogCheck("ready ("))], "bad regex 'ready ('"),
        ([svc("a", ready=sv.HttpCheck("http://x", body="[unclosed"))], "bad regex"),
        ([svc("a.b")], "a name must be letters, digits"),
        ([svc("a"), svc("a")], "service 'a': defined twice"),
        ([svc("a", shell="echo hi")], "give either command: or shell:, not both"),
    ],
)  # fmt: skip
def test_invalid_topologies_are_refused_with_the_field_named(
    tmp_path: Path, services: list[sv.Service], expected: str
) -> None:
    assert expected in problems(*services, tmp_path=tmp_path)


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    message = problems(svc("a", replicas=-1), sv.Service(name="b"), svc("c", depends_on=["zz"]), tmp_path=tmp_path)
    assert "3 problems" in message


def test_templates_ports_and_replicas(tmp_path: Path) -> None:
    result = plan(
        svc("kv", ports=["port"]),
        svc("worker", replicas=2, ports=["http", "metrics"],
            command=["{python}", "--kv", "{kv.url}", "--http", "{http}", "--metrics", "{metrics}", "--rank", "{replica}",
                     "--name", "{name}", "--dir", "{run_dir}", '{"json": "kept"}', "{{literal}}"],
            env={"KV_PORT": "{kv.port}"}),
        svc("front", command=[PY, "{worker.urls}", "{worker.1.http}"], ports=["port"], ready=sv.HttpCheck("{url}/health")),
        tmp_path=tmp_path,
    )  # fmt: skip
    kv = result.service("kv").replicas[0]
    w0, w1 = result.service("worker").replicas
    assert (w0.name, w1.name) == ("worker.0", "worker.1")
    ports = {kv.port, w0.ports["http"], w0.ports["metrics"], w1.ports["http"], w1.ports["metrics"]}
    assert len(ports) == 5 and None not in ports
    assert w1.argv == (
        PY, "--kv", f"http://127.0.0.1:{kv.port}", "--http", str(w1.ports["http"]), "--metrics",
        str(w1.ports["metrics"]), "--rank", "1", "--name", "worker.1", "--dir", str(result.run_dir),
        '{"json": "kept"}', "{literal}",
    )  # fmt: skip
    assert w0.env == {"KV_PORT": str(kv.port)}
    front = result.service("front").replicas[0]
    assert front.argv[1] == f"{w0.url},{w1.url}" and front.argv[2] == str(w1.ports["http"])
    assert front.ready is not None and front.ready.check == sv.HttpCheck(f"{front.url}/health")
    assert result.run_dir.parent == tmp_path and result.run_id.endswith(result.run_dir.name[-6:])


@pytest.mark.parametrize(
    ("written", "passed"),
    [
        ('{"a":{"b":{"c":1}}}', '{"a":{"b":{"c":1}}}'),  # raw nested JSON: its "}}" closes no "{{"
        ('[{"x":{"y":2}},{"z":3}]', '[{"x":{"y":2}},{"z":3}]'),
        ('{{"a":{{"b":1}}}}', '{"a":{"b":1}}'),  # doubled, as the presets' args write dicts
        ("awk '{{print $1}}'", "awk '{print $1}'"),
        ("{{{port}}}", "{PORT}"),
        ("{{replica}}", "{replica}"),
        ("a}}b", "a}}b"),
    ],
)
def test_a_double_brace_is_literal_only_when_it_closes_an_escape(tmp_path: Path, written: str, passed: str) -> None:
    """vLLM takes JSON flags (--kv-transfer-config, --speculative-config): nested ones end in "}}", which
    was made "}" and handed the engine broken JSON."""
    result = plan(svc("w", ports=["port"], command=[PY, written]), tmp_path=tmp_path)
    replica = result.service("w").replicas[0]
    assert replica.argv[1] == passed.replace("PORT", str(replica.port))


def test_fixed_ports_are_kept_and_never_handed_out(tmp_path: Path) -> None:
    handed = iter([9001, 9002])
    result = sv.make_plan(
        sv.Topology(name="t", services=[svc("a", ports={"http": 9000}), svc("b", ports=["port"])]),
        runs_dir=tmp_path,
        allocate_port=lambda: next(handed),
        reserve_port=lambda port: None,
    )
    assert result.service("a").replicas[0].port == 9000
    assert result.service("b").replicas[0].port == 9001


def test_shell_is_used_only_when_asked(tmp_path: Path) -> None:
    result = (
        plan(svc("a", command=None, shell="echo {port} | cat", ports=["port"]), tmp_path=tmp_path)
        if False
        else plan(sv.Service(name="a", shell="echo {port} | cat", ports=["port"]), tmp_path=tmp_path)
    )
    replica = result.service("a").replicas[0]
    assert replica.argv == ("/bin/sh", "-c", f"echo {replica.port} | cat")


@pytest.mark.parametrize(
    ("service", "expected"),
    [
        (svc("a", replicas=2, min_ready=3), "field 'min_ready': must be between 0 and replicas (2)"),
        (svc("a", fatal=["oops ("]), "field 'fatal': bad regex"),
        (svc("a", alive=sv.Probe(sv.TcpCheck("1"), failures=0)), "field 'alive.failures': must be 1 or more"),
        (svc("a", ready=sv.Probe(sv.LogCheck("x"), progress="(")), "field 'ready.progress': bad regex"),
        (svc("a", restart=sv.RestartPolicy(policy="on-failure", max_restarts=-1)), "restart.max_restarts"),
    ],
)
def test_invalid_supervision_settings(tmp_path: Path, service: sv.Service, expected: str) -> None:
    assert expected in problems(service, tmp_path=tmp_path)


def test_rest_for_one_closure_is_transitive(tmp_path: Path) -> None:
    result = plan(svc("kv"), svc("w", depends_on=["kv"]), svc("f", depends_on=["w"]), svc("x"), tmp_path=tmp_path)
    assert result.dependents_closure("kv") == ["kv", "w", "f"]


def test_service_plan_holds_what_the_runtime_needs(tmp_path: Path) -> None:
    from supervisor._spec.fatal import BUILTIN_FATAL_PATTERNS

    restart = sv.RestartPolicy(policy="always", max_restarts=2)
    result = sv.make_plan(
        sv.Topology(
            name="t",
            strategy="rest_for_one",
            services=[
                svc("a", replicas=3, min_ready=2, restart=restart, fatal=["boom"]),
                svc("b", strategy="one_for_all", fatal=["x"], builtin_fatal=False),
            ],
        ),
        runs_dir=tmp_path,
    )
    a, b = result.service("a"), result.service("b")
    assert (a.restart, a.min_ready, a.strategy) == (restart, 2, "rest_for_one")
    assert a.fatal == ("boom", *BUILTIN_FATAL_PATTERNS.values())
    assert (b.fatal, b.min_ready, b.strategy, b.restart) == (("x",), None, "one_for_all", sv.RestartPolicy())


def test_spec_imports_no_runtime_module() -> None:
    import subprocess

    code = "import sys, supervisor._spec.model; print(sorted(m for m in sys.modules if m.startswith('supervisor.')))"
    loaded = subprocess.run([PY, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "supervisor._host.probes" not in loaded and "supervisor._spec.model" in loaded, loaded


def test_an_injected_port_allocator_and_ports_below_a_limit_never_collide(monkeypatch: pytest.MonkeyPatch) -> None:
    """``make_plan(allocate_port=...)`` hands plain ports to the caller's allocator and ``below`` ports to
    its own: each must learn the other's, or a status port got the number of another service's port (the
    presets' golden test saw nats on Dynamo's worker status port). The scan starts at 16384 here, as does
    the caller's counter."""
    import supervisor._plan.ports as resources

    monkeypatch.setattr(resources.random, "randrange", lambda span: 0)
    handed: list[int] = []

    def allocate() -> int:
        number = next(n for n in range(16384, 16484) if n not in handed)
        handed.append(number)
        return number

    topology = sv.Topology(
        name="mix",
        services=[
            sv.Service(name="plain", command=["true"], ports=["port"]),
            sv.Service(name="low", command=["true"], ports=[sv.PortSpec("status", below=32768)]),
            sv.Service(name="plain2", command=["true"], ports=["port"]),
        ],
    )
    plan = sv.make_plan(topology, runs_dir="/tmp/unused", allocate_port=allocate, reserve_port=handed.append,
                        check_executables=False)  # fmt: skip
    numbers = [n for service in plan.services for replica in service.replicas for n in replica.ports.values()]
    assert len(set(numbers)) == len(numbers) == 3, numbers


def test_each_assigned_gpu_is_a_template_of_its_own(tmp_path: Path) -> None:
    """``{gpus.0}``, ``{gpus.1}``: the replica's GPUs one by one, for ids inside a structure (Vajra's
    resource-mapping JSON), disjoint between replicas as the assignment is."""
    service = sv.Service(name="s", command=[PY, "-c", "pass", '{{"0":[{gpus.0},{gpus.1}]}}'], replicas=2, gpus=2)
    result = sv.make_plan(sv.Topology(name="t", services=[service]), runs_dir=tmp_path, gpus="8x80GB")
    assert [r.argv[-1] for r in result.services[0].replicas] == ['{"0":[0,1]}', '{"0":[2,3]}']
    beyond = sv.Service(name="s", command=[PY, "-c", "pass", "{gpus.2}"], gpus=2)
    with pytest.raises(sv.ConfigError, match=r"unknown template \{gpus.2\}"):
        sv.make_plan(sv.Topology(name="t", services=[beyond]), runs_dir=tmp_path, gpus="8x80GB")
