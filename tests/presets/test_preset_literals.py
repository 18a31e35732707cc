"""User values (model paths, served names, env paths) reach every engine as written: braces are not
templates, and a leading ``~`` is expanded, since no shell runs the command."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

import supervisor as sv
import topologies

ENV_PATH = "/opt/envs/{team}"
MODEL = "/models/{v2}/q"


def _builds() -> list[tuple[str, Callable[..., sv.Topology], dict[str, object]]]:
    return [
        ("vllm", topologies.vllm, {"served_model_name": "q{1}"}),
        ("vllm-disagg", topologies.vllm, {"served_model_name": "q{1}", "mode": "disagg"}),
        ("sglang", topologies.sglang, {"served_model_name": "q{1}"}),
        ("sglang-disagg", topologies.sglang, {"served_model_name": "q{1}", "mode": "disagg"}),
        ("trtllm", topologies.trtllm, {}),
        ("trtllm-disagg", topologies.trtllm, {"mode": "disagg"}),
        ("llamacpp", topologies.llamacpp, {"served_model_name": "q{1}"}),
        ("dynamo-vllm", topologies.dynamo, {"served_model_name": "q{1}", "discovery": "file"}),
        ("dynamo-mocker", topologies.dynamo, {"served_model_name": "q{1}", "engine": "mocker"}),
    ]


@pytest.mark.parametrize(("label", "build", "extra"), _builds(), ids=[b[0] for b in _builds()])
def test_braces_in_user_values_are_literal(
    label: str, build: Callable[..., sv.Topology], extra: dict[str, object], tmp_path: Path
) -> None:
    """Proves a model path, served name or env path with braces plans (it used to be 'unknown template')."""
    topology = build(model=MODEL, env_path=ENV_PATH, **extra)
    plan = sv.make_plan(topology, runs_dir=tmp_path, check_executables=False, gpus="8x80GB")
    servers = [s for s in plan.services if s.name in ("prefill", "decode")] or [plan.service("frontend")]
    for service in servers:
        replica = service.replicas[0]
        assert MODEL in replica.argv, (label, replica.argv)
        if "served_model_name" in extra:
            assert "q{1}" in replica.argv, (label, replica.argv)
        assert replica.argv[0].startswith(ENV_PATH + "/bin/"), (label, replica.argv)
        assert replica.env["VIRTUAL_ENV"] == ENV_PATH
        assert replica.env["PATH"].startswith(ENV_PATH + "/bin" + os.pathsep)


@pytest.mark.parametrize(("label", "build", "extra"), _builds(), ids=[b[0] for b in _builds()])
def test_a_model_under_home_is_expanded(
    label: str, build: Callable[..., sv.Topology], extra: dict[str, object], tmp_path: Path
) -> None:
    """Proves ``model=~/m`` reaches the engine as the home path, not as a relative '~' directory."""
    plan = sv.make_plan(build(model="~/models/q", **extra), runs_dir=tmp_path, check_executables=False, gpus="8x80GB")
    argvs = [replica.argv for service in plan.services for replica in service.replicas]
    home = os.path.expanduser("~/models/q")
    assert any(home in argv for argv in argvs), (label, argvs)
    assert not any("~/models/q" in argv for argv in argvs), (label, argvs)


def test_path_with_braces_in_the_environment_does_not_break_env_path(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Proves a ``{`` in the supervisor's own PATH is passed on as written when ``env_path`` is set."""
    monkeypatch.setenv("PATH", "/odd/{dir}" + os.pathsep + os.environ["PATH"])
    plan = sv.make_plan(topologies.llamacpp(model="/m.gguf", env_path="/e"), runs_dir=tmp_path, check_executables=False)
    assert plan.service("frontend").replicas[0].env["PATH"].startswith("/e/bin" + os.pathsep + "/odd/{dir}")


@pytest.mark.parametrize(("label", "build", "extra"), _builds(), ids=[b[0] for b in _builds()])
@pytest.mark.parametrize(("var", "value"), [("model", "--help"), ("served_model_name", "-x"), ("model", " ")])
def test_a_value_that_reads_as_a_flag_is_refused(
    label: str, build: Callable[..., sv.Topology], extra: dict[str, object], var: str, value: str
) -> None:
    """Proves a model or served name starting with '-' (or blank) is an error naming the preset and the var;
    it went into the engine's argv unchecked, where ``--model --help`` is two flags."""
    given: dict[str, object] = {**extra, "model": "/m", var: value}
    if label.startswith("trtllm") and var == "served_model_name":
        given["model"] = value  # trtllm-serve serves the model under MODEL: the name must be the model
    with pytest.raises(sv.ConfigError) as caught:
        build(**given)
    preset = label.split("-")[0]
    wanted = "model" if label.startswith("trtllm") and var == "served_model_name" else var
    assert f"preset '{preset}', var '{wanted}'" in str(caught.value), str(caught.value)


def test_a_flag_like_model_from_the_yaml_twin_is_refused(tmp_path: Path) -> None:
    """The same check through ``--set`` on a YAML preset: the file, the preset and the var are named."""
    with pytest.raises(sv.ConfigError) as caught:
        sv.load("vllm", overrides={"model": "--trust-remote-code"})
    assert "preset 'vllm', var 'model'" in str(caught.value) and "vllm.yaml" in str(caught.value)
