"""Checks every engine preset's golden tests share: the YAML twin, ``supervisor validate``, bad vars."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import supervisor as sv
import topologies
from tests.engine_standins import standin_env

ROOT = Path(__file__).resolve().parents[1]


def twin_matches_builder(preset: str, overrides: dict[str, object]) -> None:
    """``supervisor.load("topologies/<preset>.yaml", overrides=...)`` == ``topologies.<preset>(...)`` (source aside)."""
    loaded = sv.load(ROOT / "topologies" / f"{preset}.yaml", overrides=overrides)
    built = topologies.builder(preset)(**overrides)
    assert loaded == built
    assert loaded.source == str(ROOT / "topologies" / f"{preset}.yaml")


def validate_exits_0(preset: str, tmp_path: Path, *sets: str) -> None:
    """``supervisor validate topologies/<preset>.yaml --set model=...`` in a subprocess, with the engine's
    programs present (a stand-in env), on a simulated node (``--gpus 8x80GB``)."""
    env_path = standin_env(tmp_path / "env")
    command = [sys.executable, "-m", "supervisor", "validate", str(ROOT / "topologies" / f"{preset}.yaml")]
    command += [
        "--set",
        "model=standin/tiny-llm",
        "--set",
        f"env_path={env_path}",
        "--runs-dir",
        str(tmp_path / "runs"),
    ]
    for item in sets:
        command += ["--set", item]
    command += ["--gpus", "8x80GB"]  # a GPU request needs NVML or a simulated node
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "frontend" in done.stdout


def bad_var_names_preset_and_var(preset: str, overrides: dict[str, object], expected: str) -> None:
    path = ROOT / "topologies" / f"{preset}.yaml"
    with pytest.raises(sv.ConfigError) as caught:
        sv.load(path, overrides={"model": "m", **overrides})
    message = str(caught.value)
    assert expected in message, message
    assert str(path) in message
