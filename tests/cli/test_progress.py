"""Loading progress read from log lines, and the status rows the live table draws (no terminal needed)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import supervisor as sv
from supervisor._cli.progress import find_progress, parse_progress
from supervisor._cli.status import StatusBoard

from ..helpers import PYTHON


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("Loading safetensors checkpoint shards:  38% Completed | 3/8 [00:02<00:03,  1.50it/s]", 0.38),  # vLLM
        ("Loading safetensors checkpoint shards: 100% Completed | 8/8 [00:05<00:00,  1.52it/s]", 1.0),
        ("Capturing CUDA graph shapes:  45%|████▌     | 30/67 [00:05<00:06,  5.60it/s]", 0.45),  # tqdm
        ("  0%|          | 0/67 [00:00<?, ?it/s]", 0.0),
        ("loading 3/8 shards", 0.375),
        ("[2026-11-28 12:00:01 TP0] Load weight end. type=Qwen3ForCausalLM, dtype=torch.bfloat16, 12.5%", 0.125),
        ("INFO 11-28 12:00:01 [loader.py:40] Loading weights: 2 / 4", 0.5),
        ('INFO:     127.0.0.1:53422 - "GET /v1/models HTTP/1.1" 200 OK', None),  # a URL path is no counter
        ("2026/11/28 12:00:01 listening on http://127.0.0.1:8000/1", None),  # nor is a date or a port
        ("throughput 150% of baseline", None),  # over 100: not a progress
        ("9/8 retries", None),  # more done than total: not a progress
        ("Starting to load model Qwen/Qwen3-0.6B...", None),
    ],
)
def test_progress_from_real_looking_lines(line: str, expected: float | None) -> None:
    found = parse_progress(line)
    assert found == pytest.approx(expected) if expected is not None else found is None


def test_the_last_progress_line_of_a_block_counts_and_says_where_it_starts() -> None:
    """tqdm redraws come as many lines in one block (the pump splits ``\\r``): the newest one wins."""
    block = "Capturing CUDA graph shapes:  10%|█| 7/67\nCapturing CUDA graph shapes:  45%|████▌| 30/67\ndone\n"
    assert find_progress(block) == (pytest.approx(0.45), block.index("Capturing CUDA graph shapes:  45%"))
    assert find_progress("nothing\nto see\n") is None


def _board(tmp_path: Path, *, phases: dict[str, str] | None = None, timeout: str = "100s") -> StatusBoard:
    service = sv.Service(
        name="engine",
        command=[PYTHON, "-c", "pass"],
        ports=["http", "nixl"],
        ready=sv.Probe(sv.LogCheck("serving"), timeout_seconds=timeout),
        phases=phases or {},
    )
    plan = sv.make_plan(sv.Topology(name="t", services=[service]), runs_dir=tmp_path / "runs")
    return StatusBoard(plan)


def test_a_loading_row_shows_its_log_progress_and_time_against_the_deadline(tmp_path: Path) -> None:
    board = _board(tmp_path)
    (row,) = board.rows()
    assert row.state == "waiting" and row.progress(0.0) is None and row.ports.split()[1].startswith("nixl=")
    board.on_event(sv.Spawned(replica="engine", service="engine", pid=42, monotonic=100.0))
    progress = board.rows()[0].progress(110.0)
    assert progress is not None and progress.fraction == pytest.approx(0.1)  # nothing printed: time against 100s
    assert progress.label == "10% of deadline · 10s of 1m40s"
    board.on_output("engine", b"Loading safetensors checkpoint shards:  38% Completed | 3/8\n")
    progress = board.rows()[0].progress(125.0)
    assert progress is not None and progress.fraction == pytest.approx(0.38)
    assert progress.label == "38% · 25s of 1m40s deadline (25%)"
    board.on_event(sv.Ready(replica="engine", service="engine", pid=42, seconds=30.0, monotonic=130.0))
    board.on_output("engine", b"GET / 200 100%\n")  # once ready, output is not read for progress
    row = board.rows()[0]
    assert row.state == "ready" and row.progress(140.0) is None and row.ready_seconds == 30.0
    assert row.uptime(140.0) == pytest.approx(40.0) and board.counts() == (1, 1)


def test_phases_scale_the_log_progress_and_a_new_phase_starts_it_over(tmp_path: Path) -> None:
    """With phases, the bar is (phase k-1 + progress within it) / n. A block's progress counts for a
    phase begun in the same block only when the progress line comes after the phase's line."""
    board = _board(tmp_path, phases={"weights": "Loading weights", "graphs": "Capturing CUDA graph"})
    board.on_event(sv.Spawned(replica="engine", service="engine", pid=7, monotonic=0.0))

    def feed(block: str, phase: str | None = None) -> None:
        board.on_output("engine", block.encode())  # the CLI's subscriber reads a block before the phase watch
        if phase is not None:
            board.on_event(sv.PhaseStarted(replica="engine", service="engine", phase=phase, seconds=1.0))

    def shown() -> str:
        progress = board.rows()[0].progress(1.0)
        assert progress is not None
        return progress.label.split(" · ")[0] + " · " + progress.label.split(" · ")[1]

    feed("Loading weights\nshards 50%\n", "weights")
    assert shown() == "25% · weights 1/2 50%"
    feed("shards 100%\nCapturing CUDA graphs\n", "graphs")  # the 100% was the weights' end
    assert shown() == "50% · graphs 2/2"
    feed("Capturing CUDA graph shapes:  45%|████▌     | 30/67\n")
    assert shown() == "72% · graphs 2/2 45%"
    board.on_event(
        sv.Restarting(replica="engine", service="engine", reason="x", delay_seconds=0.0, attempt=1, restarts=1)
    )
    board.on_event(sv.Spawned(replica="engine", service="engine", pid=8, monotonic=2.0))
    row = board.rows()[0]
    assert row.restarts == 1 and row.phase_index == -1 and row.log_fraction is None and row.pid == 8


