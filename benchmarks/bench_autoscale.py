"""Autoscaling over time: a stand-in vLLM worker service with ``autoscale:`` (min 1, max 4) under a load
generator of our own, recorded as a timeline of decisions, not timed against a baseline. Run on its own
(about 1.5 minutes; ``--quick`` about a minute):

    python benchmarks/bench_autoscale.py [--quick] [--json PATH] [--strict] [--only ramp noisy queue]

Each scenario launches the service, then drives it with closed-loop chat-completion clients on 127.0.0.1
(each sends one request at a time to a ready replica, round robin) whose number follows the scenario's
profile, then stops them and watches the idle tail. Every 0.1 s it records the replicas (ready / all),
the metric as the autoscaler last read it and the count that reading asked for; each ``AutoscaleDecided``
(time, from, to, why) and each ``ScaleEnded`` come from the run's events. The worker takes one request at a
time (``--max-num-seqs 1``, 0.2 s each) and queues the rest. The metric is the requests the replicas hold,
``vllm:num_requests_running + vllm:num_requests_waiting`` (the clients sending), target 3 per replica.

- ``ramp``: clients 1 -> 12 over 6 s, a plateau of 12 until 20 s, then none: 12 / 3 = 4 replicas, the max.
- ``noisy``: clients jump every 0.4 s between above and below 8 (5-11, a seeded draw), for 20 s: the load
  per replica jitters around its target; hysteresis (the lowest count asked over ``up_after`` to grow, the
  highest over ``down_after`` to shrink) must keep the count still.
- ``queue``: the ``noisy`` load on the queue alone, ``vllm:num_requests_waiting``, target 2: a diagnostic
  (its flaps and failed requests have no goal). The queue falls as replicas are added (the requests they
  take leave it), so a count reached on a burst asks for less right after: it flaps.

Figures per scenario, each with a goal: the first scale-up after load start (goal: within ``up_after`` +
1 s of the first reading that asked for more), peak replicas (ramp: the max), back at min after the load
stopped (goal: ``down_after`` + ``cooldown`` + 2 s), flaps (an up after a down, or a down after an up, other
than the one turn after the load stopped: goal 0), and failed requests (goal 0 %: the stand-in does not
drain, so a request on a replica that a scale-down stops fails: a shrink under load costs requests).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import httpx
from harness import (
    HOST,
    LAUNCH_LIMIT_SECONDS,
    PYTHON,
    Result,
    Settings,
    Stats,
    info,
    kill_leftovers,
    leftovers,
    library_version,
    report,
    summary,
)

import supervisor as sv

ROOT = Path(__file__).resolve().parent.parent
SERVICE = "w"
LOAD_METRIC, LOAD_TARGET = "vllm:num_requests_running + vllm:num_requests_waiting", 3.0  #: per replica
QUEUE_METRIC, QUEUE_TARGET = "vllm:num_requests_waiting", 2.0
MIN, MAX = 1, 4
UP_AFTER, DOWN_AFTER, COOLDOWN, PERIOD = 2.0, 3.0, 1.5, 0.2  #: seconds
MAX_TOKENS, TOKENS_PER_SECOND = 16, 80.0  #: 0.2 s per request
MAX_CLIENTS = 16
SAMPLE_SECONDS = 0.1
REQUEST_TIMEOUT_SECONDS = 30.0
BACK_AT_MIN_MARGIN = 2.0  #: seconds over down_after + cooldown
FIRST_UP_MARGIN = 1.0  #: seconds over up_after


@dataclass(frozen=True)
class Scenario:
    name: str
    describe: str
    clients: Callable[[float], int]  #: clients sending, t seconds after the load started
    load_seconds: float  #: the load stops then
    expect_peak: int | None  #: the peak the load should reach; None: whatever hysteresis holds
    metric: str = LOAD_METRIC
    target: float = LOAD_TARGET
    held: bool = True  #: flaps and failed requests have goals (False: a diagnostic)


def ramp_clients(ramp: float, top: int) -> Callable[[float], int]:
    return lambda t: min(top, 1 + int(top * t / ramp))


def noisy_clients(step: float, base: int, seed: int = 28) -> Callable[[float], int]:
    rng = random.Random(seed)
    levels = [base + (1 if k % 2 == 0 else -1) * rng.randint(1, 3) for k in range(1000)]
    return lambda t: levels[min(len(levels) - 1, int(t / step))]


def scenarios(quick: bool) -> dict[str, Scenario]:
    plateau = 10.0 if quick else 14.0
    noisy = 12.0 if quick else 20.0
    jitter = f"clients 5-11 around 8, a new level every 0.4 s, for {noisy:g} s, then none"
    return {
        "ramp": Scenario("ramp", f"clients 1 -> 12 over 6 s, 12 until {6 + plateau:g} s, then none",
                         ramp_clients(6.0, 12), 6.0 + plateau, MAX),
        "noisy": Scenario("noisy", jitter, noisy_clients(0.4, 8), noisy, None),
        "queue": Scenario("queue", f"{jitter}; the queue alone", noisy_clients(0.4, 8), noisy, None,
                          QUEUE_METRIC, QUEUE_TARGET, held=False),
    }  # fmt: skip


def worker_service(scenario: Scenario) -> sv.Service:
    """A stand-in vLLM worker: one request generated at a time, the rest queued (``vllm:num_requests_waiting``)."""
    autoscale = sv.Autoscale(
        min=MIN, max=MAX, metric=scenario.metric, target=scenario.target, up_after_seconds=UP_AFTER,
        down_after_seconds=DOWN_AFTER, cooldown_seconds=COOLDOWN, period_seconds=PERIOD,
    )  # fmt: skip
    return sv.Service(
        name=SERVICE,
        command=[PYTHON, "-m", "standins", "worker", "--port", "{port}", "--host", HOST, "--load-seconds", "0.5",
                 "--max-num-seqs", "1", "--tokens-per-second", str(TOKENS_PER_SECOND)],
        ports=["port"],
        ready=sv.Probe(sv.HttpCheck(f"http://{HOST}:{{port}}/health"), period_seconds=0.05),
        metrics=f"http://{HOST}:{{port}}/metrics",
        env={"PYTHONPATH": str(ROOT)},
        stop=sv.StopPolicy(grace_seconds=5),
        autoscale=autoscale,
    )  # fmt: skip


@dataclass
class Sample:
    t: float
    clients: int
    ready: int
    replicas: int
    value: float | None
    wanted: int | None


@dataclass
class Decision:
    t: float
    before: int
    after: int
    why: str


@dataclass
class Record:
    """What one scenario's run recorded, times in seconds from the load's start."""

    samples: list[Sample] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)
    scaled: list[tuple[float, int, str | None]] = field(default_factory=list)  #: ScaleEnded: t, replicas, error
    sent: int = 0
    failed: list[str] = field(default_factory=list)
    load_stop: float = 0.0
    end: float = 0.0


class LoadGenerator:
    """Closed-loop clients: client ``i`` sends while ``i < profile(t)``, one request at a time, each to the
    next ready replica; until ``stop`` is set."""

    def __init__(self, group: sv.RunningTopology, profile: Callable[[float], int], began: float, record: Record):
        self.group, self.profile, self.began, self.record = group, profile, began, record
        self.stop = anyio.Event()
        self.turn = 0

    def active(self) -> int:
        return 0 if self.stop.is_set() else min(MAX_CLIENTS, self.profile(time.monotonic() - self.began))

    async def run(self) -> None:
        limits = httpx.Limits(max_connections=MAX_CLIENTS * 2, max_keepalive_connections=MAX_CLIENTS * 2)
        async with httpx.AsyncClient(trust_env=False, limits=limits) as http, anyio.create_task_group() as tg:
            for index in range(MAX_CLIENTS):
                tg.start_soon(self.client, index, http)

    async def client(self, index: int, http: httpx.AsyncClient) -> None:
        body = {"messages": [{"role": "user", "content": "count to ten"}], "max_tokens": MAX_TOKENS}
        while not self.stop.is_set():
            if index >= self.active():
                with anyio.move_on_after(0.05):
                    await self.stop.wait()
                continue
            ready = [r for r in self.group.service(SERVICE).replicas if r.state is sv.ReplicaState.READY and r.url]
            if not ready:
                await anyio.sleep(0.01)
                continue
            self.turn += 1
            replica = ready[self.turn % len(ready)]
            self.record.sent += 1
            try:
                response = await http.post(
                    f"{replica.url}/v1/chat/completions", json=body, timeout=REQUEST_TIMEOUT_SECONDS
                )
                if response.status_code != 200:
                    self.record.failed.append(f"{replica.name}: HTTP {response.status_code}")
            except httpx.HTTPError as exc:
                self.record.failed.append(f"{replica.name} ({replica.state.value}): {type(exc).__name__}")


async def sample_loop(group: sv.RunningTopology, load: LoadGenerator, record: Record, done: anyio.Event) -> None:
    while not done.is_set():
        replicas = group.service(SERVICE).replicas
        status = group.autoscale_status()[SERVICE]
        record.samples.append(
            Sample(
                t=time.monotonic() - load.began,
                clients=load.active(),
                ready=sum(r.state is sv.ReplicaState.READY for r in replicas),
                replicas=len(replicas),
                value=status["value"],
                wanted=status["wanted"],
            )
        )
        with anyio.move_on_after(SAMPLE_SECONDS):
            await done.wait()


async def run_scenario(scenario: Scenario, runs_dir: Path) -> Record:
    """Launch, load, stop, then watch until back at min and quiet for ``down_after`` + ``cooldown`` more."""
    record = Record()
    topology = sv.Topology(name=f"autoscale-{scenario.name}", services=[worker_service(scenario)])
    tail_limit = DOWN_AFTER + COOLDOWN + 20.0  #: after the load stops, the most we watch
    quiet = DOWN_AFTER + COOLDOWN  #: the idle tail watched once back at min, for a late flap
    with anyio.fail_after(LAUNCH_LIMIT_SECONDS + scenario.load_seconds + tail_limit + 30):
        async with sv.launch(topology, runs_dir=runs_dir) as group:
            seen = len(group.event_history)
            load = LoadGenerator(group, scenario.clients, time.monotonic(), record)
            done = anyio.Event()
            async with anyio.create_task_group() as tg:
                tg.start_soon(sample_loop, group, load, record, done)
                tg.start_soon(load.run)
                await anyio.sleep(scenario.load_seconds)
                load.stop.set()
                record.load_stop = time.monotonic() - load.began
                deadline = time.monotonic() + tail_limit
                at_min_since: float | None = None
                while time.monotonic() < deadline:
                    at_min = len(group.service(SERVICE).replicas) == MIN and not group._run.operation_lock.locked()
                    if not at_min:
                        at_min_since = None
                    elif at_min_since is None:
                        at_min_since = time.monotonic()
                    elif time.monotonic() - at_min_since >= quiet:
                        break
                    await anyio.sleep(SAMPLE_SECONDS)
                record.end = time.monotonic() - load.began
                done.set()
            for event in group.event_history[seen:]:
                t = event.monotonic - load.began
                if isinstance(event, sv.AutoscaleDecided):
                    record.decisions.append(Decision(t, event.replicas_before, event.replicas_after, event.why))
                elif isinstance(event, sv.ScaleEnded):
                    record.scaled.append((t, event.replicas, event.error))
    return record


# figures


def flaps(decisions: list[Decision], load_stop: float) -> tuple[int, int]:
    """(direction changes, flaps): a flap is any change of direction but the one turn down after the load
    stopped (an up during the load, then the first down after it)."""
    changes = 0
    flapped = 0
    previous = 0
    for decision in decisions:
        direction = 1 if decision.after > decision.before else -1
        if previous and direction != previous:
            changes += 1
            expected = previous == 1 and direction == -1 and decision.t >= load_stop
            flapped += 0 if expected and changes == 1 else 1
        previous = direction
    return changes, flapped


def timeline(scenario: Scenario, record: Record) -> list[str]:
    """One row a second (the last sample of that second), and a row per decision and per scale's end."""
    rows: list[tuple[float, str]] = []
    last_second: dict[int, Sample] = {}
    for sample in record.samples:
        if sample.t >= 0:
            last_second[int(sample.t)] = sample
    for second, sample in sorted(last_second.items()):
        phase = "load" if sample.t < record.load_stop else "idle"
        value = "-" if sample.value is None else f"{sample.value:g}"
        wanted = "-" if sample.wanted is None else str(sample.wanted)
        rows.append(
            (sample.t, f"{second:>4d}s  {phase:4s}  clients {sample.clients:>2d}  replicas {sample.ready}/"
                       f"{sample.replicas}  metric {value:>4s}  asks {wanted}")
        )  # fmt: skip
    for decision in record.decisions:
        change = f"{decision.before} -> {decision.after}"
        rows.append((decision.t, f"  {decision.t:6.2f}s  DECIDED {change}: {decision.why}"))
    for t, replicas, error in record.scaled:
        rows.append((t, f"  {t:6.2f}s  scaled: {replicas} replicas" + (f" ({error})" if error else "")))
    rows.append((record.load_stop, f"  {record.load_stop:6.2f}s  LOAD STOPPED"))
    return [text for _, text in sorted(rows, key=lambda row: row[0])]


