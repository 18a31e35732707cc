"""Output capture: rotation without losing or doubling a line, \\r progress, continuous draining."""

from __future__ import annotations

import re
from pathlib import Path

import anyio
import pytest

import supervisor as sv
from supervisor.logs import LineStream, RotatingLogFile

from .conftest import PROGRAMS, PYTHON


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


def test_line_stream_joins_chunks_and_crlf_across_boundaries() -> None:
    blocks: list[bytes] = []
    stream = LineStream(None)
    stream.subscribe(blocks.append)
    for chunk in (b"par", b"tial\r", b"\nnext\r", b"over\n", b"tail without newline"):
        stream.feed(chunk)
    stream.close()
    assert b"".join(blocks) == b"partial\nnext\nover\ntail without newline\n"
    assert stream.tail(2) == ["over", "tail without newline"]
