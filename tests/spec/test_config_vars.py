"""``${name}`` in any field, typed after substitution; GPU requests and startup phases from YAML."""

from __future__ import annotations

import shlex
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import supervisor as sv
from supervisor._spec.load import topology_from_text
from supervisor._spec.vars import Variables

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
        # a whole number is decimal digits, as the file's own YAML reads one: no hex, octal or 10_000
        ({"tp": "0x10"}, "field 'gpus': expected a whole number, got '0x10' (from ${tp})"),
        ({"decode": "10_000"}, "field 'replicas': expected a whole number, got '10_000' (from ${decode})"),
        ({"decode": "0o3"}, "field 'replicas': expected a whole number, got '0o3' (from ${decode})"),
        ({"decode": "1:30"}, "field 'replicas': expected a whole number, got '1:30' (from ${decode})"),
    ],
)
def test_wrong_type_after_substitution_names_field_and_var(overrides: dict[str, str], expected: str) -> None:
    with pytest.raises(sv.ConfigError) as caught:
        topology_from_text(TYPED, source="t.yaml", overrides=overrides)
    assert expected in str(caught.value)
    assert "t.yaml" in str(caught.value)


@pytest.mark.parametrize(
    ("written", "read"), [("0x10", "0x10"), ("10_000", "10_000"), ("0o7", "0o7"), ("1:30", "1:30")]
)
def test_a_whole_number_in_the_file_is_decimal_digits(written: str, read: str) -> None:
    """YAML 1.1's other forms of a number (hex, octal, ``_``, base 60) are text, so a count field refuses
    them; ``010`` is ten (not octal eight), and ``--set`` values read the same way."""
    with pytest.raises(sv.ConfigError, match=f"expected a whole number, got '{read}'"):
        topology_from_text(f"name: q\nservices:\n  a: {{command: [sleep, '1'], replicas: {written}}}\n")
    text = "name: q\nservices:\n  a: {command: [sleep, '1'], replicas: 010}\n"
    assert topology_from_text(text).services[0].replicas == 10
    assert topology_from_text(TYPED, overrides={"decode": "010"}).services[0].replicas == 10


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
        ("gpus: {count: x}", "field 'gpus.count': expected a whole number, got 'x'"),
        ("gpus: {ids: [0, x]}", "field 'gpus.ids': expected a whole number, got 'x'"),
        ("gpus: {count: 1, min_free_memory: lots}", "field 'gpus.min_free_memory': expected a size"),
        ("profile: {tool: nsys, grace: -1}", "field 'profile.grace': a duration cannot be negative"),
        ("resources: {pids_max: 2.5}", "field 'resources.pids_max': expected a whole number, got 2.5"),
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
        ("[8000]", "8000 is a port name here, not a port number: write {http: 8000} for port 8000"),
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


BLOCKS = """
name: blocks
services:
  x: {command: [sleep, "1"]}
  a:
    command: [sleep, "1"]
    stop: ${stop}
    log: ${log}
    restart: ${restart}
    depends_on: ${deps}
    fatal: ${fatal}
    profile: ${profile}
    ready: {all: "${checks}", timeout: "${timeout}"}
    alive: {http: "http://x/", json: "${expect}"}
    gpus: {ids: "${ids}"}
"""
BLOCK_SETS = {
    "stop": "{signal: SIGINT, grace: 2s}",
    "log": "{max_bytes: 1MB, backups: 2}",
    "restart": "{policy: always, success_codes: [0, 3], backoff: {initial: 1s}}",
    "deps": "{x: started}",
    "fatal": "[boom, bang]",
    "profile": "{tool: nsys, args: [-t, cuda]}",
    "checks": "[{tcp: '{port}'}, {log: up}]",
    "timeout": "5m",
    "expect": "{ok: true}",
    "ids": "[0, 1]",
}


