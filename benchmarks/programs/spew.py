"""Writes argv[1] blocks of 10,000 numbered 100-byte lines (1,000,000 bytes each) to stdout, then exits 0.

The block is built once, so the program is as fast as the pipe or file it writes to.
"""

import os
import sys

LINES_PER_BLOCK = 10_000
block = b"".join(b"line %07d %s\n" % (i, b"x" * 86) for i in range(LINES_PER_BLOCK))
assert len(block) == 100 * LINES_PER_BLOCK
for _ in range(int(sys.argv[1])):
    view = memoryview(block)
    while view:
        view = view[os.write(1, view) :]
