"""Property: for any document, load + plan gives a valid plan or a ConfigError with a message; never
another exception, never a process, never more than a moment. Documents are generated from the schema's
own words and mutated from a valid file."""

from __future__ import annotations

import itertools
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import supervisor as sv
from supervisor._spec.load import topology_from_text

FIELDS = [
    "name", "services", "vars", "run_dir", "strategy", "command", "shell", "ports", "replicas", "depends_on",
    "ready", "alive", "stop", "env", "cwd", "log", "restart", "fatal", "builtin_fatal", "min_ready", "http",
    "tcp", "log", "exec", "all", "any", "period", "timeout", "failures", "progress", "signal", "grace",
    "max_bytes", "backups", "policy", "backoff", "factor", "jitter", "initial", "max", "window", "condition",
    "a", "b", "port", "completed", "ready", "started", "always", "on-failure",
]  # fmt: skip
WORDS = [*FIELDS, "{port}", "{a.url}", "{b.urls}", "${X}", "${X:-1}", "10s", "50MB", "-1", "nan", "/", "true",
         "http://127.0.0.1:{port}/", "host:notaport", "\0", "a\n", "=", "{", "}"]  # fmt: skip

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(WORDS),
    st.text(max_size=12),
)
keys = st.one_of(st.sampled_from(FIELDS), st.text(max_size=6), st.integers(-3, 3))
documents = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(keys, inner, max_size=5)),
    max_leaves=30,
)

VALID = """\
name: t
vars: {n: 2}
services:
  a:
    command: [true, --port, "{port}"]
    ports: [port]
    replicas: 2
    env: {N: "${n}"}
    ready: {http: "http://127.0.0.1:{port}/health", timeout: 10s}
    restart: {policy: on-failure, backoff: {factor: 2, jitter: 0.1}}
  b:
    command: [true, "{a.urls}"]
    depends_on: {a: ready}
    stop: {grace: 1s}
    env: {K: v}
"""
MUTATION_CHARS = [*":{}[],&*!|>-#'\"\n \t0123456789.%@`\\", "${", "{{", "&x", "*x", "<<: ", "\x00", "\xff"]
RUNS = Path(tempfile.gettempdir()) / "topovisor-fuzz-runs"  #: planning never creates it


def plan_or_config_error(text: str) -> None:
    ports = itertools.count(20000)
    started = time.monotonic()
    try:
        topology = topology_from_text(text, source="fuzz.yaml", overrides=None)
        plan = sv.make_plan(topology, runs_dir=RUNS, allocate_port=lambda: next(ports), reserve_port=lambda _: None)
    except sv.ConfigError as exc:
        assert str(exc).strip() and exc.problems, repr(exc)
    else:
        assert isinstance(plan, sv.Plan) and plan.services
    assert time.monotonic() - started < 5, text[:200]


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents)
def test_generated_documents(document: Any) -> None:
    plan_or_config_error(yaml.safe_dump(document, allow_unicode=True))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, len(VALID)), st.integers(0, 3), st.sampled_from(MUTATION_CHARS)), max_size=6))
def test_mutated_valid_files(edits: list[tuple[int, int, str]]) -> None:
    text = VALID
    for position, removed, inserted in edits:
        position = min(position, len(text))
        text = text[:position] + inserted + text[position + removed :]
    plan_or_config_error(text)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(FIELDS), documents, max_size=4))
def test_generated_service_bodies(body: dict[str, Any]) -> None:
    plan_or_config_error(yaml.safe_dump({"name": "t", "services": {"a": body}}, allow_unicode=True))


def test_the_valid_seed_plans() -> None:
    plan = sv.make_plan(topology_from_text(VALID), runs_dir=RUNS)
    assert [s.name for s in plan.services] == ["a", "b"]
