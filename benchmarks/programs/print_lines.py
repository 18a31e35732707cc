"""Prints argv[1] numbered 100-byte lines with one ``print()`` each (unbuffered under the supervisor's env)."""

import sys

pad = "x" * 86
for number in range(int(sys.argv[1])):
    print(f"line {number:07d} {pad}")
