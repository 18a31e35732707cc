"""Each row's provenance: the engine's version from the env a preset runs it from, the GPUs' model and driver
through the inventory (a fake node here, NVML's calls in tests/host/test_gpus.py), none without GPUs."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import supervisor as sv
import topologies
from supervisor._experiment.provenance import engine_versions, gpu_columns, trial_provenance
from supervisor._host.gpu_inventory import GpuDevice
from supervisor._plan.plan import make_plan


def _dist(env: Path, name: str, version: str) -> None:
    """A distribution as pip installs it: ``<name>-<version>.dist-info/METADATA`` in site-packages."""
    info = env / "lib" / "python3.11" / "site-packages" / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")


def test_the_engines_in_an_env_are_named_with_their_versions_and_other_packages_are_not(tmp_path: Path) -> None:
    _dist(tmp_path, "ai-dynamo", "1.6.1")
    _dist(tmp_path, "vllm", "0.11.0")
    _dist(tmp_path, "httpx", "0.28.1")
    assert engine_versions([tmp_path]) == "ai-dynamo==1.6.1 vllm==0.11.0"
    assert engine_versions([tmp_path / "nothing"]) is None


def test_a_dynamo_preset_plan_records_the_version_of_its_env_path(tmp_path: Path) -> None:
    env = tmp_path / "dynamo-env"
    _dist(env, "ai-dynamo", "1.6.1")
    (env / "bin").mkdir()
    (env / "bin" / "python").symlink_to(sys.executable)  # the plan checks that the env's python exists
    topology = topologies.dynamo(
        engine="mocker", model=str(tmp_path), prefill=0, decode=2, discovery="file", env_path=str(env)
    )
    got = trial_provenance(make_plan(topology, runs_dir=tmp_path / "runs"))
    assert got == {"engine_version": "ai-dynamo==1.6.1", "gpu_model": None, "gpu_driver": None}


def test_the_installed_dynamo_is_read_from_its_real_env(dynamo_env: Path) -> None:
    assert engine_versions([dynamo_env]) == "ai-dynamo==1.6.1"


def test_gpu_model_and_driver_are_those_of_the_trials_gpus() -> None:
    node = sv.FakeInventory(
        [
            GpuDevice(0, "GPU-0", "NVIDIA H100 80GB HBM3", "00000000:18:00.0", 80 * 10**9),
            GpuDevice(1, "GPU-1", "NVIDIA H200", "00000000:19:00.0", 141 * 10**9),
        ],
        driver="550.54.15",
    )
    assert gpu_columns([0], lambda: node) == {"gpu_model": "NVIDIA H100 80GB HBM3", "gpu_driver": "550.54.15"}
    assert gpu_columns([0, 1], lambda: node)["gpu_model"] == "NVIDIA H100 80GB HBM3, NVIDIA H200"
    assert gpu_columns([], lambda: node) == {"gpu_model": None, "gpu_driver": None}


def test_no_nvml_means_no_gpu_columns_rather_than_a_failed_trial() -> None:
    def unavailable() -> sv.FakeInventory:
        raise sv.ConfigError("NVML is not available")

    assert gpu_columns([0], unavailable) == {"gpu_model": None, "gpu_driver": None}


@pytest.mark.parametrize("driver", [None, "535.183.01"])
def test_a_fake_node_tells_the_driver_it_was_given(driver: str | None) -> None:
    assert sv.FakeInventory(1, driver=driver).driver_version() == driver
