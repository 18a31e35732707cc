"""The one stop order: dependents stop before what they depend on; waves for a run known from its record."""

from __future__ import annotations

import pytest

from supervisor._host.teardown import stop_prerequisites, stop_waves

DAG = {"kv": [], "prefill": ["kv"], "decode": ["kv"], "frontend": ["prefill", "decode"], "bench": []}


@pytest.mark.parametrize(
    ("services", "graph", "before", "waves"),
    [
        (
            list(DAG),
            DAG,
            {"kv": ["prefill", "decode"], "prefill": ["frontend"], "decode": ["frontend"], "frontend": [], "bench": []},
            [["bench", "frontend"], ["decode", "prefill"], ["kv"]],
        ),
        # a subset (a strategy restart): outsiders impose nothing
        (["kv", "prefill"], DAG, {"kv": ["prefill"], "prefill": []}, [["prefill"], ["kv"]]),
        # a cycle in a hand-edited record still stops, all at once
        (["a", "b"], {"a": ["b"], "b": ["a"]}, {"a": ["b"], "b": ["a"]}, [["b", "a"]]),
    ],
)
def test_stop_order(
    services: list[str], graph: dict[str, list[str]], before: dict[str, list[str]], waves: list[list[str]]
) -> None:
    """Each service waits for exactly its dependents among the services stopped; waves follow the same rule."""
    assert stop_prerequisites(services, graph.__getitem__) == before
    assert stop_waves(services, graph.__getitem__) == waves
