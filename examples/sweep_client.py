"""A sweep's client: a few chat completions through the frontend, their latency written as the trial's
figures to ``TRIAL_DIR/result.json`` (each key becomes a column of the sweep's results).

    python examples/sweep_client.py http://127.0.0.1:<frontend port> TRIAL_DIR [--requests 3]

TRIAL_DIR ``-`` writes no file (only stdout): a warm-up (``--warmup``) of the same requests.

Standard library only. Exits 1 on any failure, so the sweep records the trial as failed and goes on.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import urllib.request
from pathlib import Path


def complete(base: str, max_tokens: int, timeout: float) -> tuple[float, int]:
    """One chat completion: (seconds it took, completion tokens)."""
    body = {"messages": [{"role": "user", "content": "compare two settings"}], "max_tokens": max_tokens}
    request = urllib.request.Request(
        f"{base}/v1/chat/completions", data=json.dumps(body).encode(), method="POST",
        headers={"Content-Type": "application/json"},
    )  # fmt: skip
    start = time.monotonic()
    with urllib.request.urlopen(request, timeout=timeout) as response:
        answer = json.loads(response.read())
    return time.monotonic() - start, int(answer["usage"]["completion_tokens"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("url", help="the frontend's base URL")
    parser.add_argument("trial_dir", help="where result.json goes ({trial_dir}); - for none (a warm-up)")
    parser.add_argument("--requests", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds for each request (%(default)s)")
    args = parser.parse_args(argv)
    try:
        done = [complete(args.url.rstrip("/"), args.max_tokens, args.timeout) for _ in range(args.requests)]
    except (OSError, ValueError, KeyError) as exc:
        print(f"sweep_client: failed: {exc}", file=sys.stderr, flush=True)
        return 1
    latencies = [seconds for seconds, _ in done]
    result = {
        "latency_seconds": statistics.median(latencies),
        "tokens_per_second": sum(tokens for _, tokens in done) / sum(latencies),
    }
    if args.trial_dir != "-":
        (Path(args.trial_dir) / "result.json").write_text(json.dumps(result))
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
