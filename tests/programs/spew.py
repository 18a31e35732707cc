"""Writes --lines numbered lines as fast as it can (optionally with \\r progress), then exits 0."""

import argparse
import sys

parser = argparse.ArgumentParser()
parser.add_argument("--lines", type=int, required=True)
parser.add_argument("--width", type=int, default=0, help="pad each line to this many characters")
args = parser.parse_args()
out = sys.stdout.buffer
batch = []
for number in range(args.lines):
    batch.append(f"line {number:07d} {'x' * args.width}\n".encode())
    if len(batch) == 1000:
        out.write(b"".join(batch))
        batch.clear()
out.write(b"".join(batch))
out.flush()
