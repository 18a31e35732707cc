"""The presets against the real engines: Dynamo 1.6.1 (etcd, NATS, mocker workers, frontend) and llama-server.

Real processes, real HTTP on loopback, real completions; then teardown, and no process of the run is left.
Needs ``.ci/install-engines``; skipped with the reason when an engine is missing, failed under ``CI=true``.
"""

from __future__ import annotations

import json
import os
import re
import signal
from pathlib import Path

import httpx
import pytest

import supervisor as sv
import topologies
from supervisor._host.proctable import marked_processes

from ..fakerun import read_events
from ..helpers import PYTHON, alive, ctrl_c_at_a_terminal, wait_until

pytestmark = [pytest.mark.anyio, pytest.mark.engines]

ROOT = Path(__file__).parents[2]
QUESTION = {"role": "user", "content": "w1 w2 w3 w4"}


def phases_seen(log: Path, phases: tuple[sv.Phase, ...]) -> list[str]:
    """The phases whose pattern matches a line of the real log, in the order the lines came."""
    seen: list[str] = []
    for line in log.read_text(errors="replace").splitlines():
        seen += [p.name for p in phases if p.name not in seen and re.search(p.pattern, line)]
    return seen


def all_pids(group: sv.RunningTopology) -> list[int]:
    return [pid for service in group.services for pid in service.pids]


async def chat(client: httpx.AsyncClient, url: str, model: str, *, stream: bool = False) -> str:
    """One chat completion; the answer's text (the deltas joined when streaming)."""
    body = {"model": model, "messages": [QUESTION], "max_tokens": 8, "seed": 7, "stream": stream}
    if not stream:
        response = await client.post(f"{url}/v1/chat/completions", json=body)
        assert response.status_code == 200, response.text
        return str(response.json()["choices"][0]["message"]["content"])
    parts = []
    async with client.stream("POST", f"{url}/v1/chat/completions", json=body) as response:
        assert response.status_code == 200, await response.aread()
        async for line in response.aiter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                for choice in json.loads(line[6:])["choices"]:
                    parts.append(choice["delta"].get("content") or "")
    return "".join(parts)


async def test_dynamo_disaggregated_mocker_serves_chat_and_leaves_nothing(
    dynamo_env: Path, mocker_model: Path, runs_dir: Path
) -> None:
    """etcd + NATS + 1 prefill + 2 decode mocker workers + frontend: ready means a chat completion is answered."""
    topology = topologies.dynamo(
        engine="mocker", model=str(mocker_model), served_model_name="org/tiny", prefill=1, decode=2,
        env_path=str(dynamo_env),
    )  # fmt: skip
    async with sv.launch(topology, runs_dir=runs_dir) as group:
        assert [s.name for s in group.services] == ["etcd", "nats", "prefill", "decode", "frontend"]
        pids = all_pids(group)
        assert len(pids) == 6
        async with httpx.AsyncClient(timeout=30) as client:
            # the frontend was ready, so the first request is served (no retry): every role had registered
            answers = [await chat(client, group["frontend"].url, "org/tiny") for _ in range(4)]
            answers.append(await chat(client, group["frontend"].url, "org/tiny", stream=True))
            models = (await client.get(f"{group['frontend'].url}/v1/models")).json()
        run_dir = group.run_dir
    assert all(answer.strip() for answer in answers), answers
    assert [m["id"] for m in models["data"]] == ["org/tiny"]
    wait_until(lambda: not any(alive(pid) for pid in pids), timeout=10)
    summary = json.loads((Path(run_dir) / "summary.json").read_text())
    assert summary["outcome"] == "stopped", summary  # etcd's -15 and nats' 1 on SIGTERM are normal stops
    assert marked_processes(Path(run_dir).name) == {}
    # the startup phases the preset declares are the lines these versions really print
    services = {service.name: service for service in topology.services}
    logs = Path(run_dir) / "logs"
    assert phases_seen(logs / "frontend.log", services["frontend"].phases) == ["runtime", "http", "workers"]
    assert phases_seen(logs / "decode.1.log", services["decode"].phases) == ["runtime", "engine"]


async def test_dynamo_worker_status_ports_stay_below_32768(
    dynamo_env: Path, mocker_model: Path, runs_dir: Path
) -> None:
    """Each worker's status server really listens on its own low port (DYN_SYSTEM_PORT is an i16 in Dynamo)."""
    topology = topologies.dynamo(
        engine="mocker", model=str(mocker_model), prefill=0, decode=2, discovery="file", env_path=str(dynamo_env)
    )
    async with sv.launch(topology, runs_dir=runs_dir) as group:
        assert [s.name for s in group.services] == [
            "decode",
            "frontend",
        ]  # file discovery: no etcd, no NATS; aggregated
        ports = [replica.ports["status"] for replica in group["decode"].replicas]
        assert len(set(ports)) == 2 and all(1024 < port < 32768 for port in ports), ports
        async with httpx.AsyncClient(timeout=30) as client:
            for port in ports:
                assert (await client.get(f"http://127.0.0.1:{port}/health")).status_code == 200
            assert (await chat(client, group["frontend"].url, mocker_model.name)).strip()  # the default name