def figures(scenario: Scenario, record: Record, results: list[Result]) -> None:
    name = scenario.name
    ups = [d for d in record.decisions if d.after > d.before]
    asked = next((s.t for s in record.samples if s.t >= 0 and s.wanted is not None and s.wanted > MIN), None)
    if ups and asked is not None:
        first = ups[0].t
        report(
            Result(
                key=f"{name}_first_up",
                title=f"autoscale {name}: first scale-up after load start",
                unit="s",
                value=Stats([first]),
                baseline=None,
                baseline_label="",
                goal_kind="max",
                goal=asked + UP_AFTER + FIRST_UP_MARGIN,
                note=f"the readings first asked for more at {asked:.2f} s; goal: that + up_after {UP_AFTER:g} s"
                f" + {FIRST_UP_MARGIN:g} s",
            ),
            results,
        )
    else:
        info(f"autoscale {name}: no scale-up (the readings asked for more: {asked is not None})")
    peak = max((s.replicas for s in record.samples), default=0)
    report(
        Result(
            key=f"{name}_peak",
            title=f"autoscale {name}: peak replicas",
            unit="count",
            value=Stats([float(peak)]),
            baseline=None,
            baseline_label="",
            goal_kind="min" if scenario.expect_peak is not None else "info",
            goal=float(scenario.expect_peak) if scenario.expect_peak is not None else None,
            note=f"max {MAX}; replicas over the load: "
            + " ".join(str(d.after) for d in record.decisions if d.t < record.load_stop),
        ),
        results,
    )
    at_min = [t for t, replicas, error in record.scaled if error is None and replicas == MIN and t >= record.load_stop]
    back = (at_min[-1] - record.load_stop) if at_min else record.end - record.load_stop
    report(
        Result(
            key=f"{name}_back_at_min",
            title=f"autoscale {name}: back at min after the load stopped",
            unit="s",
            value=Stats([back]),
            baseline=None,
            baseline_label="",
            goal_kind="max",
            goal=DOWN_AFTER + COOLDOWN + BACK_AT_MIN_MARGIN,
            note=f"goal: down_after {DOWN_AFTER:g} s + cooldown {COOLDOWN:g} s + {BACK_AT_MIN_MARGIN:g} s"
            + ("" if at_min else "; NOT back at min by the end"),
        ),
        results,
    )
    changes, flapped = flaps(record.decisions, record.load_stop)
    report(
        Result(
            key=f"{name}_flaps",
            title=f"autoscale {name}: flaps (direction changes but the turn after the load)",
            unit="count",
            value=Stats([float(flapped)]),
            baseline=None,
            baseline_label="",
            goal_kind="max" if scenario.held else "info",
            goal=0.0 if scenario.held else None,
            note=f"{len(record.decisions)} decisions, {changes} direction change(s): "
            + ", ".join(f"{d.before}->{d.after}@{d.t:.1f}s" for d in record.decisions),
        ),
        results,
    )
    share = 100.0 * len(record.failed) / record.sent if record.sent else 0.0
    report(
        Result(
            key=f"{name}_failed",
            title=f"autoscale {name}: failed requests",
            unit="%",
            value=Stats([share]),
            baseline=None,
            baseline_label="",
            goal_kind="max" if scenario.held else "info",
            goal=0.0 if scenario.held else None,
            note=f"{len(record.failed)} of {record.sent}" + (f"; first: {record.failed[0]}" if record.failed else ""),
        ),
        results,
    )


