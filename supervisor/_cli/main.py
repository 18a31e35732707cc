"""The ``supervisor`` command: a thin ``main(argv) -> int`` over the library, one parser built from one
table of commands (``table``), one dispatcher.

Exit codes: 0 success, 1 a service failed (or something is left), 2 bad input (nothing was started),
128+N stopped by signal N, and with ``run FILE -- CMD`` the exit code of CMD.
"""

from __future__ import annotations

import importlib
import signal
import sys
from collections.abc import Callable, Sequence

from .._errors import ConfigError, SupervisorError, UnknownRun
from .context import Invocation, Voice
from .table import COMMANDS, build_parser

__all__ = ["main"]

EXIT_FAILED = 1
EXIT_BAD_INPUT = 2


def main(argv: Sequence[str] | None = None) -> int:
    given = list(sys.argv[1:] if argv is None else argv)
    flags, command = given, []
    if "--" in given:
        split = given.index("--")
        flags, command = given[:split], given[split + 1 :]
    args = build_parser(flags[0] if flags else None).parse_args(flags)
    entry = next(c for c in COMMANDS if c.name == args.command)
    if command and not entry.takes_command:
        names = [f"'{c.name}'" for c in COMMANDS if c.takes_command]
        takers = ", ".join(names[:-1]) + f" and {names[-1]}" if len(names) > 1 else names[0]
        print(f"supervisor: error: only {takers} take a command after --", file=sys.stderr)
        return EXIT_BAD_INPUT
    call = Invocation(args=args, command=command, argv=given, voice=Voice())
    module, _, function = entry.handler.partition(":")
    handler: Callable[[Invocation], int] = getattr(importlib.import_module(f".{module}", __package__), function)
    try:
        return handler(call)
    except (ConfigError, UnknownRun) as exc:  # bad input: nothing was started
        call.voice.error(f"error: {exc}")
        return EXIT_BAD_INPUT
    except SupervisorError as exc:
        call.voice.error(str(exc))
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 128 + signal.SIGINT


if __name__ == "__main__":
    sys.exit(main())
