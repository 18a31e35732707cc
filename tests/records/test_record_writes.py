"""Record writes never stand in the way of a run or its teardown: a deleted run dir, a full disk."""

from __future__ import annotations

import logging
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

import supervisor as sv
from supervisor._records.eventfile import EventFile, append_event, read_events
from supervisor._records.record import save_record

from ..helpers import PYTHON, alive, wait_until

ROOT = Path(__file__).parents[2]
SLEEPER = [PYTHON, "-c", "print('up', flush=True); import time; time.sleep(3600)"]


@pytest.mark.anyio
async def test_teardown_completes_when_the_run_dir_was_deleted(
    runs_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Deleting a live run's directory: leaving ``launch`` tears down, raises nothing, warns once."""
    topo = sv.Topology(
        name="gone", services=[sv.Service(name=n, command=SLEEPER, ready=sv.LogCheck("up")) for n in "ab"]
    )
    with caplog.at_level(logging.WARNING, logger="supervisor.records"):
        async with sv.launch(topo, runs_dir=runs_dir) as group:
            pids = [*group["a"].pids, *group["b"].pids]
            shutil.rmtree(group.run_dir)
    assert not any(alive(pid) for pid in pids)
    assert all(r.state.value == "stopped" for r in group.replicas) and group.leftovers == []
    warnings = [r for r in caplog.records if r.name == "supervisor.records"]
    assert len(warnings) == 1 and "cannot write manifest.json" in warnings[0].getMessage()


def test_cli_run_whose_dir_is_deleted_exits_cleanly(tmp_path: Path, runs_dir: Path) -> None:
    """``supervisor run FILE -- CMD`` where CMD deletes the run dir: CMD's exit code, one warning, no traceback."""
    path = tmp_path / "gone.yaml"
    path.write_text(
        "name: gone\nservices:\n  a:\n    command: ['{python}', -c, \"print('up', flush=True); import time; time.sleep(3600)\"]\n    ready: {log: up}\n"
    )
    rm = "import os, shutil; shutil.rmtree(os.environ['TOPOVISOR_RUN_DIR'])"
    result = subprocess.run(
        [PYTHON, "-m", "supervisor", "run", str(path), "--runs-dir", str(runs_dir), "--", PYTHON, "-c", rm],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.count("cannot write") == 1, result.stderr
    assert "everything is down" in result.stderr


def test_save_record_warns_once_per_run_and_never_raises(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A missing directory: False each time, one warning for the run, no temporary left behind."""
    missing = tmp_path / "deleted-run"
    with caplog.at_level(logging.WARNING, logger="supervisor.records"):
        assert save_record(missing, "manifest.json", {"a": 1}) is False
        assert save_record(missing, "summary.json", {"a": 1}, indent=2) is False
    assert len(caplog.records) == 1
    ok = tmp_path / "ok"
    ok.mkdir()
    assert save_record(ok, "manifest.json", {"a": 1}) and [p.name for p in ok.iterdir()] == ["manifest.json"]


def test_event_file_on_a_full_disk_warns_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """/dev/full refuses every write with ENOSPC: ``write`` returns False, one warning, no exception."""
    events = EventFile(Path("/dev/full"))
    with caplog.at_level(logging.WARNING, logger="supervisor.records"):
        assert events.write({"event": "x"}) is False
        assert events.write({"event": "y"}) is False
    events.close()
    events.close()
    assert len(caplog.records) == 1 and "No space left" in caplog.records[0].getMessage()


def test_a_run_under_umask_000_keeps_its_directories_0700_and_files_0600(tmp_path: Path) -> None:
    """Under ``umask 000``, a ``--detach`` run in a ``--runs-dir`` that does not exist yet (two levels of
    it): every directory made for it is 0700 and every file it writes 0600, ``watchdog.log`` included."""
    path = tmp_path / "private.yaml"
    path.write_text(
        "name: private\nservices:\n  a:\n    command: ['{python}', -c, \"print('up', flush=True); import time; time.sleep(3600)\"]\n    ready: {log: up}\n"
    )
    runs = tmp_path / "new" / "runs"
    started = subprocess.run(
        [PYTHON, "-m", "supervisor", "run", "--detach", str(path), "--runs-dir", str(runs)],
        capture_output=True, text=True, timeout=60, cwd=ROOT, umask=0,
    )  # fmt: skip
    assert started.returncode == 0, started.stderr
    run_id = started.stdout.strip()
    try:
        run_dir = runs / run_id
        wait_until(lambda: (run_dir / "watchdog.log").exists(), timeout=30, what="the watchdog's log")
        modes = {
            str(p.relative_to(tmp_path)): stat.S_IMODE(p.lstat().st_mode)
            for p in [tmp_path / "new", runs, *runs.rglob("*")]
            if not p.is_socket()
        }
    finally:
        stopped = subprocess.run(
            [PYTHON, "-m", "supervisor", "stop", run_id], capture_output=True, text=True, timeout=120, cwd=ROOT
        )
    assert stopped.returncode == 0, stopped.stderr
    assert "new/runs/" + run_id + "/watchdog.log" in modes and "new/runs/detached.log" in modes, modes
    wrong = {
        name: oct(mode) for name, mode in modes.items() if mode != (0o700 if (tmp_path / name).is_dir() else 0o600)
    }
    assert wrong == {}, wrong


_FILL_UNTIL_FULL = """
import resource, signal, sys
from pathlib import Path
from supervisor._records.eventfile import EventFile, append_event, read_events
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # past the size limit, write() fails (EFBIG) or writes part
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
resource.setrlimit(resource.RLIMIT_FSIZE, (300, hard))  # a disk that is full after 300 bytes
events = EventFile(Path(sys.argv[1]))
written = 0
while written < 100 and events.write({"event": "marked", "label": "x" * 40, "n": written}):
    written += 1
resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))  # space again
events.write({"event": "after", "n": -1})
events.close()
print(written)
"""


def test_a_line_cut_short_by_a_full_disk_is_skipped_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A disk that fills in the middle of an event leaves part of its line: the reader skips that line and
    says which (file and line number), and events written once there is space again (by the same writer,
    or appended by another) are on lines of their own, none lost."""
    path = tmp_path / "events.jsonl"
    child = subprocess.run(
        [PYTHON, "-c", _FILL_UNTIL_FULL, str(path)], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert child.returncode == 0, child.stderr
    whole = int(child.stdout)
    assert 0 < whole < 100 and not path.read_bytes().split(b"\n")[whole].endswith(b"}")  # cut short
    append_event(path, {"event": "appended", "n": -2})
    with caplog.at_level(logging.WARNING, logger="supervisor.records"):
        events = list(read_events(path, max_bytes=1 << 20))
    assert [e["n"] for e in events] == [*range(whole), -1, -2]
    warnings = [r.getMessage() for r in caplog.records if r.name == "supervisor.records"]
    assert len(warnings) == 1 and f"{path}: skipped line {whole + 1}: cut short" in warnings[0], warnings