async def main(args: argparse.Namespace) -> int:
    chosen = scenarios(args.quick)
    names = args.only or list(chosen)
    results: list[Result] = []
    records: dict[str, Record] = {}
    print(f"library: {library_version()}")
    print(
        f"service: stand-in vLLM worker, --max-num-seqs 1, {MAX_TOKENS} tokens at {TOKENS_PER_SECOND:g}/s per request;"
        f" autoscale min {MIN} max {MAX} metric {LOAD_METRIC} target {LOAD_TARGET:g} (queue: {QUEUE_METRIC}"
        f" target {QUEUE_TARGET:g}) up_after {UP_AFTER:g}s down_after {DOWN_AFTER:g}s cooldown {COOLDOWN:g}s"
        f" period {PERIOD:g}s",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="bench-autoscale-") as work:
        settings = Settings(quick=args.quick, repeats=None, work=Path(work))
        try:
            for name in names:
                scenario = chosen[name]
                print(f"\n== {name}: {scenario.describe}; metric {scenario.metric}, target {scenario.target:g}")
                record = await run_scenario(scenario, settings.runs_dir)
                records[name] = record
                for row in timeline(scenario, record):
                    print(row)
                figures(scenario, record, results)
        finally:
            left = leftovers(settings)
            if left:
                print(f"!! processes left behind, killed: {left}")
                kill_leftovers(left)
    print()
    print(summary(results))
    if args.json:
        payload = {
            "results": [r.to_json() for r in results],
            "timelines": {
                name: {
                    "samples": [vars(s) for s in record.samples],
                    "decisions": [vars(d) for d in record.decisions],
                    "scaled": record.scaled,
                    "load_stop": record.load_stop,
                    "sent": record.sent,
                    "failed": record.failed,
                }
                for name, record in records.items()
            },
        }
        Path(args.json).write_text(json.dumps(payload, indent=1))
    missed = [r for r in results if r.verdict == "MISS"]
    return 1 if args.strict and missed else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter plateaus: about 40 s")
    parser.add_argument("--json", metavar="PATH", help="write the figures and the timelines here")
    parser.add_argument("--strict", action="store_true", help="exit status 1 when a goal is missed")
    parser.add_argument("--only", nargs="+", choices=("ramp", "noisy", "queue"), help="these scenarios only")
    sys.exit(anyio.run(main, parser.parse_args()))
