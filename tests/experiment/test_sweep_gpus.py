"""Before a sweep's first trial the GPUs its arms plan on must be free: what a run whose supervisor died
left there is stopped (with ``stop_stale``) through that run's records, as ``gc --yes`` does; a live run's
process, or one of no run, refuses the sweep with its run, pid and command line, and nothing starts."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

import supervisor as sv
from supervisor._host.proctable import marked_processes

from ..helpers import PYTHON, alive, run_detached, supervisor_cli, wait_until

pytestmark = pytest.mark.anyio

GB = 10**9
SLEEPER = '["{python}", -u, -c, "import time; print(\'up ${tag}\', flush=True); time.sleep(600)"]'


def _topology(tmp_path: Path, name: str, gpus: int) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(
        f"name: {name}\nvars: {{tag: a}}\nservices:\n  w:\n    command: {SLEEPER}\n    gpus: {gpus}\n"
        "    ready: {log: up, timeout: 30s}\n    stop: {signal: SIGTERM, grace: 5s}\n"
    )
    return path


def _replica_pid(run_dir: Path) -> int:
    manifest = json.loads((run_dir / "manifest.json").read_text())
    return int(manifest["services"]["w"]["replicas"][0]["pid"])


def _kill_supervisor_and_watchdog(run_dir: Path, state: Path) -> None:
    """Leave the run's replica orphaned: its watchdog, then its supervisor (stopped first, or it would
    start another watchdog) SIGKILLed, as in the orphan tests."""
    supervisor_pid = int(json.loads((run_dir / "manifest.json").read_text())["supervisor_pid"])
    index = json.loads((state / "topovisor" / "index" / f"{run_dir.name}.json").read_text())
    os.kill(supervisor_pid, signal.SIGSTOP)
    os.kill(int(index["watchdog_pid"]), signal.SIGKILL)
    os.kill(supervisor_pid, signal.SIGKILL)
    wait_until(lambda: not alive(supervisor_pid), timeout=10)


async def test_a_dead_runs_leftover_on_the_gpus_refuses_the_sweep_until_stop_stale_stops_it(
    tmp_path: Path, runs_dir: Path, private_state_dir: Path
) -> None:
    dead_id, dead_dir = run_detached(_topology(tmp_path, "old", 0), runs_dir)
    leftover = _replica_pid(dead_dir)
    _kill_supervisor_and_watchdog(dead_dir, private_state_dir)
    assert alive(leftover) and marked_processes(dead_id)
    node = sv.FakeInventory(1, processes=[sv.GpuProcess(0, leftover, 10 * GB)], driver="1.0")
    sweep_file = _topology(tmp_path, "g", 1)
    with pytest.raises(sv.ConfigError) as refused:
        await sv.sweep(sweep_file, vary={"tag": ["b"]}, runs_dir=runs_dir, gpus=node, command=[PYTHON, "-c", ""])
    assert f"GPU 0, which the sweep plans on, is held by pid {leftover} ({PYTHON} -u -c" in str(refused.value)
    assert f"of run {dead_id} replica w, whose supervisor died: --stop-stale stops it" in str(refused.value)
    assert alive(leftover) and not (runs_dir / "sweeps").exists()  # refused: nothing touched, nothing started
    heard: list[str] = []
    result = await sv.sweep(
        sweep_file, vary={"tag": ["b"]}, runs_dir=runs_dir, gpus=node, command=[PYTHON, "-c", ""],
        stop_stale=True, say=heard.append,
    )  # fmt: skip
    assert heard[0] == f"stopped run {dead_id} (its supervisor had died), as gc --yes does"
    assert not alive(leftover) and marked_processes(dead_id) == {}
    assert sv.read_summary(dead_dir).ended_by == "sweep"
    assert [(r["status"], r["gpu_model"], r["gpu_driver"]) for r in result.rows] == [("ok", "fake GPU", "1.0")]


async def test_a_live_runs_process_or_one_of_no_run_on_the_gpus_refuses_the_sweep_even_with_stop_stale(
    tmp_path: Path, runs_dir: Path
) -> None:
    live_id, live_dir = run_detached(_topology(tmp_path, "live", 0), runs_dir)
    bystander = subprocess.Popen([PYTHON, "-c", "import time; time.sleep(120)"])
    try:
        replica = _replica_pid(live_dir)
        node = sv.FakeInventory(2, processes=[sv.GpuProcess(1, replica, GB), sv.GpuProcess(0, bystander.pid, GB)])
        with pytest.raises(sv.ConfigError) as refused:
            await sv.ab(
                _topology(tmp_path, "g", 2), a_sets={"tag": "a"}, b_sets={"tag": "b"}, runs_dir=runs_dir,
                gpus=node, stop_stale=True, command=[PYTHON, "-c", ""],
            )  # fmt: skip
        problems = refused.value.problems
        assert len(problems) == 2, problems
        assert (
            f"held by pid {bystander.pid} ({PYTHON} -c import time; time.sleep(120)), of no topovisor run"
            in (problems[0])
        )
        assert f"GPU 1, which the sweep plans on, is held by pid {replica}" in problems[1]
        assert (
            f"of run {live_id} replica w, which is running: let it end, or supervisor stop {live_id}" in (problems[1])
        )
        assert alive(replica) and alive(bystander.pid) and not (runs_dir / "sweeps").exists()
        # the CLI's flags: a simulated node lists no process, so nothing holds its GPUs
        cli = supervisor_cli(
            "sweep", str(_topology(tmp_path, "g", 2)), "--vary", "tag=a", "--gpus", "2x80GB", "--runs-dir",
            str(runs_dir), "--stop-stale", "--", PYTHON, "-c", "",
        )  # fmt: skip
        assert cli.returncode == 0, cli.stderr
    finally:
        bystander.kill()
        bystander.wait()
        assert supervisor_cli("stop", live_id).returncode == 0
