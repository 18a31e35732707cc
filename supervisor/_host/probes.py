"""Readiness probes: http, tcp, log line, exec, python callable, and all/any of them.

One protocol: ``await check() -> CheckResult``. Log checks are event-driven (they watch the line stream
from the moment the process spawns); the others are polled, fast at first and backing off to the
probe's period, and output from the service wakes the poll early, since servers print when they are up.
"""

from __future__ import annotations

import json
import re
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import anyio
import attrs

from .._spec.model import (
    AllOf,
    AnyOf,
    CallableCheck,
    Check,
    ExecCheck,
    HttpCheck,
    LogCheck,
    Probe,
    ProbeTarget,
    TcpCheck,
)
from . import probe_http as _probe_http
from .logs import LineStream
from .probe_exec import run_command

if TYPE_CHECKING:
    import h11
    import httpx

__all__ = ["CheckResult", "PollBudget", "ProbeTarget", "ReadinessRunner", "describe_check"]

FIRST_DELAY_SECONDS = 0.002  #: first gap between attempts; grows x1.5 up to the probe's period
ACTIVITY_SPACING_SECONDS = 0.005  #: output can pull attempts forward, but not closer than this
MIN_PERIOD_SECONDS = 0.005


class PollBudget:
    """How much faster than its ``period`` a readiness probe may poll: the run's waiting probes share
    about 100 full HTTP attempts a second (a few % of a core) and 1000 refused connects. A lone loading
    server is polled every 10 ms (5 ms while nothing listens), so even a silent one is noticed within
    milliseconds; with many waiting, each falls back to its ``period`` (100 ms by default)."""

    FULL_PER_SECOND = 100.0
    CHEAP_PER_SECOND = 1000.0

    def __init__(self) -> None:
        self.active = 0

    def period(self, *, cheap: bool) -> float:
        rate = self.CHEAP_PER_SECOND if cheap else self.FULL_PER_SECOND
        return max(MIN_PERIOD_SECONDS, self.active / rate)


@attrs.frozen
class CheckResult:
    ok: bool
    detail: str = ""


class _Runnable(Protocol):
    async def check(self) -> CheckResult: ...


def describe_check(check: Check) -> str:
    if isinstance(check, HttpCheck):
        return f"http {check.url}" + (f" (status {check.status})" if check.status else "")
    if isinstance(check, TcpCheck):
        return f"tcp {check.address}"
    if isinstance(check, LogCheck):
        return f"log /{check.pattern}/"
    if isinstance(check, ExecCheck):
        return "exec " + " ".join(check.command)
    if isinstance(check, CallableCheck):
        return f"call {getattr(check.function, '__qualname__', repr(check.function))}"
    word = "all" if isinstance(check, AllOf) else "any"
    return f"{word}(" + ", ".join(describe_check(inner) for inner in check.checks) + ")"


