"""GPUs through the ``supervisor`` command: ``--gpus`` on run and validate, exit 2 without NVML (nothing
spawned), and ``supervisor gpus``."""

from __future__ import annotations

import ctypes
import importlib.util
import json
import os
import subprocess
from pathlib import Path

import pytest

from ..helpers import PYTHON, supervisor_cli

ROOT = Path(__file__).parents[2]

TOPOLOGY = """
name: gpus
services:
  canary:
    command: ["{python}", -c, "open('CANARY', 'w')"]
  worker:
    command: ["{python}", -c, "import os, sys; print('visible', os.environ['CUDA_VISIBLE_DEVICES'], os.environ['CUDA_DEVICE_ORDER'], 'arg', sys.argv[1], flush=True)", "{gpus}"]
    replicas: 2
    gpus: ${tp}
    ready: {log: visible}
    restart: "no"
vars: {tp: 2}
"""

NO_PYNVML = "raise ImportError(\"No module named 'pynvml'\")\n"
NO_DRIVER = "class NVMLError(Exception):\n    pass\n\ndef nvmlInit():\n    raise NVMLError('Driver Not Loaded')\n"


def supervisor(*args: str, cwd: Path, pynvml: str | None = None) -> subprocess.CompletedProcess[str]:
    """The command as a user runs it; ``pynvml`` replaces the module's text (a machine without NVML)."""
    env = dict(os.environ)
    if pynvml is not None:
        shim = cwd / "shim"
        shim.mkdir(exist_ok=True)
        (shim / "pynvml.py").write_text(pynvml)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(shim), env.get("PYTHONPATH", "")) if p)
    return supervisor_cli(*args, cwd=cwd, env=env)


@pytest.fixture
def topology(tmp_path: Path) -> Path:
    path = tmp_path / "gpus.yaml"
    path.write_text(TOPOLOGY)
    return path


def test_run_with_simulated_gpus_gives_each_replica_its_own(tmp_path: Path, topology: Path, runs_dir: Path) -> None:
    result = supervisor(
        "run", str(topology), "--runs-dir", str(runs_dir), "--gpus", "4x80GB", "--", PYTHON, "-c", "pass",
        cwd=tmp_path, pynvml=NO_PYNVML,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    (run_dir,) = runs_dir.iterdir()
    assert "visible 0,1 PCI_BUS_ID arg 0,1" in (run_dir / "logs" / "worker.0.log").read_text()
    assert "visible 2,3 PCI_BUS_ID arg 2,3" in (run_dir / "logs" / "worker.1.log").read_text()
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert [r["gpus"] for r in manifest["services"]["worker"]["replicas"]] == [[0, 1], [2, 3]]


def test_a_gpu_request_without_nvml_exits_2_and_spawns_nothing(tmp_path: Path, topology: Path, runs_dir: Path) -> None:
    for shim, cause in ((NO_PYNVML, "nvidia-ml-py is not installed"), (NO_DRIVER, "Driver Not Loaded")):
        result = supervisor("run", str(topology), "--runs-dir", str(runs_dir), cwd=tmp_path, pynvml=shim)
        assert result.returncode == 2, result.stderr
        assert "service 'worker' needs GPUs but NVML is not available" in result.stderr
        assert cause in result.stderr and "use --gpus 8x80GB to plan against a simulated node" in result.stderr
        assert "Traceback" not in result.stderr and result.stdout == ""
    assert not (tmp_path / "CANARY").exists() and not runs_dir.exists()


def test_validate_shows_the_gpu_plan(tmp_path: Path, topology: Path) -> None:
    result = supervisor("validate", str(topology), "--gpus", "8x80GB", "--set", "tp=4", cwd=tmp_path, pynvml=NO_PYNVML)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert any(line.strip().startswith("worker.0") and line.endswith("gpus: 0,1,2,3") for line in lines), lines
    assert any(line.strip().startswith("worker.1") and line.endswith("gpus: 4,5,6,7") for line in lines), lines
    assert "GPUs planned on simulated node 8x80GB" in result.stdout


def test_validate_refuses_over_subscription_with_the_plan(tmp_path: Path, topology: Path) -> None:
    result = supervisor("validate", str(topology), "--gpus", "2x141GB", cwd=tmp_path)
    assert result.returncode == 2
    assert "4 GPUs asked in all; simulated node 2x141GB: 2 GPUs (0-1; 141 GB each)" in result.stderr
    assert "worker.0  -> GPU 0, 1" in result.stderr and "worker.1  REFUSED: wants 2 GPUs; free: none" in result.stderr


def test_bad_gpus_spec_is_exit_2(tmp_path: Path, topology: Path) -> None:
    result = supervisor("validate", str(topology), "--gpus", "eight", cwd=tmp_path)
    assert result.returncode == 2
    assert "--gpus 'eight': expected COUNTxMEMORY such as 8x80GB or 4x24GiB" in result.stderr


def test_gpus_command_lists_a_simulated_node(tmp_path: Path) -> None:
    result = supervisor("gpus", "--gpus", "2x80GB", cwd=tmp_path, pynvml=NO_PYNVML)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "2 GPUs on simulated node 2x80GB",
        "GPU 0  simulated GPU (80 GB)  00000000:01:00.0  0 B / 80 GB used  nvlink: 1",
        "    (no process)",
        "GPU 1  simulated GPU (80 GB)  00000000:02:00.0  0 B / 80 GB used  nvlink: 0",
        "    (no process)",
    ]


