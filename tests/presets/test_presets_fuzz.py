"""Property: any arguments to a preset builder give a Topology that plans on an 8-GPU node, or a
ConfigError naming the preset; never a traceback, and never a plan whose GPU count differs from what the
engine's flags ask for (tp x dp)."""

from __future__ import annotations

import tempfile
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import supervisor as sv
import topologies

text = st.one_of(
    st.sampled_from(["Qwen/Qwen3-0.6B", "/models/m", "~/m", "/m/{x}", "a b", "a,b", "{port}", "", "/", "x}"]),
    st.text(max_size=8),
)
counts = st.one_of(st.integers(-2, 9), st.booleans(), st.none(), st.sampled_from(["2", 1.5]))
flag_values = st.one_of(st.none(), st.booleans(), st.integers(-3, 3), text, st.lists(text, max_size=2))
args = st.one_of(
    st.none(),
    text,
    st.lists(st.one_of(text, st.integers(-3, 3)), max_size=3),
    st.dictionaries(st.sampled_from(["max_model_len", "--x", "a_b", "cfg"]), flag_values, max_size=3),
    st.dictionaries(st.sampled_from(["cfg"]), st.dictionaries(text, flag_values, max_size=2), max_size=1),
)
common = {
    "model": text,
    "served_model_name": st.one_of(st.none(), text),
    "port": st.one_of(st.none(), st.integers(-1, 70000)),
    "env_path": st.one_of(st.none(), text),
    "replicas": counts,
    "tp": counts,
    "args": args,
    "env": st.one_of(st.none(), st.dictionaries(text, st.one_of(text, st.integers()), max_size=2)),
}
specific: dict[str, dict[str, Any]] = {
    "dynamo": {"engine": st.sampled_from(["vllm", "sglang", "trtllm", "mocker", "x"]), "prefill": counts,
               "decode": counts, "discovery": st.sampled_from(["etcd", "file", "x"]), "prefill_args": args},
    "vllm": {"mode": st.sampled_from(["single", "disagg", "x"]), "dp": counts, "prefill": counts,
             "decode": counts, "kv_connector": text, "decode_args": args},
    "sglang": {"mode": st.sampled_from(["single", "disagg", "x"]), "dp": counts, "prefill": counts,
               "decode": counts, "transfer_backend": text},
    "trtllm": {"mode": st.sampled_from(["single", "disagg", "x"]), "prefill": counts, "decode": counts,
               "llm_config": st.one_of(st.none(), st.dictionaries(text, flag_values, max_size=2))},
    "llamacpp": {"llama_server": text},
    "vajra": {"pp": counts, "module": text},
}  # fmt: skip


@st.composite
def calls(draw: st.DrawFn) -> tuple[str, dict[str, object]]:
    preset = draw(st.sampled_from(sorted(topologies.PRESETS)))
    fields = {**common, **specific[preset]}
    chosen = draw(st.lists(st.sampled_from(sorted(fields)), unique=True, max_size=5))
    kwargs = {"model": draw(text)} | {name: draw(fields[name]) for name in chosen}
    return preset, kwargs


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(calls())
def test_a_builder_gives_a_plannable_topology_or_a_config_error(call: tuple[str, dict[str, object]]) -> None:
    """Proves no combination of builder arguments ends in a traceback or an unplannable topology."""
    preset, kwargs = call
    try:
        topology = topologies.builder(preset)(**kwargs)
    except sv.ConfigError as exc:
        assert f"preset '{preset}'" in str(exc), str(exc)
        return
    assert isinstance(topology, sv.Topology)
    with tempfile.TemporaryDirectory() as runs:
        try:
            plan = sv.make_plan(topology, runs_dir=runs, gpus="8x80GB", check_executables=False)
        except sv.ConfigError as exc:
            assert "service '" in str(exc) and "field '" in str(exc), str(exc)  # e.g. a bad name in env
            return
    for service in plan.services:
        for replica in service.replicas:
            argv = replica.argv
            if "dynamo.mocker" in argv:
                continue
            for flag in ("--tensor-parallel-size", "--tp-size", "--tp", "--tp_size"):
                if _flag_value(argv, flag) is not None:
                    tp = _flag_value(argv, flag) or 1
                    dp = _flag_value(argv, "--data-parallel-size") or _flag_value(argv, "--dp-size") or 1
                    assert len(replica.gpus) == tp * dp, (service.name, argv, replica.gpus)


def _flag_value(argv: tuple[str, ...], flag: str) -> int | None:
    """The number after ``flag``; a fuzzed text value may itself read ``--tp`` (``model='--tp'``)."""
    numbers = [argv[i + 1] for i in range(len(argv) - 1) if argv[i] == flag and argv[i + 1].isdigit()]
    return int(numbers[-1]) if numbers else None


@pytest.mark.parametrize(
    ("preset", "kwargs", "var"),
    [
        ("dynamo", {"prefill_args": "--x"}, "prefill_args"),
        ("vllm", {"decode_args": {"k": object()}}, "decode_args"),
        ("sglang", {"args": "--x"}, "args"),
        ("trtllm", {"port": 0}, "port"),
        ("llamacpp", {"port": "8000"}, "port"),
    ],
)
def test_bad_args_or_port_name_the_preset_and_the_var(preset: str, kwargs: dict[str, object], var: str) -> None:
    """Proves a wrong args-like var is named as itself (it was always 'args', without the preset), and a
    bad port is refused by the preset rather than later as a service's ports field."""
    with pytest.raises(sv.ConfigError, match=f"preset '{preset}', var '{var}'"):
        topologies.builder(preset)(model="m", **kwargs)