class _Http:
    """GET and judge the answer. Plain ``http://`` goes over a small socket client of our own (a third of
    httpx's CPU per attempt, and a refused connection costs microseconds), so readiness can be polled
    fast; ``https://`` goes through httpx."""

    cheap = False  #: the last attempt found nothing listening (cheap to repeat)

    def __init__(self, check: HttpCheck, client: Callable[[], httpx.AsyncClient], timeout: float) -> None:
        self.spec, self._client, self._timeout = check, client, timeout
        self._body = re.compile(check.body) if check.body else None
        url = urllib.parse.urlsplit(check.url)
        self._raw = url.scheme == "http" and url.hostname is not None
        if self._raw:
            self._host, self._port = url.hostname or "127.0.0.1", url.port or 80
            target = (url.path or "/") + (f"?{url.query}" if url.query else "")
            self._request: h11.Request | ValueError
            try:
                extra = tuple((check.headers or {}).items())
                self._request = _probe_http.request(target, url.netloc.rpartition("@")[2], extra)
            except ValueError as exc:  # reported by every attempt rather than at spawn
                self._request = exc
            self._addresses: list[_probe_http.Address] | None = None  # resolved once, on the first attempt

    async def check(self) -> CheckResult:
        self.cheap = False
        if self._raw:
            if isinstance(self._request, ValueError):
                return CheckResult(False, str(self._request))
            try:
                with anyio.fail_after(self._timeout):
                    if self._addresses is None:
                        self._addresses = await _probe_http.resolve(self._host, self._port)
                    status, body = await _probe_http.get(self._addresses, self._request)
            except ConnectionRefusedError:
                self.cheap = True
                return CheckResult(False, f"connect {self._host}:{self._port}: connection refused")
            except TimeoutError:
                return CheckResult(False, f"no answer within {self._timeout:g}s")
            except (OSError, ValueError) as exc:
                return CheckResult(False, f"{type(exc).__name__}: {exc}")
            text = body.decode("utf-8", "replace")
        else:
            import httpx

            try:
                headers = dict(self.spec.headers or {})
                response = await self._client().get(self.spec.url, headers=headers, timeout=self._timeout)
            except httpx.HTTPError as exc:
                return CheckResult(False, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
            status, text = response.status_code, response.text
        return self._judge(status, text)

    def _judge(self, status: int, text: str) -> CheckResult:
        expected = self.spec.status
        if (expected is None and not 200 <= status < 300) or (expected is not None and status != expected):
            return CheckResult(False, f"status {status}: {text[:200]!r}")
        if self._body is not None and not self._body.search(text):
            return CheckResult(False, f"body does not match /{self.spec.body}/: {text[:200]!r}")
        if self.spec.json is not None:
            try:
                document = json.loads(text)
            except ValueError:
                return CheckResult(False, f"body is not JSON: {text[:200]!r}")
            if not _contains(document, self.spec.json):
                return CheckResult(False, f"JSON {document!r} lacks {dict(self.spec.json)!r}")
        return CheckResult(True, f"status {status}")


def _contains(document: Any, expected: Any) -> bool:
    """``expected`` is a subset of ``document``: a mapping's keys with values that are subsets, a list's
    items each a subset of some item (``{data: [{id: m}]}`` finds model ``m`` in ``/v1/models``), any
    other value equal, compared as parsed JSON (escapes and key order do not matter)."""
    if isinstance(expected, Mapping):
        return isinstance(document, Mapping) and all(
            key in document and _contains(document[key], value) for key, value in expected.items()
        )
    if isinstance(expected, list):
        return isinstance(document, list) and all(any(_contains(d, e) for d in document) for e in expected)
    return bool(document == expected)


class _Tcp:
    cheap = True  #: a refused loopback connect costs microseconds

    def __init__(self, check: TcpCheck, timeout: float) -> None:
        host, _, port = check.address.rpartition(":")
        self.host, self.port, self._timeout = host.strip("[]") or "127.0.0.1", int(port), timeout
        self._addresses: list[_probe_http.Address] | None = None  # resolved once, without blocking the loop

    async def check(self) -> CheckResult:
        try:
            with anyio.fail_after(self._timeout):
                if self._addresses is None:
                    self._addresses = await _probe_http.resolve(self.host, self.port)
                sock = await _probe_http.connect(self._addresses)
        except TimeoutError:
            return CheckResult(False, f"connect {self.host}:{self.port}: timed out")
        except OSError as exc:
            return CheckResult(False, f"connect {self.host}:{self.port}: {exc.strerror or exc}")
        sock.close()
        return CheckResult(True, "connected")


class _Log:
    """Watches the line stream from spawn on; once the pattern matched, the check stays passed."""

    def __init__(self, check: LogCheck, stream: LineStream) -> None:
        self._pattern = re.compile(check.pattern, re.MULTILINE)
        self.matched: str | None = None
        self._unsubscribe = stream.subscribe(self._on_lines)

    def _on_lines(self, block: bytes) -> None:
        text = block.decode("utf-8", "replace")
        match = self._pattern.search(text)
        if match:
            start = text.rfind("\n", 0, match.start()) + 1
            end = text.find("\n", match.end())
            self.matched = text[start : end if end >= 0 else len(text)]
            self._unsubscribe()

    async def check(self) -> CheckResult:
        if self.matched is not None:
            return CheckResult(True, f"line {self.matched!r}")
        return CheckResult(False, f"no line matched /{self._pattern.pattern}/ yet")


#: where an exec probe's command runs: its argv, made to enter the run's probe cgroup (``RunContainment``)
ExecWrapper = Callable[[Sequence[str], Mapping[str, str]], Sequence[str]]


class _Exec:
    def __init__(self, check: ExecCheck, env: Mapping[str, str], timeout: float, wrap: ExecWrapper | None) -> None:
        self.spec, self._env, self._timeout, self._wrap = check, env, timeout, wrap

    async def check(self) -> CheckResult:
        try:
            code, output_bytes = await run_command(self.spec.command, self._env, self._timeout, wrap=self._wrap)
        except TimeoutError:
            return CheckResult(False, f"timed out after {self._timeout:g}s")
        except OSError as exc:
            return CheckResult(False, str(exc))
        output = output_bytes.decode(errors="replace").strip()[-200:]
        return CheckResult(code == 0, f"exit {code}" + (f": {output}" if output else ""))


class _Call:
    def __init__(self, function: Callable[[ProbeTarget], Awaitable[bool]], target: ProbeTarget, timeout: float):
        self._function, self._target, self._timeout = function, target, timeout

    async def check(self) -> CheckResult:
        try:
            with anyio.fail_after(self._timeout):
                ok = await self._function(self._target)
        except TimeoutError:
            return CheckResult(False, f"timed out after {self._timeout:g}s")
        except Exception as exc:
            return CheckResult(False, f"{type(exc).__name__}: {exc}")
        return CheckResult(bool(ok), "returned " + repr(ok))


class _Combined:
    def __init__(self, parts: list[_Runnable], need_all: bool, *, sticky: bool) -> None:
        self._parts, self._need_all, self._sticky = parts, need_all, sticky
        self._passed: set[int] = set()  # readiness: parts already passed stay passed (a log line seen once)

    async def check(self) -> CheckResult:
        if not self._sticky:  # liveness: every part is judged again each time
            self._passed.clear()
        details = []
        for index, part in enumerate(self._parts):
            if index in self._passed:
                continue
            result = await part.check()
            if result.ok:
                self._passed.add(index)
                if not self._need_all:
                    return result
            else:
                details.append(result.detail)
                if self._need_all:
                    break
        ok = len(self._passed) == len(self._parts) if self._need_all else bool(self._passed)
        return CheckResult(ok, "; ".join(details))


class ReadinessRunner:
    """Builds a probe's checks when the replica spawns and polls them until they pass or time out."""

    def __init__(
        self,
        probe: Probe,
        *,
        target: ProbeTarget,
        stream: LineStream,
        env: Mapping[str, str],
        http_client: Callable[[], httpx.AsyncClient],
        budget: PollBudget | None = None,
        liveness: bool = False,
        wrap_exec: ExecWrapper | None = None,
    ) -> None:
        self.probe = probe
        self._wrap_exec = wrap_exec
        self._liveness = liveness
        self._attempt_timeout = probe.alive_attempt_timeout if liveness else probe.attempt_timeout
        self._budget = budget or PollBudget()
        self._stream = stream
        self._only_log = True
        self._root = self._build(probe.check, target, env, http_client)
        self.last = CheckResult(False, "not checked yet")
        self.attempts = 0
        self.last_progress = time.monotonic()
        self._unsubscribe_progress: Callable[[], None] | None = None
        if probe.progress_timeout_seconds is not None and not liveness:
            pattern = re.compile(probe.progress, re.MULTILINE) if probe.progress else None
            self._unsubscribe_progress = stream.subscribe(lambda block: self._on_output(block, pattern))

    def _on_output(self, block: bytes, pattern: re.Pattern[str] | None) -> None:
        if pattern is None or pattern.search(block.decode("utf-8", "replace")):
            self.last_progress = time.monotonic()

    def _deadline(self, started: float) -> float:
        """The readiness deadline; with ``progress_timeout`` it moves on while the service shows progress."""
        extend = self.probe.progress_timeout_seconds
        if extend is None:
            return started + self.probe.ready_timeout
        base = self.probe.timeout_seconds if self.probe.timeout_seconds is not None else extend
        return max(started + base, self.last_progress + extend)

    async def check_once(self) -> CheckResult:
        """One attempt (liveness uses this); log checks stay passed once they matched."""
        self.attempts += 1
        with anyio.move_on_after(self._attempt_timeout):
            self.last = await self._root.check()
            return self.last
        self.last = CheckResult(False, f"no answer within {self._attempt_timeout:g}s")
        return self.last

    def _build(
        self,
        check: Check,
        target: ProbeTarget,
        env: Mapping[str, str],
        client: Callable[[], httpx.AsyncClient],
    ) -> _Runnable:
        timeout = self._attempt_timeout
        if isinstance(check, LogCheck):
            return _Log(check, self._stream)
        self._only_log = self._only_log and isinstance(check, (AllOf, AnyOf))
        if isinstance(check, HttpCheck):
            return _Http(check, client, timeout)
        if isinstance(check, TcpCheck):
            return _Tcp(check, timeout)
        if isinstance(check, ExecCheck):
            return _Exec(check, env, timeout, self._wrap_exec)
        if isinstance(check, CallableCheck):
            return _Call(check.function, target, timeout)
        parts = [self._build(inner, target, env, client) for inner in check.checks]
        return _Combined(parts, isinstance(check, AllOf), sticky=not self._liveness)

    async def wait_passed(self) -> CheckResult:
        """Return the passing result; raise ``TimeoutError`` once the probe's deadline is over."""
        started = time.monotonic()
        if self.probe.initial_delay_seconds:
            await anyio.sleep(self.probe.initial_delay_seconds)
        self._budget.active += 1
        try:
            return await self._poll(started)
        finally:
            self._budget.active -= 1
            if self._unsubscribe_progress is not None:  # progress only matters until ready
                self._unsubscribe_progress()
                self._unsubscribe_progress = None

    async def _poll(self, started: float) -> CheckResult:
        delay = FIRST_DELAY_SECONDS
        while True:
            attempt_started = time.monotonic()
            seen = self._stream.generation
            self.attempts += 1
            with anyio.move_on_after(max(self._deadline(started) - attempt_started, 0)) as bounded:
                self.last = await self._root.check()
            if bounded.cancelled_caught:  # an attempt that hangs does not stretch the deadline
                cut = "the last attempt was still waiting for an answer at the deadline"
                earlier = self.last.detail if self.attempts > 1 else ""
                self.last = CheckResult(False, f"{earlier}; {cut}" if earlier else cut)
                raise TimeoutError
            if self.last.ok:
                return self.last
            remaining = self._deadline(started) - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            if self._only_log:  # nothing to poll: only new output can change the answer
                recheck = 1.0 if self.probe.progress_timeout_seconds is not None else remaining  # deadline moves
                with anyio.move_on_after(min(remaining, recheck)):
                    await self._stream.wait_activity(seen)
                continue
            wait_until = attempt_started + min(delay, remaining)
            with anyio.move_on_after(max(wait_until - time.monotonic(), 0)):
                await self._stream.wait_activity(seen)
                # output arrived: try again soon, but not in a tight loop on a chatty service
                await anyio.sleep(max(attempt_started + ACTIVITY_SPACING_SECONDS - time.monotonic(), 0))
                delay = FIRST_DELAY_SECONDS
                continue
            cheap = bool(getattr(self._root, "cheap", False))
            delay = min(delay * 1.5, self.probe.ready_period, self._budget.period(cheap=cheap))