def test_a_whole_block_or_list_from_set_is_typed_in_every_field() -> None:
    """Proves a mapping or list given with --set reaches nested blocks and lists typed: stop and log were
    "'Substituted' object has no attribute 'keys'", restart took the whole text as its policy, profile as
    its tool, depends_on and fatal as one name, and all:, json: and ids: refused the text."""
    _, service = topology_from_text(BLOCKS, overrides=BLOCK_SETS).services
    assert service.stop == sv.StopPolicy(signal="SIGINT", grace_seconds=2)
    assert service.log == sv.LogPolicy(max_bytes=1_000_000, backups=2)
    assert service.restart.policy == "always" and service.restart.backoff.initial_seconds == 1
    assert service.restart.success_codes == (0, 3)
    assert service.depends_on == (sv.Dependency("x", "started"),)
    assert service.fatal == ("boom", "bang")
    assert service.profile == sv.Profile("nsys", args=("-t", "cuda"))
    assert service.ready == sv.Probe(sv.AllOf((sv.TcpCheck("{port}"), sv.LogCheck("up"))), timeout_seconds=300)
    assert service.alive is not None and service.alive.check == sv.HttpCheck("http://x/", json={"ok": True})
    assert service.gpus == sv.GpuRequest(count=2, ids=(0, 1))


@pytest.mark.parametrize(
    ("field", "value"),
    [("success_codes", "[0, 3]"), ("restart", "{policy: on-failure, success_codes: [0, 3]}")],
)
def test_a_list_of_codes_from_a_var(field: str, value: str) -> None:
    """Proves ``success_codes: ${codes}`` takes a list (it was split into characters: '[', '0', ',' ...)."""
    body = "restart: ${restart}" if field == "restart" else "restart: {policy: on-failure, success_codes: '${v}'}"
    text = f"name: c\nservices:\n  a:\n    command: [sleep, '1']\n    {body}\n"
    (service,) = topology_from_text(text, overrides={"restart" if field == "restart" else "v": value}).services
    assert service.restart.success_codes == (0, 3)


def test_a_whole_service_or_services_block_from_a_var() -> None:
    (service,) = topology_from_text(
        "name: s\nservices:\n  a: ${body}\n", overrides={"body": "{command: [a, b]}"}
    ).services
    assert service.command == ("a", "b")
    (service,) = topology_from_text("name: s\nservices: ${all}\n", overrides={"all": "{w: {command: [c]}}"}).services
    assert (service.name, service.command) == ("w", ("c",))


@pytest.mark.parametrize("value", ["error: x", "[Ee]rror: (.*)"])
def test_a_pattern_that_reads_as_a_mapping_is_the_pattern(value: str) -> None:
    """``fatal: ${pattern}`` with a regex holding ': ' stays that regex, not a mapping or an error."""
    text = "name: f\nservices:\n  a: {command: [sleep, '1'], fatal: '${p}'}\n"
    assert topology_from_text(text, overrides={"p": value}).services[0].fatal == (value,)


@pytest.mark.parametrize("command", ["sh -c 'echo a: b'", "echo a: b"])
def test_a_command_with_a_colon_from_set_is_split_as_a_command_line(command: str) -> None:
    """Proves ``--set cmd="echo a: b"`` is a command line (it read as the mapping {'echo a': 'b'}: an error)."""
    (service,) = topology_from_text(COMMAND_VAR, overrides={"cmd": command}).services
    assert service.command == tuple(shlex.split(command))


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            "stop: {grace: '${v}'}",
            "field 'stop.grace': expected a duration such as 500ms, 10s or 2m, got 'soon' (from ${v})",
        ),
        (
            "ready: {tcp: x, timeout: '${v}'}",
            "field 'ready': expected a duration such as 500ms, 10s or 2m, got 'soon' (from ${v})",
        ),
        (
            "log: {max_bytes: '${v}'}",
            "field 'log.max_bytes': expected a size such as 50MB or 4MiB, got 'soon' (from ${v})",
        ),
        (
            "restart: {success_codes: '${v}'}",
            "field 'restart.success_codes': expected a list of whole numbers, got 'soon' (from ${v})",
        ),
        ("stop: ${v}", "service 'a', field 'stop'"),
    ],
)
def test_a_bad_duration_size_or_block_names_the_var(body: str, expected: str) -> None:
    with pytest.raises(sv.ConfigError) as caught:
        topology_from_text(
            f"name: d\nservices:\n  a:\n    command: [x]\n    {body}\n", source="d.yaml", overrides={"v": "soon"}
        )
    assert expected in str(caught.value) and "d.yaml" in str(caught.value)


