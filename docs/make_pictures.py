"""Render the README's pictures of ``supervisor run`` from real runs, as SVG (rich's export).

    python docs/make_pictures.py            # writes docs/live-status.svg and docs/run-summary.svg
    python docs/make_pictures.py --show     # the same, and prints them as text

It starts the vLLM preset in disaggregated mode (2 prefill + 2 decode servers, tensor parallel 2, behind
the proxy) on a simulated 8x80GB node, with the engine stand-ins (``python -m standins engine-env``) in
place of vLLM, so it runs on any machine. The live status is drawn by the CLI's own reporter and table,
on a recording console, at the moment the first server is past its weights; the summary is the one the
CLI prints at the end, read back from the run's ``summary.json``.
"""

from __future__ import annotations

import io
import os
import sys
import tempfile
import time
from pathlib import Path

import anyio
from rich.console import Console
from rich.text import Text

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # this checkout's supervisor and standins, not an installed copy

import supervisor  # noqa: E402
from standins.engine_env import make_engine_env  # noqa: E402
from supervisor._cli.console import LiveReporter  # noqa: E402
from supervisor._cli.console_table import status_table  # noqa: E402
from supervisor._cli.status import StatusBoard  # noqa: E402
from supervisor._host.gpu_inventory import SimulatedInventory  # noqa: E402
from supervisor._plan.plan import make_plan  # noqa: E402
from supervisor._records.summary import read_summary  # noqa: E402
from supervisor._records.summary_text import render_summary  # noqa: E402
from supervisor._spec.load import load  # noqa: E402
from supervisor._units import counted  # noqa: E402

WIDTH = 168
LOAD_SECONDS = "8"  #: the stand-ins' startup time: long enough to catch them loading


def _show(console: Console) -> None:
    """With ``--show``, also print the picture as plain text (to check it without an SVG viewer)."""
    if "--show" in sys.argv:
        print(console.export_text(clear=False))


def _console() -> Console:
    return Console(
        record=True, width=WIDTH, file=io.StringIO(), force_terminal=True, color_system="truecolor", highlight=False
    )


async def _live_picture(work: Path) -> Path:
    """Run the preset until all are ready; return its run dir. Saves the live status on the way."""
    env_path = make_engine_env(work / "engine-env")
    overrides = {"env_path": str(env_path), "mode": "disagg", "prefill": "2", "decode": "2", "tp": "2"}
    inventory = SimulatedInventory.parse("8x80GB")
    plan = make_plan(load("vllm", overrides=overrides), runs_dir=work / "runs", gpus=inventory)
    console = _console()
    board = StatusBoard(plan)
    services = {r.name: s.name for s in plan.services for r in s.replicas}
    reporter = LiveReporter(board, console=console, quiet=False, logs=None, redact=str, services=services)
    replicas = sum(len(s.replicas) for s in plan.services)
    logs = plan.run_dir.relative_to(work) / "logs"  # not the temporary directory's name
    reporter.say(f"run {plan.run_id}: {counted(replicas, 'replica')}, logs in {logs}")

    def past_weights() -> bool:
        return any(row.loading and row.phase_index >= 2 for row in board.rows())

    async with anyio.create_task_group() as tasks:

        async def snapshot() -> None:
            deadline = time.monotonic() + 120
            while not past_weights() and time.monotonic() < deadline:
                await anyio.sleep(0.02)
            console.print(status_table(board, time.monotonic(), console))
            _show(console)
            console.save_svg(str(HERE / "live-status.svg"), title="supervisor run vllm (loading)")

        tasks.start_soon(snapshot)
        async with supervisor.launch(plan, on_event=reporter.event, on_output=reporter.output, gpus=inventory):
            pass
    return plan.run_dir


def _summary_picture(run_dir: Path) -> None:
    console = _console()
    for line in render_summary(read_summary(run_dir)):
        style = "bold" if line.startswith(("summary", "critical chain")) else ""
        console.print(Text(line, style=style))
    _show(console)
    console.save_svg(str(HERE / "run-summary.svg"), title="supervisor run vllm (summary)")


def main() -> None:
    os.environ["STANDIN_LOAD_SECONDS"] = LOAD_SECONDS
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = anyio.run(_live_picture, Path(tmp))
        _summary_picture(run_dir)
    print(f"wrote {HERE / 'live-status.svg'} and {HERE / 'run-summary.svg'}")


if __name__ == "__main__":
    main()
