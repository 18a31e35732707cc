"""The run summary as plain text, for the end of ``supervisor run``: a short table of replicas (state, time
to ready with its phases, restarts, exits, teardown), then the critical chain. No colour, no control codes:
it reads the same in a terminal, a pipe and a CI log. Pure: a ``Summary`` in, lines out.
"""

from __future__ import annotations

from collections.abc import Sequence

from .schema import ChainLink, ExitEntry, OperationOutcome, ReplicaOutcome, Summary

__all__ = ["render_chain", "render_operations", "render_summary", "replica_problems"]


def render_summary(summary: Summary, *, quiet: bool = False) -> list[str]:
    """Every replica (those a scale removed marked so, with when), the scales and rollouts, and the
    critical chain; with ``quiet``, only the replicas that had a problem and the operations that failed
    (none: no lines at all)."""
    rows = [(name, r) for name, r in summary.replicas.items() if not quiet or replica_problems(r)]
    operations = render_operations(summary.operations, quiet=quiet)
    if quiet and not rows and not operations:
        return []
    facts = [f"all ready in {_seconds(summary.ready_seconds)}"] if summary.ready_seconds is not None else []
    if summary.teardown_seconds is not None:
        facts.append(f"teardown {_seconds(summary.teardown_seconds)}")
    if quiet:
        facts.append(f"{len(rows)} of {len(summary.replicas)} replicas had problems")
    head = f"summary (run {summary.outcome})" + (": " + ", ".join(facts) if facts else "")
    table: list[tuple[str, ...]] = [("replica", "state", "ready", "restarts", "exit", "teardown", "phases")]
    table += [
        (
            name,
            r.state if r.removed_at_seconds is None else f"removed @{_seconds(r.removed_at_seconds)}",
            _seconds(r.ready_seconds),
            str(r.restarts),
            _exits(r.exits),
            _seconds(r.stop_seconds) + (" killed" if r.killed else ""),
            ", ".join(f"{p.name} {_seconds(p.seconds)}" + ("" if p.finished else "...") for p in r.phases),
        )
        for name, r in rows
    ]
    if not any(r.phases for _, r in rows):
        table = [row[:-1] for row in table]
    lines = [head, *(_columns(table) if rows or not quiet else []), *operations]
    if not quiet:
        lines += render_chain(summary.critical_chain, all_ready=summary.ready_seconds is not None)
    return lines


def render_operations(operations: Sequence[OperationOutcome], *, quiet: bool = False) -> list[str]:
    """``operations:`` then one line per scale or rolling restart, in order: when it began, what it did,
    how long it took or why it failed; with ``quiet``, only the failed ones."""
    shown = [o for o in operations if not quiet or o.error is not None]
    if not shown:
        return []
    rows = [(f"@{_seconds(o.at_seconds)}", _operation(o)) for o in shown]
    return ["operations:", *_columns(rows)]


def _operation(operation: OperationOutcome) -> str:
    if operation.kind == "scale":
        what = f"scale {operation.service} {_count(operation.replicas_before)} -> {_count(operation.replicas_after)}"
        done = [f"added {', '.join(operation.added)}"] if operation.added else []
        done += [f"removed {', '.join(operation.removed)}"] if operation.removed else []
    elif operation.kind == "autoscale":
        to = _count(operation.replicas_after)
        what = f"autoscale {operation.service} {_count(operation.replicas_before)} -> {to}"
        done = [operation.reason] if operation.reason else []
    elif operation.kind == "planner":
        to = _count(operation.replicas_after)
        what = f"planner {operation.service} {_count(operation.replicas_before)} -> {to}"
        done = [operation.reason] if operation.reason else []
    else:
        what = f"rolling restart {operation.service}"
        done = [f"rolled {', '.join(operation.rolled)}"] if operation.rolled else []
        done += [f"rolled back {', '.join(operation.rolled_back)}"] if operation.rolled_back else []
        done += [f"left failed {', '.join(operation.left_failed)}"] if operation.left_failed else []
    if operation.seconds is None:
        done.append("under way")
    else:
        done.append(_seconds(operation.seconds))
    if operation.error is not None:
        done.append(f"{'short' if operation.kind == 'planner' else 'failed'}: {operation.error}")
    return f"{what}: {'; '.join(done)}"


def _count(value: int | None) -> str:
    return "?" if value is None else str(value)


def render_chain(chain: Sequence[ChainLink], *, all_ready: bool = True) -> list[str]:
    """``critical chain:`` then one line per link, first start first: ``@start +time to ready``, and what it
    waited for (like ``systemd-analyze critical-chain``, read top-down). Without ``all_ready`` (the start
    failed or was cut short) it is the chain to the service that got ready last, and says so."""
    if not chain:
        return []
    rows = [
        (
            link.service,
            f"@{_seconds(link.started_at_seconds)}",
            f"+{_seconds(link.ready_seconds)}",
            f"after {link.gated_by} {link.condition}" if link.gated_by else "",
        )
        for link in chain
    ]
    title = "critical chain:" if all_ready else "critical chain (not all ready; up to the last ready service):"
    return [title, *_columns(rows)]


def replica_problems(replica: ReplicaOutcome) -> list[str]:
    """What went wrong with one replica: a failure, restarts, an unexpected exit, a kill at teardown."""
    problems = []
    if replica.state == "failed":
        problems.append("failed")
    if replica.restarts:
        problems.append(f"{replica.restarts} restarts")
    if any(not e.expected for e in replica.exits):
        problems.append("exited unexpectedly")
    if replica.killed:
        problems.append("killed after its stop grace")
    return problems


def _columns(rows: Sequence[tuple[str, ...]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows]


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}s"


def _exits(exits: list[ExitEntry], *, max_runs: int = 4) -> str:
    """Each exit, in order: the code or the signal, ``!`` after an unexpected one; a run of the same exit
    once with its count (``1! x412``: a crash loop), and past ``max_runs`` such runs the first ones, how many
    more, and the last, so the column stays narrow however many restarts there were."""
    if not exits:
        return "-"
    runs: list[tuple[str, int]] = []  #: (exit, how many times in a row)
    for e in exits:
        how = "OOM" if e.reason and "OOM killer" in e.reason else e.signal
        text = (how or ("?" if e.exit_code is None else str(e.exit_code))) + ("" if e.expected else "!")
        if runs and runs[-1][0] == text:
            runs[-1] = (text, runs[-1][1] + 1)
        else:
            runs.append((text, 1))
    shown = [text if count == 1 else f"{text} x{count}" for text, count in runs]
    if len(shown) > max_runs:
        hidden = sum(count for _, count in runs[max_runs - 1 : -1])
        shown = [*shown[: max_runs - 1], f"...{hidden} more", shown[-1]]
    return ",".join(shown)
