"""The Vajra preset: its argv, env and probes against the flag names of vajra-nightly 0.1.dev2025060906
(read from its source, /work/shared/VAJRA.md), and runs on the stand-in that takes those flags."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import psutil
import pytest

import supervisor as sv
import topologies
from tests.engine_standins import MODEL, standin_env
from topologies.vajra import DEFAULT_MODULE, SOURCE_VERSION

from ..helpers import supervisor_cli, wait_until

NODE = "8x80GB"
KEY = "vj-standinKey0042"


def test_the_flag_table_is_the_nightlys() -> None:
    """The names below were read from this version; a newer Vajra is named with ``module=``."""
    assert SOURCE_VERSION == "vajra-nightly 0.1.dev2025060906"
    assert DEFAULT_MODULE == "vajra.entrypoints.openai.api_server"


def test_golden_argv_env_and_probes_of_two_replicas_of_two_gpus(tmp_path: Path) -> None:
    """Each replica: its own port, its own two GPUs in the resource mapping (physical ids, node "" of its
    private Ray), ``RAY_ADDRESS=local`` so it never joins another Ray, and readiness on /v1/models."""
    topology = topologies.vajra(model="org/M", env_path="/envs/vajra", tp=2, replicas=2)
    plan = sv.make_plan(topology, runs_dir=tmp_path, gpus=NODE, check_executables=False)
    replicas = plan.services[0].replicas
    assert [r.gpus for r in replicas] == [(0, 1), (2, 3)]
    for replica, mapping in zip(replicas, ('{"0":[["",0],["",1]]}', '{"0":[["",2],["",3]]}'), strict=True):
        assert list(replica.argv) == [
            "/envs/vajra/bin/python", "-m", "vajra.entrypoints.openai.api_server",
            "--host", "127.0.0.1", "--port", str(replica.port),
            "--model_config_model", "org/M",
            "--parallel_config_tensor_parallel_size", "2",
            "--parallel_config_pipeline_parallel_size", "1",
            "--inference_engine_config_global_resource_mapping", mapping,
        ]  # fmt: skip
        assert replica.env["RAY_ADDRESS"] == "local" and replica.env["COLUMNS"] == "240"
        assert replica.env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"  # CUDA numbers the ids as the plan does
        for probe in (replica.ready, replica.alive):
            assert probe is not None and isinstance(probe.check, sv.HttpCheck)
            assert probe.check.url == f"http://127.0.0.1:{replica.port}/v1/models"
            assert probe.check.json == {"data": [{"id": "org/M"}]} and probe.check.headers is None
        assert replica.metrics is None  # Vajra serves no /metrics
    assert replicas[0].port != replicas[1].port
    assert replicas[0].stop.signal == "SIGTERM" and replicas[0].stop.grace_seconds == 30.0


def test_args_keep_vajras_spelling_and_its_bools_take_a_value() -> None:
    topology = topologies.vajra(
        model="m", pp=2, module="vajra.entrypoints.openai.server",
        args={"model_config_max_model_len": 4096, "model_config_dtype": "bfloat16", "some_flag": True,
              "other_flag": False, "unset": None},
    )  # fmt: skip
    (server,) = topology.services
    command = list(server.command or ())
    assert command[2] == "vajra.entrypoints.openai.server"
    assert command[command.index("--parallel_config_pipeline_parallel_size") + 1] == "2"
    assert command[-8:] == [
        "--model_config_max_model_len", "4096", "--model_config_dtype", "bfloat16",
        "--some_flag", "true", "--other_flag", "false",
    ]  # fmt: skip
    assert server.gpus is not None and server.gpus.count == 2  # tp x pp


@pytest.mark.parametrize("args", [{"api_key": KEY}, ["--api_key", KEY], [f"--api_key={KEY}"]])
def test_an_api_key_makes_the_probes_send_it(args: object) -> None:
    (server,) = topologies.vajra(model="m", args=args).services  # type: ignore[arg-type]
    for probe in (server.ready, server.alive):
        assert isinstance(probe, sv.Probe) and isinstance(probe.check, sv.HttpCheck)
        assert probe.check.headers == {"Authorization": f"Bearer {KEY}"}


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"served_model_name": "other"}, "var 'served_model_name': Vajra serves the model under its model string"),
        (
            {"args": {"parallel_config_tensor_parallel_size": 4}},
            "var 'args': --parallel_config_tensor_parallel_size: set tp=",
        ),
        ({"args": ["--inference_engine_config_global_resource_mapping", "{}"]}, "made from the GPUs the plan assigns"),
        ({"cluster": sv.SlurmCluster(nodes=2)}, "var 'cluster': not supported yet"),
        ({"replicas": 2, "port": 8000}, "a fixed port needs replicas=1"),
        ({"pp": 0}, "var 'pp': expected a whole number of at least 1"),
        ({"module": "-m"}, "var 'module'"),
    ],
)
def test_refused_inputs_name_the_var(kwargs: dict[str, object], problem: str) -> None:
    with pytest.raises(sv.ConfigError, match="preset 'vajra'") as info:
        topologies.vajra(model="m", **kwargs)  # type: ignore[arg-type]
    assert problem in str(info.value)


def test_served_model_name_equal_to_the_model_is_accepted() -> None:
    assert topologies.vajra(model="m", served_model_name="m").services[0].name == "frontend"


def test_the_cli_refuses_a_served_model_name_with_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "v.yaml"
    path.write_text("preset: topologies.vajra:vajra\nvars: {model: m}\n")
    result = supervisor_cli("validate", str(path), "--gpus", NODE, "--set", "served_model_name=alias")
    assert result.returncode == 2, result.stderr
    assert "served_model_name" in result.stderr and "no rename flag" in result.stderr


def test_the_standin_refuses_an_unknown_flag(tmp_path: Path) -> None:
    env_path = standin_env(tmp_path / "env")
    result = subprocess.run(
        [str(env_path / "bin" / "python"), "-m", DEFAULT_MODULE, "--port", "0", "--model", "m"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2 and "unrecognized arguments: --model" in result.stderr


def test_the_standin_refuses_to_join_another_replicas_ray(tmp_path: Path) -> None:
    """What ``RAY_ADDRESS=local`` prevents: without it, ``ray.init()`` finds the Ray recorded in its temp
    dir by a running sibling and would join it (the stand-in refuses to, exit 1)."""
    env_path = standin_env(tmp_path / "env")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | {"RAY_TMPDIR": str(tmp_path / "t")}
    command = [str(env_path / "bin" / "python"), "-m", DEFAULT_MODULE, "--port", "0"]
    first = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert first.stdout is not None
        wait_until(lambda: "Started a local Ray instance" in first.stdout.readline(), timeout=60)  # type: ignore[union-attr]
        second = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
        assert second.returncode == 1 and "would join it" in second.stderr, second.stderr
        alone = subprocess.run(
            [*command, "--port", "1"], env={**env, "RAY_ADDRESS": "10.0.0.9:6379"}, capture_output=True, text=True,
            timeout=60,
        )  # fmt: skip
        assert alone.returncode == 1 and "would connect to that Ray" in alone.stderr
    finally:
        for child in psutil.Process(first.pid).children(recursive=True):
            child.kill()
        first.kill()
        first.wait(30)
        if first.stdout is not None:
            first.stdout.close()


@pytest.mark.anyio
async def test_two_keyed_replicas_run_on_the_standins_and_leave_nothing(
    tmp_path: Path, runs_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """tp=2, replicas=2 on a simulated 8-GPU node: each replica gets its own GPUs and Ray even with a Ray
    address inherited and a running Ray recorded in the temp dir; ready through the key-guarded
    /v1/models; the key in no record; no Ray worker survives the teardown."""
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.9:6379")
    record = tmp_path / "ray-tmp" / "ray" / "ray_current_cluster"
    record.parent.mkdir(parents=True)
    record.write_text(f"127.0.0.1:{os.getpid()}\n")  # a running "Ray" a plain ray.init() would join
    env_path = standin_env(tmp_path / "env")
    topology = topologies.vajra(
        model=MODEL, env_path=str(env_path), tp=2, replicas=2, args={"api_key": KEY},
        env={"RAY_TMPDIR": str(tmp_path / "ray-tmp")},
    )  # fmt: skip
    workers: list[int] = []
    async with sv.launch(topology, runs_dir=runs_dir, gpus=NODE) as group:
        replicas = group["frontend"].replicas
        assert [r.plan.gpus for r in replicas] == [(0, 1), (2, 3)]
        async with httpx.AsyncClient(timeout=20) as client:
            for replica in replicas:
                assert (await client.get(f"{replica.url}/v1/models")).status_code == 401
                keyed = await client.get(f"{replica.url}/v1/models", headers={"Authorization": f"Bearer {KEY}"})
                assert keyed.status_code == 200 and keyed.json()["data"][0]["id"] == MODEL
                assert (await client.get(f"{replica.url}/health")).status_code == 404  # Vajra has none
        for replica in replicas:
            assert replica.pid is not None
            workers += [p.pid for p in psutil.Process(replica.pid).children()]
        assert len(workers) == 4  # a Ray worker per GPU
        logs = group.logs_dir
        run_dir = group.run_dir
    assert not [pid for pid in workers if psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie"]
    output = (logs / "frontend.1.log").read_text()
    assert "replica | gpu 2 gpu 3" in output and "Created OpenAIServingChat and OpenAIServingCompletion" in output
    for name in ("manifest.json", "events.jsonl", "summary.json"):
        assert KEY not in (run_dir / name).read_text(), name
    manifest = json.loads((run_dir / "manifest.json").read_text())
    command = manifest["services"]["frontend"]["replicas"][1]["command"]
    assert command[command.index("--api_key") + 1] == "<redacted>"
    assert command[command.index("--inference_engine_config_global_resource_mapping") + 1] == '{"0":[["",2],["",3]]}'


def test_run_and_validate_commands_from_the_cli(tmp_path: Path) -> None:
    """The issue's command: ``run vajra ... -- curl {frontend.url}/v1/models`` (here a python client), and
    ``validate --commands`` printing each server's argv on one line."""
    env_path = standin_env(tmp_path / "env")
    path = tmp_path / "v.yaml"
    path.write_text("preset: topologies.vajra:vajra\nvars: {model: M}\n")
    sets = ["--gpus", NODE, "--set", f"env_path={env_path}", "--set", "tp=2", "--set", "replicas=2"]
    shown = supervisor_cli("validate", "--commands", str(path), *sets)
    assert shown.returncode == 0, shown.stderr
    argvs = [line.strip() for line in shown.stdout.splitlines() if "-m vajra.entrypoints.openai.api_server" in line]
    assert len(argvs) == 2 and all("--model_config_model M" in line for line in argvs)
    assert '\'{"0":[["",0],["",1]]}\'' in argvs[0] and '\'{"0":[["",2],["",3]]}\'' in argvs[1]
    client = "import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1] + '/v1/models').read().decode())"
    ran = supervisor_cli(
        "run",
        "--runs-dir",
        str(tmp_path / "runs"),
        str(path),
        *sets,
        "--",
        sys.executable,
        "-c",
        client,
        "{frontend.url}",
    )
    assert ran.returncode == 0, ran.stderr
    assert '"id": "M"' in ran.stdout
