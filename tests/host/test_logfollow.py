"""``supervisor logs -f`` follows a log by inode: no line is lost however often it rotates between reads."""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from pathlib import Path

import psutil

from supervisor._host.logfollow import LogFollower, Missed
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
    assert follower.take_missed() == [Missed(bytes=12 * 12, lines=12)], "lines 2 to 13 were deleted unread"
    assert follower.take_missed() == []
    follower.close()


def test_a_follower_counts_what_it_missed_in_every_gap_across_a_writer_restart(tmp_path: Path) -> None:
    """Gaps in several rounds, a restarted writer appending to the same log in between (its line numbers
    go on), and rounds without a gap: each gap's count is exact, and lines read plus lines missed is every
    line written."""
    path = tmp_path / "x.log"
    writer = RotatingLogFile(path, max_bytes=60, backups=3)  # five 12-byte lines per file
    follower = LogFollower(path)
    seen: list[str] = []
    missed: list[Missed] = []
    written = 0
    for burst in (3, 40, 7, 200, 1, 55):
        writer.write_lines(lines(written, written + burst))
        written += burst
        seen += follower.new_lines()
        missed += follower.take_missed()
        if burst == 7:
            writer.close()
            writer = RotatingLogFile(path, max_bytes=60, backups=3)
    writer.close()
    follower.close()
    numbers = [int(line.split()[1]) for line in seen]
    assert numbers == sorted(numbers) and numbers[-1] == written - 1
    assert len(missed) == 3, missed  # the 40, 200 and 55 bursts outran 3 backups
    assert all(m.bytes is not None and m.lines == m.bytes // 12 and m.bytes % 12 == 0 for m in missed), missed
    assert len(seen) + sum(m.lines or 0 for m in missed) == written


def test_a_follower_without_the_offsets_file_says_the_amount_is_unknown(tmp_path: Path) -> None:
    path = tmp_path / "x.log"
    writer = RotatingLogFile(path, max_bytes=24, backups=2)
    writer.write_lines(lines(0, 1))
    follower = LogFollower(path)
    follower.history(1)
    offsets = path.with_suffix(".offsets")
    offsets.unlink()
    offsets.mkdir()  # and it cannot be made again
    writer.write_lines(lines(1, 20))
    writer.close()
    follower.new_lines()
    assert follower.take_missed() == [Missed(None, None)]
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


def test_logs_follow_says_how_many_lines_it_missed_when_it_fell_behind_the_backups(
    reaper: Reaper, runs_dir: Path
) -> None:
    """``supervisor logs -f`` is stopped (SIGSTOP) while the writer rotates far past its 2 backups; once it
    goes on it prints the lines still on disk and says on stderr how many it missed, exactly."""
    supervisor = reaper.start([PYTHON, "-c", "print('up', flush=True); import time; time.sleep(3600)"])
    entry = replica_entry("kv", None, runs_dir / "run-behind")
    run_dir = write_run(
        runs_dir, "run-behind", {"kv": ([], [entry])}, supervisor=(supervisor.pid, create_time(supervisor.pid))
    )
    writer = RotatingLogFile(run_dir / "logs" / "kv.log", max_bytes=120, backups=2)  # ten lines a file
    writer.write_lines(b"first\n")
    follower = subprocess.Popen([PYTHON, "-m", "supervisor", "logs", str(run_dir), "kv", "-f", "-n", "1"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)  # fmt: skip
    total = 1000
    try:
        seen: list[bytes] = []
        reader = threading.Thread(target=lambda: seen.extend(follower.stdout or []), daemon=True)
        reader.start()
        wait_until(lambda: seen == [b"first\n"], timeout=30)
        follower.send_signal(signal.SIGSTOP)
        writer.write_lines(lines(0, total))
        writer.close()
        follower.send_signal(signal.SIGCONT)
        wait_until(lambda: seen[-1:] == [b"line %06d\n" % (total - 1)], timeout=30)
        supervisor.kill()  # the run ends: the follower drains and exits 0
        assert follower.wait(30) == 0
        reader.join(10)
        shown = [int(line.split()[1]) for line in seen[1:]]
        missed = total - len(shown)
        # the rest of the file it held (from line 0), then the files still on disk (to the last line)
        cut = next(i for i in range(1, len(shown)) if shown[i] != shown[i - 1] + 1)
        assert shown[:cut] == list(range(cut)) and shown[cut:] == list(range(shown[cut], total))
        assert missed == shown[cut] - cut > 0
        assert follower.stderr is not None
        errors = follower.stderr.read().decode()
        assert f"kv: {missed * 12:,} bytes of output (about {missed:,} lines) missed here" in errors, errors
    finally:
        if follower.poll() is None:
            follower.kill()
        follower.wait(10)
        for stream in (follower.stdout, follower.stderr):
            if stream is not None:
                stream.close()
