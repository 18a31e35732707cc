"""One exception hierarchy: every message names the service, the cause and, where known, the fix."""

from __future__ import annotations

from collections.abc import Iterable

__all__ = [
    "ConfigError",
    "ControlError",
    "IncompatibleVersion",
    "NotRunning",
    "ReadinessTimeout",
    "ServiceFailed",
    "SupervisorError",
    "UnknownRun",
    "suggest",
    "waiting_line",
]


class SupervisorError(Exception):
    """Base of every error this library raises on purpose."""


class ConfigError(SupervisorError, ValueError):
    """The topology cannot be run as written; raised before any process starts. Also a ``ValueError``.

    ``problems`` holds one line per problem found, each naming file, service and field. ``waiting`` counts
    the checks that could not run until some of these are fixed (a cycle check needs the dependencies
    read, a probe's checks need the probe read): the message ends with a line saying so.
    """

    def __init__(self, problems: list[str] | str, *, source: str | None = None, waiting: int = 0) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        self.source = source
        self.waiting = waiting
        head = f"{source}: " if source else ""
        if len(self.problems) == 1:
            message = head + self.problems[0]
        else:
            message = head + f"{len(self.problems)} problems:\n" + "\n".join(f"  - {p}" for p in self.problems)
        if waiting:
            message += "\n  " + waiting_line(waiting)
        super().__init__(message)


def waiting_line(count: int) -> str:
    """The last line of a ``ConfigError`` whose fixes may reveal more: how many checks could not run yet."""
    return (
        f"and {count} more check waits for these fixes"
        if count == 1
        else f"and {count} more checks wait for these fixes"
    )


class ServiceFailed(SupervisorError):
    """A service could not start, or died while it was expected to run."""

    def __init__(
        self,
        replica: str,
        reason: str,
        *,
        log_tail: list[str] | None = None,
        log_path: str | None = None,
        exit_code: int | None = None,
    ) -> None:
        self.replica = replica
        self.service = replica.split(".")[0] if replica.rsplit(".", 1)[-1].isdigit() else replica
        self.reason = reason
        self.log_tail = list(log_tail or [])
        self.log_path = log_path
        self.exit_code = exit_code
        lines = [f"{replica}: {reason}"]
        if self.log_tail:
            lines.append(f"last {len(self.log_tail)} log lines" + (f" ({log_path})" if log_path else "") + ":")
            lines.extend(f"  | {line}" for line in self.log_tail)
        elif log_path:
            lines.append(f"(no output; log: {log_path})")
        super().__init__("\n".join(lines))


class ReadinessTimeout(ServiceFailed):
    """A readiness probe did not pass within its deadline."""


class UnknownRun(SupervisorError):
    """A run named on the command line matches no record, or more than one."""

    def __init__(self, message: str, candidates: Iterable[str] = ()) -> None:
        self.candidates = list(candidates)
        super().__init__(message)


class ControlError(SupervisorError):
    """A run owned by another process cannot be reached (not running, no control socket), or refused an
    operation asked through its control socket; the message is the run's own."""


class IncompatibleVersion(SupervisorError):
    """A run's records (``manifest.json``, ``summary.json``, ``events.jsonl``) or its control socket are of a
    version this topovisor does not read or speak (a newer one's): the message names the run, both
    versions and the way out (that version's ``supervisor``)."""


class NotRunning(SupervisorError, RuntimeError):
    """A live operation (scale, rolling restart) asked of a run that is still starting or is being torn
    down; ask again once it is running. A ``RuntimeError`` too, as it was before it had a name."""


def suggest(word: str, known: Iterable[str], cutoff: float = 0.5) -> str:
    """`` (did you mean 'x'?)`` for the closest known name; never the word itself."""
    import difflib

    close = difflib.get_close_matches(word, [k for k in known if k != word], n=1, cutoff=cutoff)
    return f" (did you mean '{close[0]}'?)" if close else ""
