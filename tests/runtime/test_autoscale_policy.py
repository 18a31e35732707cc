"""The autoscaler's decisions, pure: a count from the metric over its target, bounded; a rise followed only
once it lasted ``up_after``, a fall once it lasted ``down_after``; quiet within ``cooldown``; a refused count
not asked again until the service's count changes or the autoscaler is switched off and on."""

from __future__ import annotations

import random

import supervisor as sv
from supervisor._runtime.autoscale_policy import AutoscaleState, recommend

QUEUE = "vllm:num_requests_waiting"


def spec(**options: object) -> sv.Autoscale:
    settings: dict[str, object] = dict(
        min=1, max=8, metric=QUEUE, target=4, up_after_seconds=30, down_after_seconds=300, cooldown_seconds=60
    )
    settings.update(options)
    return sv.Autoscale(**settings)  # type: ignore[arg-type]


def queue(*depths: float) -> dict[str, dict[str, float]]:
    return {f"w.{i}": {QUEUE: depth, "other": 99.0} for i, depth in enumerate(depths)}


def test_the_count_is_the_metric_summed_over_the_target_per_replica_within_the_bounds() -> None:
    """17 waiting over 2 replicas with target 4: 5 wanted; bounded by max and by the floor (min, min_ready)."""
    assert recommend(spec(), queue(9, 8), 2, floor=1) == (5, 17.0, f"{QUEUE} = 17 over 2 replicas (8.5 each, target 4)")
    assert recommend(spec(max=3), queue(9, 8), 2, floor=1)[0] == 3  # type: ignore[index]
    assert recommend(spec(), queue(0, 0), 2, floor=2)[0] == 2  # type: ignore[index]
    assert recommend(spec(), queue(4.3, 4.2), 2, floor=1)[0] == 2  # type: ignore[index]  # within 10% of target
    assert recommend(spec(), {}, 2, floor=1) is None  # no replica answered: no reading


def test_a_policy_gets_the_metrics_and_the_count() -> None:
    seen: list[tuple[dict[str, dict[str, float]], int]] = []

    def policy(metrics: object, replicas: int) -> int:
        seen.append((dict(metrics), replicas))  # type: ignore[call-overload]
        return 20

    wanted = recommend(sv.Autoscale(min=1, max=6, policy=policy), queue(3), 1, floor=1)
    assert wanted == (6, None, "policy asked for 20") and seen == [(queue(3), 1)]


def test_a_rise_is_followed_once_it_lasted_up_after_at_its_lowest() -> None:
    state = AutoscaleState(spec(up_after_seconds=30, cooldown_seconds=0))
    state.observe(0, 4, 16.0, "a")
    assert state.decide(0, 1) is None  # watched for 0 s of 30
    state.observe(10, 6, 24.0, "b")
    state.observe(30, 5, 20.0, "c")
    decision = state.decide(30, 1)
    assert decision is not None and (decision.before, decision.after, decision.why, decision.value) == (1, 4, "c", 20.0)


def test_a_noisy_metric_around_its_target_does_not_flap() -> None:
    """A queue that jumps between 0 and twice the target, in a random order within every 25 s, for an hour:
    each reading alone would scale (1 to 4 wanted of 2), the windows keep the count."""
    state = AutoscaleState(spec(up_after_seconds=30, down_after_seconds=300, cooldown_seconds=60))
    noise = random.Random(28)
    depths: list[float] = []
    while len(depths) < 720:
        depths += noise.sample([0.0, 4.0, 8.0, 12.0, 16.0], 5)  # 2 replicas: 1 to 4 wanted
    decisions = []
    for second, depth in zip(range(0, 3600, 5), depths, strict=True):
        wanted, value, why = recommend(state.spec, queue(depth / 2, depth / 2), 2, floor=1)  # type: ignore[misc]
        state.observe(second, wanted, value, why)
        decisions.append(state.decide(second, 2))
    assert decisions == [None] * len(decisions)


