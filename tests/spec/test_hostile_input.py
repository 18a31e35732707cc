"""Exit 2 means nothing started, for every bad input: a table of hostile files, each refused by
load + make_plan with a ConfigError naming the field (and by the CLI with exit 2 and no process)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

import supervisor as sv

from ..cli.test_cli import CANARY_SERVICE, supervisor

PY = f"'{sys.executable}'"
OK = f"{{command: [{PY}, -c, pass]}}"

BOMB = "".join(
    f"  {name}: &{name} [{', '.join([f'*{prev}'] * 9) if prev else ', '.join(['lol'] * 9)}]\n"
    for prev, name in zip(["", *"abcdefgh"], "abcdefghi", strict=True)
)

HOSTILE = [
    ("alias-bomb-in-vars", f"name: t\nvars:\n{BOMB}services:\n  a: {OK}\n", "expands to more than"),
    ("alias-bomb-in-services", f"name: t\nx-anchors:\n{BOMB}services:\n  a: {OK}\n", "expands to more than"),
    ("duplicate-key", f"name: t\nservices:\n  a: {OK}\n  a: {OK}\n", "duplicate key 'a'"),
    ("duplicate-field", f"name: t\nservices:\n  a: {{command: [{PY}], replicas: 1, replicas: 2}}\n", "duplicate key 'replicas'"),
    ("replicas-100000", f"name: t\nservices:\n  a: {{command: [{PY}], replicas: 100000}}\n", "field 'replicas': must be at most 10000"),
    ("env-name-with-equals", f"name: t\nservices:\n  a: {{command: [{PY}], env: {{'A=B': x}}}}\n", "field 'env': bad variable name 'A=B'"),
    ("env-name-empty", f"name: t\nservices:\n  a: {{command: [{PY}], env: {{'': x}}}}\n", "field 'env': bad variable name ''"),
    ("nul-in-env", f'name: t\nservices:\n  a: {{command: [{PY}], env: {{A: "x\\0y"}}}}\n', "field 'env.A': contains a NUL byte"),
    ("nul-in-args", f'name: t\nservices:\n  a: {{command: [{PY}, "x\\0y"]}}\n', "field 'command': contains a NUL byte"),
    ("tcp-not-a-port", f"name: t\nservices:\n  a: {{command: [{PY}], ready: {{tcp: 'host:notaport'}}}}\n", "field 'ready.tcp': expected host:port"),
    ("timeout-nan", f"name: t\nservices:\n  a: {{command: [{PY}], ready: {{log: x, timeout: .nan}}}}\n", "field 'ready.timeout': must be a finite duration"),
    ("grace-inf", f"name: t\nservices:\n  a: {{command: [{PY}], stop: {{grace: .inf}}}}\n", "field 'stop.grace': must be a finite duration"),
    ("backoff", f"name: t\nservices:\n  a: {{command: [{PY}], restart: {{backoff: {{factor: -3, jitter: 7}}}}}}\n", "field 'restart.backoff.factor'"),
    ("jitter", f"name: t\nservices:\n  a: {{command: [{PY}], restart: {{backoff: {{jitter: 7}}}}}}\n", "field 'restart.backoff.jitter'"),
    ("name-newline", f'name: t\nservices:\n  "a\\n": {OK}\n', "a name must be letters"),
    ("topology-name-newline", f'name: "t\\n"\nservices:\n  a: {OK}\n', "field 'name'"),
    ("cwd-missing", f"name: t\nservices:\n  a: {{command: [{PY}], cwd: /no/such/dir}}\n", "field 'cwd': /no/such/dir does not exist"),
    ("cwd-is-a-file", f"name: t\nservices:\n  a: {{command: [{PY}], cwd: {sys.executable}}}\n", "is not a directory"),
    ("http-not-a-url", f"name: t\nservices:\n  a: {{command: [{PY}], ready: {{http: 'not a url'}}}}\n", "field 'ready.http': not an http(s) URL"),
    ("alive-http-bad-port", f"name: t\nservices:\n  a: {{command: [{PY}], alive: {{http: 'http://h:99999/'}}}}\n", "field 'alive.http': not a URL"),
    ("exec-missing", f"name: t\nservices:\n  a: {{command: [{PY}], ready: {{exec: [no-such-prog-xyz]}}}}\n", "field 'ready.exec': executable 'no-such-prog-xyz'"),
    ("no-services", "name: t\nservices: {}\n", "field 'services': no services"),
    (
        "completed-server",
        f"name: t\nservices:\n  a: {{command: [{PY}], depends_on: {{b: completed}}}}\n  b: {{command: [{PY}], ports: [port]}}\n",
        "would wait forever",
    ),
    ("log-backups", f"name: t\nservices:\n  a: {{command: [{PY}], log: {{backups: 100000000}}}}\n", "field 'log.backups': must be at most"),
    ("port-range", f"name: t\nservices:\n  a: {{command: [{PY}], ports: {{port: 70000}}}}\n", "must be at most 65535"),
    ("status", f"name: t\nservices:\n  a: {{command: [{PY}], ready: {{http: 'http://h/', status: 2000}}}}\n", "field 'ready.status'"),
    ("huge-duration", f"name: t\nservices:\n  a: {{command: [{PY}], restart: {{window: 1e300}}}}\n", "field 'restart.window'"),
    ("deep-nesting", "name: t\nservices:\n  a: {command: " + "[" * 5000 + "]" * 5000 + "}\n", "invalid YAML"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "expected"), [h[1:] for h in HOSTILE], ids=[h[0] for h in HOSTILE])
def test_hostile_input_is_a_config_error_naming_the_field(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "t.yaml"
    path.write_text(text)
    with pytest.raises(sv.ConfigError) as info:  # (how long it takes is a benchmark's business, not a test's)
        sv.make_plan(sv.load(path), runs_dir=tmp_path / "runs")
    assert expected in str(info.value), str(info.value)
    assert str(info.value).startswith(str(path))


def test_non_utf8_and_oversized_files(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_bytes(b"name: t\nservices:\n  a: {command: [true, '\xff']}\n")
    with pytest.raises(sv.ConfigError, match="not UTF-8"):
        sv.load(path)
    path.write_bytes(b"# " + b"x" * (5 * 1024 * 1024))
    with pytest.raises(sv.ConfigError, match="larger than"):
        sv.load(path)


def test_run_dir_that_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("")
    path = tmp_path / "t.yaml"
    path.write_text(f"name: t\nrun_dir: {tmp_path / 'afile'}\nservices:\n  a: {OK}\n")
    with pytest.raises(sv.ConfigError, match=r"field 'run_dir': .*afile is not a directory"):
        sv.make_plan(sv.load(path))
    with pytest.raises(sv.ConfigError, match=r"runs dir: .*afile is not a directory"):
        sv.make_plan(sv.load(path), runs_dir=tmp_path / "afile" / "x")


def test_planning_many_replicas_is_linear(tmp_path: Path) -> None:
    topology = sv.Topology(name="t", services=[sv.Service(name="a", command=["true", "{replica}"], replicas=10_000)])
    started = time.monotonic()
    plan = sv.make_plan(topology, runs_dir=tmp_path)
    assert len(plan.service("a").replicas) == 10_000
    assert time.monotonic() - started < 5


@pytest.mark.parametrize(
    "case", ["alias-bomb-in-vars", "nul-in-args", "cwd-missing", "completed-server", "no-services"]
)
def test_cli_exits_2_and_starts_nothing(tmp_path: Path, runs_dir: Path, case: str) -> None:
    text = dict((h[0], h[1]) for h in HOSTILE)[case]
    path = tmp_path / "bad.yaml"
    if case != "no-services":  # the canary would make the topology valid
        text = text.replace("services:\n", "services:\n" + CANARY_SERVICE.lstrip("\n"), 1)
    path.write_text(text)
    result = supervisor("run", str(path), "--runs-dir", str(runs_dir), cwd=tmp_path, timeout=30)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and str(path) in result.stderr
    assert not (tmp_path / "CANARY").exists()
    assert not runs_dir.exists() or not list(runs_dir.iterdir())