async def test_llamacpp_two_replicas_answer_and_leave_nothing(
    llama_server: str, tiny_gguf: Path, runs_dir: Path
) -> None:
    """Two llama-server replicas as ``frontend``: each answers chat and text completions; teardown leaves none."""
    topology = topologies.llamacpp(model=str(tiny_gguf), replicas=2, llama_server=llama_server, args={"threads": 1})
    async with sv.launch(topology, runs_dir=runs_dir) as group:
        replicas = group["frontend"].replicas
        assert len(replicas) == 2 and replicas[0].port != replicas[1].port
        pids = all_pids(group)
        # a new connection per request: llama-server may close a kept-alive one just as the next request goes
        async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_keepalive_connections=0)) as client:
            answers = []
            for replica in replicas:
                answers.append(await chat(client, replica.url, "tiny"))
                answers.append(await chat(client, replica.url, "tiny", stream=True))
                response = await client.post(
                    f"{replica.url}/v1/completions", json={"model": "tiny", "prompt": "w1 w2", "max_tokens": 8}
                )
                assert response.status_code == 200, response.text
                answers.append(response.json()["choices"][0]["text"])
        run_dir = group.run_dir
    assert all(answer.strip() for answer in answers), answers
    assert answers[0] == answers[3]  # same seed, same weights: the replicas serve the same model
    wait_until(lambda: not any(alive(pid) for pid in pids), timeout=10)
    assert marked_processes(Path(run_dir).name) == {}
    (server,) = topology.services
    assert phases_seen(Path(run_dir) / "logs" / "frontend.1.log", server.phases) == ["load", "context", "listen"]


# --- through the CLI, stopped with Ctrl-C ----------------------------------------------------------------

#: CMD run once the topology is ready: one chat completion through {frontend.url}, its answer to a file, wait
CLIENT = """
import json, sys, time, urllib.request
url, model, out = sys.argv[1:4]
body = {"model": model, "messages": [{"role": "user", "content": "w1 w2"}], "max_tokens": 8}
request = urllib.request.Request(url + "/v1/chat/completions", json.dumps(body).encode(),
                                 {"Content-Type": "application/json"})
with urllib.request.urlopen(request, timeout=30) as response:
    answer = json.load(response)["choices"][0]["message"]["content"]
open(out, "w").write(answer)
try:
    time.sleep(120)
except KeyboardInterrupt:
    pass
"""


def ctrl_c_a_cli_run(tmp_path: Path, runs_dir: Path, preset: str, sets: dict[str, str], model: str) -> str:
    """``supervisor run topologies/<preset>.yaml --set ... -- client`` at a terminal; Ctrl-C once the client
    has its answer. Returns the answer, after checking the exit code and that every recorded pid is gone."""
    client = tmp_path / "client.py"
    client.write_text(CLIENT)
    answer = tmp_path / "answer.txt"
    sets_args = [arg for key, value in sets.items() for arg in ("--set", f"{key}={value}")]
    argv = [
        PYTHON, "-m", "supervisor", "run", f"topologies/{preset}.yaml", *sets_args,
        "--runs-dir", str(runs_dir), "-q", "--", "{python}", str(client), "{frontend.url}", model, str(answer),
    ]  # fmt: skip
    returncode, stderr = ctrl_c_at_a_terminal(argv, answer.exists, cwd=ROOT, ready_timeout=60)
    assert returncode == 128 + signal.SIGINT, stderr
    (run,) = runs_dir.iterdir()
    manifest = json.loads((run / "manifest.json").read_text())
    pids = [replica["pid"] for service in manifest["services"].values() for replica in service["replicas"]]
    assert pids and all(isinstance(pid, int) for pid in pids), manifest["services"]
    assert not [pid for pid in [manifest["supervisor_pid"], *pids] if alive(pid)]
    assert marked_processes(run.name) == {}
    for label in ("ready", "final"):  # the engines' own Prometheus endpoints, saved at ready and at Ctrl-C
        index = json.loads((run / "metrics" / label / "index.json").read_text())
        endpoints = index["endpoints"]
        assert endpoints and all(e["status"] == 200 and e["error"] is None for e in endpoints), endpoints
        assert all("# TYPE " in (run / "metrics" / label / e["file"]).read_text() for e in endpoints)
    return answer.read_text()


