"""Fixtures shared by every test (helpers live in ``helpers.py``). Every test is checked for leftovers: no
process carrying a run mark, and no cgroup of a run, may outlive it."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from supervisor._host.cgroupfs import CgroupHost
from supervisor._host.containment import empty_and_remove
from supervisor._host.proctable import marked_processes

from .engines import aiperf, dynamo_env, llama_server, mocker_model, tiny_gguf
from .slurm import slurm, slurm_cluster

# the real engines' fixtures, and the real Slurm cluster's
__all__ = ["aiperf", "dynamo_env", "llama_server", "mocker_model", "slurm", "slurm_cluster", "tiny_gguf"]


@pytest.fixture
def runs_dir(tmp_path: Path) -> Path:
    return tmp_path / "runs"


@pytest.fixture(autouse=True)
def private_state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run records of a test go to its own state dir, never the user's (children inherit the variable)."""
    state = tmp_path / "state"
    monkeypatch.setenv("XDG_STATE_HOME", str(state))
    return state


@pytest.fixture(autouse=True)
def no_leftovers(runs_dir: Path) -> Iterator[None]:
    """After each test, no process of any run it started (under ``runs_dir``) may be alive."""
    yield
    left = {}
    cgroups = []
    for run in runs_dir.iterdir() if runs_dir.is_dir() else ():
        left.update(marked_processes(run.name))
        cgroups += [path for path in _run_cgroups(run.name) if path.exists()]
    for path in cgroups:
        empty_and_remove(path)
    if cgroups:
        pytest.fail(f"cgroups of a run outlived the test: {cgroups}")
    if left:
        for pid in left:
            with contextlib.suppress(OSError):
                os.kill(pid, 9)
        pytest.fail(f"processes of a run outlived the test: {sorted(left)}")


def _run_cgroups(run_id: str) -> list[Path]:
    host = CgroupHost.read()
    return [h.own_dir / f"topovisor-{run_id}" for h in (host.unified, *host.v1.values()) if h is not None]


@pytest.fixture(autouse=True)
def slurm_checked(request: pytest.FixtureRequest) -> None:
    """A test marked ``slurm`` runs against the test cluster, and leaves nothing on it (see ``slurm``)."""
    if request.node.get_closest_marker("slurm") is not None:
        request.getfixturevalue("slurm")


@pytest.fixture
def reaper() -> Iterator[object]:
    """Kills whatever a hand-built run of the test started, even when the test fails."""
    from .fakerun import reaper_fixture

    yield from reaper_fixture()


@pytest.fixture
def anyio_backend() -> str:
    """asyncio by default; TOPOVISOR_TEST_BACKEND=trio runs every async test on trio instead."""
    return os.environ.get("TOPOVISOR_TEST_BACKEND", "asyncio")
