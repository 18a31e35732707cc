"""The fast path (nobody subscribed: whole lines from the reused read buffer straight to the file, a busy
writer read in batches) keeps every log behaviour: rotation between lines, the tail, marks between whole
lines, ``\\r`` progress lines, and lines for a subscriber that arrives mid-run."""

from __future__ import annotations

import fcntl
import os
import re
from pathlib import Path

import anyio
import pytest

import supervisor as sv
from supervisor._host import process as process_module
from supervisor._host.logs import LineStream, RotatingLogFile, _next_nap, mark_line, pump_pipe

from ..helpers import PYTHON
from .test_logs import log_files


def feed_through_one_buffer(stream: LineStream, data: bytes, cuts: list[int]) -> None:
    """Feed ``data`` cut at ``cuts`` through one reused buffer, scribbled over after each chunk (as the
    pump's next read does): anything kept by reference instead of copied shows up as ``#``."""
    buffer = bytearray(64)
    start = 0
    for end in [*cuts, len(data)]:
        size = end - start
        buffer[:size] = data[start:end]
        stream.feed_buffer(buffer, size)
        buffer[:] = b"#" * len(buffer)
        start = end


def numbered(count: int) -> bytes:
    return b"".join(b"line %03d\n" % number for number in range(count))  # 9 bytes each


def test_fast_path_rotates_only_between_lines(tmp_path: Path) -> None:
    """Chunks that cut lines anywhere, files of 40 bytes (4 lines and a bit): each file holds whole lines."""
    stream = LineStream(RotatingLogFile(tmp_path / "x.log", max_bytes=40, backups=20))
    assert stream.fast
    data = numbered(30)
    feed_through_one_buffer(stream, data, list(range(7, len(data), 23)))
    stream.close()
    files = log_files(tmp_path / "x.log")
    assert len(files) >= 6
    for file in files:
        text = file.read_bytes()
        assert 0 < len(text) <= 40 and re.fullmatch(rb"(line \d{3}\n)+", text), text
    assert b"".join(file.read_bytes() for file in files) == data


def test_fast_path_keeps_the_tail_with_the_partial_last_line(tmp_path: Path) -> None:
    stream = LineStream(RotatingLogFile(tmp_path / "x.log", max_bytes=1 << 20, backups=1))
    feed_through_one_buffer(stream, numbered(20) + b"Traceback: CUDA err", [5, 50, 90, 150, 170])
    assert stream.fast
    assert stream.tail(3) == ["line 018", "line 019", "Traceback: CUDA err"]  # the partial line too
    stream.close()
    assert (tmp_path / "x.log").read_bytes() == numbered(20) + b"Traceback: CUDA err\n"


def test_a_mark_in_the_fast_path_lands_between_whole_lines(tmp_path: Path) -> None:
    """The file never holds half a line: the part before its newline waits in memory, the mark goes first."""
    stream = LineStream(RotatingLogFile(tmp_path / "x.log", max_bytes=1 << 20, backups=1))
    mark = mark_line("warmup done", 0.0)
    buffer = bytearray(b"first\nsecond ha")
    stream.feed_buffer(buffer, len(buffer))
    assert stream.fast
    stream.annotate(mark)
    buffer[:] = b"lf\nthird\n######"
    stream.feed_buffer(buffer, 9)
    stream.close()
    assert (tmp_path / "x.log").read_bytes() == b"first\n" + mark + b"second half\nthird\n"
    assert stream.tail(5) == ["first", "second half", "third"]  # a mark is never taken for the output


def test_carriage_returns_become_lines_in_the_fast_path(tmp_path: Path) -> None:
    stream = LineStream(RotatingLogFile(tmp_path / "x.log", max_bytes=1 << 20, backups=1))
    feed_through_one_buffer(stream, b"ok\nload 10%\rload 50%\r\nload 99%\rdone\n", [9, 13, 23, 24])
    stream.close()
    assert (tmp_path / "x.log").read_bytes() == b"ok\nload 10%\nload 50%\nload 99%\ndone\n"