def _command(*items: str, **sets: str) -> tuple[str, ...]:
    line = ", ".join(items)
    (service,) = topology_from_text(f"name: c\nservices:\n  a:\n    command: [x, {line}]\n", overrides=sets).services
    return service.command[1:]


@pytest.mark.parametrize(
    ("written", "problem"),
    [
        ("'${ model }'", "'${ model }' is not a var reference"),
        ("'${1x}'", "'${1x}' is not a var reference"),
        ("'${model?required}'", "'${model?required}' is not a var reference"),
        ("'${}'", "'${}' is not a var reference"),
        ("'${model'", "'${model' has no closing brace"),
        ("'${model:-abc'", "'${model:-abc' has no closing brace"),
    ],
)
def test_a_bad_var_reference_is_an_error_not_literal_text(written: str, problem: str) -> None:
    """Proves a ``${`` that is no reference is an error naming the field (it reached argv as written, so a
    typo such as ``${ model }`` ran the engine with that text), with no second error for ``--set model``."""
    with pytest.raises(sv.ConfigError) as caught:
        _command(written, model="m") if "model" in written else _command(written)
    message = str(caught.value)
    assert f"service 'a', field 'command[1]': {problem}: write ${{name}}" in message and "$${" in message
    assert "--set model" not in message


def test_defaults_may_hold_braces_and_vars() -> None:
    """Proves ``${a:-${b}}`` is b's value (it was '${b}' plus a stray '}', and --set b 'unused'), and a default
    with braces is whole (``${e:-{A: '1'}}`` cut at its first '}')."""
    assert _command("'${a:-${b}}'", b="B") == ("B",)
    assert _command("'${a:-${b:-c}}'") == ("c",)
    assert _command("'${a-x}'", a="") == ("",)
    assert _command("'${a:-x}'", a="") == ("x",)
    text = "name: e\nservices:\n  a:\n    command: [x]\n    env: \"${e:-{A: '1'}}\"\n"
    assert topology_from_text(text).services[0].env == {"A": "1"}


def test_escaping_and_values_are_never_expanded_again() -> None:
    assert _command("'$${x}'", "'a$${y:-z}b'", "'$$'", "'cost: $5'") == ("${x}", "a${y:-z}b", "$$", "cost: $5")
    assert _command("'${m}'", m="${HOME}") == ("${HOME}",)
    with pytest.raises(sv.ConfigError, match=r"--set x: the file uses no \$\{x\}"):
        _command("'$${x}'", x="1")


def test_a_field_with_a_var_inside_a_longer_text_is_typed_too() -> None:
    """Proves ``replicas: "${n}0"`` is 30 (it was "expected a whole number, got '30'"), with the var named
    when it is wrong."""
    text = "name: p\nservices:\n  a:\n    command: [x]\n    replicas: '${n}0'\n    ports: {api: '80${p}'}\n"
    (service,) = topology_from_text(text, overrides={"n": "3", "p": "01"}).services
    assert service.replicas == 30 and service.ports[0].number == 8001
    with pytest.raises(sv.ConfigError, match=r"field 'replicas': expected a whole number, got 'x0' \(from \$\{n\}\)"):
        topology_from_text(text, overrides={"n": "x", "p": "1"})


def test_a_list_or_mapping_inside_a_longer_text_is_json() -> None:
    """Proves a list or mapping default inside a longer string is JSON (it was Python's "['a', 'b']")."""
    text = "name: j\nvars: {l: [a, 1], m: {k: true}}\nservices:\n  a: {command: [x, 'l=${l}', 'm=${m}']}\n"
    assert topology_from_text(text).services[0].command == ("x", 'l=["a", 1]', 'm={"k": true}')