def test_gpus_command_without_nvml_exits_2(tmp_path: Path) -> None:
    result = supervisor("gpus", cwd=tmp_path, pynvml=NO_DRIVER)
    assert result.returncode == 2
    assert "NVML is not available: Driver Not Loaded" in result.stderr and "--gpus 8x80GB" in result.stderr
    assert "Traceback" not in result.stderr


def _nvml_library_loads() -> bool:
    try:
        ctypes.CDLL("libnvidia-ml.so.1")
    except OSError:
        return False
    return True


@pytest.mark.skipif(importlib.util.find_spec("pynvml") is None, reason="needs nvidia-ml-py installed")
@pytest.mark.skipif(_nvml_library_loads(), reason="needs a machine without the NVIDIA driver's libnvidia-ml.so.1")
def test_gpus_command_on_a_machine_without_the_driver_names_the_missing_library(tmp_path: Path) -> None:
    """This machine, as it is: nvidia-ml-py installed, no NVIDIA driver. ``supervisor gpus`` says that the
    driver's NVML library was not found and how to plan anyway, and does not ask to install nvidia-ml-py
    (it did: that advice is kept for a failed import)."""
    result = supervisor("gpus", cwd=tmp_path)
    assert result.returncode == 2 and result.stdout == "", result.stdout + result.stderr
    assert "the NVIDIA driver's NVML library (libnvidia-ml.so.1) was not found" in result.stderr, result.stderr
    assert "use --gpus 8x80GB to plan against a simulated node" in result.stderr
    assert "install nvidia-ml-py" not in result.stderr and "Traceback" not in result.stderr


def test_only_a_failed_import_asks_to_install_nvidia_ml_py(tmp_path: Path) -> None:
    """Each cause its own advice: no binding (install it), no driver library, driver not loaded."""
    library_missing = NO_DRIVER.replace("Driver Not Loaded", "NVML Shared Library Not Found")
    for shim, advice in (
        (NO_PYNVML, "install nvidia-ml-py / use --gpus 8x80GB"),
        (library_missing, "nvidia-ml-py is installed, but the NVIDIA driver's NVML library (libnvidia-ml.so.1)"),
        (NO_DRIVER, "nvidia-ml-py is installed, but the NVIDIA driver is not loaded: use --gpus 8x80GB"),
    ):
        result = supervisor("gpus", cwd=tmp_path, pynvml=shim)
        assert result.returncode == 2 and advice in result.stderr, result.stderr
        assert ("install nvidia-ml-py" in result.stderr) == (shim is NO_PYNVML), result.stderr
