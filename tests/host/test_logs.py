"""Output capture: rotation without losing or doubling a line, \\r progress, continuous draining."""

from __future__ import annotations

import os
import re
from pathlib import Path

import anyio
import pytest

import supervisor as sv
from supervisor._host.logs import LineStream, RotatingLogFile

from ..helpers import PROGRAMS, PYTHON


def log_files(log: Path) -> list[Path]:
    """The log and its backups, oldest first."""
    backups = sorted(log.parent.glob(log.name + ".*"), key=lambda p: int(p.suffix[1:]), reverse=True)
    return [*backups, log]


@pytest.mark.anyio
async def test_200k_lines_through_a_4mb_rotating_log_arrive_exactly_once(runs_dir: Path) -> None:
    lines = 200_000
    topo = sv.Topology(
        name="spew",
        services=[
            sv.Service(
                name="spew",
                command=[PYTHON, str(PROGRAMS / "spew.py"), "--lines", str(lines), "--width", "40"],
                log=sv.LogPolicy(max_bytes="4MB", backups=10),
            )
        ],
    )
    runs: list[Path] = []
    with anyio.fail_after(60):
        async with sv.launch(topo, runs_dir=runs_dir) as group:
            runs.append(group.run_dir)
            await group.wait()
    files = log_files(runs[0] / "logs" / "spew.log")
    assert len(files) >= 3  # ~10 MB through 4 MB files: rotated at least twice
    numbers: list[int] = []
    for file in files:
        data = file.read_bytes()
        assert len(data) <= 4_000_000 and data.endswith(b"\n")
        numbers.extend(int(m) for m in re.findall(rb"^line (\d{7}) x{40}$", data, re.MULTILINE))
        assert data.count(b"\n") == len(re.findall(rb"^line \d{7} x{40}$", data, re.MULTILINE))
    assert numbers == list(range(lines))


@pytest.mark.anyio
async def test_output_is_drained_before_readiness(runs_dir: Path) -> None:
    """20 MB before the ready line: a supervisor that read only after readiness would deadlock the child."""
    code = "import sys; sys.stdout.write(('x' * 99 + '\\n') * 200_000); sys.stdout.flush(); print('ready', flush=True); import time; time.sleep(60)"
    topo = sv.Topology(
        name="drain",
        services=[sv.Service(name="big", command=[PYTHON, "-c", code], ready=sv.Probe(sv.LogCheck("^ready$"), timeout_seconds=30))],
    )  # fmt: skip
    async with sv.launch(topo, runs_dir=runs_dir) as group:
        assert group["big"].replicas[0].stream.bytes_seen >= 20_000_000


@pytest.mark.anyio
async def test_carriage_return_progress_becomes_readable_lines(runs_dir: Path) -> None:
    code = r"import sys, time; sys.stdout.write('load  10%\rload  50%\rload 100%\n'); sys.stdout.write('win\r'); sys.stdout.flush(); time.sleep(0.05); sys.stdout.write('\ndone\n')"
    topo = sv.Topology(name="cr", services=[sv.Service(name="p", command=[PYTHON, "-c", code])])
    async with sv.launch(topo, runs_dir=runs_dir) as group:
        await group.wait()
    text = group["p"].replicas[0].log_path.read_text()
    assert text == "load  10%\nload  50%\nload 100%\nwin\ndone\n"


def test_rotation_cuts_only_between_lines(tmp_path: Path) -> None:
    sink = RotatingLogFile(tmp_path / "x.log", max_bytes=25, backups=3)
    sink.write_lines(b"aaaaaaaaa\nbbbbbbbbb\nccccccccc\n")  # 30 bytes: the third line goes to a new file
    sink.write_lines(b"d" * 40 + b"\n")  # longer than max_bytes: written whole, alone
    sink.write_lines(b"e\n")
    sink.close()
    assert [p.read_bytes() for p in log_files(tmp_path / "x.log")] == [
        b"aaaaaaaaa\nbbbbbbbbb\n",
        b"ccccccccc\n",
        b"d" * 40 + b"\n",  # alone in its file, never split
        b"e\n",
    ]


