"""Limits of the machine, met before anything starts: open files, a read-only or full filesystem."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ..helpers import PYTHON

ROOT = Path(__file__).parents[2]
SLEEPERS = "name: many\nservices:\n  s:\n    command: [sleep, '60']\n    replicas: {replicas}\n"


def run_with_nofile(soft: int, hard: int, *args: str) -> subprocess.CompletedProcess[str]:
    """``supervisor ARGS`` under the given RLIMIT_NOFILE, as a shell's ``ulimit -n`` would leave it."""
    code = (
        "import os, resource, sys; "
        f"resource.setrlimit(resource.RLIMIT_NOFILE, ({soft}, {hard})); "
        "os.execv(sys.executable, [sys.executable, '-m', 'supervisor', *sys.argv[1:]])"
    )
    return subprocess.run([PYTHON, "-c", code, *args], capture_output=True, text=True, timeout=120, cwd=ROOT)


def test_the_soft_open_files_limit_is_raised_to_the_hard_one(tmp_path: Path, runs_dir: Path) -> None:
    """120 replicas need ~400 descriptors: under a soft limit of 256 they once failed with EMFILE."""
    topo = tmp_path / "many.yaml"
    topo.write_text(SLEEPERS.format(replicas=120))
    check = "import resource; print('soft', resource.getrlimit(resource.RLIMIT_NOFILE)[0])"
    result = run_with_nofile(256, 4096, "run", str(topo), "--runs-dir", str(runs_dir), "--", PYTHON, "-c", check)
    assert result.returncode == 0, result.stderr
    assert "soft 4096" in result.stdout  # CMD inherits the raised limit too


def test_a_plan_beyond_the_hard_limit_is_refused_before_anything_starts(tmp_path: Path, runs_dir: Path) -> None:
    topo = tmp_path / "many.yaml"
    topo.write_text(SLEEPERS.format(replicas=120))
    result = run_with_nofile(256, 256, "run", str(topo), "--runs-dir", str(runs_dir), "--", "true")
    assert result.returncode == 2, result.stderr
    assert "RLIMIT_NOFILE" in result.stderr and "is 256" in result.stderr and "120 replicas" in result.stderr
    assert "Traceback" not in result.stderr
    assert not runs_dir.exists() or not any(runs_dir.iterdir())  # nothing started, not even a run dir


@contextlib.contextmanager
def small_filesystem(where: Path, *options: str) -> Iterator[Path]:
    where.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", ",".join(["size=64k", *options]), "tmpfs", str(where)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({mounted.stderr.strip()}); needs root and mount rights")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


@pytest.mark.parametrize("kind", ["full", "read-only"])
def test_an_unwritable_runs_dir_is_bad_input_not_a_traceback(tmp_path: Path, kind: str) -> None:
    topo = tmp_path / "t.yaml"
    topo.write_text("name: t\nservices:\n  s:\n    command: [sleep, '60']\n")
    with small_filesystem(tmp_path / "fs") as fs:
        if kind == "full":
            with contextlib.suppress(OSError), open(fs / "filler", "wb") as filler:
                for _ in range(1_000):  # 64 KiB fills within 16 writes; bounded anyway
                    filler.write(b"x" * 4096)
                    filler.flush()
        else:
            (fs / "runs").mkdir()
            subprocess.run(["mount", "-o", "remount,ro", str(fs)], check=True)
        result = subprocess.run(
            [PYTHON, "-m", "supervisor", "run", str(topo), "--runs-dir", str(fs / "runs")],
            capture_output=True, text=True, timeout=60, cwd=ROOT,
        )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "cannot write there" in result.stderr or "is not writable" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert ("No space left" in result.stderr) == (kind == "full")


@pytest.mark.anyio
async def test_a_launch_warms_the_cgroup_moves_until_its_replicas_are_in(
    runs_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The API warms the kernel's cgroup moves as ``supervisor run`` does (a harness launching again and
    again pays the first move's RCU wait each time otherwise), from before planning until its replicas are
    in; a run that moves nothing (marks) warms nothing."""
    import supervisor as sv
    from supervisor._host import containment
    from supervisor._marks import CONTAINMENT_ENV

    calls: list[str] = []

    def recording_warm_moves() -> Callable[[], None]:
        calls.append("warm")
        return lambda: calls.append("stop")

    monkeypatch.setattr(containment, "warm_moves", recording_warm_moves)
    monkeypatch.delenv(CONTAINMENT_ENV, raising=False)
    seen_at_spawn: list[list[str]] = []

    def on_event(event: sv.Event) -> None:
        if isinstance(event, sv.Spawned):
            seen_at_spawn.append(list(calls))

    service = sv.Service(name="s", command=["sleep", "60"])
    async with sv.launch(sv.Topology(name="warm", services=[service]), runs_dir=runs_dir, on_event=on_event):
        assert calls == ["warm", "stop"]
    assert seen_at_spawn == [["warm"]]
    calls.clear()
    topology = sv.Topology(name="marks", services=[service], containment="marks")
    async with sv.launch(topology, runs_dir=runs_dir):
        pass
    assert calls == []
