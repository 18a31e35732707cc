"""``preset:`` files: the builder's typed arguments from ``vars:`` and ``--set``, with clear errors."""

from __future__ import annotations

import inspect
import os
import subprocess
from pathlib import Path

import pytest

import supervisor as sv
from topologies._args import engine_flags

from ..helpers import PYTHON, ROOT

TOY = """
preset: tests.toy_preset:build
vars:
  model: ${TOY_MODEL:-tiny}
  replicas: 2
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "preset.yaml"
    path.write_text(text)
    return path


def test_vars_and_set_reach_the_builder_typed(tmp_path: Path) -> None:
    path = write(tmp_path, TOY + "run_dir: " + str(tmp_path / "runs") + "\n")
    topology = sv.load(
        path,
        overrides={"replicas": "3", "mode": "slow", "port": "8123", "grace": "2.5", "eager": "true",
                   "args": "{max_len: 4096}", "env": "{A: 1}"},
    )  # fmt: skip
    (service,) = topology.services
    assert topology.name == "toy-slow" and topology.source == str(path)
    assert topology.run_dir == str(tmp_path / "runs")
    assert service.replicas == 3
    assert service.ports == (sv.PortSpec("port", 8123),)
    assert service.stop.grace_seconds == 2.5
    assert service.command[-3:] == ("tiny", "max_len=4096", "--eager")
    assert service.env == {"A": "1"}


def test_text_vars_stay_text(tmp_path: Path) -> None:
    (service,) = sv.load(write(tmp_path, TOY), overrides={"model": "007"}).services
    assert "007" in service.command


def test_env_fills_the_files_vars(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOY_MODEL", "from-env")
    (service,) = sv.load(write(tmp_path, TOY)).services
    assert "from-env" in service.command


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"replicas": "two"}, "preset 'build', var 'replicas': expected a whole number, got 'two'"),
        ({"mode": "medium"}, "var 'mode': expected one of fast, slow, got 'medium'"),
        ({"replica": "2"}, "--set: preset 'build' takes no var 'replica' (did you mean 'replicas'?)"),
        ({"eager": "maybe"}, "var 'eager': expected true or false, got 'maybe'"),
        ({"args": "7"}, "var 'args': expected a mapping, got 7 or expected a list, got 7"),
    ],
)
def test_bad_values_name_the_file_preset_and_var(tmp_path: Path, overrides: dict[str, str], expected: str) -> None:
    path = write(tmp_path, TOY)
    with pytest.raises(sv.ConfigError) as caught:
        sv.load(path, overrides=overrides)
    assert expected in str(caught.value)
    assert str(path) in str(caught.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("preset: tests.toy_preset:build\n", "var 'model': required (pass --set model=... or add it to vars:)"),
        ("preset: dynamoo\n", "field 'preset': no preset 'dynamoo' (did you mean 'dynamo'?)"),
        ("preset: tests.toy_preset:nothing\n", "field 'preset': cannot load 'tests.toy_preset:nothing'"),
        (
            "preset: tests.toy_preset:build\nvars: {model: m}\nservices: {}\n",
            "'services' is not allowed beside preset:",
        ),
        (
            "preset: tests.toy_preset:build\nvars: {model: m, colour: red}\n",
            "field 'vars': preset 'build' takes no var 'colour'",
        ),
        ("preset: tests.toy_preset:build\nvars: {model: '${NO_SUCH_VAR_X}'}\n", "${NO_SUCH_VAR_X} is not set"),
    ],
)
def test_bad_preset_files(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(sv.ConfigError) as caught:
        sv.load(write(tmp_path, text))
    assert expected in str(caught.value)


@pytest.mark.parametrize(
    ("args", "lists", "flags"),
    [
        ({"max_model_len": 4096, "enforce_eager": True, "trust_remote_code": False, "seed": None}, "spread",
         ["--max-model-len", "4096", "--enforce-eager"]),
        ({"cuda_graph_sizes": [1, 2, 4]}, "spread", ["--cuda-graph-sizes", "1", "2", "4"]),
        ({"middleware": ["a", "b"]}, "repeat", ["--middleware", "a", "--middleware", "b"]),
        ({"allowed_gpus": [0, 1]}, "comma", ["--allowed-gpus", "0,1"]),
        ({"kv_transfer_config": {"kv_connector": "NixlConnector", "kv_role": "kv_both"}}, "spread",
         ["--kv-transfer-config", '{{"kv_connector":"NixlConnector","kv_role":"kv_both"}}']),
        ({"--already-a-flag": "x", "-O": 3}, "spread", ["--already-a-flag", "x", "-O", "3"]),
        (["--raw", "args", "{port}"], "spread", ["--raw", "args", "{port}"]),
        (None, "spread", []),
        ({"a": [], "b": (), "c": 0}, "spread", ["--c", "0"]),  # an empty list was a bare --a (nargs='+' refuses it)
        ({"a": []}, "comma", []),  # it was ['--a', '']
    ],
)  # fmt: skip
def test_engine_flags(args: object, lists: str, flags: list[str]) -> None:
    assert engine_flags(args, lists=lists) == flags  # type: ignore[arg-type]


def test_json_flags_survive_template_filling(tmp_path: Path) -> None:
    """Doubled braces are template escapes: the child sees the JSON exactly."""
    config = engine_flags({"kv_transfer_config": {"a": {"b": 1}}})[1]
    topology = sv.Topology(name="j", services=[sv.Service(name="s", command=["echo", config])])
    plan = sv.make_plan(topology, runs_dir=tmp_path)
    assert plan.services[0].replicas[0].argv[-1] == '{"a":{"b":1}}'


@pytest.mark.parametrize("key", [1, "", "--", " x", "a b", None])
def test_engine_flags_refuse_a_key_that_is_no_flag_name(key: object) -> None:
    """Proves a key that is no flag name is a TypeError naming it (``{1: 'a'}`` was an AttributeError, and
    ``{'': 1}`` the flag '--', which ends an engine's options)."""
    with pytest.raises(TypeError, match="is not a flag name"):
        engine_flags({key: 1})  # type: ignore[dict-item]


def test_engine_flags_refuse_a_bare_string() -> None:
    with pytest.raises(TypeError, match="got the string"):
        engine_flags("--max-model-len 4096")


def test_a_bare_preset_name_means_the_bundled_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``supervisor run vllm`` works from any directory; a file of that name here still wins."""
    monkeypatch.chdir(tmp_path)
    topology = sv.load("llamacpp", overrides={"model": "m.gguf"})
    assert topology.source is not None and topology.source.endswith("topologies/llamacpp.yaml")
    assert sv.load("llamacpp.yaml", overrides={"model": "m.gguf"}).source == topology.source
    (tmp_path / "llamacpp").write_text("name: mine\nservices:\n  a: {command: [sleep, '1']}\n")
    assert sv.load("llamacpp").name == "mine"
    with pytest.raises(sv.ConfigError, match="cannot read"):
        sv.load("no_such_preset")


def test_a_preset_file_takes_name_run_dir_and_strategy_from_set_and_vars(tmp_path: Path) -> None:
    """Proves ``--set name=...`` (run_dir, strategy) works on a preset file as on any file (it was "preset
    'vllm' takes no var 'name'"), and ``name: ${X}`` in a preset file is filled (it stayed '${X}')."""
    topology = sv.load("vllm", overrides={"model": "m", "name": "mine", "run_dir": "/r", "strategy": "one_for_all"})
    assert (topology.name, topology.run_dir, topology.strategy) == ("mine", "/r", "one_for_all")
    path = write(tmp_path, TOY + "name: ${TOY_NAME:-toy-of-mine}\n")
    assert sv.load(path).name == "toy-of-mine"
    with pytest.raises(sv.ConfigError, match=r"field 'name': expected a string"):
        sv.load(write(tmp_path, TOY + "name: [a]\n"))


TYPED_VARS = """
preset: tests.toy_preset:build
vars:
  model: tiny
  replicas: ${TOY_N:-2}
  grace: "${TOY_GRACE:-1.5}"
  args: "${TOY_ARGS:-{max_len: 1}}"
"""


def test_a_var_of_a_preset_file_filled_from_the_environment_is_typed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Proves ``replicas: ${N:-2}`` in a preset file's vars is the number 2 (it was "expected a whole number,
    got '2'"), as ``--set replicas=2`` is, and a wrong value names the var it came from."""
    path = write(tmp_path, TYPED_VARS)
    (service,) = sv.load(path).services
    assert (service.replicas, service.stop.grace_seconds) == (2, 1.5)
    assert service.command[-2:] == ("tiny", "max_len=1")
    monkeypatch.setenv("TOY_N", "x")
    with pytest.raises(sv.ConfigError, match=r"var 'replicas': expected a whole number, got 'x' \(from \$\{TOY_N\}\)"):
        sv.load(path)


COMMON_VARS = ("model", "served_model_name", "port", "env_path", "replicas", "tp", "args", "env", "cluster")
#: the common vars as a user types them on the command line, per preset (trtllm serves under MODEL only)
CLI_SETS = {
    "dynamo": {"served_model_name": "s", "replicas": "2", "tp": "2", "args": "{max_model_len: 4096, x: null}"},
    "vllm": {"served_model_name": "s", "tp": "2", "args": "{enforce_eager: true, cuda_graph_sizes: [1, 2]}"},
    "sglang": {"served_model_name": "s", "tp": "2", "args": "[--mem-fraction-static, '0.8']"},
    "trtllm": {"tp": "2", "args": "{max_batch_size: 64}"},
    "llamacpp": {"served_model_name": "s", "tp": "1", "args": "{ctx_size: 4096, n_gpu_layers: all}"},
}


@pytest.mark.parametrize("preset", sorted(CLI_SETS))
def test_every_preset_keeps_the_common_contract(preset: str, tmp_path: Path) -> None:
    """Each builder takes the common vars; its YAML twin given them as ``--set`` text builds the same
    topology as the builder given them typed; clients talk to ``frontend`` on the ``port`` asked for."""
    import yaml

    import topologies

    build = topologies.builder(preset)
    assert set(COMMON_VARS) <= set(inspect.signature(build).parameters), preset
    model = "/m.gguf" if preset == "llamacpp" else "org/m"
    sets = {"model": model, "port": "8123", "env_path": "/envs/e", "env": "{A: '1'}", **CLI_SETS[preset]}
    loaded = sv.load(preset, overrides=sets)
    typed = {k: v if k in ("model", "served_model_name", "env_path") else yaml.safe_load(v) for k, v in sets.items()}
    assert loaded == build(**typed)
    plan = sv.make_plan(loaded, runs_dir=tmp_path, check_executables=False, gpus="8x80GB")
    frontend = plan.service("frontend").replicas[0]
    assert frontend.ports == {"port": 8123}
    engine = [service for service in plan.services if service.name not in ("etcd", "nats")]  # dynamo's infra
    assert all(replica.env.get("A") == "1" for service in engine for replica in service.replicas)


@pytest.mark.parametrize("preset", sorted(CLI_SETS))
def test_every_yaml_twin_lists_each_var_of_its_builder_with_its_default(preset: str) -> None:
    """The YAML twin documents the builder: each parameter is a line of its ``vars:`` (set, or commented
    out), with the builder's default (a var the twin fills from the environment, ``${X:-d}``, shows d)."""
    import re

    import yaml

    import topologies

    block = (Path(__file__).resolve().parents[2] / "topologies" / f"{preset}.yaml").read_text().split("vars:", 1)[1]
    listed: dict[str, str] = {}
    for line in block.splitlines():
        found = re.match(r"^\s+#?\s*([a-z_]+):\s*(.*?)\s*(#.*)?$", line)
        if found:
            listed.setdefault(found.group(1), found.group(2))
    parameters = inspect.signature(topologies.builder(preset)).parameters
    for name, parameter in parameters.items():
        if name == "cluster" or (preset == "trtllm" and name == "served_model_name"):  # cluster: its own field
            continue
        assert name in listed, (preset, name)
        written = listed[name]
        if parameter.default is inspect.Parameter.empty:
            continue  # required: the twin says so, or fills it from the environment
        default = re.fullmatch(r"\$\{\w+:-(.*)\}", written)
        shown = yaml.safe_load(default.group(1) if default else written)
        assert shown == parameter.default or (shown == {} and parameter.default is None), (preset, name, shown)


def test_set_fills_a_var_the_preset_file_uses(tmp_path: Path) -> None:
    """Proves ``--set TOY_N=3`` fills ``replicas: ${TOY_N:-2}`` of a preset file, typed (it was "preset
    'build' takes no var 'TOY_N'": only the environment could fill it), while a name the file does not use
    is still refused as no var of the preset."""
    path = write(tmp_path, TYPED_VARS)
    (service,) = sv.load(path, overrides={"TOY_N": "3", "TOY_ARGS": "[--x]"}).services
    assert service.replicas == 3 and service.command[-2:] == ("tiny", "--x")
    with pytest.raises(sv.ConfigError, match="preset 'build' takes no var 'TOY_M'"):
        sv.load(path, overrides={"TOY_M": "3"})


TINY_PACKAGE = '''
import sys

import supervisor as sv


def tiny(greeting: str = "hello", replicas: int = 1) -> sv.Topology:
    """A preset that another package ships: one service that prints its greeting and stays up."""
    code = f"import time; print({greeting!r}, flush=True); time.sleep(60)"
    ready = sv.Probe(sv.LogCheck(greeting))  # ready once the greeting is in the log: no race with CMD
    service = sv.Service(name="frontend", command=[sys.executable, "-c", code], replicas=replicas, ready=ready)
    return sv.Topology(name="tiny", services=[service])
'''


def install_tiny_preset_package(site: Path) -> dict[str, str]:
    """A package installed as pip installs one: its module and a ``dist-info`` with the entry point."""
    (site / "tinypresets").mkdir(parents=True)
    (site / "tinypresets" / "__init__.py").write_text(TINY_PACKAGE)
    (site / "tinypresets" / "tiny.yaml").write_text("preset: tiny\nvars:\n  greeting: from-the-yaml-twin\n")
    info = site / "tinypresets-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: tinypresets\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[topovisor.presets]\ntiny = tinypresets:tiny\n")
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)])}


