"""The ``supervisor`` command's entry point: light, so that a Ctrl-C while the library is still being
imported ends the command quietly (exit 130, nothing started) instead of with an import traceback."""

from __future__ import annotations

import signal

__all__ = ["main"]


def main() -> int:
    try:
        from ._cli import main as cli_main
    except KeyboardInterrupt:
        return 128 + signal.SIGINT
    return cli_main()
