"""What ``supervisor run`` prints while it runs: event lines, service output, and on a terminal a live table.

Two reporters share one interface (``say``, ``event``, ``output``, ``pause``, and a ``with`` block):
``PlainReporter`` writes timestamped lines with no control codes (CI logs, pipes, files); ``LiveReporter``
(a terminal) keeps a rich table of the replicas at the bottom of the screen and scrolls the same lines
above it. rich is imported only by ``LiveReporter`` and by coloured ``--logs`` on a terminal.
"""

from __future__ import annotations

import sys
import time
import zlib
from collections.abc import Callable, Collection
from typing import TYPE_CHECKING, Any, TextIO

from .._events import (
    AutoscaleDecided,
    AutoscaleSwitched,
    ControlRequest,
    EndpointsChanged,
    Event,
    Exited,
    Failed,
    GpuNotReleased,
    Marked,
    PhaseEnded,
    PlannerDecided,
    PlannerDone,
    Ready,
    ReplicaAdded,
    ReplicaRemoved,
    Restarting,
    RolloutEnded,
    RolloutStarted,
    RolloutStepped,
    ScaleEnded,
    ScaleStarted,
    Spawned,
    Stopped,
)
from .._units import counted

if TYPE_CHECKING:
    from .._runtime.group import RunningTopology
    from .status import StatusBoard

__all__ = ["EventText", "LiveReporter", "PlainReporter", "is_problem", "stamp"]

#: colours of ``--logs`` prefixes, picked per service by a stable hash of its name
_COLOURS = ("cyan", "magenta", "green", "yellow", "blue", "bright_red", "bright_cyan", "bright_magenta")


_last_stamped = [0.0]  #: the latest time ``stamp`` gave in this process


def stamp(wall_time: float | None = None) -> str:
    """``12:03:07.412``: local wall-clock time, for lines that people match against other logs. Never
    earlier than a stamp given before in this process, so that lines read in order: an event is stamped
    when it happened (a head-start spawn, before the runtime loaded), a line when it is printed, and the
    two may be printed out of that order."""
    when = max(time.time() if wall_time is None else wall_time, _last_stamped[0])
    _last_stamped[0] = when
    return time.strftime("%H:%M:%S", time.localtime(when)) + f".{int(when % 1 * 1000):03d}"


def is_problem(event: Event) -> bool:
    """What ``-q`` still prints: failures, unexpected exits, restarts, kills, GPUs left busy."""
    return (
        isinstance(event, (Failed, Restarting, GpuNotReleased))
        or (isinstance(event, (ScaleEnded, RolloutEnded, EndpointsChanged)) and event.error is not None)
        or (isinstance(event, Exited) and not event.expected)
        or (isinstance(event, Stopped) and event.killed)
    )


class EventText:
    """Events as one line of words each (None: not worth a line); keeps each replica's phases so that its
    ready line says where the time went."""

    def __init__(self) -> None:
        self.phases: dict[str, list[str]] = {}  #: per replica, its startup phases so far ("weights 41.2s")

    def line(self, event: Event) -> str | None:
        if isinstance(event, Spawned):
            self.phases.pop(event.replica, None)  # a restart starts its phases over
            return f"{event.replica}: started, pid {event.pid}"
        if isinstance(event, PhaseEnded):
            self.phases.setdefault(event.replica, []).append(f"{event.phase} {event.seconds:.1f}s")
            return None
        if isinstance(event, Ready):
            phases = self.phases.pop(event.replica, [])
            return f"{event.replica}: ready in {event.seconds:.2f}s" + (f" ({', '.join(phases)})" if phases else "")
        if isinstance(event, Failed):
            return f"{event.replica}: FAILED: {event.reason}"
        if isinstance(event, Restarting):
            when = f"in {event.delay_seconds:.1f}s (restart {event.restarts})"
            return f"{event.replica}: restarting {when}: {event.reason}"
        if isinstance(event, Exited) and not event.expected:
            return f"{event.replica}: exited ({event.reason or event.signal or event.exit_code})"
        if isinstance(event, Stopped) and event.killed:
            return f"{event.replica}: did not stop within its grace, killed"
        if isinstance(event, Marked):
            return f"mark: {event.label}"
        if isinstance(event, (ScaleStarted, ScaleEnded, ReplicaAdded, ReplicaRemoved)):
            return _scale_line(event)
        if isinstance(event, AutoscaleDecided):
            return f"{event.service}: autoscale {event.replicas_before} -> {event.replicas_after}: {event.why}"
        if isinstance(event, (PlannerDecided, PlannerDone)):
            return _planner_line(event)
        if isinstance(event, AutoscaleSwitched):
            return f"{event.service}: autoscale {'resumed' if event.enabled else 'paused'}"
        if isinstance(event, (RolloutStarted, RolloutStepped, RolloutEnded)):
            return _rollout_line(event)
        if isinstance(event, EndpointsChanged):
            if event.error is not None:
                return f"{event.service}: endpoints of {event.source} changed; its templates do not fill: {event.error}"
            follows = {"none": "keeps what it runs", "restart": "rolling restart", "signal": "signalled"}
            return f"{event.service}: endpoints of {event.source} changed ({follows.get(event.action, event.action)})"
        if isinstance(event, ControlRequest):
            what = " ".join([event.op, *(f"{k}={v}" for k, v in event.args.items())])
            who = f" from pid {event.client_pid}" if event.client_pid else ""
            return f"control: {what}{who}" + (f" (refused: {event.error})" if event.error else "")
        if isinstance(event, GpuNotReleased):
            return (
                f"{event.replica}: GPU {event.gpu} still lists pid {event.pid} ({event.process_name or '?'}) "
                f"{event.waited_seconds:.1f}s after teardown"
            )
        return None