def test_a_fall_waits_down_after_and_no_change_comes_within_the_cooldown() -> None:
    state = AutoscaleState(spec(up_after_seconds=0, down_after_seconds=60, cooldown_seconds=20))
    state.observe(0, 1, 0.0, "idle")
    assert state.decide(0, 4) is None  # not watched for 60 s yet
    state.observe(60, 1, 0.0, "idle")
    decision = state.decide(60, 4)
    assert decision is not None and decision.after == 1
    state.last_change_at = 61
    state.observe(70, 8, 40.0, "busy")
    assert state.decide(70, 1) is None  # cooling down
    decision = state.decide(81, 1)
    assert decision is not None and decision.after == 8


def test_a_refused_count_is_not_asked_again_until_the_count_changes_or_it_is_switched() -> None:
    state = AutoscaleState(spec(up_after_seconds=0, cooldown_seconds=0))
    state.observe(0, 5, 20.0, "busy")
    decision = state.decide(0, 2)
    assert decision is not None and decision.after == 5
    state.refuse(5, 2, "the GPU plan does not fit the node")
    for second in range(1, 100):
        state.observe(second, 6, 24.0, "busier")
        assert state.decide(second, 2) is None
    state.observe(100, 4, 16.0, "less")
    assert state.decide(100, 2) is not None  # a smaller count may fit
    assert state.decide(101, 3) is not None and state.refused is None  # the count changed: asked again
    state.refuse(6, 3, "no GPUs")
    state.switch(False)
    assert state.decide(102, 3) is None  # paused
    state.switch(True)
    state.observe(103, 6, 24.0, "busier")
    decision = state.decide(103, 3)
    assert decision is not None and decision.after == 6
    assert state.to_json()["refused"] is None and state.to_json()["enabled"] is True


RUNNING = "vllm:num_requests_running"


def steady_load(metric: str, target: float, *, clients: int = 14, seqs: int = 4, seconds: int = 300) -> list[int]:
    """A pure simulation: ``clients`` each holding one request, round robin over the replicas, each of which
    runs ``seqs`` at a time and queues the rest (vLLM's ``--max-num-seqs``), read once a second. Returns
    the counts the autoscaler (max 8; up 5 s, down 15 s, cooldown 7 s) decided, in order."""
    state = AutoscaleState(
        spec(metric=metric, target=target, up_after_seconds=5, down_after_seconds=15, cooldown_seconds=7)
    )
    replicas, counts = 1, []
    for second in range(seconds):
        held = [clients // replicas + (i < clients % replicas) for i in range(replicas)]
        metrics = {f"w.{i}": {RUNNING: float(min(seqs, n)), QUEUE: float(max(0, n - seqs))} for i, n in enumerate(held)}
        wanted, value, why = recommend(state.spec, metrics, replicas, floor=1)  # type: ignore[misc]
        state.observe(second, wanted, value, why)
        decision = state.decide(second, replicas)
        if decision is not None:
            replicas = decision.after
            state.last_change_at = second
            counts.append(replicas)
    return counts


def test_a_sum_of_metrics_measures_the_load_and_holds_where_the_queue_alone_flaps() -> None:
    """Under a steady load the queue alone flaps: it empties once the replicas can run every request, which
    asks for the minimum, and fills again once they cannot (14 requests, 4 run per replica: 1 replica
    queues 10, 5 replicas none). Summed with the running requests (``metric: a + b``) it is the load
    itself, the same at any count: one scale-up, then still."""
    assert steady_load(QUEUE, 2)[:6] == [5, 1, 5, 1, 5, 1]
    assert steady_load(f"{RUNNING} + {QUEUE}", 4) == [4]
    sample = {"w.0": {RUNNING: 1.0, QUEUE: 7.0, "other": 9.0}}
    wanted = recommend(spec(metric=f"{RUNNING}+{QUEUE}", target=3), sample, 1, floor=1)
    assert wanted == (3, 8.0, f"{RUNNING}+{QUEUE} = 8 over 1 replica (8 each, target 3)")
