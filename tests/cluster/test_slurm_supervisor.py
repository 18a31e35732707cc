"""A supervisor on Slurm as a whole process: SIGTERM stops every task politely, SIGKILL leaves nothing
behind (no task, no allocation), under sbatch it uses the batch job's allocation and leaves it to Slurm,
and ``gc`` cancels the allocation of a dead run from its record."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from supervisor._records.index import load_run
from supervisor._records.record import read_manifest

from ..helpers import PROGRAMS, PYTHON, wait_until
from ..slurm import SlurmCluster

pytestmark = pytest.mark.slurm

DRIVER = str(PROGRAMS / "slurm_driver.py")
TASK = str(PROGRAMS / "slurm_task.py")
ROOT = str(Path(__file__).resolve().parents[2])


def start_driver(slurm: SlurmCluster, tmp_path: Path, *options: str) -> tuple[subprocess.Popen[str], list[str]]:
    """The driver with 4 replicas; returns once it printed ``ready`` (its words)."""
    env = {**slurm.env, "PYTHONPATH": ROOT}
    driver = subprocess.Popen(
        [PYTHON, DRIVER, str(tmp_path), str(tmp_path / "runs"), "4", *options],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert driver.stdout is not None
    line = driver.stdout.readline()
    if not line.startswith("ready "):
        driver.kill()
        driver.wait()
        pytest.fail(f"driver did not get ready: {line!r}")
    return driver, line.split()


def web_topology(tmp_path: Path, name: str, *, replicas: int, cluster: dict[str, object] | None = None) -> Path:
    """A topology file: ``replicas`` test tasks, each ready once it answers HTTP at its node's address;
    on Slurm with ``cluster`` as the file's ``cluster: {slurm: ...}``."""
    web = {
        "command": [PYTHON, TASK, str(tmp_path), "web.{replica}", "--port", "{port}"],
        "ports": ["port"],
        "replicas": replicas,
        "ready": {"http": "http://{host}:{port}/"},
    }
    data: dict[str, object] = {"name": name, "services": {"web": web}}
    if cluster is not None:
        data["cluster"] = {"slurm": cluster}
    path = tmp_path / "topo.json"
    path.write_text(json.dumps(data))
    return path


def test_sigterm_to_the_supervisor_gives_every_task_its_sigterm_first(slurm: SlurmCluster, tmp_path: Path) -> None:
    """Every task records exactly one SIGTERM and exits by itself (0): no SIGKILL, and the supervisor
    exits 143 with nothing of ours left in the queue."""
    driver, _ = start_driver(slurm, tmp_path, "--term-delay", "0.3")
    with driver:
        driver.send_signal(signal.SIGTERM)
        assert driver.wait(60) == 128 + signal.SIGTERM
    signals = {p.name: p.read_text().split() for p in tmp_path.glob("*.signals")}
    assert len(signals) == 4 and all(words[0] == "TERM" and len(words) == 2 for words in signals.values()), signals
    run_dir = next((tmp_path / "runs").iterdir())
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    stopped = [e for e in events if e.get("event") == "stopped"]
    assert len(stopped) == 4 and not any(e["killed"] for e in stopped)
    assert [e["exit_code"] for e in events if e.get("event") == "exited"] == [0, 0, 0, 0]
    assert slurm.queue() == []  # the allocation we made is cancelled before we exit


def test_sigkill_to_the_supervisor_leaves_no_task_and_no_allocation(slurm: SlurmCluster, tmp_path: Path) -> None:
    """srun dies with us (parent-death signal) and its shepherd cancels each step; the watchdog cancels
    the allocation we made: the queue is empty and no task is left within 15 s."""
    driver, words = start_driver(slurm, tmp_path)
    job = words[2]
    assert any(line.startswith(f"{job} ") for line in slurm.queue())
    assert len(slurm.tasks()) >= 4
    killed_at = time.monotonic()
    with driver:
        driver.kill()
        driver.wait(10)
    queue, tasks = slurm.wait_clean(15.0)
    assert (queue, tasks) == ([], [])
    assert time.monotonic() - killed_at < 15.0