def test_oldest_backup_is_dropped_beyond_the_limit(tmp_path: Path) -> None:
    sink = RotatingLogFile(tmp_path / "x.log", max_bytes=4, backups=2)
    for word in (b"one\n", b"two\n", b"six\n", b"ten\n"):
        sink.write_lines(word)
    sink.close()
    assert [p.read_bytes() for p in log_files(tmp_path / "x.log")] == [b"two\n", b"six\n", b"ten\n"]


def test_a_full_chain_drops_its_oldest_before_any_rename_lands_on_a_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rename onto a file that exists makes ext4 write the renamed file out there and then (6-8 ms of CPU,
    up to 30 ms of the event loop's time for a busy 50 MB backup): the oldest is removed first instead."""
    landed_on: list[str] = []
    real_replace = os.replace

    def replace(source: Path, target: Path) -> None:
        if Path(target).exists():
            landed_on.append(Path(target).name)
        real_replace(source, target)

    monkeypatch.setattr(os, "replace", replace)
    sink = RotatingLogFile(tmp_path / "x.log", max_bytes=4, backups=3)
    for word in (b"one\n", b"two\n", b"six\n", b"ten\n", b"far\n", b"end\n"):
        sink.write_lines(word)
    sink.close()
    assert landed_on == []
    assert [p.read_bytes() for p in log_files(tmp_path / "x.log")] == [b"six\n", b"ten\n", b"far\n", b"end\n"]


def test_line_stream_joins_chunks_and_crlf_across_boundaries() -> None:
    blocks: list[bytes] = []
    stream = LineStream(None)
    stream.subscribe(blocks.append)
    for chunk in (b"par", b"tial\r", b"\nnext\r", b"over\n", b"tail without newline"):
        stream.feed(chunk)
    stream.close()
    assert b"".join(blocks) == b"partial\nnext\nover\ntail without newline\n"
    assert stream.tail(2) == ["over", "tail without newline"]


def test_rotation_cost_follows_the_files_on_disk_not_backups(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``backups: 100000000`` once spun the event loop through 10^8 existence checks per rotation."""

    class TooManyChecks(Exception):
        pass

    calls = {"n": 0}
    real_exists = Path.exists

    def counting_exists(self: Path, *args: object, **kwargs: object) -> bool:
        calls["n"] += 1
        if calls["n"] > 10_000:
            raise TooManyChecks
        return real_exists(self)

    scanned_too_much = False
    with monkeypatch.context() as patch:
        patch.setattr(Path, "exists", counting_exists)
        sink = RotatingLogFile(tmp_path / "x.log", max_bytes=1000, backups=100_000_000)
        try:
            for i in range(200):
                sink.write_lines(b"%04d" % i + b"x" * 495 + b"\n")  # 500 bytes: a rotation every other line
        except TooManyChecks:
            scanned_too_much = True
        sink.close()
    assert not scanned_too_much, "rotation looked for backups that do not exist"
    files = log_files(tmp_path / "x.log")
    assert len(files) == 100  # nothing dropped: 99 backups and the current file, oldest first
    assert b"".join(p.read_bytes() for p in files).count(b"\n") == 200
    assert files[0].read_bytes().startswith(b"0000")


def test_a_full_disk_drops_output_once_warned_and_never_raises(tmp_path: Path) -> None:
    """ENOSPC (``/dev/full``) used to propagate into the output reader and kill it."""
    errors: list[OSError] = []
    log = tmp_path / "full.log"
    log.symlink_to("/dev/full")
    sink = RotatingLogFile(log, max_bytes=1 << 20, backups=2, on_error=errors.append)
    for _ in range(5):
        sink.write_lines(b"a line that cannot be written\n")
    sink.close()
    assert len(errors) == 1 and errors[0].errno == 28  # ENOSPC, reported once per outage
    assert sink.error is not None and sink.dropped_bytes == 5 * 30


def test_a_log_writable_again_is_reopened(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import supervisor._host.logs as logs_module

    monkeypatch.setattr(logs_module, "_REOPEN_INTERVAL_SECONDS", 0.0)
    logs = tmp_path / "logs"
    logs.mkdir()
    sink = RotatingLogFile(logs / "x.log", max_bytes=10, backups=1)
    sink.write_lines(b"first\n")
    import shutil

    shutil.rmtree(logs)
    sink.write_lines(b"second line\n")  # needs a rotation into a directory that is gone
    assert sink.error is not None
    logs.mkdir()
    sink.write_lines(b"third\n")
    sink.close()
    assert sink.error is None and (logs / "x.log").read_bytes() == b"third\n"


@pytest.mark.anyio
async def test_a_deleted_log_dir_never_kills_the_service_or_hangs_teardown(runs_dir: Path) -> None:
    """The run's logs dir removed mid-run: output keeps being drained, the service lives, teardown ends."""
    import shutil

    code = "import itertools, time\nfor i in itertools.count():\n    print('tick', i, 'x' * 200, flush=True)\n    time.sleep(0.001)"
    topo = sv.Topology(
        name="nolog",
        services=[
            sv.Service(
                name="chatty",
                command=[PYTHON, "-c", code],
                ready=sv.Probe(sv.LogCheck("^tick 5 "), timeout_seconds=30),
                log=sv.LogPolicy(max_bytes="4k", backups=2),
            )
        ],
    )
    with anyio.fail_after(60):
        async with sv.launch(topo, runs_dir=runs_dir) as group:
            replica = group["chatty"].replicas[0]
            shutil.rmtree(group.run_dir / "logs")
            seen = replica.stream.bytes_seen
            while replica.stream.bytes_seen < seen + 200_000:  # ~1000 more lines, past many rotations
                assert replica.running, "the service died when its log became unwritable"
                await anyio.sleep(0.01)
            assert re.match(r"tick \d+ x+$", replica.log_tail(1)[0])
            assert replica.running


def test_a_log_opened_after_its_dir_was_deleted_never_raises(tmp_path: Path) -> None:
    """A replica restarted after ``rm -rf <run_dir>/logs`` once crashed the whole run at its spawn."""
    errors: list[OSError] = []
    again = RotatingLogFile(tmp_path / "logs" / "x.log", max_bytes=100, backups=1)  # run dir there: logs/ made again
    again.write_lines(b"kept\n")
    again.close()
    assert (tmp_path / "logs" / "x.log").read_bytes() == b"kept\n"
    gone = RotatingLogFile(tmp_path / "no-run-dir" / "logs" / "x.log", max_bytes=100, backups=1, on_error=errors.append)
    gone.write_lines(b"dropped\n")
    gone.close()
    assert [e.errno for e in errors] == [2] and gone.dropped_bytes == len(b"dropped\n")


@pytest.mark.anyio
async def test_a_restart_after_the_logs_dir_was_deleted_keeps_the_run_going(runs_dir: Path) -> None:
    import shutil

    crashy = [PYTHON, "-c", "import time; print('up', flush=True); time.sleep(0.2); raise SystemExit(1)"]
    topo = sv.Topology(
        name="relog",
        services=[
            sv.Service(name="crashy", command=crashy, restart=sv.RestartPolicy(policy="on-failure", max_restarts=1000, backoff=sv.Backoff(0.01, 0.01, 1.0, 0.0))),
            sv.Service(name="web", command=[PYTHON, "-c", "import time; time.sleep(60)"]),
        ],
    )  # fmt: skip
    with anyio.fail_after(60):
        async with sv.launch(topo, runs_dir=runs_dir) as group:
            shutil.rmtree(group.run_dir / "logs")
            events = group.events()
            spawned_after = 0
            async for event in events:
                if isinstance(event, sv.Spawned) and event.replica == "crashy":
                    spawned_after += 1
                    if spawned_after == 3:
                        break
            assert group.replica("web").running and group.failure is None
    assert (runs_dir / group.run_id / "logs" / "crashy.log").exists()  # made again at the next spawn


def test_a_failing_output_subscriber_is_dropped_and_the_stream_goes_on() -> None:
    """``supervisor run --logs | head -1``: the console's write fails; the pipe must still be drained."""
    seen: list[bytes] = []

    def broken(block: bytes) -> None:
        raise BrokenPipeError(32, "Broken pipe")

    stream = LineStream(None)
    stream.subscribe(broken)
    stream.subscribe(seen.append)
    stream.feed(b"one\n")
    stream.feed(b"two\n")
    stream.close()
    assert seen == [b"one\n", b"two\n"] and stream.tail(2) == ["one", "two"]
