"""Writes argv[1] numbered 200-byte lines through an 8 KiB buffer (as C stdio does) to stdout, then exits 0.

A fast logger: the program, not the pipe or file, sets the pace, as with a real service's output.
"""

import sys

pad = b"x" * 185
out = open(1, "wb", buffering=8192, closefd=False)  # noqa: SIM115 - stdout, flushed below
for number in range(int(sys.argv[1])):
    out.write(b"line %08d %s\n" % (number, pad))
out.flush()
