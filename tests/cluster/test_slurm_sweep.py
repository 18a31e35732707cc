"""``supervisor sweep --slurm`` on the test cluster: every trial in one allocation (no job per
configuration), that job gone once the sweep is, and nothing left on any node; a sweep SIGKILLed mid-trial
leaves no job either."""

from __future__ import annotations

import json
import re
import signal
import subprocess
from pathlib import Path

import pytest

from supervisor._host.proctable import marked_processes
from supervisor._records.record import read_manifest

from ..helpers import PROGRAMS, PYTHON, wait_until
from ..slurm import SlurmCluster

pytestmark = pytest.mark.slurm

TASK = str(PROGRAMS / "slurm_task.py")
ROOT = str(Path(__file__).resolve().parents[2])
#: the client: fetches every web replica, and says how many in its result.json (a column of the row)
FETCH = (
    "import json, os, urllib.request; urls = os.environ['TOPOVISOR_WEB_URLS'].split(','); "
    "[urllib.request.urlopen(u, timeout=10).read() for u in urls]; "
    "json.dump({'fetched': len(urls)}, open(os.path.join(os.environ['TOPOVISOR_TRIAL_DIR'], 'result.json'), 'w'))"
)


def web_topology(tmp_path: Path) -> Path:
    """``${count}`` test tasks, each ready once it answers HTTP at its node's address; no ``cluster:``
    (``--slurm`` gives it one). Each task records its node and job in ``tasks/arm<count>.<replica>...``."""
    (tmp_path / "tasks").mkdir()
    web = {
        "command": [PYTHON, TASK, str(tmp_path / "tasks"), "arm${count}.{replica}", "--port", "{port}"],
        "ports": ["port"],
        "replicas": "${count}",
        "ready": {"http": "http://{host}:{port}/"},
    }
    path = tmp_path / "topo.json"
    path.write_text(json.dumps({"name": "swept", "vars": {"count": 1}, "services": {"web": web}}))
    return path


def sweep_argv(tmp_path: Path, *client: str) -> list[str]:
    return [
        PYTHON, "-m", "supervisor", "sweep", str(web_topology(tmp_path)), "--slurm", "--set", "cluster.slurm.nodes=2",
        "--set", "cluster.slurm.time=5m", "--vary", "count=1,2", "--runs-dir", str(tmp_path / "runs"), "--", *client,
    ]  # fmt: skip


def test_a_sweep_with_slurm_runs_both_trials_in_one_allocation_and_cancels_it(
    slurm: SlurmCluster, tmp_path: Path
) -> None:
    """2 arms x 1 trial: one job (named after the sweep) holds both trials' tasks, each trial's run in it
    without owning it; arm count=2 spreads over both nodes; after the sweep the queue is empty, no task
    is left on a node and no process of a trial here."""
    done = subprocess.run(
        sweep_argv(tmp_path, PYTHON, "-c", FETCH),
        env={**slurm.env, "PYTHONPATH": ROOT}, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    sweep_id = done.stdout.splitlines()[0]
    held = re.search(r"Slurm job (\d+) \(ours, cancelled after the last trial\) on (\S+): every trial", done.stderr)
    assert held is not None, done.stderr
    job = held.group(1)
    assert held.group(2) == ",".join(slurm.nodes[:2])
    rows = [
        json.loads(line)
        for line in (tmp_path / "runs" / "sweeps" / sweep_id / "results.jsonl").read_text().splitlines()
    ]
    assert [(r["arm"], r["status"], r["fetched"]) for r in rows] == [("count=1", "ok", 1), ("count=2", "ok", 2)]
    manifests = [read_manifest(tmp_path / "runs" / r["run_id"]) for r in rows]
    assert [(m.slurm_job, m.slurm_job_owned) for m in manifests if m is not None] == [(job, False)] * 2
    tasks = [json.loads(p.read_text()) for p in (tmp_path / "tasks").glob("*.json")]
    assert len(tasks) == 3 and {t["job"] for t in tasks} == {job}
    assert sorted(t["node"] for t in tasks if t["argv"][1].startswith("arm2.")) == list(slurm.nodes[:2])
    assert slurm.wait_clean() == ([], [])  # the job is gone: cancelled by the sweep, not left to --time
    assert all(not marked_processes(r["run_id"]) for r in rows)


def test_a_sweep_killed_mid_trial_leaves_no_job_and_no_task(slurm: SlurmCluster, tmp_path: Path) -> None:
    """SIGKILL of the sweep while trial 1's client runs: the sweep's watchdog cancels the allocation (and
    the trial's sweeps its processes here); the queue is empty and no task is left on any node."""
    started = tmp_path / "client-started"
    client = f"import pathlib, time; pathlib.Path({str(started)!r}).write_text('x'); time.sleep(300)"
    output = tmp_path / "sweep.out"
    with output.open("w") as out:  # a file, not a pipe: what the sweep started may hold it after its death
        sweep = subprocess.Popen(
            sweep_argv(tmp_path, PYTHON, "-c", client), env={**slurm.env, "PYTHONPATH": ROOT}, stdout=out, stderr=out
        )
    try:
        wait_until(lambda: started.exists() or sweep.poll() is not None, timeout=120, what="trial 1's client")
        assert sweep.poll() is None, output.read_text()
        assert len(slurm.queue()) >= 1 and slurm.tasks()
    finally:
        sweep.send_signal(signal.SIGKILL)
        sweep.wait(10)
    assert slurm.wait_clean() == ([], [])
    run_ids = [p.name for p in (tmp_path / "runs").iterdir() if p.name != "sweeps"]
    wait_until(lambda: all(not marked_processes(run_id) for run_id in run_ids), what="the trial's processes")
