"""The live status table (rich): one row per replica, a progress bar for those still loading.

Kept apart from ``_cli.console`` so that the README's pictures (``docs/make_pictures.py``) draw exactly what
a terminal shows.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich import box
from rich.console import Console, JustifyMethod, RenderableType
from rich.measure import Measurement
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from .resources_text import resource_cells
from .status import ReplicaStatus, duration

if TYPE_CHECKING:
    from .status import StatusBoard

__all__ = ["status_table"]

_STATE_STYLES = {
    "waiting": "dim",
    "loading": "yellow",
    "ready": "bold green",
    "unready": "bold yellow",
    "restarting": "bold magenta",
    "stopping": "cyan",
    "stopped": "dim",
    "done": "green",
    "exited": "bold red",
    "failed": "bold red",
}
_BAR_WIDTH = 16


def _progress_cell(row: ReplicaStatus, now: float, words: int | None, bar_width: int) -> RenderableType:
    """The bar, its percentage, and at most ``words`` characters of the rest (None: all of it)."""
    progress = row.progress(now)
    if progress is None:
        if row.state in ("exited", "failed") and row.exit_text:
            return Text(f"last exit: {row.exit_text}", style="red")
        return Text("")
    percent, _, rest = progress.label.partition(" · ")
    label = Text(percent)
    if rest and (words is None or words > 4):
        tail = Text(" · " + rest)
        if words is not None:
            tail.truncate(words, overflow="ellipsis")
        label.append_text(tail)
    bar = ProgressBar(total=100.0, completed=progress.fraction * 100.0, width=bar_width, animation_time=0.0)
    grid = Table.grid(padding=(0, 1))
    grid.add_column(no_wrap=True)
    grid.add_column(no_wrap=True)
    grid.add_row(bar, label)
    return grid


def status_table(board: StatusBoard, now: float, console: Console | None = None) -> RenderableType:
    """The table as of ``now`` (monotonic); rows are copies, so drawing never races the event loop.

    With ``console``, the words after each percentage are cut to what its width leaves, so a narrow
    terminal still shows every column, each bar and its percentage."""
    rows = board.rows()
    if console is None:
        return _table(board, rows, now, None, _BAR_WIDTH)
    for bar_width in (_BAR_WIDTH, _BAR_WIDTH // 2):
        bare = _table(board, rows, now, 0, bar_width)
        measured = Measurement.get(console, console.options.update(width=1 << 16), bare).maximum
        room = console.width - measured - 4  # rich's measure of a table runs a few columns short
        if room >= 0:
            break
    return _table(board, rows, now, max(room, 0), bar_width)


def _table(board: StatusBoard, rows: list[ReplicaStatus], now: float, words: int | None, bar_width: int) -> Table:
    ready = sum(row.state == "ready" for row in rows)
    table = Table(
        title=f"{board.title} · {ready}/{len(rows)} ready · {duration(now - board.started)}",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        collapse_padding=True,
        expand=False,
        header_style="bold",
    )
    uses_gpus = any(row.gpus for row in rows)  # no GPU column for a topology without GPUs
    sampled = any(row.resources is not None for row in rows)  # no resource columns before the first sample
    gpu_sampled = sampled and any((row.resources or {}).get("gpu_memory_bytes") is not None for row in rows)
    columns = ["replica", "state", "pid", "ports", "gpus", "up", "restarts", "ready", "cpu", "mem", "gpu mem"]
    shown = {"gpus": uses_gpus, "cpu": sampled, "mem": sampled, "gpu mem": gpu_sampled}
    for column in [*columns, "progress"]:
        if shown.get(column, True):
            justify: JustifyMethod = "right" if column in ("pid", "restarts", "cpu", "mem", "gpu mem") else "left"
            table.add_column(column, no_wrap=True, justify=justify)
    for row in rows:
        uptime = row.uptime(now)
        cells: list[RenderableType] = [
            row.name,
            Text(row.state, style=_STATE_STYLES.get(row.state, "")),
            str(row.pid) if row.pid is not None else "-",
            row.ports or "-",
        ]
        if uses_gpus:
            cells.append(",".join(map(str, row.gpus)) or "-")
        cells += [
            duration(uptime) if uptime is not None else "-",
            str(row.restarts),
            f"{row.ready_seconds:.2f}s" if row.ready_seconds is not None else "-",
        ]
        if sampled:
            cpu, memory, gpu = resource_cells(row.resources)
            cells += [cpu, memory, gpu] if gpu_sampled else [cpu, memory]
        cells.append(_progress_cell(row, now, words, bar_width))
        table.add_row(*cells)
    return table
