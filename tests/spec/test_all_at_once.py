"""Every problem that does not wait for another's fix is reported in one round, each on one line naming
its service and field; the checks that do wait are counted in a last line, not guessed at."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import supervisor as sv

PY = sys.executable

#: one of each: a misspelt field, a bad duration, a missing command (misspelt), an unknown signal,
#: negative replicas, an unknown dependency, a bad regex, a cycle, and a var that must be a whole number
NINE_PROBLEMS = f"""\
name: nine
vars:
  n: 1
services:
  kv:
    command: ['{PY}', -c, pass]
    redy: {{tcp: '127.0.0.1:1'}}
    depends_on: [router]
  router:
    command: ['{PY}', -c, pass]
    ready: {{log: up, timeout: '10 seconds'}}
    depends_on: [kv]
  worker:
    comand: ['{PY}', -c, pass]
  stopper:
    command: ['{PY}', -c, pass]
    stop: {{signal: SIGFOO}}
  scaled:
    command: ['{PY}', -c, pass]
    replicas: -1
  client:
    command: ['{PY}', -c, pass]
    depends_on: [kvv]
  grep:
    command: ['{PY}', -c, pass]
    fatal: ['(unclosed']
  many:
    command: ['{PY}', -c, pass]
    replicas: ${{n}}
"""

NINE_LINES = [
    "service 'kv': unknown field 'redy' (did you mean 'ready'?)",
    "service 'router', field 'ready': expected a duration such as 500ms, 10s or 2m, got '10 seconds'",
    "service 'worker': unknown field 'comand' (did you mean 'command'?)",
    "service 'stopper', field 'stop': unknown signal 'SIGFOO' (e.g. SIGTERM, SIGINT, SIGKILL)",
    "service 'scaled', field 'replicas': must be 0 or more, got -1",
    "service 'client', field 'depends_on': unknown service 'kvv' (did you mean 'kv'?)",
    "service 'grep', field 'fatal': bad regex '(unclosed'",
    "dependency cycle: kv -> router -> kv",
    "service 'many', field 'replicas': expected a whole number, got 'abc' (from ${n})",
]
#: the blocks that could not be read (redy:, ready:, stop:) and worker's command check (it may be comand:)
NINE_WAITING = "and 4 more checks wait for these fixes"


def _problems(path: Path, tmp_path: Path, **overrides: str) -> sv.ConfigError:
    with pytest.raises(sv.ConfigError) as info:
        sv.make_plan(sv.load(path, overrides=overrides), runs_dir=tmp_path / "runs")
    assert info.value.source == str(path)
    return info.value


def _each_once(problems: list[str], expected: list[str]) -> None:
    for line in expected:
        assert sum(p.startswith(line) for p in problems) == 1, (line, problems)
    assert len(problems) == len(expected), problems


def test_nine_problems_take_one_round(tmp_path: Path) -> None:
    path = tmp_path / "nine.yaml"
    path.write_text(NINE_PROBLEMS)
    error = _problems(path, tmp_path, n="abc")
    _each_once(error.problems, NINE_LINES)
    assert error.waiting == 4
    message = str(error)
    assert message.startswith(f"{path}: 9 problems:\n") and message.endswith("\n  " + NINE_WAITING), message
    assert "field 'command': missing" not in message  # comand: is the command, misspelt


def test_once_the_fields_read_the_rest_comes_in_one_round_with_the_cycle(tmp_path: Path) -> None:
    """The four problems the converter could read past, and nothing waiting: the cycle is among them."""
    fixed = (
        NINE_PROBLEMS.replace("redy:", "ready:").replace("'10 seconds'", "10s").replace("comand:", "command:")
        .replace("SIGFOO", "SIGINT")
    )  # fmt: skip
    path = tmp_path / "four.yaml"
    path.write_text(fixed)
    error = _problems(path, tmp_path, n="2")
    _each_once(error.problems, [NINE_LINES[i] for i in (4, 5, 6, 7)])
    assert error.waiting == 0 and "wait" not in str(error)


def test_a_check_that_reads_a_field_left_out_waits(tmp_path: Path) -> None:
    """phases: needs ready:, min_ready: is checked against replicas: when those cannot be read, the checks
    that read them are counted, not reported as if the defaults were meant; unrelated ones still are."""
    path = tmp_path / "t.yaml"
    path.write_text(
        "name: t\nservices:\n"
        f"  a: {{command: ['{PY}'], phases: {{load: x}}, ready: {{log: x, period: never}}}}\n"
        f"  b: {{command: ['{PY}'], replicas: many, min_ready: 3}}\n"
        f"  c: {{command: ['{PY}'], fatal: ['[']}}\n"
    )
    error = _problems(path, tmp_path)
    assert error.problems[:2] == [
        "service 'a', field 'ready': expected a duration such as 500ms, 10s or 2m, got 'never'",
        "service 'b', field 'replicas': expected a whole number, got 'many'",
    ]
    assert len(error.problems) == 3 and error.problems[2].startswith("service 'c', field 'fatal': bad regex '['")
    assert error.waiting == 3  # a's ready: block, a's phases check, b's min_ready check


def test_the_cycle_check_waits_for_dependencies_it_cannot_read(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text(
        f"name: t\nservices:\n  a: {{command: ['{PY}'], depends_on: 3}}\n  b: {{command: ['{PY}'], replicas: -1}}\n"
    )
    error = _problems(path, tmp_path)
    assert len(error.problems) == 2 and error.problems[0].startswith("service 'a', field 'depends_on': expected")
    assert error.problems[1] == "service 'b', field 'replicas': must be 0 or more, got -1"
    assert str(error).endswith("\n  and 1 more check waits for these fixes")


@pytest.mark.parametrize(
    ("text", "expected", "waiting"),
    [
        ("name: x\n", ["field 'services': required (a mapping of service name to its settings)"], 0),
        ("name: x\nservics: {}\n", ["top level: unknown field 'servics' (did you mean 'services'?)"], 1),
        (
            f"name: x\nstrategi: one_for_all\nservices:\n  a: {{command: ['{PY}'], replicas: -3}}\n",
            ["top level: unknown field 'strategi' (did you mean 'strategy'?)",
             "service 'a', field 'replicas': must be 0 or more, got -3"],
            0,
        ),
    ],
    ids=["no-services", "services-misspelt", "top-level-and-service"],
)  # fmt: skip
def test_the_top_level_is_reported_with_the_services(
    tmp_path: Path, text: str, expected: list[str], waiting: int
) -> None:
    path = tmp_path / "t.yaml"
    path.write_text(text)
    error = _problems(path, tmp_path)
    assert error.problems == expected and error.waiting == waiting
