"""The servers' counters over a trial's window, from metrics snapshots: real Dynamo 1.6.1 files (frontend and
mocker workers, tests/fixtures/metrics) and hand-made ones for a restart and the choice of service."""

from __future__ import annotations

from pathlib import Path

from supervisor._experiment.server_counters import EndpointFile, counter_deltas
from supervisor._host.promtext import sample_sums

DYNAMO = Path(__file__).parents[1] / "fixtures" / "metrics" / "dynamo_1.6.1_mocker"
SERVICES = ["etcd", "nats", "prefill", "decode", "frontend"]


def _files(label: str) -> list[EndpointFile]:
    return [EndpointFile(s, s, DYNAMO / label / f"{s}.prom") for s in ("prefill", "decode", "frontend")]


def test_dynamo_counts_come_from_its_frontend_and_each_worker_keeps_its_own() -> None:
    """Three chat completions of 10 prompt and 8 completion tokens went through the frontend."""
    got = counter_deltas(_files("before"), _files("after"), SERVICES)
    assert (got["server_requests"], got["server_prompt_tokens"], got["server_generation_tokens"]) == (3, 30, 24)
    assert got["server_frontend_requests"] == 3
    assert got["server_decode_requests"] == 3 and got["server_prefill_requests"] == 3  # dynamo_component_*
    assert "server_decode_prompt_tokens" not in got  # the mocker has no vllm:prompt_tokens_total


def test_labels_with_braces_and_spaces_are_read_past_and_series_summed() -> None:
    text = (
        "# TYPE vllm:request_success_total counter\n"
        'vllm:request_success_total{finished_reason="stop",model_name="a} b"} 4\n'
        'vllm:request_success_total{finished_reason="length",model_name="a} b"} 2.0 1700000000\n'
        "vllm:generation_tokens_total NaN\n"
        "garbage line\n"
    )
    assert sample_sums(text) == {"vllm:request_success_total": 6.0}


def test_a_replica_restarted_in_the_window_counts_from_zero_and_a_new_one_counts_whole(tmp_path: Path) -> None:
    def prom(name: str, requests: int, tokens: int) -> Path:
        path = tmp_path / name
        path.write_text(f"vllm:request_success_total {requests}\nvllm:generation_tokens_total {tokens}\n")
        return path

    before = [
        EndpointFile("decode.0", "decode", prom("b0", 10, 100)),
        EndpointFile("prefill", "prefill", prom("p0", 5, 0)),
    ]
    after = [
        EndpointFile("decode.0", "decode", prom("a0", 2, 16)),  # restarted: its counters began again
        EndpointFile("decode.1", "decode", prom("a1", 3, 24)),  # not there before
        EndpointFile("prefill", "prefill", prom("p1", 10, 0)),
    ]
    got = counter_deltas(before, after, ["prefill", "decode", "frontend"])
    # no frontend counts: the last service of the file that has them, decode, stands for the topology
    assert (got["server_requests"], got["server_generation_tokens"]) == (5, 40)
    assert got["server_prefill_requests"] == 5 and "server_prompt_tokens" not in got