def test_a_missing_var_in_the_list_form_names_the_service_and_the_item() -> None:
    """Proves the list form names the service (it said "service 'command'") and a list item by index."""
    text = "name: l\nservices:\n  - name: web\n    command: [x, '${nope}']\n"
    with pytest.raises(sv.ConfigError, match=r"service 'web', field 'command\[1\]': \$\{nope\} is not set"):
        topology_from_text(text)


def test_vars_in_mapping_keys_are_filled() -> None:
    """Proves ``env: {"${prefix}_HOME": ...}`` fills the key (it stayed '${prefix}_HOME', and --set prefix
    was 'unused'), and two keys that become one are an error, not one silently lost."""
    text = "name: k\nservices:\n  a:\n    command: [x]\n    env: {'${p}_HOME': a, B_HOME: b}\n"
    assert topology_from_text(text, overrides={"p": "A"}).services[0].env == {"A_HOME": "a", "B_HOME": "b"}
    with pytest.raises(sv.ConfigError, match="the key 'B_HOME' is there twice"):
        topology_from_text(text, overrides={"p": "B"})
    typed = "name: k\nvars: {l: [a], n: 1}\nservices:\n  a:\n    command: [x]\n    env: {'${l}': a, '${n}': b}\n"
    assert topology_from_text(typed).services[0].env == {'["a"]': "a", "1": "b"}  # a list key was a TypeError


@pytest.mark.parametrize("name", ["name", "strategy", "run_dir"])
def test_set_of_a_var_named_like_a_top_level_field_sets_the_var_the_file_uses(name: str) -> None:
    """Proves ``--set name=x`` fills ``${name}`` when the file uses it (it set the field, then said
    '${name} is not set (... pass --set name=...)'), and still sets the field when no ${name} is there."""
    text = f"name: t\nservices:\n  a: {{command: [x, '${{{name}}}']}}\n"
    assert topology_from_text(text, overrides={name: "v"}).services[0].command == ("x", "v")
    plain = topology_from_text("name: t\nservices:\n  a: {command: [x]}\n", overrides={"name": "renamed"})
    assert plain.name == "renamed"


def test_set_vars_is_a_clear_error() -> None:
    """It was "unknown field 'vars' (known: ..., overrides, ..., source, ..., vars)"."""
    with pytest.raises(sv.ConfigError, match="--set vars: set each var on its own: --set NAME=VALUE"):
        topology_from_text("name: t\nvars: {a: 1}\nservices:\n  a: {command: [x]}\n", overrides={"vars": "{a: 2}"})


def test_an_unquoted_var_in_a_flow_mapping_gets_a_hint() -> None:
    with pytest.raises(sv.ConfigError, match=r"invalid YAML: .*quote a var written inside \{...\}"):
        topology_from_text("name: t\nservices:\n  a: {command: [x], replicas: ${n}}\n", overrides={"n": "2"})
    text = "name: t\nservices:\n  a: {command: [x], replicas: '${n}'}\n"
    assert topology_from_text(text, overrides={"n": "2"}).services[0].replicas == 2


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="${}:-ab_1 ", max_size=24))
def test_escaping_every_dollar_brace_gives_the_text_back(text: str) -> None:
    """Any text with each ``${`` written ``$${`` comes back as written (no var read, no error), and the
    scanner never raises on any text: each problem it notes names the field."""
    variables = Variables({}, {}, {})
    assert variables.expand(text.replace("${", "$${"), "services.a.command") == text
    assert variables.problems == [] and variables.used == set()
    other = Variables({"a": "1"}, {}, {"b": [1]})
    other.expand(text, "services.a.command")
    assert all(problem.startswith("services.a.command: ") for problem in other.problems)


