"""Talk to a running demo (the ``demo`` preset) through its frontend: list models, stream one chat.

    python -m standins.demo_client http://127.0.0.1:<frontend port>
    python examples/demo_client.py http://127.0.0.1:<frontend port>     # in a clone: this file

Standard library only, so it runs with any Python next to the supervisor. Prints the streamed text as it
arrives and a one-line summary; exits 0 on success and 1 on any failure, within ``--timeout`` seconds.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.error
import urllib.request


def _get_json(url: str, timeout: float) -> object:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


def _model_ids(listing: object) -> list[str]:
    if not isinstance(listing, dict) or not isinstance(listing.get("data"), list):
        raise ValueError(f"unexpected /v1/models answer: {listing!r}")
    return [str(item["id"]) for item in listing["data"] if isinstance(item, dict) and "id" in item]


def _stream_chat(base: str, model: str, prompt: str, max_tokens: int, timeout: float) -> tuple[int, float, float]:
    """Streams one completion to stdout; returns (tokens, seconds to first token, total seconds)."""
    body = {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "stream": True,
    }
    request = urllib.request.Request(
        f"{base}/v1/chat/completions",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Accept": "text/event-stream"},
        method="POST",
    )
    start = time.monotonic()
    first: float | None = None
    tokens = 0
    finished = False
    with urllib.request.urlopen(request, timeout=timeout) as response:
        for raw in response:  # the socket timeout bounds each read, the deadline the whole stream
            if time.monotonic() - start > timeout:
                raise TimeoutError(f"stream still running after {timeout:g}s")
            line = raw.decode("utf-8").strip()
            if not line.startswith("data:"):
                continue
            data = line[len("data:") :].strip()
            if data == "[DONE]":
                finished = True
                break
            chunk = json.loads(data)
            for choice in chunk.get("choices", []):
                content = choice.get("delta", {}).get("content")
                if content:
                    if first is None:
                        first = time.monotonic() - start
                    tokens += 1
                    print(content, end="", flush=True)
    print()
    total = time.monotonic() - start
    if not finished:
        raise ValueError("the stream ended without 'data: [DONE]'")
    if first is None:
        raise ValueError("the stream carried no tokens")
    return tokens, first, total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("url", help="the frontend's base URL, e.g. http://127.0.0.1:8000")
    parser.add_argument("--prompt", default="Why do serving stacks need a process supervisor?")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds for each step (%(default)s)")
    args = parser.parse_args(argv)
    base = args.url.rstrip("/")
    try:
        models = _model_ids(_get_json(f"{base}/v1/models", args.timeout))
        if not models:
            raise ValueError("the frontend serves no models")
        print(f"models: {', '.join(models)}")
        tokens, first, total = _stream_chat(base, models[0], args.prompt, args.max_tokens, args.timeout)
    except urllib.error.HTTPError as exc:
        with exc:
            detail = exc.read().decode("utf-8", "replace")[:200]
        print(f"demo_client: HTTP {exc.code} from {exc.url}: {detail}", file=sys.stderr)
        return 1
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:  # URLError, timeouts, bad JSON
        print(f"demo_client: failed: {exc}", file=sys.stderr)
        return 1
    rate = tokens / total if total > 0 else 0.0
    print(f"tokens={tokens} ttft={first * 1000:.0f}ms total={total * 1000:.0f}ms ({rate:.0f} tokens/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