def test_a_subscriber_arriving_mid_run_gets_whole_lines_and_the_file_all(tmp_path: Path) -> None:
    stream = LineStream(RotatingLogFile(tmp_path / "x.log", max_bytes=1 << 20, backups=1))
    buffer = bytearray(b"one\ntwo\nthr")
    stream.feed_buffer(buffer, len(buffer))  # fast: nobody to tell
    blocks: list[bytes] = []
    unsubscribe = stream.subscribe(blocks.append)
    assert not stream.fast
    buffer[:] = b"ee\nfour\nfi"
    stream.feed_buffer(buffer, len(buffer))
    unsubscribe()
    assert stream.fast
    buffer[:] = b"ve\nsix\n###"
    stream.feed_buffer(buffer, 7)
    stream.close()
    assert blocks == [b"three\nfour\n"]
    assert (tmp_path / "x.log").read_bytes() == b"one\ntwo\nthree\nfour\nfive\nsix\n"


@pytest.mark.anyio
async def test_the_pump_feeds_a_subscriber_that_arrives_while_a_writer_floods_the_pipe(tmp_path: Path) -> None:
    """A real pipe and a writer of 8 KiB writes: what the pump reads after ``subscribe`` reaches the
    subscriber as whole lines, and the file gets every line once (the fast path before, the lines after)."""
    code = (
        "import os, sys\n"
        "out = open(1, 'wb', buffering=8192, closefd=False)\n"
        "for n in range(200_000): out.write(b'line %06d %s\\n' % (n, b'x' * 40))\n"
        "out.flush(); sys.stdin.read()\n"  # then waits: the subscriber comes before the end
        "for n in range(200_000, 250_000): out.write(b'line %06d %s\\n' % (n, b'x' * 40))\n"
    )
    read_end, write_end = os.pipe()
    stdin_read, stdin_write = os.pipe()
    os.set_blocking(read_end, False)
    stream = LineStream(RotatingLogFile(tmp_path / "x.log", max_bytes=2_000_000, backups=10))
    process = await anyio.open_process([PYTHON, "-c", code], stdin=stdin_read, stdout=write_end)
    os.close(write_end)
    os.close(stdin_read)
    blocks: list[bytes] = []
    with anyio.fail_after(60):
        async with anyio.create_task_group() as group:
            group.start_soon(pump_pipe, read_end, stream)
            while stream.bytes_seen < 200_000 * 53:
                await stream.wait_activity()
            assert stream.fast
            stream.subscribe(blocks.append)
            os.close(stdin_write)  # the rest comes now
            await process.wait()
    os.close(read_end)
    seen = b"".join(blocks)
    assert re.fullmatch(rb"(line \d{6} x{40}\n)+", seen)
    assert [int(n) for n in re.findall(rb"^line (\d{6})", seen, re.MULTILINE)] == list(range(200_000, 250_000))
    on_disk = b"".join(file.read_bytes() for file in log_files(tmp_path / "x.log"))
    assert [int(n) for n in re.findall(rb"^line (\d{6}) x{40}$", on_disk, re.MULTILINE)] == list(range(250_000))
    assert on_disk.count(b"\n") == 250_000


@pytest.mark.anyio
async def test_a_replica_is_in_the_fast_path_once_ready_unless_the_launch_reads_its_output(runs_dir: Path) -> None:
    """The log probe reads the output until it matched; nothing else does unless ``on_output`` was given."""
    service = sv.Service(
        name="w", command=[PYTHON, "-c", "import time; print('ready', flush=True); time.sleep(60)"], ready=sv.LogCheck("^ready$")
    )  # fmt: skip
    topology = sv.Topology(name="fast", services=[service])
    async with sv.launch(topology, runs_dir=runs_dir) as group:
        stream = group["w"].replicas[0].stream
        assert stream is not None and stream.fast
    async with sv.launch(topology, runs_dir=runs_dir, on_output=lambda replica, block: None) as group:
        stream = group["w"].replicas[0].stream
        assert stream is not None and not stream.fast


@pytest.mark.anyio
async def test_the_tail_after_a_crash_in_the_fast_path_holds_the_last_lines(runs_dir: Path) -> None:
    """After ready, 5 MB through the fast path, then the last words and a crash: the failure quotes them."""
    code = (
        "import sys\n"
        "print('ready', flush=True)\n"
        "out = open(1, 'wb', buffering=8192, closefd=False)\n"
        "for n in range(50_000): out.write(b'step %06d %s\\n' % (n, b'x' * 88))\n"
        "out.write(b'RuntimeError: CUDA error: an illegal memory access\\nshutting do'); out.flush(); sys.exit(1)\n"
    )
    service = sv.Service(
        name="w",
        command=[PYTHON, "-c", code],
        ready=sv.LogCheck("^ready$"),
        fatal=("CUDA error",),
        log=sv.LogPolicy(max_bytes="2MB", backups=5),
    )
    with anyio.fail_after(60), pytest.raises(sv.ServiceFailed) as failure:
        async with sv.launch(sv.Topology(name="crash", services=[service]), runs_dir=runs_dir) as group:
            stream = group["w"].replicas[0].stream
            assert stream is not None and stream.fast
            await group.wait()
    tail = failure.value.log_tail
    assert tail[-3:] == ["step 049999 " + "x" * 88, "RuntimeError: CUDA error: an illegal memory access", "shutting do"]
    assert "CUDA error: an illegal memory access" in str(failure.value)


