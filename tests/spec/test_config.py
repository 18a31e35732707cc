"""YAML -> spec: formats, variables, overrides, and errors that name the file, service and field."""

from __future__ import annotations

from pathlib import Path

import pytest

import supervisor as sv
from supervisor._units import counted, format_size, parse_duration, parse_size

DEMO = Path(__file__).parents[2] / "examples" / "demo.yaml"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "topology.yaml"
    path.write_text(text)
    return path


def load_and_plan(path: Path) -> sv.Plan:
    """Both stages: config gives YAML its shape, plan checks what it means."""
    return sv.make_plan(sv.load(path), runs_dir=path.parent / "runs")


@pytest.mark.parametrize(
    ("text", "seconds"), [("500ms", 0.5), ("10s", 10.0), ("2m", 120.0), ("1h", 3600.0), (3, 3.0), ("1.5s", 1.5), ("250us", 0.00025),
                         ("7d", 7 * 86400.0)]
)  # fmt: skip
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(("text", "size"), [("50MB", 50_000_000), ("4MiB", 4 * 2**20), ("512k", 512_000), (1024, 1024)])
def test_sizes(text: object, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize(
    ("size", "text"), [(0, "0 B"), (1023, "1023 B"), (1536, "1.5 KiB"), (5 * 2**20, "5.0 MiB"), (3 * 2**40, "3.0 TiB")]
)
def test_sizes_for_people(size: int, text: str) -> None:
    """gc says how much it freed in these."""
    assert format_size(size) == text


def test_counts_in_messages_agree_with_their_number() -> None:
    assert [counted(n, "replica") for n in (0, 1, 2)] == ["0 replicas", "1 replica", "2 replicas"]
    assert counted(1, "service") == "1 service" and counted(2, "process", "processes") == "2 processes"


@pytest.mark.parametrize("bad", ["10 parsecs", "-1s", "", True, [1]])
def test_bad_durations_are_rejected(bad: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(bad)


def test_yaml_and_code_build_the_same_topology(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
name: same
services:
  kv:
    command: [etcd, --port, "{port}"]
    ports: [port]
    ready: {http: "http://127.0.0.1:{port}/health", period: 50ms, timeout: 1m, status: 200}
    stop: {signal: SIGINT, grace: 2s}
    log: {max_bytes: 4MB, backups: 2}
  worker:
    command: [python, -m, worker, --kv, "{kv.url}"]
    replicas: 2
    depends_on: {kv: ready}
    ready: {all: [{log: "ready to roll"}, {tcp: "{port}"}], timeout: 90s}
    env: {MODE: fast, LEVEL: 3}
""",
    )
    in_code = sv.Topology(
        name="same",
        services=[
            sv.Service(
                name="kv",
                command=["etcd", "--port", "{port}"],
                ports=["port"],
                ready=sv.Probe(sv.HttpCheck("http://127.0.0.1:{port}/health", status=200), period_seconds=0.05, timeout_seconds=60),
                stop=sv.StopPolicy(signal="SIGINT", grace_seconds=2),
                log=sv.LogPolicy(max_bytes="4MB", backups=2),
            ),
            sv.Service(
                name="worker",
                command="python -m worker --kv {kv.url}",
                replicas=2,
                depends_on=["kv"],
                ready=sv.Probe(sv.AllOf([sv.LogCheck("ready to roll"), sv.TcpCheck("{port}")]), timeout_seconds="90s"),
                env={"MODE": "fast", "LEVEL": 3},
            ),
        ],
    )  # fmt: skip
    assert sv.load(path) == in_code


def test_environment_variables_overrides_and_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TV_TOKEN", "secret")
    path = write(
        tmp_path,
        """
name: vars
vars: {model: tiny, port: 8000}
services:
  server:
    command: [serve, "${model}", --port, "${port}", "${MISSING:-fallback}", "$${literal}"]
    env: {TOKEN: "${TV_TOKEN}"}
""",
    )
    topo = sv.load(path, overrides={"model": "big", "services.server.replicas": "3"})
    service = topo.services[0]
    assert service.command == ("serve", "big", "--port", "8000", "fallback", "${literal}")
    assert service.env == {"TOKEN": "secret"} and service.replicas == 3


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("name: x\nservices:\n  a: {command: [true], replicsa: 2}\n", "service 'a': unknown field 'replicsa' (did you mean 'replicas'?)"),
        ("name: x\nservices:\n  a: {command: [true], stop: {grace: soon}}\n", "service 'a', field 'stop.grace': expected a duration"),
        ("name: x\nservices:\n  a: {command: [true], log: {max_bytes: lots}}\n", "service 'a', field 'log.max_bytes': expected a size"),
        ("name: x\nservices:\n  a: {command: [true], ready: {htp: x}}\n", "service 'a', field 'ready': a probe needs one of"),
        ("name: x\nservices:\n  a: {command: [true], ready: {http: x, perod: 1s}}\n", "unknown field 'perod' (did you mean 'period'?)"),
        ("name: x\nservices:\n  a: {command: [true], replicas: two}\n", "service 'a', field 'replicas': expected a whole number"),
        ("name: x\nservices:\n  a: {command: [true], depends_on: {b: healthy}}\n", "condition must be one of"),
        ("name: x\nservices:\n  a: {command: [true], stop: {signal: SIGNOPE}}\n", "unknown signal"),
        ("name: x\nservices:\n  a: {command: [true], ports: {http: 70000}}\n", "port http: must be at most 65535, got 70000"),
        ("name: x\nservics: {}\n", "unknown field 'servics' (did you mean 'services'?)"),
        ("name: x\nservices:\n  a: {command: [run, '${NOT_SET_ANYWHERE}']}\n", "${NOT_SET_ANYWHERE} is not set"),
        ("name: x\nservices: [oops\n", "invalid YAML"),
    ],
)  # fmt: skip
def test_bad_input_names_file_service_and_field(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(sv.ConfigError) as info:
        load_and_plan(path)
    message = str(info.value)
    assert message.startswith(str(path)), message
    assert expected in message, message


def test_misspelt_override_is_reported(tmp_path: Path) -> None:
    path = write(tmp_path, "name: x\nvars: {model: a}\nservices:\n  a: {command: [run, '${model}']}\n")
    with pytest.raises(sv.ConfigError, match=r"--set modle: the file uses no \$\{modle\} \(did you mean 'model'\?\)"):
        sv.load(path, overrides={"modle": "b"})
    with pytest.raises(sv.ConfigError, match="did you mean 'services'"):
        sv.load(path, overrides={"servics.a.replicas": "2"})


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(sv.ConfigError, match="cannot read the topology file"):
        sv.load(tmp_path / "nope.yaml")


def test_the_demo_loads() -> None:
    topo = sv.load(DEMO)
    assert [s.name for s in topo.services] == ["kv", "prefill", "decode", "frontend"]


def test_supervision_fields_from_yaml(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
name: sup
strategy: rest_for_one
services:
  decode:
    command: [serve]
    replicas: 4
    min_ready: 2
    ready: {log: "startup complete", timeout: 2m, progress_timeout: 30s, progress: "Loading"}
    alive: {http: "http://127.0.0.1:{port}/health", period: 5s, timeout: 1s, failures: 3}
    restart: {policy: on-failure, success_codes: [0, 3], max_restarts: 5, window: 60s, reset_after: 2m,
              backoff: {initial: 500ms, max: 30s, factor: 3, jitter: 0.2}, group: true}
    fatal: ["bad config"]
    builtin_fatal: false
    strategy: one_for_one
  front: {command: [serve], restart: always}
""",
    )
    decode, front = sv.load(path).services
    assert decode.restart == sv.RestartPolicy(
        policy="on-failure",
        success_codes=(0, 3),
        max_restarts=5,
        window_seconds=60,
        reset_after_seconds=120,
        backoff=sv.Backoff(initial_seconds=0.5, max_seconds=30, factor=3, jitter=0.2),
        group=True,
    )
    assert decode.alive == sv.Probe(
        sv.HttpCheck("http://127.0.0.1:{port}/health"), period_seconds=5, timeout_seconds=1, failures=3
    )
    assert (
        decode.ready is not None and decode.ready.progress_timeout_seconds == 30 and decode.ready.progress == "Loading"
    )
    assert (decode.fatal, decode.builtin_fatal, decode.min_ready, decode.strategy) == (
        ("bad config",),
        False,
        2,
        "one_for_one",
    )
    assert front.restart.policy == "always"
    assert sv.load(path).strategy == "rest_for_one"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("name: x\nstrategy: one_for_some\nservices:\n  a: {command: [true]}\n", "field 'strategy'"),
        ("name: x\nservices:\n  a: {command: [true], restart: sometimes}\n", "service 'a', field 'restart.policy'"),
        ("name: x\nservices:\n  a: {command: [true], restart: {backoff: {inital: 1s}}}\n", "unknown field 'inital' (did you mean 'initial'?)"),
        ("name: x\nservices:\n  a: {command: [true], alive: {http: x, failures: many}}\n", "expected a whole number"),
    ],
)  # fmt: skip
def test_bad_supervision_fields(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(sv.ConfigError) as info:
        load_and_plan(write(tmp_path, text))
    assert expected in str(info.value), str(info.value)
