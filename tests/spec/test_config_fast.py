"""The fast structurer (``_spec.load._structure_fast``) builds exactly what the cattrs converter builds, and
leaves everything else to it: same ``Topology`` for good input, the converter's own messages for bad."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings

import supervisor as sv
from supervisor._spec import load as _config
from supervisor._spec.load import topology_from_text

from .test_config_fuzz import MUTATION_CHARS, VALID, documents

ROOT = Path(__file__).parents[2]

#: every field of every class the fast path builds, set to something other than its default
FULL = """\
name: full
run_dir: /tmp/somewhere
strategy: rest_for_one
services:
  a:
    command: [serve, --port, "{port}"]
    ports: [port, {admin: null}]
    replicas: 2
    ready: {http: "http://127.0.0.1:{port}/health", status: 200, period: 50ms, timeout: 2m, failures: 2}
    alive: {tcp: "127.0.0.1:{port}", period: 5s}
    stop: {signal: SIGINT, grace: 3s}
    env: {A: "1", B: ~}
    cwd: /tmp
    log: {max_bytes: 1MB, backups: 2}
    restart: {policy: on-failure, success_codes: [0, 3], max_restarts: 2, window: 1m, reset_after: 30s,
              backoff: {initial: 10ms, max: 1s, factor: 3, jitter: 0.5}, group: true}
    strategy: one_for_all
    fatal: [boom]
    builtin_fatal: false
    min_ready: 1
    phases: {load: loading, warm: warming}
    metrics: "http://127.0.0.1:{port}/metrics"
  b:
    shell: "echo hi && sleep 60"
    depends_on: {a: {condition: started}}
    restart: always
    gpus: {count: 1, contiguous: true, min_free_memory: 1GB}
    profile: {tool: py-spy, args: [--rate, "10"]}
  c: {command: [x], depends_on: [a, b], ready: {all: [{log: up}, {exec: [true]}]}}
"""


def _both(text: str) -> tuple[object, object]:
    """What ``topology_from_text`` gives (a Topology, or the ConfigError's problems), fast path first,
    then with the converter alone."""

    def outcome() -> object:
        try:
            return topology_from_text(text, source="t.yaml")
        except sv.ConfigError as exc:
            return exc.problems

    fast = outcome()
    original = _config._structure_fast

    def refuse(data: object) -> sv.Topology:
        raise _config._Unusual("converter only")

    _config._structure_fast = refuse
    try:
        slow = outcome()
    finally:
        _config._structure_fast = original
    return fast, slow


def test_the_fast_path_builds_every_field_as_the_converter_does(monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[object] = []
    monkeypatch.setattr(_config, "_structure", lambda *args: built.append(args))  # must not be needed
    topology = topology_from_text(FULL, source="t.yaml")
    assert built == []
    monkeypatch.undo()
    fast, slow = _both(FULL)
    assert fast == slow == topology


@pytest.mark.parametrize("path", sorted([*ROOT.glob("topologies/*.yaml"), *ROOT.glob("examples/*.yaml")]), ids=str)
def test_the_bundled_files_build_the_same(path: Path) -> None:
    fast, slow = _both(path.read_text())
    assert fast == slow


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents)
def test_any_document_builds_the_same_or_fails_with_the_same_words(document: object) -> None:
    import yaml

    text = yaml.safe_dump({"name": "t", "services": {"a": document}} if isinstance(document, dict) else document)
    fast, slow = _both(text)
    assert fast == slow


def test_mutated_files_build_the_same_or_fail_with_the_same_words() -> None:
    rng = random.Random(14)
    for _ in range(200):
        text = rng.choice([VALID, FULL])
        for _ in range(rng.randint(1, 3)):
            at = rng.randrange(len(text))
            text = text[:at] + rng.choice(MUTATION_CHARS) + text[at + rng.randint(0, 2) :]
        fast, slow = _both(text)
        assert fast == slow, text


LEAVES = [None, True, False, 0, 1, 3, -1, 2.5, "", "x", "10s", "1MB", "SIGTERM", "on-failure", [], [1], ["a"], {}]


def _mutate(node: object, rng: random.Random) -> object:
    """One leaf or key of ``node`` changed, dropped, or added."""
    if isinstance(node, dict) and node:
        key = rng.choice(list(node))
        roll = rng.random()
        if roll < 0.1:
            return {k: v for k, v in node.items() if k != key}
        if roll < 0.2:
            return {**node, rng.choice(["extra", "replicas", "grace", "policy", "name"]): rng.choice(LEAVES)}
        return {**node, key: _mutate(node[key], rng)}
    if isinstance(node, list) and node:
        index = rng.randrange(len(node))
        return [*node[:index], _mutate(node[index], rng), *node[index + 1 :]]
    return rng.choice(LEAVES)


def test_mutated_values_build_the_same_or_fail_with_the_same_words() -> None:
    import yaml

    rng = random.Random(16)
    full = yaml.safe_load(FULL)
    built = 0
    for _ in range(300):
        fast, slow = _both(yaml.safe_dump(_mutate(full, rng)))
        assert fast == slow
        built += isinstance(fast, sv.Topology)
    assert built > 50  # the fast path itself was compared, not only the converter with itself