def test_a_vars_default_may_use_other_vars() -> None:
    """Proves a ``vars:`` default's own ``${...}`` are filled (``b: "${a}-y"`` reached argv as '${a}-y', and a
    mapping default kept '${n}'), a --set value is never expanded, and a loop is an error naming it."""
    text = "name: v\nvars: {a: x, b: '${a}-y', n: 2, e: {A: '${n}'}}\nservices:\n  s: {command: [c, '${b}'], env: '${e}'}\n"
    (service,) = topology_from_text(text).services
    assert (service.command, service.env) == (("c", "x-y"), {"A": "2"})
    assert topology_from_text(text, overrides={"a": "z"}).services[0].command == ("c", "z-y")
    assert topology_from_text(text, overrides={"b": "${a}"}).services[0].command == ("c", "${a}")
    looped = "name: v\nvars: {a: '${b}', b: '${a}'}\nservices:\n  s: {command: [c, '${b}', '${b}']}\n"
    with pytest.raises(sv.ConfigError) as caught:
        topology_from_text(looped)
    assert str(caught.value).count("the vars refer to each other in a loop: ${b} -> ${a} -> ${b}") == 1


@pytest.mark.parametrize("broken", ["", "\n    replicas: x"])
def test_set_null_unsets_an_optional_field_as_a_null_default_does(broken: str) -> None:
    """Proves ``--set v=null`` for ``min_ready``, ``placement.node``, ``gpus``, ``ready`` and ``profile`` is
    unset, as ``vars: {v: null}`` is (it was 'expected a whole number, got None (from ${v})'), also on the
    converter's path that a file with another error takes (only that error is reported)."""
    fields = (
        "min_ready: '${v}'\n    placement: {node: '${v}'}\n    gpus: '${v}'\n    ready: '${v}'\n    profile: '${v}'"
    )
    text = f"name: n\nservices:\n  a:\n    command: [x]\n    {fields}{broken}\n"
    if broken:
        with pytest.raises(sv.ConfigError) as caught:
            topology_from_text(text, overrides={"v": "null"})
        assert str(caught.value) == "service 'a', field 'replicas': expected a whole number, got 'x'"
        return
    (service,) = topology_from_text(text, overrides={"v": "null"}).services
    assert (service.min_ready, service.gpus, service.ready, service.profile) == (None, None, None, None)
    assert service.placement == sv.Placement()


SERVICE_FIELDS = ["command", "shell", "ports", "replicas", "depends_on", "ready", "stop", "env", "cwd", "log",
                  "alive", "restart", "strategy", "fatal", "builtin_fatal", "min_ready", "gpus", "phases",
                  "profile", "metrics", "placement", "on_change"]  # fmt: skip
NESTED = ["stop: {grace: '${v}', signal: '${v}'}", "restart: {policy: always, backoff: {factor: '${v}'}}",
          "ports: {api: '${v}'}", "gpus: {ids: '${v}'}", "env: {'${v}': x}", "ready: {http: x, json: '${v}'}",
          "log: {max_bytes: '${v}'}", "placement: {nodes: '${v}'}", "command: [a, '${v}', 'b${v}c']"]  # fmt: skip
VALUES = ["1", "x", "null", "[a, b]", "{a: 1}", "2s", "true", "-1", "${y}", "", "{tcp: x}", "[[1]]", "a: b",
          "{policy: always}", "3.5", "[{log: x}]", "{count: 2}", "'q'", "{", "- a"]  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.sampled_from(SERVICE_FIELDS).map(lambda f: f"{f}: '${{v}}'"), st.sampled_from(NESTED)),
       st.sampled_from(VALUES))  # fmt: skip
def test_any_value_in_any_field_is_a_topology_or_a_config_error(line: str, value: str) -> None:
    """No ``--set`` value in any field ends in a traceback: it is typed into the field, or an error
    naming the service and the field."""
    text = (
        f"name: f\nservices:\n  a:\n    command: [x]\n    {line}\n"
        if not line.startswith("command")
        else (f"name: f\nservices:\n  a:\n    {line}\n")
    )
    try:
        topology = topology_from_text(text, source="f.yaml", overrides={"v": value})
    except sv.ConfigError as exc:
        assert "f.yaml" in str(exc) and ("service 'a'" in str(exc) or "line " in str(exc)), str(exc)
        return
    with tempfile.TemporaryDirectory() as runs:
        try:
            sv.make_plan(topology, runs_dir=runs, check_executables=False, gpus="8x80GB")
        except sv.ConfigError as exc:
            assert "service 'a'" in str(exc) or "strategy" in str(exc), str(exc)
