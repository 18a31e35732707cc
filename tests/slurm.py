"""The real Slurm cluster for the Slurm tests: 4 emulated nodes on loopback, started by ``.ci/slurm-cluster``.

One cluster per test session (``slurm_cluster``), stopped at the end whatever happens. Tests marked
``slurm`` get it through ``slurm``, which points ``SLURM_CONF`` at it, hides any allocation of the caller
(``SLURM_JOB_ID``...), and after the test checks that the queue is empty and no task is left on any node
(the cluster's freezer cgroups hold no process); whatever is left is cancelled and the test fails.
Without root or the packages the tests skip with the reason; under ``CI=true`` they fail instead.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest

from supervisor._host.slurm_alloc import SlurmAllocation
from supervisor._spec.model import SlurmCluster as SlurmSpec

__all__ = ["SlurmCluster", "held_allocation", "slurm", "slurm_cluster"]

SCRIPT = Path(__file__).resolve().parent.parent / ".ci" / "slurm-cluster"
FREEZER = Path("/sys/fs/cgroup/freezer")
CLEAN_SECONDS = 15.0  #: after a test: slurmstepd exits about 2.5 s after its step ended


@attrs.frozen
class SlurmCluster:
    """A running test cluster: its directory, config and node names."""

    root: Path
    conf: Path
    nodes: tuple[str, ...]

    @property
    def env(self) -> dict[str, str]:
        """An environment for Slurm's client commands (and supervisors) aimed at this cluster."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SALLOC_", "SBATCH_", "SRUN_"))}
        env["SLURM_CONF"] = str(self.conf)
        return env

    def command(self, *argv: str, timeout: float = 30.0) -> str:
        """Run a Slurm client command; its stdout."""
        result = subprocess.run(argv, env=self.env, capture_output=True, text=True, timeout=timeout, check=False)
        if result.returncode != 0:
            raise AssertionError(f"{' '.join(argv)}: rc {result.returncode}: {result.stderr.strip()}")
        return result.stdout

    def queue(self) -> list[str]:
        """Jobs and steps still in the queue (running, pending or completing): one line each."""
        jobs = self.command("squeue", "-h", "-o", "%i %j %T %N").splitlines()
        steps = self.command("squeue", "-h", "-s", "-o", "%i %j %N").splitlines()
        return [line for line in jobs + steps if line.strip()]

    def tasks(self) -> list[int]:
        """Processes left in any job of this cluster's nodes (tasks and slurmstepd), by freezer cgroup."""
        pids: list[int] = []
        for node in self.nodes:
            for dirpath, _dirs, files in os.walk(FREEZER / f"slurm_{node}"):
                if "/job_" in dirpath and "cgroup.procs" in files:
                    try:
                        pids += [int(p) for p in (Path(dirpath) / "cgroup.procs").read_text().split()]
                    except (OSError, ValueError):
                        continue
        return pids

    def wait_clean(self, seconds: float = CLEAN_SECONDS) -> tuple[list[str], list[int]]:
        """Poll until the queue is empty and no task is left; what is left at the deadline."""
        deadline = time.monotonic() + seconds
        while True:
            queue, tasks = self.queue(), self.tasks()
            if (not queue and not tasks) or time.monotonic() > deadline:
                return queue, tasks
            time.sleep(0.05)

    def cancel_all(self) -> None:
        subprocess.run(["scancel", "--full", "--quiet", "-u", "root"], env=self.env, timeout=30, check=False)


def _unavailable(reason: str) -> None:
    """Skip locally; fail under CI, where the Slurm tests must run."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true but {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[SlurmCluster]:
    """Start the 4-node test cluster once; stop it (daemons, tasks, cgroups) at the end whatever happens."""
    if os.geteuid() != 0:
        _unavailable("the Slurm test cluster needs root (its daemons run as root)")
    path = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"
    missing = [b for b in ("slurmctld", "slurmd", "srun", "munged") if shutil.which(b, path=path) is None]
    if missing:
        _unavailable(f"Slurm is not installed (no {', '.join(missing)}): run .ci/slurm-cluster install")
    root = Path(tempfile.mkdtemp(prefix="tvs.", dir="/tmp"))  # short: slurmstepd sockets live under it
    prefix = os.environ.get("SLURM_NODE_PREFIX", "n")
    started = subprocess.run(
        [str(SCRIPT), "start", str(root)], capture_output=True, text=True, timeout=120, check=False
    )
    try:
        if started.returncode != 0:
            pytest.fail(f".ci/slurm-cluster start failed: {started.stderr.strip()}", pytrace=False)
        yield SlurmCluster(root, root / "etc" / "slurm.conf", tuple(f"{prefix}{i}" for i in range(1, 5)))
    finally:
        stopped = subprocess.run([str(SCRIPT), "stop", str(root)], capture_output=True, text=True, timeout=120)
        if stopped.returncode == 0:
            shutil.rmtree(root, ignore_errors=True)
        else:
            print(f".ci/slurm-cluster stop {root}: {stopped.stderr.strip()}")


@pytest.fixture
def slurm(slurm_cluster: SlurmCluster, monkeypatch: pytest.MonkeyPatch) -> Iterator[SlurmCluster]:
    """The cluster for one test: clients in this process (and its children) reach it; afterwards the
    queue must be empty and no task left, else everything is cancelled and the test fails."""
    for name in list(os.environ):
        if name.startswith(("SLURM_", "SALLOC_", "SBATCH_", "SRUN_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("SLURM_CONF", str(slurm_cluster.conf))
    yield slurm_cluster
    queue, tasks = slurm_cluster.wait_clean()
    if queue or tasks:
        slurm_cluster.cancel_all()
        slurm_cluster.wait_clean()
        pytest.fail(f"left on the Slurm cluster after the test: queue {queue}, task pids {tasks}")


@contextlib.contextmanager
def held_allocation(nodes: int, name: str) -> Iterator[SlurmAllocation]:
    """An allocation of ``nodes`` nodes, ours: a group cancels it at its teardown, this on the way out
    too (a test that failed before its group took it)."""
    job = SlurmAllocation.acquire(SlurmSpec(nodes=nodes), name)
    try:
        yield job
    finally:
        job.release()