def _planner_line(event: PlannerDecided | PlannerDone) -> str:
    if isinstance(event, PlannerDecided):
        moves = ", ".join(
            f"{name} {event.replicas_before.get(name, '?')} -> {n}" for name, n in event.replicas_after.items()
        )
        again = " (again: its follower restarted)" if event.again else ""
        return f"planner decision {event.decision} of {event.source}{again}: {moves or 'nothing'}"
    short = "; ".join(f"{name} {text}" for name, text in event.shortfall.items())
    return f"planner decision {event.decision} done in {event.seconds:.2f}s" + (f", SHORT: {short}" if short else "")


def _scale_line(event: ScaleStarted | ScaleEnded | ReplicaAdded | ReplicaRemoved) -> str:
    if isinstance(event, ScaleStarted):
        return f"{event.service}: scaling from {event.replicas_before} to {counted(event.replicas_after, 'replica')}"
    if isinstance(event, ReplicaAdded):
        where = ", ".join(f"{name} {port}" for name, port in event.ports.items()) or "no ports"
        gpus = f", GPU {','.join(map(str, event.gpus))}" if event.gpus else ""
        return f"{event.replica}: added ({where}{gpus})"
    if isinstance(event, ReplicaRemoved):
        return f"{event.replica}: removed"
    if event.error is not None:
        return f"{event.service}: scale FAILED, {counted(event.replicas, 'replica')} as before: {event.error}"
    return f"{event.service}: scaled to {counted(event.replicas, 'replica')} in {event.seconds:.2f}s"


def _rollout_line(event: RolloutStarted | RolloutStepped | RolloutEnded) -> str:
    if isinstance(event, RolloutStarted):
        spec = " on a new spec" if event.respecified else ""
        return (
            f"{event.service}: rolling restart of {counted(event.replicas, 'replica')}{spec}, "
            f"{event.max_unavailable} at a time, at least {event.min_ready} ready"
        )
    if isinstance(event, RolloutStepped):
        return f"{event.replica}: rolled ({event.step}/{event.of}), ready again in {event.seconds:.2f}s"
    if event.error is not None:
        return f"{event.service}: rolling restart FAILED: {event.error}"
    return f"{event.service}: rolling restart done, {counted(len(event.rolled), 'replica')} in {event.seconds:.2f}s"


class _Reporter:
    """What both reporters share: which events and which output lines get printed."""

    def __init__(
        self, *, quiet: bool, logs: Collection[str] | None, redact: Callable[[str], str], services: dict[str, str]
    ) -> None:
        self.quiet = quiet
        self.logs = logs  #: None: no output; empty: every service's; else these services and replicas
        self.redact = redact
        self.services = services  #: replica name -> service name
        self.text = EventText()

    @property
    def reads_output(self) -> bool:
        """Whether ``output`` wants the replicas' output at all: without it their logs take the fast path."""
        return self.logs is not None

    def wants_output(self, replica: str) -> bool:
        if self.logs is None:
            return False
        return not self.logs or replica in self.logs or self.service_of(replica) in self.logs

    def service_of(self, replica: str) -> str:
        """Its service; a replica a scale added (``w.3``) is not in the table made at the start."""
        found = self.services.get(replica)
        if found is not None:
            return found
        service, _, index = replica.rpartition(".")
        return service if index.isdigit() else replica

    def event_line(self, event: Event) -> str | None:
        line = self.text.line(event)
        if line is None or (self.quiet and not is_problem(event)):
            return None
        return self.redact(line)

    def __enter__(self) -> _Reporter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.pause()

    def follow(self, group: RunningTopology) -> None:
        """Plain lines show no resources: nothing to follow."""

    def pause(self) -> None:
        """Stop drawing (``-- CMD`` owns the terminal from here); lines still print."""