def test_under_sbatch_the_batch_allocation_is_used_and_left_to_slurm(slurm: SlurmCluster, tmp_path: Path) -> None:
    """Inside ``sbatch -N4`` the run's steps go to the batch job (no salloc of ours), and once the run is
    over the allocation is still there: a step after it still runs, and the job ends as the script does."""
    script = tmp_path / "batch.sh"
    output = tmp_path / "batch.out"
    script.write_text(
        "#!/bin/sh\n"
        f"{PYTHON} {DRIVER} {tmp_path} {tmp_path / 'runs'} 4 --once || exit 1\n"
        'srun --jobid "$SLURM_JOB_ID" --overlap -N1 -n1 true && echo allocation-still-there\n'
    )
    env = {**slurm.env, "PYTHONPATH": ROOT}
    result = subprocess.run(
        ["sbatch", "--wait", "-N4", "--ntasks-per-node", "1", "-J", "batch-test", "-o", str(output), str(script)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    text = output.read_text() if output.exists() else ""
    assert result.returncode == 0, (result.stderr, text)
    job = result.stdout.split()[-1]
    ready = next(line for line in text.splitlines() if line.startswith("ready "))
    assert ready.split()[2:] == [job, "owned=False"]
    assert "allocation-still-there" in text
    tasks = [json.loads(p.read_text()) for p in tmp_path.glob("web.*.json")]
    assert len(tasks) == 4 and {t["job"] for t in tasks} == {job}


def test_gc_cancels_the_allocation_of_a_dead_run(slurm: SlurmCluster, tmp_path: Path) -> None:
    """Supervisor and watchdog both SIGKILLed (the case the watchdog cannot cover): the allocation we made
    is in the run record, and ``supervisor gc --yes`` cancels it."""
    driver, words = start_driver(slurm, tmp_path)
    run_dir, job = Path(words[1]), words[2]
    manifest = read_manifest(run_dir)
    assert manifest is not None and manifest.slurm_job == job and manifest.slurm_job_owned
    record = load_run(run_dir)
    assert record.watchdog_pid is not None
    with driver:
        os.kill(record.watchdog_pid, signal.SIGKILL)  # first: a watchdog that outlives us would cancel it
        driver.kill()
        driver.wait(10)
    wait_until(lambda: not slurm.tasks())  # srun's shepherds cancelled the steps...
    assert any(line.startswith(f"{job} ") for line in slurm.queue())  # ...but nobody cancelled the allocation
    env = {**slurm.env, "PYTHONPATH": ROOT}
    gc = subprocess.run(
        [PYTHON, "-m", "supervisor", "gc", "--yes"], env=env, capture_output=True, text=True, timeout=60
    )
    assert gc.returncode == 0, gc.stderr
    assert slurm.wait_clean() == ([], [])


def test_supervisor_run_on_the_cluster_exits_with_the_commands_code(slurm: SlurmCluster, tmp_path: Path) -> None:
    """``supervisor run FILE -- CMD`` with ``cluster: {slurm: {nodes: 4}}``: salloc, 4 replicas on 4 nodes,
    CMD reaches each by its URL, and the run exits with CMD's code, its allocation cancelled."""
    topology = web_topology(tmp_path, "clirun", replicas=4, cluster={"nodes": 4, "time": "5m"})
    fetch = (
        "import os, sys, urllib.request; urls = os.environ['TOPOVISOR_WEB_URLS'].split(','); "
        "[urllib.request.urlopen(u, timeout=10).read() for u in urls]; sys.exit(len(urls) + 3)"
    )
    env = {**slurm.env, "PYTHONPATH": ROOT}
    result = subprocess.run(
        [
            PYTHON,
            "-m",
            "supervisor",
            "run",
            "-q",
            str(topology),
            "--runs-dir",
            str(tmp_path / "runs"),
            "--",
            PYTHON,
            "-c",
            fetch,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 7, result.stderr
    nodes = sorted(json.loads(p.read_text())["node"] for p in tmp_path.glob("web.*.json"))
    assert nodes == list(slurm.nodes)


def test_the_script_of_supervisor_sbatch_runs_the_topology_in_its_batch_job(
    slurm: SlurmCluster, tmp_path: Path
) -> None:
    """``supervisor sbatch FILE --nodes 4 -- CMD`` writes the script; sbatch runs it: the run takes the
    batch job's allocation (not one of its own), places a replica on each node, and the job ends with
    CMD's code once the run is down."""
    topology = web_topology(tmp_path, "batched", replicas=4)
    env = {**slurm.env, "PYTHONPATH": ROOT}
    argv = [PYTHON, "-m", "supervisor", "sbatch", str(topology), "--nodes", "4", "--runs-dir", str(tmp_path / "runs")]
    written = subprocess.run(
        [*argv, "--", PYTHON, "-c", "raise SystemExit(6)"], env=env, capture_output=True, text=True
    )
    assert written.returncode == 0, written.stderr
    script, output = tmp_path / "job.sh", tmp_path / "job.out"
    script.write_text(written.stdout)
    result = subprocess.run(
        ["sbatch", "--wait", "-o", str(output), str(script)], env=env, capture_output=True, text=True, timeout=120
    )
    text = output.read_text() if output.exists() else ""
    assert result.returncode == 6, (result.stderr, text)
    job = result.stdout.split()[-1]
    assert f"Slurm job {job} (the caller's, left as it is)" in text
    tasks = [json.loads(p.read_text()) for p in tmp_path.glob("web.*.json")]
    assert sorted(t["node"] for t in tasks) == list(slurm.nodes) and {t["job"] for t in tasks} == {job}


def test_a_second_sigterm_kills_every_task_at_once(slurm: SlurmCluster, tmp_path: Path) -> None:
    """Tasks that take 30 s to stop: the first SIGTERM starts the orderly stop, the second cancels every
    step (SIGKILL to the tasks) at once; the supervisor is down in seconds, the queue empty."""
    driver, _ = start_driver(slurm, tmp_path, "--term-delay", "30")
    with driver:
        driver.send_signal(signal.SIGTERM)
        wait_until(lambda: len(list(tmp_path.glob("*.signals"))) == 4, timeout=30)  # every task is stopping
        began = time.monotonic()
        driver.send_signal(signal.SIGTERM)
        driver.wait(20)
    assert time.monotonic() - began < 10
    assert slurm.wait_clean(15.0) == ([], [])


def test_run_detach_on_slurm_takes_one_allocation_and_stop_leaves_none(slurm: SlurmCluster, tmp_path: Path) -> None:
    """``supervisor run --detach`` of a ``cluster: {slurm: ...}`` file: only the background run takes an
    allocation (the process the user watches checks the file on placeholder nodes and takes none: it never
    cancels one), and ``supervisor stop`` leaves an empty queue."""
    topology = web_topology(tmp_path, "detached", replicas=2, cluster={"nodes": 2, "time": "5m"})
    env = {**slurm.env, "PYTHONPATH": ROOT}
    runs = str(tmp_path / "runs")
    cli = [PYTHON, "-m", "supervisor"]
    started = subprocess.run(
        [*cli, "run", "--detach", str(topology), "--runs-dir", runs],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert started.returncode == 0, started.stderr
    jobs = slurm.command("squeue", "-h", "-o", "%i %j").splitlines()
    assert len(jobs) == 1 and jobs[0].endswith("topovisor-detached"), jobs
    stopped = subprocess.run(
        [*cli, "stop", started.stdout.strip()], env=env, capture_output=True, text=True, timeout=120
    )
    assert stopped.returncode == 0, stopped.stderr
    assert slurm.wait_clean() == ([], [])
