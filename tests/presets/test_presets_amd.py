"""The presets on AMD GPUs (a simulated MI300X node): vLLM, SGLang, llama.cpp and Dynamo's vLLM and SGLang
workers get ROCm's HIP_VISIBLE_DEVICES; TensorRT-LLM (alone or as Dynamo's engine) and Vajra, CUDA only,
are refused (exit 2)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import httpx
import pytest

import supervisor as sv
import topologies
from tests.engine_standins import MODEL, standin_env

from ..helpers import supervisor_cli

NODE = "8xMI300X"


def validate(preset: str, tmp_path: Path, *sets: str) -> subprocess.CompletedProcess[str]:
    env_path = standin_env(tmp_path / "env")
    flags = ["--set", f"model={MODEL}", "--set", f"env_path={env_path}", "--runs-dir", str(tmp_path / "runs")]
    for item in sets:
        flags += ["--set", item]
    return supervisor_cli("validate", preset, "--gpus", NODE, "--commands", *flags, cwd=tmp_path)


def test_vllm_replicas_each_get_hip_visible_devices_of_their_own_gpus(tmp_path: Path) -> None:
    done = validate("vllm", tmp_path, "tp=2", "replicas=2")
    assert done.returncode == 0, done.stderr
    blocks = done.stdout.split("  frontend.")[1:]
    assert len(blocks) == 2
    assert "HIP_VISIBLE_DEVICES=0,1" in blocks[0] and "HIP_VISIBLE_DEVICES=2,3" in blocks[1]
    assert "CUDA_VISIBLE_DEVICES=" not in done.stdout and "CUDA_DEVICE_ORDER" not in done.stdout
    assert done.stdout.count("unset CUDA_VISIBLE_DEVICES ROCR_VISIBLE_DEVICES") == 2
    assert "GPUs planned on simulated node 8xMI300X; each replica gets HIP_VISIBLE_DEVICES=<its gpus>" in done.stdout


@pytest.mark.parametrize(
    ("preset", "sets"),
    [("trtllm", ()), ("trtllm", ("mode=disagg",)), ("dynamo", ("engine=trtllm", "tp=1")), ("vajra", ("tp=2",))],
    ids=["trtllm", "trtllm-disagg", "dynamo-trtllm", "vajra"],
)
def test_cuda_only_engines_are_refused_on_amd_gpus(tmp_path: Path, preset: str, sets: tuple[str, ...]) -> None:
    done = validate(preset, tmp_path, *sets)
    assert done.returncode == 2, done.stdout + done.stderr
    assert (
        "REFUSED: runs on NVIDIA GPUs only (gpus: vendor: nvidia); simulated node 8xMI300X has AMD GPUs" in done.stderr
    )
    assert "Traceback" not in done.stderr


def test_tensorrt_llm_on_a_cluster_of_amd_nodes_is_refused_too(tmp_path: Path) -> None:
    """On Slurm the nodes' GPUs are Slurm's to give; ``--gpus 8xMI300X`` says what they are."""
    env_path = standin_env(tmp_path / "env")
    flags = ["--set", f"model={MODEL}", "--set", f"env_path={env_path}", "--nodes", "2", "--gpus", NODE]
    on_nodes = supervisor_cli("validate", "trtllm", *flags, cwd=tmp_path)
    assert on_nodes.returncode == 2, on_nodes.stdout
    assert "runs on nvidia GPUs only (gpus: vendor: nvidia); the nodes (simulated node 8xMI300X) have amd GPUs" in (
        on_nodes.stderr
    )
    assert supervisor_cli("validate", "vllm", *flags, cwd=tmp_path).returncode == 0  # vLLM: Slurm gives the GPUs


@pytest.mark.parametrize(
    ("preset", "extra", "service"),
    [
        ("sglang", {"tp": 2}, "frontend"),
        ("llamacpp", {"tp": 1}, "frontend"),
        ("dynamo", {"engine": "vllm", "tp": 2, "prefill": 1, "decode": 1}, "decode"),
        ("dynamo", {"engine": "sglang", "tp": 2, "prefill": 1, "decode": 1}, "prefill"),
    ],
)
def test_the_other_gpu_presets_get_rocm_variables(preset: str, extra: dict[str, object], service: str) -> None:
    model = "/models/tiny.gguf" if preset == "llamacpp" else MODEL
    topology = topologies.builder(preset)(model=model, **extra)
    plan = sv.make_plan(topology, gpus=NODE, check_executables=False)
    replica = plan.service(service).replicas[0]
    assert replica.gpus and replica.env["HIP_VISIBLE_DEVICES"] == ",".join(map(str, replica.gpus))
    assert not {"CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER"} & set(replica.env)
    assert replica.unset_env == ("CUDA_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES")


def test_supervisor_gpus_lists_a_simulated_mi300x_node(tmp_path: Path) -> None:
    done = supervisor_cli("gpus", "--gpus", NODE, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "8 GPUs on simulated node 8xMI300X"
    gpus = [line for line in lines if line.startswith("GPU ")]
    assert len(gpus) == 8 and all("0 B / 192 GB used  xgmi:" in line for line in gpus)


@pytest.mark.anyio
@pytest.mark.parametrize("preset", ["vllm", "sglang"])
async def test_a_run_on_the_stand_ins_serves_models(
    tmp_path: Path, runs_dir: Path, monkeypatch: pytest.MonkeyPatch, preset: str
) -> None:
    """The vLLM stand-in, as vLLM on ROCm, refuses a CUDA_VISIBLE_DEVICES that differs from HIP's: the
    supervisor's own (inherited) one must not reach the replicas."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "7")
    env_path = standin_env(tmp_path / "env")
    topology = topologies.builder(preset)(model=MODEL, env_path=str(env_path), tp=2, replicas=2)
    async with sv.launch(topology, runs_dir=runs_dir, gpus=NODE) as group:
        assert [r.plan.env["HIP_VISIBLE_DEVICES"] for r in group["frontend"].replicas] == ["0,1", "2,3"]
        async with httpx.AsyncClient(timeout=20) as client:
            for replica in group["frontend"].replicas:
                models = await client.get(f"{replica.plan.url}/v1/models")
                assert models.status_code == 200 and models.json()["data"][0]["id"] == MODEL


def test_the_vllm_stand_in_refuses_disagreeing_device_variables(tmp_path: Path) -> None:
    env_path = standin_env(tmp_path / "env")
    env = {"PATH": "/usr/bin:/bin", "HIP_VISIBLE_DEVICES": "0", "CUDA_VISIBLE_DEVICES": "1"}
    done = subprocess.run(
        [str(env_path / "bin" / "vllm"), "serve", MODEL, "--port", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1 and "HIP_VISIBLE_DEVICES='0' and CUDA_VISIBLE_DEVICES='1' differ" in done.stderr
