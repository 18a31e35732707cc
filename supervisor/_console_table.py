"""The live status table (rich): one row per replica, a progress bar for those still loading.

Kept apart from ``_console`` so that the README's pictures (``docs/make_pictures.py``) draw exactly what
a terminal shows.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich import box
from rich.console import Group, JustifyMethod, RenderableType
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from ._status import ReplicaStatus, duration

if TYPE_CHECKING:
    from ._status import StatusBoard

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
_PROGRESS_MIN_WIDTH = _BAR_WIDTH + 6  #: the bar and its percentage at least


def _progress_cell(row: ReplicaStatus, now: float) -> RenderableType:
    progress = row.progress(now)
    if progress is None:
        if row.state in ("exited", "failed") and row.exit_text:
            return Text(f"last exit: {row.exit_text}", style="red")
        return Text("")
    bar = ProgressBar(total=100.0, completed=progress.fraction * 100.0, width=_BAR_WIDTH, animation_time=0.0)
    grid = Table.grid(padding=(0, 1))
    grid.add_column(no_wrap=True)
    grid.add_column(no_wrap=True, overflow="ellipsis")
    grid.add_row(bar, Text(progress.label))
    return grid


def status_table(board: StatusBoard, now: float) -> RenderableType:
    """The table as of ``now`` (monotonic); rows are copies, so drawing never races the event loop."""
    rows = board.rows()
    ready = sum(row.state == "ready" for row in rows)
    table = Table(
        title=f"{board.title} · {ready}/{len(rows)} ready · {duration(now - board.started)}",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        expand=False,
        header_style="bold",
    )
    uses_gpus = any(row.gpus for row in rows)  # no GPU column for a topology without GPUs
    for column in ("replica", "state", "pid", "ports", "gpus", "uptime", "restarts", "ready in", "progress"):
        if column == "gpus" and not uses_gpus:
            continue
        justify: JustifyMethod = "right" if column in ("pid", "restarts") else "left"
        if column == "progress":  # on a narrow terminal its words give way first (ending in "…"), not the bar
            table.add_column(column, min_width=_PROGRESS_MIN_WIDTH)
        else:
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
            _progress_cell(row, now),
        ]
        table.add_row(*cells)
    return Group(table)