def test_dynamo_yaml_through_the_cli_then_ctrl_c(
    dynamo_env: Path, mocker_model: Path, tmp_path: Path, runs_dir: Path
) -> None:
    """``supervisor run topologies/dynamo.yaml --set engine=mocker ...``: serves, then Ctrl-C exits 130, nothing left."""
    sets = {"engine": "mocker", "model": str(mocker_model), "served_model_name": "tiny", "decode": "2",
            "env_path": str(dynamo_env)}  # fmt: skip
    assert ctrl_c_a_cli_run(tmp_path, runs_dir, "dynamo", sets, "tiny").strip()


def test_llamacpp_yaml_through_the_cli_then_ctrl_c(
    llama_server: str, tiny_gguf: Path, tmp_path: Path, runs_dir: Path
) -> None:
    """``supervisor run topologies/llamacpp.yaml --set replicas=2 ...``: serves, then Ctrl-C exits 130, nothing left."""
    sets = {"model": str(tiny_gguf), "replicas": "2", "llama_server": llama_server, "args": "{threads: 1}"}
    assert ctrl_c_a_cli_run(tmp_path, runs_dir, "llamacpp", sets, "tiny").strip()


async def test_dynamo_frontend_exiting_0_on_its_own_is_restarted(
    dynamo_env: Path, mocker_model: Path, runs_dir: Path
) -> None:
    """Dynamo's frontend leaves with exit 0 when it loses etcd: restart policy ``always`` brings it back."""
    from ..helpers import wait_for

    topology = topologies.dynamo(engine="mocker", model=str(mocker_model), served_model_name="tiny", decode=1,
                                 discovery="file", env_path=str(dynamo_env))  # fmt: skip
    async with sv.launch(topology, runs_dir=runs_dir) as group:
        (old,) = group["frontend"].pids
        os.kill(old, signal.SIGTERM)  # not from us: the same clean exit 0 as after losing etcd
        await wait_for(
            group,
            lambda events: any(isinstance(e, sv.Ready) and e.replica == "frontend" and e.pid != old for e in events),
            timeout=60,
        )
        exits = [e for e in group.event_history if isinstance(e, sv.Exited) and e.pid == old]
        assert [(e.exit_code, e.expected) for e in exits] == [(0, False)]
        async with httpx.AsyncClient(timeout=30) as client:
            assert (await chat(client, group["frontend"].url, "tiny")).strip()


async def test_dynamo_without_dynamo_fails_at_once(mocker_model: Path, runs_dir: Path) -> None:
    """No env_path and no Dynamo in the supervisor's Python: one clear failure, not five restarts."""
    pytest.importorskip("tokenizers")
    import importlib.util

    if importlib.util.find_spec("dynamo") is not None:
        pytest.skip("this interpreter has Dynamo")
    topology = topologies.dynamo(engine="mocker", model=str(mocker_model), prefill=0, discovery="file")
    with pytest.raises(sv.ServiceFailed) as caught:
        async with sv.launch(topology, runs_dir=runs_dir):
            pass
    assert "No module named" in str(caught.value)
    _assert_never_restarted(runs_dir)


async def test_llamacpp_on_a_taken_port_fails_at_once(llama_server: str, tiny_gguf: Path, runs_dir: Path) -> None:
    """A port taken once the preflight check passed (here bound, not listening, which that check does not
    see; in life a race or a restart): the real llama-server says "couldn't bind HTTP server socket" (no errno
    text) and exits 1; the preset's fatal line makes that one clear failure, not restarts on that port, as soon
    as the server says it."""
    import socket

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        port = holder.getsockname()[1]
        topology = topologies.llamacpp(model=str(tiny_gguf), port=port, llama_server=llama_server)
        with pytest.raises(sv.ServiceFailed) as caught:
            async with sv.launch(topology, runs_dir=runs_dir):
                pass
    assert "couldn't bind HTTP server socket" in str(caught.value)
    # llama.cpp logs from a thread of its own and can exit before that thread wrote anything: run by hand on a
    # bound port beside 4 CPU hogs, 13 of 150 exits (code 1) lacked the line, 7 of them printed nothing. A
    # restart after such a silent exit is right (nothing says it cannot help); one after an incarnation that
    # said it is not: only the last incarnation's output may hold the line
    (run,) = runs_dir.iterdir()
    said = "".join(p.read_text(errors="replace") for p in sorted((run / "logs").glob("frontend.log*")))
    events = read_events(run)
    assert said.count("couldn't bind HTTP server socket") == 1, f"{events}\n{said[-3000:]}"
    assert events[-1]["event"] == "failed" and "not retried" in events[-1]["reason"], events
    assert all("the output says" not in e["reason"] for e in events if e["event"] == "restarting"), events


def _assert_never_restarted(runs_dir: Path) -> None:
    """The one run under ``runs_dir`` failed at once: no replica was restarted."""
    (run,) = runs_dir.iterdir()
    events = [event["event"] for event in read_events(run)]
    # on a failure, what each incarnation said and why it was judged so (a CI run once restarted it)
    logs = "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in sorted((run / "logs").glob("*")))
    assert "restarting" not in events, f"{read_events(run)}\n{logs}"
