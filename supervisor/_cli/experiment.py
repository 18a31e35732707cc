"""``supervisor sweep``, ``supervisor ab`` and ``supervisor report``: experiments over configurations of a
topology (``supervisor._experiment``). The sweep's id is the first line on stdout, progress goes to stderr,
and the report to stdout at the end. Exit codes: 0 every trial ok, 1 a trial failed, 2 bad input."""

from __future__ import annotations

import functools
import json
import signal
from collections.abc import Callable
from typing import TYPE_CHECKING

from .._errors import ConfigError
from .context import Invocation
from .table import parse_overrides

if TYPE_CHECKING:
    from .._experiment.sweep import SweepResult

__all__ = ["ab_command", "report_command", "sweep_command"]

_started: list[str] = []  #: the id of the sweep this command started (or resumed), once it has one


def _resumable(command: Callable[[Invocation], int]) -> Callable[[Invocation], int]:
    """Ctrl-C ends the current trial (its topology torn down, no row for it) and says how to go on."""

    @functools.wraps(command)
    def interruptible(call: Invocation) -> int:
        _started.clear()
        try:
            return command(call)
        except KeyboardInterrupt:
            if _started:
                call.voice.error(f"interrupted: the trials not done run with: supervisor sweep --resume {_started[-1]}")
            return 128 + signal.SIGINT

    return interruptible


@_resumable
def sweep_command(call: Invocation) -> int:
    import anyio

    from .._experiment.arms import parse_vary, parse_warmup
    from .._experiment.sweep import sweep

    args = call.args
    if args.resume is not None:
        if args.file or args.vary or call.command or args.warmup or args.slurm:
            raise ConfigError(
                "--resume SWEEP runs what the sweep recorded (on Slurm if it was): no FILE, --vary, --warmup, "
                "--slurm or -- CMD"
            )
        result = anyio.run(
            lambda: sweep(
                resume=args.resume,
                runs_dir=args.runs_dir,
                gpus=args.gpus,
                stop_stale=args.stop_stale,
                say=call.voice.say,
                on_start=_print_id,
            )
        )
        return _finish(result)
    if not args.file:
        raise ConfigError("sweep: a topology FILE is needed (or --resume SWEEP)")
    if not call.command:
        raise ConfigError("sweep: no client command: supervisor sweep FILE --vary K=V1,V2 -- CMD ARGS")
    vary, warmup = parse_vary(args.vary), parse_warmup(args.warmup)
    result = anyio.run(
        lambda: sweep(
            args.file, command=call.command, vary=vary, sets=parse_overrides(args.overrides), trials=args.trials,
            order=args.order, seed=args.seed, runs_dir=args.runs_dir, fail_fast=args.fail_fast, warmup=warmup,
            gpus=args.gpus, stop_stale=args.stop_stale, slurm=args.slurm, say=call.voice.say, on_start=_print_id,
        )
    )  # fmt: skip
    return _finish(result)


@_resumable
def ab_command(call: Invocation) -> int:
    import anyio

    from .._experiment.arms import parse_warmup
    from .._experiment.sweep import ab

    args = call.args
    if not call.command:
        raise ConfigError("ab: no client command: supervisor ab A.yaml B.yaml -- CMD ARGS")
    given_sets = args.a or args.b
    if len(args.files) == 2 and given_sets:
        raise ConfigError("ab: two files, or one file with --a and --b, not both")
    if len(args.files) == 1 and not given_sets:
        raise ConfigError("ab FILE: say what each arm sets: --a KEY=VALUE --b KEY=VALUE")
    if len(args.files) > 2:
        raise ConfigError("ab: two files (A.yaml B.yaml), or one with --a and --b")
    second = args.files[1] if len(args.files) == 2 else None
    result = anyio.run(
        lambda: ab(
            args.files[0], second, command=call.command, a_sets=parse_overrides(args.a), b_sets=parse_overrides(args.b),
            sets=parse_overrides(args.overrides), trials=args.trials, order=args.order, seed=args.seed,
            runs_dir=args.runs_dir, fail_fast=args.fail_fast, warmup=parse_warmup(args.warmup), gpus=args.gpus,
            stop_stale=args.stop_stale, slurm=args.slurm, say=call.voice.say, on_start=_print_id,
        )
    )  # fmt: skip
    return _finish(result)


def report_command(call: Invocation) -> int:
    from .._experiment.sweep import read_sweep

    result = read_sweep(call.args.sweep, call.args.runs_dir)
    if call.args.figure and not call.args.plot:
        raise ConfigError("--figure chooses what --plot FILE draws: give --plot too")
    if call.args.plot:
        charts = result.write_plot(call.args.plot, call.args.figure)
        call.voice.say(f"wrote {call.args.plot}: {len(charts)} charts ({', '.join(charts)})")
    if call.args.json:
        payload = {"sweep_id": result.sweep_id, "path": str(result.path), "planned": result.planned, **result.report}
        print(json.dumps({**payload, "rows": result.rows}, indent=2))
    else:
        print(result.report_text())
    return 0


def _print_id(sweep_id: str) -> None:
    _started.append(sweep_id)
    print(sweep_id, flush=True)  # the first line: what --resume and report take


def _finish(result: SweepResult) -> int:
    print(result.report_text(), flush=True)
    missing = result.planned - len(result.rows)
    if missing:
        print(f"{missing} trials not run: supervisor sweep --resume {result.sweep_id}", flush=True)
    return 1 if result.failed or missing else 0