def test_a_preset_another_installed_package_registers_runs_by_name(tmp_path: Path) -> None:
    """``supervisor run tiny`` finds a third-party preset through the ``topovisor.presets`` entry point,
    reads its YAML twin's vars, and takes --set like a bundled one."""
    env = install_tiny_preset_package(tmp_path / "site")
    check = [PYTHON, "-c", "import os; print(open(os.environ['TOPOVISOR_RUN_DIR'] + '/logs/frontend.log').read())"]
    runs = tmp_path / "runs"
    result = subprocess.run(
        [PYTHON, "-m", "supervisor", "run", "tiny", "--runs-dir", str(runs), "--quiet", "--", *check],
        capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "from-the-yaml-twin" in result.stdout
    validate = subprocess.run(
        [PYTHON, "-m", "supervisor", "validate", "tiny", "--set", "replicas=3"],
        capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert validate.returncode == 0, validate.stderr
    assert "frontend" in validate.stdout and "3" in validate.stdout


def test_a_preset_name_no_package_registers_is_refused_with_the_known_ones(tmp_path: Path) -> None:
    path = write(tmp_path, "preset: vlm\n")
    with pytest.raises(sv.ConfigError, match=r"no preset 'vlm'.*vllm"):
        sv.load(path)


def test_the_library_reads_presets_only_from_the_entry_points() -> None:
    """The bundled presets are registered like any other package's; the library names none of them."""
    from supervisor._spec.presets import registered_presets

    assert registered_presets() == {
        "demo": "topologies.demo:demo",  # the stand-in demo, so the wheel runs it without a clone
        **{name: f"topologies:{name}" for name in ("dynamo", "llamacpp", "sglang", "trtllm", "vajra", "vllm")},
    }