def test_a_busy_writer_is_read_in_batches_that_the_nap_keeps_within_the_pipe() -> None:
    """A quiet writer is read as it writes; a busy one after a nap that keeps batches between a quarter and
    three quarters of the 1 MiB pipe; one that fills the pipe within the shortest nap is read as it writes."""
    assert _next_nap(None, 200, since_last_seconds=5.0) is None  # a line after a quiet spell (ready): at once
    assert _next_nap(0.001, 0, since_last_seconds=0.0001) is None  # nothing came: wait for the next line
    assert _next_nap(None, 8192, since_last_seconds=0.0001) == 0.001  # woken by a busy writer: a short nap
    assert _next_nap(0.001, 500_000, since_last_seconds=0.001) == 0.001  # half the pipe per nap: as it is
    assert _next_nap(0.001, 8192, since_last_seconds=0.0001) == pytest.approx(0.0015)  # small batches: longer
    assert _next_nap(0.004, 8192, since_last_seconds=0.0001) == 0.004  # ... up to the longest nap
    assert _next_nap(0.002, 900_000, since_last_seconds=0.002) == 0.001  # large batches: shorter
    assert _next_nap(0.001, 800_000, since_last_seconds=0.001) == 0.001  # ... down to the shortest
    assert _next_nap(None, 1_000_000, since_last_seconds=0.0003) is None  # 1 MB blocks: read as it writes
    assert _next_nap(0.001, 1_000_000, since_last_seconds=0.001) is None
    # writers of lines settle on batches of at least a quarter of the pipe (or of the longest nap's output),
    # never read write by write, and never on a full pipe that would block them
    for rate in (50e6, 300e6, 500e6, 700e6):
        nap: float | None = None
        batches = []
        for _ in range(50):
            drained = min(int(rate * (nap or 0.00002)), 1 << 20)
            batches.append(drained)
            nap = _next_nap(nap, drained, since_last_seconds=nap or 0.00002)
        least = min((1 << 20) // 4, int(rate * 0.004))
        assert all(least <= batch <= (1 << 20) * 7 // 8 for batch in batches[10:]), (rate, batches)


@pytest.mark.anyio
async def test_a_quiet_writer_costs_the_pump_little_memory_and_a_busy_one_is_read_in_large_chunks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The read buffer follows the output: a replica that prints a line keeps a small one (a fixed 1 MiB
    each held 200 MB for 200 idle replicas), one that floods the pipe gets reads of up to the pipe's size."""
    sizes: list[int] = []
    real_readv = os.readv

    def readv(fd: int, buffers: list[bytearray]) -> int:
        sizes.append(len(buffers[0]))
        return real_readv(fd, buffers)

    monkeypatch.setattr(os, "readv", readv)
    for lines, widest in ((1, 64 * 1024), (20 * 16_384, 1 << 20)):  # one line; 20 blocks of 1 MiB
        sizes.clear()
        read_end, write_end = os.pipe()
        fcntl.fcntl(write_end, process_module._F_SETPIPE_SZ, process_module._PIPE_SIZE)  # as a replica's
        os.set_blocking(read_end, False)
        code = (
            "import sys\n"
            f"lines = [b'line %07d %s\\n' % (n, b'x' * 46) for n in range({lines})]\n"
            "for start in range(0, len(lines), 16_384): sys.stdout.buffer.write(b''.join(lines[start:start + 16_384]))\n"
        )
        process = await anyio.open_process([PYTHON, "-c", code], stdout=write_end)
        os.close(write_end)
        stream = LineStream(RotatingLogFile(tmp_path / f"{lines}.log", max_bytes=50_000_000, backups=1))
        with anyio.fail_after(60):
            await pump_pipe(read_end, stream)
            await process.wait()
        os.close(read_end)
        assert (tmp_path / f"{lines}.log").read_bytes().count(b"\n") == lines
        if lines == 1:
            assert max(sizes) < widest, sizes
        else:
            assert max(sizes) == widest, sizes
