"""``supervisor status | restart | scale RUN ...`` and the socket half of ``supervisor stop``: commands sent
to a live run through its control socket (``_control.protocol``), with blocking sockets: nothing of the
runtime is loaded. The command table names these; errors the run reports come back as
``ControlError`` (exit 1), an unknown run as ``UnknownRun`` (exit 2).
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._control.protocol import ProtocolError, check_reply, request_blocking
from .._errors import ControlError
from .._units import counted
from .context import reader_may_leave
from .resources_text import RESOURCE_HEADERS, resource_cells
from .table import parse_overrides

if TYPE_CHECKING:
    import psutil

    from .context import Invocation

__all__ = ["autoscale_command", "restart_command", "scale_command", "status_command", "stop_through_socket"]

EXIT_OK = 0
_STATUS_TIMEOUT_SECONDS = 30.0


def _locate(run: str) -> tuple[str, Path, Path]:
    from .._control.attach import locate_socket

    return locate_socket(run)


def _ask(run_id: str, path: Path, op: str, *, timeout_seconds: float | None = None, **fields: Any) -> dict[str, Any]:
    """One request; ``ControlError`` with the run's own message when it refuses or cannot be reached,
    ``IncompatibleVersion`` when it speaks a newer protocol only."""
    try:
        reply = check_reply(request_blocking(path, op, timeout_seconds=timeout_seconds, **fields), run_id)
    except FileNotFoundError:
        from .._control.attach import no_socket_reason

        raise ControlError(no_socket_reason(run_id, path)) from None
    except (OSError, ProtocolError) as exc:
        raise ControlError(f"run {run_id}: {op}: {getattr(exc, 'strerror', None) or exc}") from None
    if not reply.get("ok"):
        raise ControlError(f"run {run_id}: {op}: {reply.get('error', 'refused')}")
    return reply


# ----- status ------------------------------------------------------------------------------------------
@reader_may_leave
def status_command(call: Invocation) -> int:
    args = call.args
    run_id, _, path = _locate(args.run)
    status = _ask(run_id, path, "status", timeout_seconds=_STATUS_TIMEOUT_SECONDS)["status"]
    if args.json:
        print(json.dumps(status, indent=2))
        return EXIT_OK
    ready = status.get("ready_seconds")
    ready_text = f", all ready in {ready:.2f}s" if isinstance(ready, (int, float)) else ""
    containment = status.get("containment")  # a supervisor from before containment sends none
    contained = f", containment {containment}" if isinstance(containment, str) else ""
    print(
        f"run {status['run_id']} ({status['name']}): {status['phase']}, supervisor pid {status['supervisor_pid']}"
        f"{ready_text}{contained}"
    )
    rows = [["REPLICA", "STATE", "PID", "PORTS", "URL", "RESTARTS", "READY", "GPUS", *RESOURCE_HEADERS]]
    for service in status["services"].values():
        for r in service["replicas"]:
            ports = " ".join(f"{k}={v}" for k, v in r["ports"].items()) or "-"
            seconds = r.get("ready_seconds")
            rows.append(
                [r["name"], r["state"], str(r["pid"] or "-"), ports, r["url"] or "-", str(r["restarts"]),
                 f"{seconds:.2f}s" if isinstance(seconds, (int, float)) else "-",
                 ",".join(map(str, r["gpus"])) or "-", *resource_cells(r.get("resources"))]
            )  # fmt: skip
    _print_table(rows)
    routes = [["SERVICE", "API", "URL"]]
    routes += [
        [name, route, url]
        for name, service in status["services"].items()
        for route, url in (service.get("api") or {}).items()
    ]
    if len(routes) > 1:  # an older run sends no api
        print()
        _print_table(routes)
    _print_autoscale(status.get("autoscale") or {})  # an older run sends none
    _print_planner(status.get("planner") or {})
    return EXIT_OK


def _print_autoscale(services: dict[str, Any]) -> None:
    if not services:
        return
    rows = [["SERVICE", "AUTOSCALE", "BOUNDS", "METRIC", "VALUE", "WANTED", "LAST", "REFUSED"]]
    for name, state in services.items():
        last, refused = state.get("last"), state.get("refused")
        value = state.get("value")
        rows.append(
            [name, "on" if state.get("enabled") else "off", f"{state.get('min')}-{state.get('max')}",
             state.get("metric") or "policy", "-" if value is None else f"{value:g}", str(state.get("wanted") or "-"),
             f"{last['from']} -> {last['to']}: {last['why']}" if last else "-",
             f"{refused['to']}: {refused['why']}" if refused else "-"]
        )  # fmt: skip
    print()
    _print_table(rows)


def _print_planner(last: dict[str, Any]) -> None:
    """The last outside planner decision: what it asked, what the run has now, and any shortfall."""
    if not last:
        return
    before, after = last.get("from") or {}, last.get("to") or {}
    moves = ", ".join(f"{name} {before.get(name, '?')} -> {count}" for name, count in after.items()) or "nothing"
    print(f"\nplanner decision {last.get('decision')} ({last.get('source')}): {moves}", end="")
    if last.get("under_way"):
        print(": under way")
        return
    print(f": done in {last.get('seconds') or 0:.2f}s")
    for name, text in (last.get("shortfall") or {}).items():
        print(f"  shortfall: {name} {text}")


def _print_table(rows: list[list[str]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


# ----- restart and scale -------------------------------------------------------------------------------
@reader_may_leave
def restart_command(call: Invocation) -> int:
    args = call.args
    run_id, _, path = _locate(args.run)
    started = time.monotonic()
    if not args.rolling:
        if args.max_unavailable is not None or args.min_ready is not None or args.overrides:
            raise ControlError("--max-unavailable, --min-ready and --set go with --rolling")
        print(f"run {run_id}: restarting {args.service}", file=sys.stderr, flush=True)
        _interruptible(run_id, "restart", lambda: _ask(run_id, path, "restart", name=args.service))
        print(f"run {run_id}: {args.service} restarted and ready in {time.monotonic() - started:.2f}s")
        return EXIT_OK
    fields: dict[str, Any] = {"service": args.service}
    if args.max_unavailable is not None:
        fields["max_unavailable"] = args.max_unavailable
    if args.min_ready is not None:
        fields["min_ready"] = args.min_ready
    if args.overrides:
        fields["overrides"] = parse_overrides(args.overrides)
    print(f"run {run_id}: rolling restart of {args.service}", file=sys.stderr, flush=True)
    reply = _interruptible(run_id, "rolling restart", lambda: _ask(run_id, path, "rolling_restart", **fields))
    _print_result(reply)
    print(f"run {run_id}: {args.service} rolled in {time.monotonic() - started:.2f}s")
    return EXIT_OK


@reader_may_leave
def scale_command(call: Invocation) -> int:
    args = call.args
    run_id, _, path = _locate(args.run)
    started = time.monotonic()
    print(f"run {run_id}: scaling {args.service} to {args.replicas}", file=sys.stderr, flush=True)
    reply = _interruptible(
        run_id, "scale", lambda: _ask(run_id, path, "scale", service=args.service, replicas=args.replicas)
    )
    _print_result(reply)
    print(f"run {run_id}: {args.service} has {counted(args.replicas, 'replica')} ({time.monotonic() - started:.2f}s)")
    return EXIT_OK


@reader_may_leave
def autoscale_command(call: Invocation) -> int:
    args = call.args
    run_id, _, path = _locate(args.run)
    enabled = args.switch == "on"
    _ask(run_id, path, "autoscale", service=args.service, enabled=enabled)
    print(f"run {run_id}: autoscale of {args.service} {'resumed' if enabled else 'paused'}")
    return EXIT_OK


def _interruptible(run_id: str, what: str, call: Any) -> dict[str, Any]:
    """The operation is the run's once asked: Ctrl-C ends our wait, not the operation."""
    try:
        result: dict[str, Any] = call()
    except KeyboardInterrupt:
        raise ControlError(
            f"run {run_id}: stopped waiting; the {what} goes on in the run (supervisor status {run_id})"
        ) from None
    return result


def _print_result(reply: dict[str, Any]) -> None:
    if reply.get("result") is not None:
        print(json.dumps(reply["result"], indent=2))


# ----- stop --------------------------------------------------------------------------------------------
def stop_through_socket(
    path: Path, supervisor: psutil.Process | None, *, timeout_seconds: float, wait_seconds: float
) -> float | None:
    """Ask a live run to stop itself (its own orderly teardown; the answer comes once it is over, within
    ``timeout_seconds``) and wait for its supervisor to exit; the seconds it took, or None when the socket
    could not be used or the run did not answer in time (the caller falls back on signals)."""
    import psutil

    started = time.monotonic()
    try:
        reply = request_blocking(path, "stop", timeout_seconds=timeout_seconds)
    except (OSError, ProtocolError):
        return None
    if not reply.get("ok"):
        return None
    if supervisor is not None:
        with contextlib.suppress(psutil.Error):  # a timeout too: the caller's check finds anything left
            supervisor.wait(timeout=wait_seconds)
    return time.monotonic() - started
