"""A client's environment: ``supervisor run FILE -- CMD`` and ``group.environment()`` give the run's
addresses as ``TOPOVISOR_<SERVICE>_URL`` / ``_URLS`` / ``_PORT`` and ``TOPOVISOR_RUN_DIR``."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

import supervisor as sv

from ..cli.test_cli import CANARY_SERVICE, supervisor
from ..helpers import PYTHON

pytestmark = pytest.mark.anyio

SLEEP = "['{python}', -c, 'import time; time.sleep(60)']"
TOPOLOGY = f"""name: env
services:
  kv-store:
    command: {SLEEP}
    ports: [port]
  decode:
    command: {SLEEP}
    ports: [http, metrics]
    replicas: 2
  worker:
    command: {SLEEP}
"""
PRINT_ENV = "import json, os; print(json.dumps({k: v for k, v in os.environ.items() if k.startswith('TOPOVISOR_')}))"


def test_cmd_finds_every_address_in_its_environment(tmp_path: Path, runs_dir: Path) -> None:
    """CMD's environment has each service's URL, every replica's URL and the port, and the run dir; a
    service without ports has none; the values are those of the run (its manifest)."""
    path = tmp_path / "t.yaml"
    path.write_text(TOPOLOGY)
    result = supervisor(
        "run", str(path), "--runs-dir", str(runs_dir), "-q", "--", PYTHON, "-c", PRINT_ENV, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    env = json.loads(result.stdout)
    run_dir = Path(env["TOPOVISOR_RUN_DIR"])
    assert run_dir.parent == runs_dir and (run_dir / "events.jsonl").is_file()
    replicas = {
        r["name"]: r
        for s in json.loads((run_dir / "manifest.json").read_text())["services"].values()
        for r in s["replicas"]
    }
    assert (
        env["TOPOVISOR_KV_STORE_URL"]
        == replicas["kv-store"]["url"]
        == f"http://127.0.0.1:{env['TOPOVISOR_KV_STORE_PORT']}"
    )
    assert env["TOPOVISOR_KV_STORE_URLS"] == env["TOPOVISOR_KV_STORE_URL"]
    assert env["TOPOVISOR_DECODE_URLS"] == f"{replicas['decode.0']['url']},{replicas['decode.1']['url']}"
    assert env["TOPOVISOR_DECODE_URL"] == replicas["decode.0"]["url"]
    assert env["TOPOVISOR_DECODE_PORT"] == str(replicas["decode.0"]["ports"]["http"])  # the first port
    assert not any(k.startswith("TOPOVISOR_WORKER_") for k in env), env
    assert env["TOPOVISOR_RUN_ID"] == run_dir.name


def test_services_that_would_share_variables_are_exit_2_before_anything_starts(tmp_path: Path, runs_dir: Path) -> None:
    """``a-b`` and ``a_b`` would both be TOPOVISOR_A_B_URL: refused, naming both, nothing started."""
    path = tmp_path / "t.yaml"
    path.write_text(
        f"name: clash\nservices:\n  a-b:\n    command: {SLEEP}\n    ports: [port]\n"
        f"  a_b:\n    command: {SLEEP}\n    ports: [port]\n" + CANARY_SERVICE
    )
    result = supervisor("run", str(path), "--runs-dir", str(runs_dir), "--", PYTHON, "-c", "pass", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "services 'a-b' and 'a_b' would both be TOPOVISOR_A_B_URL" in result.stderr, result.stderr
    assert not (tmp_path / "CANARY").exists()
    assert not runs_dir.exists() or not list(runs_dir.iterdir())


def test_a_collision_among_services_without_ports_is_no_problem(runs_dir: Path) -> None:
    """Only services that have addresses get variables, so only they can collide."""
    services = [
        sv.Service(name="a-b", command=[PYTHON, "-c", "pass"]),
        sv.Service(name="a_b", command=[PYTHON, "-c", "pass"], ports=["port"]),
    ]
    plan = sv.make_plan(sv.Topology(name="ok", services=services), runs_dir=runs_dir)
    env = plan.client_env()
    assert set(env) == {"TOPOVISOR_RUN_DIR", "TOPOVISOR_A_B_URL", "TOPOVISOR_A_B_URLS", "TOPOVISOR_A_B_PORT"}


async def test_group_environment_reaches_a_client_started_from_python(runs_dir: Path) -> None:
    """``group.environment()`` is the same table for a client the caller starts itself: the client reaches
    the service through it (a real HTTP request), and carries no run mark (it is not swept)."""
    server = sv.Service(
        name="web",
        command=[PYTHON, "-m", "http.server", "--bind", "127.0.0.1", "{port}"],
        ports=["port"],
        ready=sv.HttpCheck("http://127.0.0.1:{port}/"),
    )
    client = "import os, urllib.request; print(urllib.request.urlopen(os.environ['TOPOVISOR_WEB_URL']).status)"
    async with sv.launch(sv.Topology(name="client", services=[server]), runs_dir=runs_dir) as group:
        env = group.environment()
        assert env["TOPOVISOR_WEB_URL"] == group["web"].url and env["TOPOVISOR_RUN_DIR"] == str(group.run_dir)
        assert "TOPOVISOR_RUN_ID" not in env
        result = subprocess.run(
            [PYTHON, "-c", client], env={**os.environ, **env}, capture_output=True, text=True, timeout=30
        )
        assert result.stdout.strip() == "200", result.stderr