class PlainReporter(_Reporter):
    """Timestamped lines on stderr; service output, prefixed, on stdout; no control codes unless stdout
    is a terminal (then the prefixes are coloured)."""

    def __init__(self, *, err: TextIO | None = None, out: TextIO | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.err, self.out = err, out
        self._colour_console: Any = None
        self._out_is_terminal: bool | None = None  #: asked once, at the first output line

    def say(self, message: str) -> None:
        err = self.err or sys.stderr
        print(f"{stamp()} [supervisor] {self.redact(message)}", file=err, flush=True)

    def event(self, event: Event) -> None:
        line = self.event_line(event)
        if line is not None:
            err = self.err or sys.stderr
            print(f"{stamp(event.wall_time)} [supervisor] {line}", file=err, flush=True)

    def output(self, replica: str, block: bytes) -> None:
        if not self.wants_output(replica):
            return
        out = self.out or sys.stdout
        text = self.redact(block.decode("utf-8", "replace"))
        if self._out_is_terminal is None:
            self._out_is_terminal = out.isatty()
        if self._out_is_terminal:
            if self._colour_console is None:
                from rich.console import Console

                self._colour_console = Console(file=out, highlight=False, markup=False, soft_wrap=True)
            for line in text.splitlines():
                self._colour_console.print(_prefixed(replica, self.service_of(replica), line))
            return
        out.write("".join(f"{replica} | {line}\n" for line in text.splitlines()))
        out.flush()


def _prefixed(replica: str, service: str, line: str) -> Any:
    from rich.text import Text

    colour = _COLOURS[zlib.crc32(service.encode()) % len(_COLOURS)]
    return Text.assemble((f"{replica} | ", f"bold {colour}"), line)


class LiveReporter(_Reporter):
    """A rich ``Live`` table on stderr (a terminal), redrawn a few times a second from a ``StatusBoard``;
    event lines, and service output when it goes to the same terminal, scroll above it."""

    def __init__(
        self, board: StatusBoard, *, refresh_per_second: float = 4.0, console: Any = None, **kwargs: Any
    ) -> None:
        """``console``: a rich Console to draw on instead of stderr (``docs/make_pictures.py`` records one)."""
        super().__init__(**kwargs)
        from rich.console import Console
        from rich.live import Live

        from .console_table import status_table

        self.board = board
        self.console = console if console is not None else Console(stderr=True, highlight=False)
        self._output_here = console is None and sys.stdout.isatty()
        self._out_console: Any = None
        self._live = Live(
            get_renderable=lambda: status_table(board, time.monotonic(), self.console),
            console=self.console,
            refresh_per_second=refresh_per_second,
            redirect_stdout=self._output_here,
            redirect_stderr=True,
            transient=False,
        )
        self._live_on = False

    def __enter__(self) -> LiveReporter:
        self._live.start()
        self._live_on = True
        return self

    def follow(self, group: RunningTopology) -> None:
        """The table's CPU and memory columns read the group's replicas at each draw."""
        self.board.follow_resources(
            lambda: {r.name: None if r.resources is None else r.resources.to_json() for r in group.replicas}
        )

    def pause(self) -> None:
        if self._live_on:
            self._live_on = False
            self._live.stop()

    def say(self, message: str) -> None:
        self.console.print(f"[dim]{stamp()}[/dim] {_escape(self.redact(message))}")

    def event(self, event: Event) -> None:
        self.board.on_event(event)
        line = self.event_line(event)
        if line is not None:
            style = "bold red" if is_problem(event) else ("bold magenta" if isinstance(event, Marked) else "")
            text = _escape(line)
            self.console.print(f"[dim]{stamp(event.wall_time)}[/dim] " + (f"[{style}]{text}[/]" if style else text))

    @property
    def reads_output(self) -> bool:
        return True  # the table shows a loading replica's progress from its output

    def output(self, replica: str, block: bytes) -> None:
        self.board.on_output(replica, block)
        if not self.wants_output(replica):
            return
        text = self.redact(block.decode("utf-8", "replace"))
        if self._output_here:
            for line in text.splitlines():
                self.console.print(_prefixed(replica, self.service_of(replica), line), soft_wrap=True)
        else:
            sys.stdout.write("".join(f"{replica} | {line}\n" for line in text.splitlines()))
            sys.stdout.flush()


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)
