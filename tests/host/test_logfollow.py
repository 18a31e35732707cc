"""``supervisor logs -f`` follows a log by inode: no line is lost however often it rotates between reads."""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path

import psutil

from supervisor._host.logfollow import LogFollower
from supervisor._host.logs import RotatingLogFile

from ..fakerun import Reaper, replica_entry, write_run
from ..helpers import PYTHON, alive, wait_until

ROOT = Path(__file__).parents[2]


def create_time(pid: int) -> float:
    return psutil.Process(pid).create_time()


def lines(start: int, stop: int) -> bytes:
    return b"".join(b"line %06d\n" % i for i in range(start, stop))


def test_many_rotations_between_two_reads_lose_no_line(tmp_path: Path) -> None:
    """Each round the writer rotates ~12 times before the follower reads again: every line, in order."""
    path = tmp_path / "x.log"
    writer = RotatingLogFile(path, max_bytes=1000, backups=50)
    follower = LogFollower(path)
    seen: list[str] = []
    written = 0
    for _ in range(20):
        writer.write_lines(lines(written, written + 700))  # 700 lines of 12 bytes: ~8 files
        written += 700
        seen += follower.new_lines()
    writer.close()
    seen += follower.new_lines()
    follower.close()
    assert seen == [f"line {i:06d}" for i in range(written)]


def test_follower_started_before_the_file_exists_reads_it_from_the_beginning(tmp_path: Path) -> None:
    """No file yet, then a file and two rotations: everything, oldest first."""
    path = tmp_path / "x.log"
    follower = LogFollower(path)
    assert follower.new_lines() == []
    writer = RotatingLogFile(path, max_bytes=24, backups=5)
    writer.write_lines(lines(0, 5))
    writer.close()
    assert follower.new_lines() == [f"line {i:06d}" for i in range(5)]
    follower.close()


def test_a_follower_that_falls_behind_the_backups_keeps_going(tmp_path: Path) -> None:
    """More rotations than backups: the rest of the file it holds, then the files still there, in order."""
    path = tmp_path / "x.log"
    writer = RotatingLogFile(path, max_bytes=24, backups=2)  # two lines per file, two backups
    writer.write_lines(lines(0, 1))
    follower = LogFollower(path)
    assert follower.history(5) == ["line 000000"]
    writer.write_lines(lines(1, 20))
    writer.close()
    assert follower.new_lines() == ["line 000001", *(f"line {i:06d}" for i in range(14, 20))]
    follower.close()


def test_logs_follow_keeps_up_with_a_fast_rotating_writer(reaper: Reaper, runs_dir: Path) -> None:
    """The issue's case, scaled: a writer rotating at max_bytes 10k, many rotations per 0.2 s poll;
    ``supervisor logs -f`` prints every line in order, within a bounded time."""
    supervisor = reaper.start([PYTHON, "-c", "print('up', flush=True); import time; time.sleep(3600)"])
    entry = replica_entry("kv", None, runs_dir / "run-fast")
    run_dir = write_run(
        runs_dir, "run-fast", {"kv": ([], [entry])}, supervisor=(supervisor.pid, create_time(supervisor.pid))
    )
    path = run_dir / "logs" / "kv.log"
    writer = RotatingLogFile(path, max_bytes=10_000, backups=1000)
    writer.write_lines(b"first\n")
    follower = subprocess.Popen([PYTHON, "-m", "supervisor", "logs", str(run_dir), "kv", "-f", "-n", "1"],
                                stdout=subprocess.PIPE, cwd=ROOT)  # fmt: skip
    total = 60_000
    try:
        seen: list[bytes] = []
        reader = threading.Thread(target=lambda: seen.extend(follower.stdout or []), daemon=True)
        reader.start()
        wait_until(lambda: seen == [b"first\n"])
        began = time.monotonic()
        for start in range(0, total, 2000):  # ~720 KB: 72 rotations, written as fast as the disk takes it
            writer.write_lines(lines(start, start + 2000))
        writer.close()
        wait_until(lambda: len(seen) >= total + 1, timeout=30)
        assert seen == [b"first\n", *(b"line %06d\n" % i for i in range(total))]
        assert time.monotonic() - began < 30
        supervisor.kill()  # the run ends: the follower drains and exits 0
        assert follower.wait(10) == 0
        reader.join(10)
    finally:
        if follower.poll() is None:
            follower.kill()
        follower.wait(10)
        if follower.stdout is not None:
            follower.stdout.close()
    assert supervisor.wait(10) is not None and not alive(supervisor.pid)