def test_rich_is_not_imported_until_a_terminal_needs_it() -> None:
    """The CLI and the plain reporter work without importing rich (start-up time, pipes and CI)."""
    code = "import sys, supervisor._cli.main, supervisor._cli.console, supervisor._cli.status;sys.exit('rich' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0


def test_an_80_column_terminal_still_shows_the_bar_and_its_percentage(tmp_path: Path) -> None:
    """The progress words give way on a narrow terminal, not the percentage; no GPU column without GPUs."""
    io = pytest.importorskip("io")
    console_module = pytest.importorskip("rich.console")
    from supervisor._cli.console_table import status_table

    board = _board(tmp_path, phases={"weights": "Loading weights", "graphs": "Capturing CUDA graph"})
    board.on_event(sv.Spawned(replica="engine", service="engine", pid=7, monotonic=0.0))
    board.on_output("engine", b"Loading weights\nshards 3/8\n")
    board.on_event(sv.PhaseStarted(replica="engine", service="engine", phase="weights", seconds=1.0))
    out = io.StringIO()
    console = console_module.Console(file=out, width=80, force_terminal=False)
    console.print(status_table(board, 12.0, console))
    lines = out.getvalue().splitlines()
    row = next(line for line in lines if line.lstrip().startswith("engine"))
    assert "19%" in row and "loading" in row and max(map(len, lines)) <= 80, out.getvalue()
    assert "gpus" not in out.getvalue()


def test_the_table_shows_cpu_and_memory_once_sampled_and_gpu_memory_where_read(tmp_path: Path) -> None:
    """No resource columns before the first sample; then CPU and MEM from the sample, GPU MEM only when
    a GPU inventory gave a number."""
    io = pytest.importorskip("io")
    console_module = pytest.importorskip("rich.console")
    from supervisor._cli.console_table import status_table

    board = _board(tmp_path)
    board.on_event(sv.Spawned(replica="engine", service="engine", pid=7, monotonic=0.0))

    def drawn() -> str:
        out = io.StringIO()
        console_module.Console(file=out, width=160, force_terminal=False).print(status_table(board, 3.0))
        return out.getvalue()

    assert "mem" not in drawn()
    sample: dict[str, object] = {"cpu_percent": 93.4, "memory_bytes": 3 * 1024**3, "gpu_memory_bytes": None}
    board.follow_resources(lambda: {"engine": sample})
    table = drawn()
    assert "cpu" in table and "mem" in table and "gpu mem" not in table
    assert "93%" in table and "3.0 GiB" in table
    sample["gpu_memory_bytes"] = 71 * 1024**3
    assert "gpu mem" in drawn() and "71.0 GiB" in drawn()


def test_a_plain_run_without_logs_reads_no_output_so_its_logs_take_the_fast_path(tmp_path: Path) -> None:
    """``supervisor run`` passes its reporter's ``output`` as ``on_output`` only when it reads it."""
    from supervisor._cli.console import LiveReporter, PlainReporter

    options: dict[str, Any] = {"quiet": False, "redact": str, "services": {"w.0": "w"}}
    assert not PlainReporter(logs=None, **options).reads_output
    assert PlainReporter(logs=[], **options).reads_output  # --logs
    assert PlainReporter(logs=["w"], **options).reads_output  # --logs w
    service = sv.Service(name="w", command=["true"])
    plan = sv.make_plan(sv.Topology(name="t", services=[service]), runs_dir=tmp_path / "runs")
    assert LiveReporter(StatusBoard(plan), logs=None, **options).reads_output  # the table shows progress
